"""The hot-dog data set: find it, check it, decode it once, and serve batches.

Where the photos come from, in order:

1. ``$HOTDOG_DIR``: an already-extracted folder in the book's layout
   (``train|test`` x ``hotdog|not-hotdog``). CI and the tests point it at the 998-photo
   stand-in in ``../shared/data/hotdog``.
2. The book's ``hotdog.zip`` (``d2l.DATA_URL + 'hotdog.zip'``, SHA-1 checked), downloaded
   with pooch into ``$D2L_HELPERS_CACHE`` (`paths.cache_dir`; default: the OS cache
   folder, e.g. ``~/.cache/d2l_helpers``) and extracted there atomically.

Decoding a JPEG costs more than a small convolutional net's forward pass on it, so
`HotdogImages` decodes every photo once (`decode_image`: EXIF orientation, colour and
16-bit modes, size limits), shrinks it to a fixed short side and keeps the pixels in memory
and in an ``.npz`` cache (`decoded_cache_file`) keyed by the files and the size.

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
import numbers
import os
import re
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as onp

from . import paths

# The book's constants (d2l.DATA_URL, d2l.DATA_HUB['hotdog']); tests check they still match d2l.
DATA_URL = "http://d2l-data.s3-accelerate.amazonaws.com/"
HOTDOG_URL = DATA_URL + "hotdog.zip"
HOTDOG_SHA1 = "fba480ffa8aa7e0febbb511d181409f899b9baa5"
SPLITS = ("train", "test")
CLASSES = ("hotdog", "not-hotdog")


def _pillow_reads_webp() -> bool:
    from PIL import features

    return bool(features.check("webp"))


# Photo formats Pillow reads (a GIF or multi-page TIFF gives its first frame); .webp only
# when this Pillow was built with WebP support.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff") + \
    ((".webp",) if _pillow_reads_webp() else ())
_NOT_PHOTOS = ("Thumbs.db", "desktop.ini")  # written by file browsers; skipped quietly
_CACHE_VERSION = 2  # 2: EXIF orientation applied, 16-bit images scaled

LAYOUT_HELP = ("Expected <root>/train/hotdog, <root>/train/not-hotdog, <root>/test/hotdog and "
               "<root>/test/not-hotdog, each holding the photos directly "
               f"({', '.join(IMAGE_EXTENSIONS)}; the layout of the book's hotdog.zip).")


class HotdogDataError(RuntimeError):
    """The hot-dog photos are missing, laid out wrongly, or a file cannot be read."""


class HotdogLayoutWarning(UserWarning):
    """Files in the class folders that are not read (not images, or in sub-folders)."""


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _scan_class_folder(folder: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(images read, files that are not images, images in sub-folders) of a class folder."""
    images, not_images, nested = [], [], []
    for p in folder.iterdir():
        if p.name.startswith(".") or p.name in _NOT_PHOTOS:
            continue
        if p.is_dir():
            nested += [q for q in p.rglob("*") if q.is_file() and _is_image(q)]
        elif _is_image(p):
            images.append(p)
        else:
            not_images.append(p)
    return sorted(images), sorted(not_images), sorted(nested)


def _list_images(folder: Path) -> list[Path]:
    return _scan_class_folder(folder)[0]


def _warn_skipped(root: Path, files: list[Path], what: str, fix: str) -> None:
    if files:
        shown = ", ".join(str(p.relative_to(root)) for p in files[:3])
        more = f" and {len(files) - 3} more" if len(files) > 3 else ""
        warnings.warn(f"{len(files)} {what} in {root} are not read: {shown}{more}. {fix}",
                      HotdogLayoutWarning, stacklevel=2)  # one location: shown once


