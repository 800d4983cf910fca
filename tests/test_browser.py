"""A real browser: JupyterLab runs notebook 02 and the augmentation explorer redraws when a
slider is dragged, as a student would see it.

JupyterLab (the venv's, so its kernel is the venv's python) serves a *copy* of the notebook,
with outputs and saved widget state stripped, from a temporary folder: autosave never
touches the repository, and the explorer can only appear if the live kernel draws it.
Headless Chromium is Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run`` does
it), driven by Playwright, which never downloads a browser of its own here. Screenshots go
to the test's temporary folder and to ``build/browser/``.
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "02_augmentations.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SHOTS = REPO / "build" / "browser"
# Generous: a cold kernel start plus the ci-profile notebook take ~10 s on 2 busy cores.
SERVER_START_S, NOTEBOOK_RUN_S, REDRAW_S = 90, 300, 120

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fresh_copy(src: Path, dst: Path) -> None:
    """The notebook without outputs or saved widget state (which JupyterLab would restore)."""
    import nbformat

    nb = nbformat.read(src, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, dst)


def _kernels_of(server_pid: int, ppid_any: bool = False) -> list[int]:
    """ipykernel processes started by the server (with ``ppid_any``: any still alive that
    were, i.e. also after the server exited and they were re-parented)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if b"ipykernel_launcher" in cmdline and (ppid_any or int(fields[1]) == server_pid):
            found.append(int(stat.parent.name))
    return found


@pytest.fixture
def jupyter_lab(tmp_path, shared_hotdog):
    """JupyterLab on 127.0.0.1:<free port> with a token, serving a copy of notebook 02.

    Yields ``(base_url, token, root, process)``; the finalizer stops the server and its
    kernels (its own process group) and checks the repository's notebook was not touched.
    """
    require_chromium()  # before starting JupyterLab
    root = tmp_path / "lab"
    root.mkdir()
    _fresh_copy(NOTEBOOK, root / NOTEBOOK.name)
    repo_nb_sha1 = hashlib.sha1(NOTEBOOK.read_bytes()).hexdigest()
    port, token = _free_port(), secrets.token_hex(16)
    jupyter = Path(sys.executable).parent / "jupyter"
    env = dict(os.environ,  # D2L_HELPERS_CACHE/D2L_RUNS_DIR: this test's tmp (conftest)
               HOTDOG_DIR=str(shared_hotdog), D2L_PROFILE="ci",
               # Nothing from ~/.jupyter or ~/.local/share/jupyter (a stray python3
               # kernelspec there would shadow the venv's), nothing written there either.
               JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
               JUPYTER_DATA_DIR=str(tmp_path / "jupyter-data"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"),
               JUPYTER_PREFER_ENV_PATH="1")
    log_path = tmp_path / "jupyter-lab.log"
    cmd = [str(jupyter), "lab", "--no-browser", "--allow-root",
           f"--ServerApp.token={token}", "--ServerApp.ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}",
           # no calls home from a test
           "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           f"--LabApp.workspaces_dir={tmp_path / 'lab-workspaces'}",
           f"--LabApp.user_settings_dir={tmp_path / 'lab-settings'}"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode}:\n"
                            + log_path.read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not answer within {SERVER_START_S} s:\n"
                                + log_path.read_text()[-3000:])
                time.sleep(0.5)
        yield base, token, root, proc
    finally:
        kernels = _kernels_of(proc.pid)  # started in sessions of their own by jupyter_client
        if proc.poll() is None:  # SIGTERM: the server shuts its kernels down, then exits
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        try:  # anything left in the group we started (a kernel that ignored the server)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in kernels:  # a kernel the server failed to stop (same pid, same command)
            if pid in _kernels_of(proc.pid, ppid_any=True):
                os.kill(pid, signal.SIGKILL)
        assert hashlib.sha1(NOTEBOOK.read_bytes()).hexdigest() == repo_nb_sha1, \
            f"{NOTEBOOK} was modified during the browser test"


def require_chromium(path: Path = CHROMIUM, ci: str | None = None) -> None:
    """Skip when Debian's Chromium is missing, with the reason and the fix; fail under CI.

    ``scripts/test.sh`` installs it when it runs as root; a newcomer without root sees the
    skip reason in pytest's summary (``-rs``), while CI (``CI=true``) must run the test.
    """
    if path.exists():
        return
    ci = os.environ.get("CI", "") if ci is None else ci
    message = (f"{path} is missing: install Debian's browser with `apt-get update && "
               "apt-get install -y chromium` (scripts/test.sh does this when run as root). "
               "Do not use `playwright install`.")
    if ci.strip().lower() in ("1", "true", "yes"):
        pytest.fail("CI=true: the browser test must run. " + message)
    pytest.skip(message)


def test_require_chromium_skips_for_a_newcomer_and_fails_under_ci(tmp_path):
    missing = tmp_path / "no-chromium"
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y chromium"):
        require_chromium(missing, ci="")
    with pytest.raises(pytest.fail.Exception, match="CI=true: the browser test must run"):
        require_chromium(missing, ci="true")
    require_chromium(Path(sys.executable), ci="true")  # present: nothing happens


