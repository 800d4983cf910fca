"""The hot-dog data set: find it, check it, decode it once, and serve batches.

Where the photos come from, in order:

1. ``$HOTDOG_DIR``: an already-extracted folder in the book's layout
   (``train|test`` x ``hotdog|not-hotdog``). CI and the tests point it at the 998-photo
   stand-in in ``../shared/data/hotdog``.
2. The book's ``hotdog.zip`` (``d2l.DATA_URL + 'hotdog.zip'``, SHA-1 checked), downloaded
   with pooch into ``$D2L_HELPERS_CACHE`` (default: the OS cache folder, e.g.
   ``~/.cache/d2l_helpers``) and extracted there atomically.

Decoding a JPEG costs more than a small convolutional net's forward pass on it, so
`HotdogImages` decodes every photo once, shrinks it to a fixed short side and keeps the
pixels in memory and in an ``.npz`` cache keyed by the files and the size.

Example:
    >>> from d2l_helpers import data
    >>> root = data.get_hotdog_dir()                 # $HOTDOG_DIR or the download
    >>> data.check_layout(root)["train"]
    {'hotdog': 249, 'not-hotdog': 249}
    >>> train_iter, test_iter = data.load_data_hotdog(32, image_size=96, resize=110)
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as onp

# The book's constants (d2l.DATA_URL, d2l.DATA_HUB['hotdog']); tests check they still match d2l.
DATA_URL = "http://d2l-data.s3-accelerate.amazonaws.com/"
HOTDOG_URL = DATA_URL + "hotdog.zip"
HOTDOG_SHA1 = "fba480ffa8aa7e0febbb511d181409f899b9baa5"
SPLITS = ("train", "test")
CLASSES = ("hotdog", "not-hotdog")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
_CACHE_VERSION = 1

LAYOUT_HELP = ("Expected <root>/train/hotdog, <root>/train/not-hotdog, <root>/test/hotdog and "
               "<root>/test/not-hotdog, each holding .jpg/.png photos (the layout of the book's "
               "hotdog.zip).")


class HotdogDataError(RuntimeError):
    """The hot-dog photos are missing, laid out wrongly, or a file cannot be read."""


def cache_dir() -> Path:
    """Where downloads and decoded caches go: ``$D2L_HELPERS_CACHE`` or the OS cache folder."""
    import pooch

    return Path(os.environ.get("D2L_HELPERS_CACHE") or pooch.os_cache("d2l_helpers"))


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def check_layout(root: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Check the book's layout under ``root`` and count the photos per split and class.

    Raises `HotdogDataError` that says what was found and what is expected.
    """
    root = Path(root)
    if not root.is_dir():
        raise HotdogDataError(f"Hot-dog folder {root} does not exist. {LAYOUT_HELP}")
    counts: dict[str, dict[str, int]] = {}
    problems = []
    for split in SPLITS:
        sdir = root / split
        if not sdir.is_dir():
            found = sorted(p.name for p in root.iterdir() if p.is_dir())
            problems.append(f"missing folder {sdir} (found sub-folders: {found or 'none'})")
            continue
        found = sorted(p.name for p in sdir.iterdir() if p.is_dir())
        extra = sorted(set(found) - set(CLASSES))
        if extra:
            problems.append(f"{sdir} has unexpected class folders {extra} "
                            f"(found {found}, expected exactly {list(CLASSES)})")
        counts[split] = {}
        for cls in CLASSES:
            cdir = sdir / cls
            if not cdir.is_dir():
                problems.append(f"missing class folder {cdir} (found {found})")
                continue
            n = len(_list_images(cdir))
            if n == 0:
                problems.append(f"class folder {cdir} holds no .jpg/.png images")
            counts[split][cls] = n
    if problems:
        raise HotdogDataError("Bad hot-dog folder layout:\n  - " + "\n  - ".join(problems)
                              + "\n" + LAYOUT_HELP)
    return counts


class _AtomicUnzip:
    """pooch processor: test the zip, extract into a temporary folder, then rename it.

    pooch's own ``Unzip`` extracts in place, so an interrupted extraction leaves a
    half-filled folder that later runs take as complete. Here the folder appears whole or
    not at all, and a corrupt or truncated zip is deleted with a clear error.
    """

    def __init__(self, extract_dir: str):
        self.extract_dir = extract_dir

    def __call__(self, fname: str, action: str, pooch_obj) -> str:
        target = Path(fname).parent / self.extract_dir
        if target.is_dir() and action == "fetch":
            return str(target)
        try:
            with zipfile.ZipFile(fname) as zf:
                bad = zf.testzip()
                if bad is not None:
                    raise zipfile.BadZipFile(f"member {bad} is corrupt")
                tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
                try:
                    zf.extractall(tmp)
                    if target.exists():
                        shutil.rmtree(target)
                    os.replace(tmp, target)
                finally:
                    if tmp.exists():
                        shutil.rmtree(tmp)
        except (zipfile.BadZipFile, EOFError, OSError) as err:
            Path(fname).unlink(missing_ok=True)
            raise HotdogDataError(
                f"{fname} is not a valid zip archive ({err}); it was deleted. "
                "Run again to download it afresh.") from err
        return str(target)


