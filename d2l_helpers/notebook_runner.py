"""Execute the module's notebooks headless and summarise the runs they saved.

Used by ``python -m d2l_helpers run`` (the README's main job). Each notebook runs in a
fresh kernel with ``D2L_PROFILE`` and ``D2L_RUNS_DIR`` set, in its own folder so relative
paths work; executed copies go to ``output`` (or back into ``notebooks/`` with
``in_place``), and ``results.md`` beside them lists every saved run.

Before an executed notebook is written, `compact` makes it fit for git: photos (PNG
figures with many colours) become JPEG, other figures a PNG with a 256-colour palette,
widget state and per-run metadata are dropped, and
absolute paths of this machine in outputs are replaced by relative ones. `problems` lists
what would still make a committed notebook heavy or machine-specific; a test runs it over
``notebooks/``.

Example:
    >>> import nbformat
    >>> nb = nbformat.v4.new_notebook(metadata={"widgets": {"state": {}}})
    >>> compact(nb)["widget_state"], "widgets" in nb.metadata
    (True, False)
"""
from __future__ import annotations

import base64
import io
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# A PNG output with at least this many colours (in a 64x64 thumbnail) is a photo or a grid
# of photos: JPEG stores it in a fraction of the bytes. Line plots have a few dozen colours.
PHOTO_COLOURS = 1500
JPEG_QUALITY = 85
# Absolute paths of a machine (POSIX home, temporary and work folders) in outputs.
MACHINE_PATH = re.compile(r"(?<![\w.~])/(?:home|root|Users|tmp|work|var/folders|srv|mnt)/[^\s'\"<>)]*")
MAX_NOTEBOOK_BYTES = 250_000
# A Unix socket's path holds at most 104 (macOS) or 108 (Linux) bytes; the kernel's sockets
# are this prefix plus "-<port>". With a longer temporary folder the kernels use TCP.
MAX_SOCKET_PREFIX = 90


def _png_to_jpeg(b64: str) -> str | None:
    """The JPEG (base64) of a photo-like PNG when it is at most 60 % of the size, else None."""
    from PIL import Image

    raw = base64.b64decode(b64)
    with Image.open(io.BytesIO(raw)) as img:
        img.load()
        thumb = img.convert("RGB").resize((64, 64))
        if len(thumb.getcolors(64 * 64) or []) < PHOTO_COLOURS:
            return None
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii") if buf.tell() < 0.6 * len(raw) else None


def _png_palette(b64: str) -> str | None:
    """A figure's PNG (base64) redrawn with a palette of at most 256 colours (Pillow's
    median cut), when that is smaller, else None. Line plots need a few hundred colours
    (anti-aliased edges); the palette keeps them to the eye at about half the bytes."""
    from PIL import Image

    raw = base64.b64decode(b64)
    with Image.open(io.BytesIO(raw)) as img:
        if img.mode == "P":
            return None
        img.load()
        buf = io.BytesIO()
        img.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(
            buf, "PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii") if buf.tell() < len(raw) else None


def _local_paths(text: str) -> str:
    """Replace this machine's repository parent and home folder by ``..`` and ``~``."""
    prefixes = ((str(REPO / "notebooks"), "."), (str(REPO), ".."), (str(REPO.parent), "../.."),
                (str(Path.home()), "~"))
    # The most specific folder first: a home folder beside the clone is "~", not "../../home".
    for prefix, short in sorted(prefixes, key=lambda ps: -len(ps[0])):
        text = text.replace(prefix + "/", short + "/").replace(prefix, short)
    return text


def compact(nb) -> dict[str, int | bool]:
    """Make an executed notebook fit for git, in place; return what was changed."""
    done = {"jpeg": 0, "palette": 0, "widget_views": 0, "paths": 0,
            "widget_state": "widgets" in nb.metadata}
    nb.metadata.pop("widgets", None)  # saved widget state: ~100 KB, useless without a kernel
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # timestamps: noise in git diffs
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_VIEW in data and len(data) > 1:  # keep the static picture/text only
                del data[WIDGET_VIEW]
                done["widget_views"] += 1
            if "image/png" in data:
                jpeg = _png_to_jpeg(data["image/png"])
                if jpeg is not None:
                    del data["image/png"]
                    data["image/jpeg"] = jpeg
                    out.get("metadata", {}).pop("image/png", None)
                    done["jpeg"] += 1
                elif (palette := _png_palette(data["image/png"])) is not None:
                    data["image/png"] = palette
                    done["palette"] += 1
            for key in ("text", *[k for k in data if k.startswith("text/")]):
                holder = out if key == "text" else data
                if key in holder:
                    value = holder[key]
                    text = "".join(value) if isinstance(value, list) else value
                    new = _local_paths(text)
                    if new != text:
                        holder[key] = new
                        done["paths"] += 1
    return done