def _launch_chromium(playwright, profile_dir: Path):
    require_chromium()
    context = playwright.chromium.launch_persistent_context(
        str(profile_dir), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(60_000)
    return context


_IMAGE_DIGEST_JS = """async img => {
    const bytes = await (await fetch(img.src)).arrayBuffer();
    const digest = await crypto.subtle.digest('SHA-256', bytes);
    return {src: img.src, size: bytes.byteLength,
            sha256: Array.from(new Uint8Array(digest), b => b.toString(16).padStart(2, '0')).join('')};
}"""


def test_augmentation_explorer_redraws_in_a_real_browser(jupyter_lab, tmp_path):
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail("Playwright is missing: pip install -r requirements/cpu.txt "
                    "(it pins playwright); the browser itself comes from apt (chromium).")
    base, token, root, server = jupyter_lab
    shots = tmp_path / "browser"
    shots.mkdir()
    SHOTS.mkdir(parents=True, exist_ok=True)
    saved = []

    def shot(target, name: str) -> None:
        path = shots / name
        target.screenshot(path=str(path))
        shutil.copy(path, SHOTS / name)
        saved.append(SHOTS / name)

    with sync_playwright() as pw:
        context = _launch_chromium(pw, tmp_path / "chromium-profile")
        page = context.new_page()
        errors = []
        # (Chromium reports a benign "ResizeObserver loop ..." while JupyterLab lays out.)
        page.on("pageerror", lambda err: None if "ResizeObserver loop" in str(err)
                else errors.append(str(err)))
        t0 = time.monotonic()
        try:
            page.goto(f"{base}/lab/tree/{NOTEBOOK.name}?token={token}")
            page.locator(".jp-NotebookPanel .jp-Notebook").wait_for()
            # The kernel (started for the notebook's python3 kernelspec) is ready.
            idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
            idle.wait_for(timeout=NOTEBOOK_RUN_S * 1000)
            shot(page, "01_opened.png")

            # Run > Run All Cells, through the menu bar as a student would.
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()

            # The explorer: an ipywidgets VBox whose first slider is labelled "scale min".
            label = page.locator(".widget-label", has_text=re.compile(r"^scale min$"))
            slider = page.locator(".widget-slider", has=label)
            slider.wait_for(timeout=NOTEBOOK_RUN_S * 1000)
            # Every cell has run: no "[*]" prompt left and the kernel is idle again.
            page.wait_for_function(
                """() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                        .every(p => /\\[\\d+\\]/.test(p.textContent))""",
                timeout=NOTEBOOK_RUN_S * 1000)
            idle.wait_for(timeout=NOTEBOOK_RUN_S * 1000)
            ran_s = time.monotonic() - t0
            tracebacks = page.locator("[data-mime-type='application/vnd.jupyter.error']")
            assert tracebacks.count() == 0, "a cell failed:\n" + "\n".join(
                tracebacks.all_inner_texts())[:3000]

            explorer = page.locator(".widget-vbox", has=slider)
            expect(explorer).to_have_count(1)
            image = explorer.locator("img.widget-image")
            readout = slider.locator(".widget-readout")
            expect(readout).to_have_text("0.08")  # the book's scale range starts at 8 %
            explorer.scroll_into_view_if_needed()
            before = image.evaluate(_IMAGE_DIGEST_JS)
            assert before["size"] > 1000, before
            shot(explorer, "02_explorer_before.png")

            # Drag the "scale min" handle to about 60 % of the track.
            handle = slider.locator(".noUi-handle")
            track = slider.locator(".noUi-base").bounding_box()
            box = handle.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.down()
            page.mouse.move(track["x"] + 0.6 * track["width"], box["y"] + box["height"] / 2,
                            steps=12)
            page.mouse.up()

            # The kernel redraws (continuous_update=False: once, on release) and the
            # browser receives a new JPEG: the <img> gets a new blob.
            page.wait_for_function("([img, src]) => img.src !== src",
                                   arg=[image.element_handle(), before["src"]],
                                   timeout=REDRAW_S * 1000)
            idle.wait_for(timeout=REDRAW_S * 1000)
            value = float(readout.inner_text())
            assert 0.4 <= value <= 0.8, f"the drag moved 'scale min' to {value}"
            # The kernel applied the new value: the status line states the new area range.
            expect(explorer).to_contain_text(f"area {value:.0%}", timeout=REDRAW_S * 1000)
            after = image.evaluate(_IMAGE_DIGEST_JS)
            shot(explorer, "03_explorer_after.png")
            shot(page, "04_page.png")
            assert after["sha256"] != before["sha256"], "the explorer's image did not change"
            assert not errors, f"JavaScript errors on the page: {errors}"
        except BaseException:
            try:
                shot(page, "failure.png")
            except Exception:
                pass
            raise
        finally:
            context.close()

    kernels = _kernels_of(server.pid)
    assert kernels, "no kernel process found under the JupyterLab server"
    for pid in kernels:  # the venv's python, not whatever python3 is on PATH
        assert Path(f"/proc/{pid}/exe").resolve() == Path(sys.executable).resolve()
    print(f"\nnotebook ran in {ran_s:.1f} s; scale min -> {value}; "
          f"image {before['size']} -> {after['size']} bytes")
    print("screenshots:", *map(str, saved), sep="\n  ")