def download_extract_hotdog(url: str = HOTDOG_URL, sha1: str = HOTDOG_SHA1,
                            cache: str | os.PathLike | None = None,
                            progressbar: bool = True) -> Path:
    """Download the book's ``hotdog.zip`` (SHA-1 checked), extract it, return the data folder.

    A cached, verified copy is reused without network access. pooch writes the download to a
    temporary file and moves it into place only after the hash matched.
    """
    import pooch
    import requests

    folder = Path(cache) if cache is not None else cache_dir() / "data"
    folder.mkdir(parents=True, exist_ok=True)
    zip_path = folder / "hotdog.zip"
    try:
        extracted = pooch.retrieve(url, known_hash=f"sha1:{sha1}", fname="hotdog.zip",
                                   path=folder, processor=_AtomicUnzip("hotdog"),
                                   progressbar=progressbar)
    except requests.exceptions.RequestException as err:
        raise HotdogDataError(
            f"Could not download {url} ({type(err).__name__}) and no verified copy is cached "
            f"at {zip_path}.\nTo work offline, either set HOTDOG_DIR to an extracted folder "
            f"({LAYOUT_HELP}) or copy hotdog.zip (SHA-1 {sha1}) to {zip_path}.") from err
    except ValueError as err:  # pooch's hash mismatch
        if "hash" not in str(err).lower():
            raise
        raise HotdogDataError(
            f"The SHA-1 of hotdog.zip from {url} does not match {sha1}; the file was not kept "
            f"(pooch deletes a download that fails its hash). Details: {err}") from err
    root = Path(extracted)
    if (root / "hotdog").is_dir() and not (root / "train").is_dir():
        root = root / "hotdog"  # the book's zip holds a top-level hotdog/ folder
    check_layout(root)
    return root


def get_hotdog_dir() -> Path:
    """``$HOTDOG_DIR`` when set (layout checked), else the downloaded book data set."""
    env = os.environ.get("HOTDOG_DIR")
    if env:
        root = Path(env).expanduser()
        try:
            check_layout(root)
        except HotdogDataError as err:
            raise HotdogDataError(f"HOTDOG_DIR={env}: {err}") from None
        return root
    return download_extract_hotdog()


def describe_source(root: str | os.PathLike) -> str:
    """One line naming the data set: the book's (2000 + 800 photos) or another folder."""
    counts = check_layout(root)
    n_train, n_test = sum(counts["train"].values()), sum(counts["test"].values())
    if (n_train, n_test) == (2000, 800):
        kind = "the book's hotdog.zip"
    elif (n_train, n_test) == (498, 500):
        kind = "stand-in photos (Food-101 hot dog / not hot dog), not the book's set"
    else:
        kind = "a local folder"
    return f"{kind}: {root} ({n_train} train / {n_test} test)"


# ---------------------------------------------------------------- decoding