def problems(nb_path: Path) -> list[str]:
    """What makes a committed notebook heavy or machine-specific (empty when clean)."""
    import json

    text = nb_path.read_text()
    nb = json.loads(text)
    found = []
    if len(text.encode()) > MAX_NOTEBOOK_BYTES:
        found.append(f"{len(text.encode()):,} bytes, over {MAX_NOTEBOOK_BYTES:,}")
    if "widgets" in nb.get("metadata", {}):
        found.append("saved widget state in the notebook metadata")
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            if "image/png" in out.get("data", {}) and _png_to_jpeg(out["data"]["image/png"]):
                found.append(f"cell {i}: a photo stored as PNG")
            blob = json.dumps(out)
            found += [f"cell {i}: machine path {m!r}" for m in sorted(set(MACHINE_PATH.findall(blob)))]
    return found


def _last_seconds(nb_path: Path, profile: str) -> float | None:
    """How long the notebook's last execution in ``profile`` took (its metadata), or None."""
    import json

    run = json.loads(nb_path.read_text()).get("metadata", {}).get("d2l", {}).get("executed", {})
    return float(run["seconds"]) if run.get("profile") == profile and "seconds" in run else None


class Progress:
    """The main job's progress on stderr: a bar over the cells of the current notebook, and
    the job's elapsed and estimated remaining time (from the notebooks' last executions in
    this profile; "?" for one never run in it)."""

    def __init__(self, index: int, count: int, name: str, nb, estimates, job_start: float):
        import sys

        from tqdm import tqdm

        cells = sum(c.cell_type == "code" for c in nb.cells)
        self.index, self.estimates, self.job_start = index, estimates, job_start
        self.start = time.perf_counter()
        self.bar = tqdm(total=cells, desc=f"[{index + 1}/{count}] {name}", unit="cell",
                        file=sys.stderr, leave=False, dynamic_ncols=True)
        self._postfix()

    def _postfix(self) -> None:
        elapsed = time.perf_counter() - self.job_start
        this = self.estimates[self.index]
        rest = self.estimates[self.index + 1:]
        if this is None or any(e is None for e in rest):
            remaining = "?"
        else:
            left = max(0.0, this - (time.perf_counter() - self.start)) + sum(rest)
            remaining = f"{left / 60:.0f} min"
        self.bar.set_postfix_str(f"job {elapsed / 60:.1f} min, about {remaining} left", refresh=True)

    def cell_done(self, cell=None, cell_index=None, **_) -> None:
        if cell is not None and cell.get("cell_type") != "code":
            return
        self.bar.update(1)
        self._postfix()

    def close(self) -> None:
        self.bar.close()


def job_environment(profile: str, runs: str | Path) -> dict[str, str]:
    """The variables the main job's kernels run with: the profile, the run store, and
    ``D2L_REPLAY=0`` (the job trains and saves every run that is not saved yet; presenter
    mode off). `run_notebooks` and ``benchmarks/notebook_memory.py`` set them.

    Example:
        >>> job_environment("cpu", "build/runs")["D2L_REPLAY"]
        '0'
    """
    return {"D2L_PROFILE": profile, "D2L_RUNS_DIR": str(runs), "D2L_REPLAY": "0"}


@contextmanager
def notebook_client(nb, folder: Path, timeout: int = 3600, **kwargs) -> Iterator:
    """An nbclient ``NotebookClient`` for ``nb`` whose kernel (``python3``) starts in
    ``folder``, so the notebook's relative paths work; ``kwargs`` go to the client.

    On Linux and macOS the kernel talks to the client over Unix sockets (ZeroMQ's IPC
    transport) in a private temporary folder, removed afterwards: nothing travels over TCP
    and the kernel does not log ipykernel's warning about unencrypted TCP. Elsewhere
    (Windows), or when the temporary folder's path is too long for a socket, it uses TCP on
    localhost, Jupyter's default.

    Example:
        >>> import nbformat
        >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("6 * 7")])
        >>> with notebook_client(nb, Path("."), timeout=60) as client:
        ...     _ = client.execute()
        >>> nb.cells[0].outputs[0]["data"]["text/plain"]
        '42'
    """
    from nbclient import NotebookClient
    from traitlets.config import Config

    with tempfile.TemporaryDirectory(prefix="d2l-kernel-") as sockets:
        config = Config()
        ip = os.path.join(sockets, "kernel")
        if os.name == "posix" and len(ip) <= MAX_SOCKET_PREFIX:
            config.KernelManager.transport = "ipc"
            config.KernelManager.ip = ip
        yield NotebookClient(nb, timeout=timeout, kernel_name="python3", config=config,
                             resources={"metadata": {"path": str(folder)}}, **kwargs)


def run_study_step(profile_name: str) -> tuple[str, float]:
    """The seed study (`study`) as its own process and timed step of the main job, before
    the notebooks: they then load its runs instead of training them. Returns (status, s)."""
    import subprocess
    import sys

    start = time.perf_counter()
    print("Seed study (python -m d2l_helpers study): trains what is not saved yet", flush=True)
    code = subprocess.call([sys.executable, "-m", "d2l_helpers", "study", "--profile",
                            profile_name])
    secs = time.perf_counter() - start
    status = "ok" if code == 0 else "FAILED"
    print(f"{'seed study':<32}{status:<8}{secs:7.1f} s", flush=True)
    return status, secs


