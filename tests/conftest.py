"""Shared fixtures: isolated caches, generated image folders, a loopback HTTP server."""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import threading
import zipfile
from pathlib import Path

import numpy as onp
import pytest
from PIL import Image

import d2l_helpers  # noqa: F401  (threads are set before mxnet loads)

REPO = Path(__file__).resolve().parent.parent
SHARED_HOTDOG = Path(os.environ.get("HOTDOG_DIR") or REPO.parent / "shared" / "data" / "hotdog")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Decoded-image caches and run stores of a test go to its own temporary folder."""
    monkeypatch.setenv("D2L_HELPERS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("D2L_RUNS_DIR", str(tmp_path / "runs"))


def write_image(path: Path, mode: str = "RGB", size=(40, 30), fmt: str | None = None,
                color=(200, 30, 30)) -> Path:
    """Write a small solid-colour image in ``mode`` (RGB, L, RGBA, CMYK, P)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, color)
    if mode == "RGBA":
        img = img.convert("RGBA")
        img.putalpha(0)  # fully transparent
    elif mode != "RGB":
        img = img.convert(mode)
    img.save(path, format=fmt)
    return path


def make_hotdog_tree(root: Path, per_class: int = 3, size=(40, 30)) -> Path:
    """A tiny folder in the book's layout with ``per_class`` JPEGs per split and class."""
    for split in ("train", "test"):
        for k, cls in enumerate(("hotdog", "not-hotdog")):
            for i in range(per_class):
                write_image(root / split / cls / f"{i:03d}.jpg", size=size,
                            color=(200, 40 + 100 * k, 20 * i))
    return root


@pytest.fixture
def tiny_hotdog(tmp_path) -> Path:
    return make_hotdog_tree(tmp_path / "hotdog")


def zip_tree(root: Path, top: str = "hotdog") -> bytes:
    """Zip ``root`` under a top-level folder ``top``, as the book's hotdog.zip is laid out."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                zf.write(p, f"{top}/{p.relative_to(root)}")
    return buf.getvalue()


@pytest.fixture
def http_server(tmp_path):
    """Serve ``tmp_path/www`` on 127.0.0.1; yields (www folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL nothing listens on: downloads from it fail at once, like offline."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="session")
def shared_hotdog() -> Path:
    if not (SHARED_HOTDOG / "train").is_dir():
        pytest.fail(f"The shared photos are missing at {SHARED_HOTDOG}; set HOTDOG_DIR.")
    return SHARED_HOTDOG


def solid(arr_shape, value) -> onp.ndarray:
    return onp.full(arr_shape, value, dtype=onp.uint8)


@pytest.fixture
def fake_model_zoo(tmp_path, http_server, monkeypatch):
    """A loopback model zoo serving a (randomly initialised) resnet18_v2 in the zoo's format."""
    www, base = http_server
    import mxnet as mx
    from mxnet.gluon.model_zoo import model_store, vision

    net = vision.resnet18_v2()
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 32, 32)))
    params = tmp_path / "resnet18_v2.params"
    net.save_parameters(str(params))
    sha1 = hashlib.sha1(params.read_bytes()).hexdigest()
    monkeypatch.setitem(model_store._model_sha1, "resnet18_v2", sha1)
    name = f"resnet18_v2-{sha1[:8]}"
    (www / "gluon" / "models").mkdir(parents=True)
    with zipfile.ZipFile(www / "gluon" / "models" / f"{name}.zip", "w") as zf:
        zf.write(params, f"{name}.params")
    monkeypatch.setenv("MXNET_GLUON_REPO", base)
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mxnet_home"))
    monkeypatch.delenv("D2L_BACKBONE", raising=False)
    return net


@pytest.fixture(params=["np", "nd"])
def array_mode(request):
    """Notebooks run in NumPy mode (``npx.set_np()``); plain Gluon code in ndarray mode."""
    from mxnet import npx

    if request.param == "np":
        npx.set_np()
    try:
        yield request.param
    finally:
        if request.param == "np":
            npx.reset_np()