def check_layout(root: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Check the book's layout under ``root`` and count the photos per split and class.

    Raises `HotdogDataError` that says what was found and what is expected. Files in a class
    folder that are not images by extension (see ``IMAGE_EXTENSIONS``), and images in
    sub-folders of a class folder, are not read: a `HotdogLayoutWarning` names them and
    says what to do.
    """
    root = Path(root)
    if not root.is_dir():
        raise HotdogDataError(f"Hot-dog folder {root} does not exist. {LAYOUT_HELP}")
    counts: dict[str, dict[str, int]] = {}
    problems, not_images, nested = [], [], []
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
            images, others, deeper = _scan_class_folder(cdir)
            not_images += others
            nested += deeper
            if not images:
                problems.append(f"class folder {cdir} holds no images "
                                f"({', '.join(IMAGE_EXTENSIONS)})")
            counts[split][cls] = len(images)
    if problems:
        raise HotdogDataError("Bad hot-dog folder layout:\n  - " + "\n  - ".join(problems)
                              + "\n" + LAYOUT_HELP)
    _warn_skipped(root, not_images, "files that are not images by extension",
                  f"Convert them to JPEG or PNG ({', '.join(IMAGE_EXTENSIONS)} are read), "
                  "or move them out of the class folders.")
    _warn_skipped(root, nested, "images in sub-folders of class folders",
                  "Only photos directly in <split>/<class>/ are read: move them up into "
                  "their class folder.")
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
                with paths.atomic_dir(target) as tmp:
                    zf.extractall(tmp)
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

    folder = Path(cache) if cache is not None else paths.cache_dir() / "data"
    folder.mkdir(parents=True, exist_ok=True)
    paths.clean_stale(folder)  # half-extracted folders of killed runs
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


def hotdog_dir_from_env() -> Path | None:
    """``$HOTDOG_DIR`` as a checked folder, or None when the variable is unset or empty.

    Raises `HotdogDataError` naming the variable when its folder is not in the book's layout.

    Example:
        >>> saved = os.environ.pop("HOTDOG_DIR", None)
        >>> hotdog_dir_from_env() is None
        True
        >>> os.environ["HOTDOG_DIR"] = "/no/such/folder"
        >>> hotdog_dir_from_env()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        d2l_helpers.data.HotdogDataError: HOTDOG_DIR='/no/such/folder': ... does not exist. ...
        >>> os.environ["HOTDOG_DIR"] = saved or ""  # as it was ("" counts as unset)
    """
    env = os.environ.get("HOTDOG_DIR")
    if not env:
        return None
    root = Path(env).expanduser()
    try:
        check_layout(root)
    except HotdogDataError as err:
        raise HotdogDataError(
            f"HOTDOG_DIR={env!r}: {err}\nPoint HOTDOG_DIR at the folder that holds train/ and "
            "test/, or unset it to download the book's hotdog.zip.") from None
    return root


def get_hotdog_dir() -> Path:
    """``$HOTDOG_DIR`` when set (layout checked), else the downloaded book data set."""
    return hotdog_dir_from_env() or download_extract_hotdog()


def describe_source(root: str | os.PathLike) -> str:
    """One line naming the data set: the book's (2000 + 800 photos) or another folder.

    The folder is shown relative to the working folder or under ``~`` (`paths.display_path`),
    so a notebook's committed output names no machine path."""
    counts = check_layout(root)
    n_train, n_test = sum(counts["train"].values()), sum(counts["test"].values())
    if (n_train, n_test) == (2000, 800):
        kind = "the book's hotdog.zip"
    elif (n_train, n_test) == (498, 500):
        kind = "stand-in photos (Food-101 hot dog / not hot dog), not the book's set"
    else:
        kind = "a local folder"
    return f"{kind}: {paths.display_path(root)} ({n_train} train / {n_test} test)"


# ---------------------------------------------------------------- decoding

def _bomb_error(name: str, err: Exception) -> HotdogDataError:
    from PIL import Image

    found = re.search(r"\((\d+) pixels\)", str(err))
    pixels = f"{int(found.group(1)):,}" if found else "too many"
    return HotdogDataError(
        f"{name} has {pixels} pixels, over Pillow's decompression-bomb limit of "
        f"{Image.MAX_IMAGE_PIXELS:,} (PIL.Image.MAX_IMAGE_PIXELS). If it is a genuine photo, "
        "shrink it (a few megapixels is plenty here), or raise the limit before decoding: "
        "import PIL.Image; PIL.Image.MAX_IMAGE_PIXELS = <more pixels>.")


def _to_8bit(img):
    """Wide single-channel modes as 8-bit ``L``: 16-bit ranges /257, floats 0.0-1.0 x255."""
    from PIL import Image

    scale = 255.0 if img.mode == "F" else 1 / 257
    values = onp.nan_to_num(onp.asarray(img, dtype=onp.float32)) * scale
    return Image.fromarray(onp.clip(onp.rint(values), 0, 255).astype(onp.uint8))


def decode_image(source: bytes | bytearray | memoryview | BinaryIO, name: str | os.PathLike,
                 short_side: int | None = None) -> onp.ndarray:
    """Decode one photo (its bytes, or a binary file object) to RGB ``uint8`` (H, W, 3).

    ``name`` (a file name or path) is what every error names, e.g. an upload's file name.

    * EXIF orientation is applied, so a phone photo stored sideways comes out upright.
    * Colour modes become RGB: grayscale, palette and CMYK are converted; transparency
      (RGBA, LA, PA, palette) is laid on white.
    * Wide modes become 8-bit: 16-bit (``I;16``, ``I;16B``, ... and ``I``, which Pillow
      uses for 16-bit PGM files) are divided by 257, so 0-65535 maps onto 0-255 (mid-gray
      32768 -> 128); 32-bit float (``F``) is taken as 0.0-1.0 and multiplied by 255.
      Out-of-range values are clipped.
    * With ``short_side`` the image is shrunk (never enlarged) so its shorter side has that
      many pixels.

    An empty or undecodable file, or one over Pillow's decompression-bomb limit
    (``PIL.Image.MAX_IMAGE_PIXELS``), raises `HotdogDataError` naming ``name`` and the fix.

    Example:
        >>> from PIL import Image
        >>> buf = io.BytesIO(); Image.new("RGB", (40, 30), (200, 30, 30)).save(buf, "PNG")
        >>> decode_image(buf.getvalue(), "red.png", short_side=15).shape
        (15, 20, 3)
        >>> decode_image(b"", "upload.jpg")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        d2l_helpers.data.HotdogDataError: upload.jpg is an empty file (0 bytes). ...
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    name = str(name)
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        start = stream.tell()
        if not stream.read(1):
            raise HotdogDataError(f"{name} is an empty file (0 bytes). Delete or replace it.")
        stream.seek(start)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(stream)
        with img:
            if short_side is not None:
                img.draft("RGB", (short_side, short_side))  # fast JPEG DCT down-scaling
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I", "F") or img.mode.startswith("I;16"):
                img = _to_8bit(img)
            if img.mode in ("RGBA", "LA", "PA", "P"):
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
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise _bomb_error(name, err) from err
    except UnidentifiedImageError as err:  # Pillow's text names the file object, not the file
        raise HotdogDataError(
            f"Cannot decode image {name}: not an image format Pillow can read. Delete or "
            "replace the file (it may be another kind of file, or damaged).") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise HotdogDataError(
            f"Cannot decode image {name}: {err}. Delete or replace the file "
            "(it may be truncated or not an image).") from err


def read_image(path: str | os.PathLike, short_side: int | None = None) -> onp.ndarray:
    """Decode the photo at ``path`` with `decode_image` (see there for the rules).

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> path = Path(tempfile.mkdtemp()) / "gray.png"
        >>> Image.new("L", (40, 30), 128).save(path)
        >>> img = read_image(path); img.shape, img[0, 0].tolist()
        ((30, 40, 3), [128, 128, 128])
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return decode_image(f, path, short_side)
    except OSError as err:  # missing or unreadable file (decode errors are HotdogDataError)
        raise HotdogDataError(f"Cannot read image {path}: {err}. Check that the file exists "
                              "and is readable.") from err


def _check_per_class(name: str, value: int | None) -> int | None:
    """``value`` when it is None or an int >= 1, else a ValueError naming ``name``."""
    ok = value is None or (isinstance(value, numbers.Integral) and not isinstance(value, bool)
                           and value >= 1)
    if not ok:
        raise ValueError(f"{name} must be None (every photo) or an int >= 1 (that many photos "
                         f"per class), not {value!r}.")
    return None if value is None else int(value)


def _select_files(root: Path, split: str, per_class: int | None) -> list[tuple[Path, int]]:
    items = []
    for label, cls in enumerate(CLASSES):
        files = _list_images(root / split / cls)
        if per_class is not None:
            files = files[:per_class]
        items += [(p, label) for p in files]
    return items


def _cache_file(split: str, short_side: int | None, items: Sequence[tuple[Path, int]]) -> Path:
    h = hashlib.sha1(f"v{_CACHE_VERSION}:{short_side}".encode())
    for path, label in items:
        st = path.stat()
        h.update(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{label}\n".encode())
    return paths.cache_dir() / "decoded" / f"{split}-{short_side}-{h.hexdigest()[:20]}.npz"


def decoded_cache_file(root: str | os.PathLike, split: str, short_side: int | None = None,
                       per_class: int | None = None) -> Path:
    """The ``.npz`` file `HotdogImages` keeps this selection's decoded pixels in.

    Its name is keyed by the files (path, size, modification time) and ``short_side``, so
    any change to the photos gives a new file. Nothing is decoded or written.

    Example:
        >>> decoded_cache_file(get_hotdog_dir(), "test", 128, per_class=50).suffix
        '.npz'
    """
    _check_split(split)
    per_class = _check_per_class("per_class", per_class)
    return _cache_file(split, short_side, _select_files(Path(root), split, per_class))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")


class HotdogImages:
    """One split of the hot-dog photos, decoded once and held in memory.

    Behaves like ``gluon.data.vision.ImageFolderDataset`` (``ds[i] -> (image, label)`` with
    an HWC ``uint8`` image, ``ds.synsets``, ``transform_first``) but decodes each photo once,
    shrunk to ``short_side``, and caches the pixels on disk in `decoded_cache_file`
    (``cache=False`` to skip). ``per_class`` keeps the first that many photos of each class.

    Example:
        >>> ds = HotdogImages(get_hotdog_dir(), "train", short_side=256)
        >>> img, label = ds[0]; img.shape[2], ds.synsets[label]
        (3, 'hotdog')
    """

    def __init__(self, root: str | os.PathLike, split: str, short_side: int | None = None,
                 per_class: int | None = None, cache: bool = True):
        _check_split(split)
        per_class = _check_per_class("per_class", per_class)
        self.root, self.split, self.short_side = Path(root), split, short_side
        check_layout(self.root)
        self.synsets = list(CLASSES)
        self.items = _select_files(self.root, split, per_class)
        # The cache folder is checked here, before the (slow) decoding.
        self.cache_file = _cache_file(split, short_side, self.items) if cache else None
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
            warnings.warn(f"Ignoring unreadable cache {self.cache_file} ({err}); rebuilding it.",
                          stacklevel=2)
            self.cache_file.unlink(missing_ok=True)
            return None
        offsets = onp.concatenate([[0], onp.cumsum(sizes)])
        return [pixels[offsets[i]:offsets[i + 1]].reshape(shapes[i]) for i in range(len(shapes))]

    def _save_cache(self) -> None:
        shapes = onp.array([im.shape for im in self._images], dtype=onp.int64).reshape(-1, 3)
        pixels = (onp.concatenate([im.ravel() for im in self._images]) if self._images
                  else onp.zeros(0, onp.uint8))
        paths.clean_stale(self.cache_file.parent)  # leftovers of killed writes
        paths.atomic_write(self.cache_file, lambda tmp: onp.savez(tmp, pixels=pixels,
                                                                  shapes=shapes))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int):
        from . import arrays

        return arrays.array(self._images[idx], dtype="uint8"), int(self.labels[idx])

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
    ``train_per_class``/``test_per_class`` (None or an int >= 1) keep that many photos per
    class. ``mean``/``std`` default to ImageNet's; pass the backbone's own.
    """
    from mxnet import gluon

    from .backbones import IMAGENET_MEAN, IMAGENET_STD
    from .transforms import test_augs, train_augs

    train_per_class = _check_per_class("train_per_class", train_per_class)
    test_per_class = _check_per_class("test_per_class", test_per_class)
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