def run_notebooks(nb_dir: Path, output: Path | None, profile: str | None = None,
                  pattern: str = "[0-9][0-9]_*.ipynb", timeout: int = 3600,
                  study: bool = True) -> int:
    """Execute every notebook matching ``pattern``; return 0 if all ran, else 1.

    With ``study`` the seed study runs first, as its own timed step (`run_study_step`).
    """
    import nbformat
    from nbclient.exceptions import CellExecutionError

    from .profiles import get_profile
    from .runs import list_runs, runs_dir

    prof = get_profile(profile)
    build = (output.parent if output is not None else nb_dir.parent / "build")
    os.environ.update(job_environment(prof.name, os.environ.get("D2L_RUNS_DIR",
                                                                str(build / "runs"))))
    notebooks = sorted(nb_dir.glob(pattern))
    if not notebooks:
        print(f"No notebooks matching {pattern} in {nb_dir}")
        return 1
    failed, rows = [], []
    if study:
        status, secs = run_study_step(prof.name)
        rows.append(("seed study (python -m d2l_helpers study)", status, secs))
        if status != "ok":
            failed.append("seed study")
    estimates = [_last_seconds(p, prof.name) for p in notebooks]
    job_start = time.perf_counter()
    for k, nb_path in enumerate(notebooks):
        nb = nbformat.read(nb_path, as_version=4)
        start = time.perf_counter()
        progress = Progress(k, len(notebooks), nb_path.name, nb, estimates, job_start)
        try:
            with notebook_client(nb, nb_dir, timeout,
                                 on_cell_complete=progress.cell_done) as client:
                client.execute()
            status = "ok"
        except CellExecutionError as err:
            status = "FAILED"
            failed.append(nb_path.name)
            print(str(err)[-2000:])
        progress.close()
        secs = time.perf_counter() - start
        rows.append((nb_path.name, status, secs))
        print(f"{nb_path.name:<32}{status:<8}{secs:7.1f} s", flush=True)
        compact(nb)
        nb.metadata.setdefault("d2l", {})["executed"] = {
            "profile": prof.name, "seconds": round(secs), "status": status}
        dest = nb_path if output is None else output / nb_path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, dest)
    if output is None and not failed:  # the table reads each notebook's last execution
        readme = nb_dir.parent / "README.md"
        if readme.exists():
            readme.write_text(with_course_table(readme.read_text(), nb_dir))
            print(f"Updated the course table in {readme.name}")
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
              "| run | backbone | data | seed | epochs | test acc | train acc | seconds "
              "| of which evaluating |", "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        h, c = r.history, r.history.config
        if not h.epoch:
            continue
        share = "not recorded" if h.eval_share is None else f"{h.eval_share:.0%}"
        lines.append(f"| {r.name} | {c.get('backbone')} | {r.meta.get('data_source', '?')} | "
                     f"{c.get('seed')} | {h.epoch[-1]} | {h.test_acc[-1]:.3f} | "
                     f"{h.train_acc[-1]:.3f} | {h.total_seconds:.0f} | {share} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the README's course table

TABLE_START, TABLE_END = "<!-- course table: generated from the notebooks -->", "<!-- end of course table -->"


def course_table(nb_dir: Path) -> str:
    """The README's table of notebooks, from each notebook's own title and metadata.

    Each notebook keeps ``metadata.d2l.learn`` (what you learn, one line) and says what it
    needs first in its header (``**Needs first:** ...``); the main job (``--in-place``) records how
    long its last execution took (``metadata.d2l.executed``). The README's table is this
    function's output, so it cannot drift from the notebooks (a test checks it).
    """
    import json

    lines = ["| notebook | what you learn | minutes (2-core CPU, cpu profile) | needs first |",
             "|---|---|---|---|"]
    for path in sorted(nb_dir.glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(path.read_text())
        meta = nb["metadata"].get("d2l", {})
        header = next(("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"),
                      path.stem)
        title = header.splitlines()[0].lstrip("# ").strip()
        needs = re.search(r"\*\*Needs first:\*\*\s*(.+)", header)
        run = meta.get("executed", {})
        minutes = (f"{run['seconds'] / 60:.1f}" if run.get("profile") == "cpu"
                   and run.get("seconds") is not None else "not measured")
        lines.append(f"| [{title}](notebooks/{path.name}) | {meta.get('learn', '')} | "
                     f"{minutes} | {needs.group(1).strip() if needs else ''} |")
    return "\n".join(lines)


def with_course_table(readme: str, nb_dir: Path) -> str:
    """``readme`` with the text between the table markers replaced by `course_table`."""
    start, end = readme.index(TABLE_START) + len(TABLE_START), readme.index(TABLE_END)
    return readme[:start] + "\n" + course_table(nb_dir) + "\n" + readme[end:]
