"""Execute the module's notebooks headless and summarise the runs they saved.

Used by ``python -m d2l_helpers run`` (the README's main job). Each notebook runs in a
fresh kernel with ``D2L_PROFILE`` and ``D2L_RUNS_DIR`` set, in its own folder so relative
paths work; executed copies go to ``output`` (or back into ``notebooks/`` with
``in_place``), and ``results.md`` beside them lists every saved run.
"""
from __future__ import annotations

import os
import time
from pathlib import Path


def run_notebooks(nb_dir: Path, output: Path | None, profile: str | None = None,
                  pattern: str = "[0-9][0-9]_*.ipynb", timeout: int = 3600) -> int:
    """Execute every notebook matching ``pattern``; return 0 if all ran, else 1."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from .profiles import get_profile
    from .runs import list_runs, runs_dir

    prof = get_profile(profile)
    build = (output.parent if output is not None else nb_dir.parent / "build")
    os.environ["D2L_PROFILE"] = prof.name
    os.environ.setdefault("D2L_RUNS_DIR", str(build / "runs"))
    os.environ["D2L_REPLAY"] = "0"   # the main job trains and saves every run (presenter mode off)
    notebooks = sorted(nb_dir.glob(pattern))
    if not notebooks:
        print(f"No notebooks matching {pattern} in {nb_dir}")
        return 1
    failed, rows = [], []
    for nb_path in notebooks:
        nb = nbformat.read(nb_path, as_version=4)
        start = time.perf_counter()
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(nb_dir)}})
        try:
            client.execute()
            status = "ok"
        except CellExecutionError as err:
            status = "FAILED"
            failed.append(nb_path.name)
            print(str(err)[-2000:])
        secs = time.perf_counter() - start
        rows.append((nb_path.name, status, secs))
        print(f"{nb_path.name:<32}{status:<8}{secs:7.1f} s", flush=True)
        for cell in nb.cells:  # keep outputs, drop per-run noise (timestamps) from git diffs
            cell.metadata.pop("execution", None)
        dest = nb_path if output is None else output / nb_path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, dest)
    summary = _summary(prof, rows, list_runs(), runs_dir())
    (build / "results.md").parent.mkdir(parents=True, exist_ok=True)
    (build / "results.md").write_text(summary)
    print(summary)
    return 1 if failed else 0


def _summary(prof, rows, runs, where) -> str:
    lines = [f"# Results ({prof.name} profile: {prof.description})", "",
             "| notebook | status | seconds |", "|---|---|---|"]
    lines += [f"| {n} | {s} | {t:.0f} |" for n, s, t in rows]
    lines += ["", f"Runs saved in {where}:", "",
              "| run | backbone | data | seed | epochs | test acc | train acc | seconds |",
              "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        h, c = r.history, r.history.config
        if not h.epoch:
            continue
        lines.append(f"| {r.name} | {c.get('backbone')} | {r.meta.get('data_source', '?')} | "
                     f"{c.get('seed')} | {h.epoch[-1]} | {h.test_acc[-1]:.3f} | "
                     f"{h.train_acc[-1]:.3f} | {h.total_seconds:.0f} |")
    return "\n".join(lines) + "\n"
