"""Where files go, and how they are written: the one home for folders and atomic writes.

============  ===================================================================
function      what
============  ===================================================================
cache_dir     ``$D2L_HELPERS_CACHE`` or the OS cache folder (downloads, decoded photos)
model_dir     ``$MXNET_HOME/models`` (default ``~/.mxnet/models``), as MXNet's model zoo
atomic_write  write a file under a temporary name in its folder, then rename it
atomic_dir    fill a folder under a temporary name, then rename it into place
clean_stale   remove ``.tmp-*`` leftovers of writes that a crash or kill interrupted
url_problem   None when a URL answers a HEAD request, else the reason (no download)
display_path  a path as a reader should see it: ``~/...`` or relative, no machine paths
============  ===================================================================

Every folder is read from the environment at call time, never at import time.

Example:
    >>> import os, tempfile
    >>> from d2l_helpers.paths import atomic_write
    >>> folder = tempfile.mkdtemp()
    >>> p = atomic_write(os.path.join(folder, "a.txt"), lambda tmp: open(tmp, "w").write("hi"))
    >>> open(p).read(), sorted(os.listdir(folder))
    ('hi', ['a.txt'])
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_PREFIX = ".tmp-"
STALE_SECONDS = 3600.0  # a temporary file this old belongs to a write that died


class PathSettingError(ValueError):
    """An environment variable names a folder that cannot be used."""


def _folder_from_env(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    path = Path(value).expanduser() if value else default
    if path.exists() and not path.is_dir():
        raise PathSettingError(
            f"{var}={value!r} names a file, not a folder. Point {var} at a folder "
            f"(it is created when missing), or unset it to use the default ({default}).")
    return path


def cache_dir() -> Path:
    """``$D2L_HELPERS_CACHE``, else the OS cache folder (e.g. ``~/.cache/d2l_helpers``).

    Raises `PathSettingError` naming the variable when it points at a file.

    Example:
        >>> saved = os.environ.get("D2L_HELPERS_CACHE")
        >>> os.environ["D2L_HELPERS_CACHE"] = "/tmp/d2l-cache-example"
        >>> cache_dir()
        PosixPath('/tmp/d2l-cache-example')
        >>> os.environ["D2L_HELPERS_CACHE"] = saved or ""  # as it was ("" counts as unset)
    """
    import pooch

    return _folder_from_env("D2L_HELPERS_CACHE", Path(pooch.os_cache("d2l_helpers")))


def model_dir() -> Path:
    """``$MXNET_HOME/models`` (default ``~/.mxnet/models``), where MXNet's model zoo looks."""
    home = _folder_from_env("MXNET_HOME", Path("~/.mxnet").expanduser())
    return home / "models"


def _chmod_like_new_file(path: str) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # mkstemp makes 0600; caches and run stores are shared


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``.

    Readers see the old file or the new one, never half of one; if ``write`` raises (or the
    process is killed) the temporary file is removed (or left as ``.tmp-*`` for
    `clean_stale`). Returns ``path`` as a `Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        _chmod_like_new_file(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Fill a temporary folder beside ``path``; on success it replaces ``path`` whole.

    A run or extraction that dies half-way leaves only a ``.tmp-*`` folder (removed by
    `clean_stale`), never a half-filled ``path``. An existing ``path`` is moved aside
    first and deleted after the new one is in place.

    Example:
        >>> target = Path(tempfile.mkdtemp()) / "run"
        >>> with atomic_dir(target) as tmp:
        ...     _ = (tmp / "a.txt").write_text("whole")
        >>> sorted(p.name for p in target.iterdir())
        ['a.txt']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + path.name + "-", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + path.name + "-old-", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def clean_stale(folder: str | os.PathLike, older_than: float = STALE_SECONDS) -> list[Path]:
    """Remove ``.tmp-*`` files and folders in ``folder`` older than ``older_than`` seconds.

    They are what a killed `atomic_write`/`atomic_dir` left behind; younger ones may belong to
    a write still under way in another process and are kept. Returns what was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now, removed = time.time(), []
    for p in folder.glob(TMP_PREFIX + "*"):
        try:
            if now - p.lstat().st_mtime < older_than:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            continue
    return removed


def url_problem(url: str, timeout: float = 3.0) -> str | None:
    """None when ``url`` answers a HEAD request, else why not. Downloads nothing.

    Only ever called by commands that are about fetching (``prefetch``), never on import or
    in `session.setup`.
    """
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except Exception as err:  # offline, DNS failure, HTTP error
        return f"{type(err).__name__}: {err}"


def display_path(path: str | os.PathLike, start: str | os.PathLike | None = None) -> str:
    """``path`` as a reader should see it in a notebook: relative to ``start`` (default: the
    working directory) when inside it, else with the home folder as ``~``, so committed
    outputs carry no machine paths.

    Example:
        >>> display_path(Path.home() / ".cache" / "x", start="/nonexistent/a/b/c")
        '~/.cache/x'
        >>> display_path("/srv/data/hotdog", start="/srv")
        'data/hotdog'
        >>> display_path("/work/shared/data/hotdog", start="/work/main/notebooks")
        '../../shared/data/hotdog'
    """
    path = Path(path).expanduser().absolute()
    start = Path(start).absolute() if start is not None else Path.cwd()
    rel = Path(os.path.relpath(path, start))
    # Inside start, or at most two levels up below a common top folder (../shared/data
    # beside the repository), never up to the file-system root.
    common = Path(os.path.commonpath([path, start]))
    if common != Path(common.anchor) and rel.parts[:3].count("..") <= 2 and ".." not in rel.parts[2:]:
        return str(rel)
    try:
        return str(Path("~") / path.relative_to(Path.home()))
    except ValueError:
        return str(path)