def read_image(path: str | os.PathLike, short_side: int | None = None) -> onp.ndarray:
    """Decode one photo to an RGB ``uint8`` array of shape (H, W, 3).

    Grayscale, palette, CMYK and RGBA files are converted to RGB (transparency is laid on
    white). With ``short_side`` the image is shrunk (never enlarged) so its shorter side has
    that many pixels. A file that is empty or cannot be decoded raises `HotdogDataError`
    naming it.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise HotdogDataError(f"{path} is an empty file (0 bytes). Delete or replace it.")
        with Image.open(path) as img:
            if short_side is not None:
                img.draft("RGB", (short_side, short_side))  # fast JPEG DCT down-scaling
            if img.mode in ("RGBA", "LA", "P"):
                img = img.convert("RGBA")
                background = Image.new("RGBA", img.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, img)
            img = img.convert("RGB")
            if short_side is not None and min(img.size) > short_side:
                w, h = img.size
                scale = short_side / min(w, h)
                img = img.resize((max(short_side, round(w * scale)),
                                  max(short_side, round(h * scale))), Image.BILINEAR)
            return onp.asarray(img, dtype=onp.uint8).copy()
    except HotdogDataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise HotdogDataError(
            f"Cannot decode image {path}: {err}. Delete or replace the file "
            "(it may be truncated or not an image).") from err


def _select_files(root: Path, split: str, per_class: int | None) -> list[tuple[Path, int]]:
    items = []
    for label, cls in enumerate(CLASSES):
        files = _list_images(root / split / cls)
        if per_class is not None:
            files = files[:per_class]
        items += [(p, label) for p in files]
    return items


def _cache_key(items: Sequence[tuple[Path, int]], short_side: int | None) -> str:
    h = hashlib.sha1(f"v{_CACHE_VERSION}:{short_side}".encode())
    for path, label in items:
        st = path.stat()
        h.update(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{label}\n".encode())
    return h.hexdigest()[:20]


def _save_npz_atomic(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            onp.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class HotdogImages:
    """One split of the hot-dog photos, decoded once and held in memory.

    Behaves like ``gluon.data.vision.ImageFolderDataset`` (``ds[i] -> (image, label)`` with
    an HWC ``uint8`` image, ``ds.synsets``, ``transform_first``) but decodes each photo once,
    shrunk to ``short_side``, and caches the pixels on disk (``cache=False`` to skip).

    Example:
        >>> ds = HotdogImages(get_hotdog_dir(), "train", short_side=256)
        >>> img, label = ds[0]; img.shape[2], ds.synsets[label]
        (3, 'hotdog')
    """

    def __init__(self, root: str | os.PathLike, split: str, short_side: int | None = None,
                 per_class: int | None = None, cache: bool = True):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        self.root, self.split, self.short_side = Path(root), split, short_side
        check_layout(self.root)
        self.synsets = list(CLASSES)
        self.items = _select_files(self.root, split, per_class)
        key = _cache_key(self.items, short_side)
        self.cache_file = cache_dir() / "decoded" / f"{split}-{short_side}-{key}.npz" if cache else None
        self._images = self._load_cached() if cache else None
        if self._images is None:
            self._images = [read_image(p, short_side) for p, _ in self.items]
            if cache:
                self._save_cache()
        self.labels = onp.array([label for _, label in self.items], dtype=onp.int32)

    def _load_cached(self) -> list[onp.ndarray] | None:
        if not self.cache_file.exists():
            return None
        try:
            with onp.load(self.cache_file) as z:
                pixels, shapes = z["pixels"], z["shapes"]
            sizes = shapes.prod(axis=1)
            if len(shapes) != len(self.items) or sizes.sum() != pixels.size:
                raise ValueError("size mismatch")
        except Exception as err:  # corrupt cache: rebuild it, never trust it
            warnings.warn(f"Ignoring unreadable cache {self.cache_file} ({err}); rebuilding it.")
            self.cache_file.unlink(missing_ok=True)
            return None
        offsets = onp.concatenate([[0], onp.cumsum(sizes)])
        return [pixels[offsets[i]:offsets[i + 1]].reshape(shapes[i]) for i in range(len(shapes))]

    def _save_cache(self) -> None:
        shapes = onp.array([im.shape for im in self._images], dtype=onp.int64).reshape(-1, 3)
        pixels = (onp.concatenate([im.ravel() for im in self._images]) if self._images
                  else onp.zeros(0, onp.uint8))
        _save_npz_atomic(self.cache_file, pixels=pixels, shapes=shapes)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int):
        from mxnet import nd, np, npx

        img = self._images[idx]
        return (np.array(img, dtype="uint8") if npx.is_np_array() else nd.array(img, dtype="uint8"),
                int(self.labels[idx]))

    def transform_first(self, fn):
        """Apply ``fn`` to the image of each sample (like Gluon's ``Dataset.transform_first``)."""
        from mxnet.gluon.data import SimpleDataset

        return SimpleDataset(self).transform_first(fn)


def load_data_hotdog(batch_size: int, image_size: int = 224, resize: int = 256, *,
                     root: str | os.PathLike | None = None, decode_size: int | None = None,
                     train_per_class: int | None = None, test_per_class: int | None = None,
                     mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                     num_workers: int = 0):
    """Train and test ``DataLoader`` s with the book's augmentations, like ``d2l.load_data_*``.

    ``decode_size`` is the short side the photos are decoded to once (default ``resize``).
    ``mean``/``std`` default to ImageNet's; pass the backbone's own.
    """
    from mxnet import gluon

    from .transforms import IMAGENET_MEAN, IMAGENET_STD, test_augs, train_augs

    root = Path(root) if root is not None else get_hotdog_dir()
    decode_size = decode_size or resize
    mean, std = mean or IMAGENET_MEAN, std or IMAGENET_STD
    train = HotdogImages(root, "train", decode_size, train_per_class)
    test = HotdogImages(root, "test", decode_size, test_per_class)
    train_iter = gluon.data.DataLoader(train.transform_first(train_augs(image_size, mean, std)),
                                       batch_size, shuffle=True, num_workers=num_workers)
    test_iter = gluon.data.DataLoader(test.transform_first(test_augs(image_size, resize, mean, std)),
                                      batch_size, num_workers=num_workers)
    return train_iter, test_iter
