"""Peak memory and wall time of notebooks run as a student runs them: Run All in a fresh
Jupyter kernel, then the kernel's own peak RSS (``VmHWM`` in ``/proc/self/status``, Linux).

    HOTDOG_DIR=../shared/data/hotdog python benchmarks/notebook_memory.py \\
        notebooks/06_ablations.ipynb --repeat 3

Each repetition executes every notebook given, in order, each in a new kernel started as
the main job starts its kernels (`notebook_runner.notebook_client` and `job_environment`,
with this checkout's ``d2l_helpers``), then one more cell in that kernel that reads its peak
RSS; the notebooks on disk are not written. The kernels use the saved runs of ``--runs``
(default: the main job's ``build/runs``) through a temporary copy, so runs a notebook trains
and saves do not touch the originals. Prints one line per execution and a JSON line with the
medians, minima and maxima (issue 12's target: every kernel of notebooks 01-08 at most 4 GB).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _this_checkout() -> None:
    """Import this checkout's d2l_helpers, whatever the environment installed."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
PROBE = "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"


def run_once(path: Path, timeout: int) -> tuple[float, float]:
    """Execute notebook ``path`` in a new kernel; return (peak RSS in MB, seconds)."""
    import nbformat

    _this_checkout()
    from d2l_helpers.notebook_runner import notebook_client

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    with notebook_client(nb, path.parent, timeout) as client, client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        secs = time.perf_counter() - start
        probe = nbformat.v4.new_code_cell(PROBE)
        nb.cells.append(probe)
        client.execute_cell(probe, len(nb.cells) - 1)
    text = "".join(o.get("text", "") for o in probe.outputs)
    if "VmHWM" not in text:
        raise RuntimeError(f"{path.name}: the kernel did not report VmHWM ({text!r}): "
                           "this benchmark needs Linux's /proc")
    return int(text.split("VmHWM:")[1].split()[0]) / 1024, secs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("notebooks", nargs="+", type=Path)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--runs", type=Path, default=REPO / "build" / "runs",
                   help="saved runs the notebooks load (copied; default: the main job's)")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    a = p.parse_args(argv)
    for nb in a.notebooks:
        if not nb.is_file():
            p.error(f"no notebook at {nb}")
    if not a.runs.is_dir():
        p.error(f"no saved runs at {a.runs}: run the main job (bash scripts/module.sh) first, "
                "or pass --runs")
    peaks: dict[str, list[float]] = {nb.name: [] for nb in a.notebooks}
    secs: dict[str, list[float]] = {nb.name: [] for nb in a.notebooks}
    with tempfile.TemporaryDirectory(prefix="notebook-memory-") as tmp:
        runs = Path(tmp) / "runs"
        shutil.copytree(a.runs, runs)
        _this_checkout()
        from d2l_helpers.notebook_runner import job_environment

        os.environ.update(job_environment(a.profile, runs))
        # the kernels import this checkout's d2l_helpers too
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO),
                                                                 os.environ.get("PYTHONPATH")]))
        for rep in range(a.repeat):
            for nb in a.notebooks:
                mb, s = run_once(nb.resolve(), a.timeout)
                peaks[nb.name].append(mb)
                secs[nb.name].append(s)
                print(f"round {rep + 1}: {nb.name:<28} peak RSS {mb / 1024:5.2f} GB, "
                      f"{s:6.1f} s", flush=True)
    summary = {name: {"peak_rss_gb": {"median": round(statistics.median(v) / 1024, 2),
                                      "min": round(min(v) / 1024, 2),
                                      "max": round(max(v) / 1024, 2)},
                      "seconds_median": round(statistics.median(secs[name]), 1),
                      "runs": len(v)} for name, v in peaks.items()}
    print(json.dumps({"profile": a.profile, "machine": platform.machine(),
                      "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                      time.gmtime()),
                      "notebooks": summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
