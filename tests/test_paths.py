"""paths: folders from the environment, atomic writes, stale temporaries, display paths."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from d2l_helpers import paths
from d2l_helpers.paths import (
    PathSettingError,
    atomic_dir,
    atomic_write,
    cache_dir,
    clean_stale,
    display_path,
    model_dir,
    url_problem,
)


def _age(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_atomic_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    assert atomic_write(target, lambda tmp: Path(tmp).write_text("one")) == target
    atomic_write(target, lambda tmp: Path(tmp).write_text("two"))
    assert target.read_text() == "two" and os.listdir(target.parent) == ["a.txt"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()  # not mkstemp's 0600


def test_atomic_write_leaves_no_temporary_and_the_old_file_when_the_writer_raises(tmp_path):
    target = tmp_path / "a.npz"
    target.write_text("old")

    def half_then_fail(tmp):
        Path(tmp).write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["a.npz"]


def test_atomic_dir_replaces_a_folder_whole(tmp_path):
    target = tmp_path / "run"
    target.mkdir()
    (target / "stale.txt").write_text("from the last run")
    with atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(paths.TMP_PREFIX)
        assert not (target / "new.txt").exists()  # nothing visible until the block ends
        (tmp / "new.txt").write_text("whole")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert os.listdir(tmp_path) == ["run"]  # the old copy and the temporary are gone


def test_atomic_dir_keeps_the_old_folder_when_the_body_raises(tmp_path):
    target = tmp_path / "run"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("killed half-way")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    assert os.listdir(tmp_path) == ["run"]
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "new") as tmp:
        raise RuntimeError("killed before anything was written")
    assert not (tmp_path / "new").exists()


def test_clean_stale_removes_old_temporaries_only(tmp_path):
    old = 2 * paths.STALE_SECONDS
    old_file = tmp_path / ".tmp-x.npz"
    old_file.write_bytes(b"half")
    old_dir = tmp_path / ".tmp-hotdog-abc"
    (old_dir / "train").mkdir(parents=True)
    (tmp_path / ".tmp-y.npz").write_bytes(b"being written")  # fresh: may be a live write
    (tmp_path / "train-128-abc.npz").write_bytes(b"a finished cache")
    for p in (old_file, old_dir, tmp_path / "train-128-abc.npz"):
        _age(p, old)

    assert sorted(clean_stale(tmp_path)) == sorted([old_file, old_dir])
    assert sorted(os.listdir(tmp_path)) == [".tmp-y.npz", "train-128-abc.npz"]
    assert clean_stale(tmp_path / "missing") == []


def _file(tmp_path) -> Path:
    f = tmp_path / "a-file"
    f.write_text("not a folder")
    return f


def test_cache_dir_from_the_environment_and_its_error(tmp_path, monkeypatch):
    monkeypatch.setenv("D2L_HELPERS_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"  # read at call time; created when written to
    monkeypatch.setenv("D2L_HELPERS_CACHE", str(_file(tmp_path)))
    with pytest.raises(PathSettingError, match=r"D2L_HELPERS_CACHE=.*a-file.* names a file.*"
                                               r"Point D2L_HELPERS_CACHE at a folder"):
        cache_dir()


def test_model_dir_from_the_environment_and_its_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mx"))
    assert model_dir() == tmp_path / "mx" / "models"
    monkeypatch.setenv("MXNET_HOME", str(_file(tmp_path)))
    with pytest.raises(PathSettingError, match=r"MXNET_HOME=.* names a file.*unset it"):
        model_dir()
    monkeypatch.delenv("MXNET_HOME")
    assert model_dir() == Path("~/.mxnet/models").expanduser()


def test_display_path_hides_machine_paths(tmp_path, monkeypatch):
    assert display_path(tmp_path / "a" / "b.txt", start=tmp_path) == "a/b.txt"
    assert display_path("/srv/shared/data", start="/srv/main/notebooks") == "../../shared/data"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert display_path(tmp_path / "home" / ".cache" / "x", start="/elsewhere/a/b/c") \
        == "~/.cache/x"
    assert display_path("/opt/far/away", start="/srv/a/b/c") == "/opt/far/away"


def test_url_problem_asks_without_downloading(http_server, closed_port_url):
    www, base = http_server
    (www / "here.txt").write_text("x")
    assert url_problem(base + "here.txt") is None
    assert "404" in url_problem(base + "missing.txt")
    assert url_problem(closed_port_url + "x") is not None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
