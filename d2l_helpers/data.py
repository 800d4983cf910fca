"""The photos: the hot-dog set or any folder of classes; find, check, decode once, serve.

Two kinds of folder are read:

* **the hot-dog set** (`check_layout`, `HotdogImages`, `load_data_hotdog`): the book's
  layout ``train|test`` x ``hotdog|not-hotdog``, found as below;
* **any ImageFolder-style tree** (`scan_folder`, `ImageFolder`, `load_data_folder`): either
  ``<root>/<split>/<class>/*`` with ``train`` and ``test`` holding the same N >= 2 class
  folders, or ``<root>/<class>/*`` without splits, which is split into train and test per
  class (stratified) by a seeded shuffle (`stratified_split`; the fraction and the seed
  are recorded with every run). Classes are the folder names in sorted order, as in
  Gluon's ``ImageFolderDataset``. The hot-dog set is one such tree with N = 2.

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
    >>> tree = data.scan_folder(root)                # the same photos as a generic tree
    >>> tree.classes, tree.counts()["test"]
    (('hotdog', 'not-hotdog'), {'hotdog': 250, 'not-hotdog': 250})
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

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
FOLDER_HELP = ("Expected either <root>/train/<class>/ and <root>/test/<class>/ with the same "
               "class folders in both, or <root>/<class>/ without train/ and test/ (then split "
               "into train and test per class, seeded); at least 2 class folders, each holding "
               f"its photos directly ({', '.join(IMAGE_EXTENSIONS)}).")
SPLIT_LAYOUT, FLAT_LAYOUT = "train/test folders", "class folders only"


class ImageDataError(RuntimeError):
    """Photos are missing, laid out wrongly, or a file cannot be read.

    The message says what was found, what is expected and how to fix it. ``HotdogDataError``
    is the same class, under the name the hot-dog set's code and tests use.
    """


HotdogDataError = ImageDataError


class ImageLayoutWarning(UserWarning):
    """Files in the class folders that are not read (not images, or in sub-folders).

    ``HotdogLayoutWarning`` is the same class."""


HotdogLayoutWarning = ImageLayoutWarning


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _visible(p: Path) -> bool:
    return not p.name.startswith(".") and p.name not in _NOT_PHOTOS and p.name != "__MACOSX"


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and _visible(p))


def _scan_class_folder(folder: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(images read, files that are not images, images in sub-folders) of a class folder."""
    images, not_images, nested = [], [], []
    for p in folder.iterdir():
        if not _visible(p):
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
                      ImageLayoutWarning, stacklevel=3)  # one location: shown once


class _Scan:
    """What a layout check collects: problems, skipped files, photos per split and class."""

    def __init__(self, root: Path):
        self.root = root
        self.problems: list[str] = []
        self.not_images: list[Path] = []
        self.nested: list[Path] = []
        self.loose: list[Path] = []
        self.files: dict[str, dict[str, list[Path]]] = {}

    def class_folder(self, cdir: Path, min_images: int = 1) -> list[Path]:
        images, others, deeper = _scan_class_folder(cdir)
        self.not_images += others
        self.nested += deeper
        if not images:
            self.problems.append(f"class folder {cdir} holds no images "
                                 f"({', '.join(IMAGE_EXTENSIONS)})")
        elif len(images) < min_images:
            self.problems.append(f"class folder {cdir} holds {len(images)} image; a train/test "
                                 f"split needs at least {min_images} per class")
        return images

    def loose_images(self, folder: Path) -> None:
        self.loose += sorted(p for p in folder.iterdir()
                             if p.is_file() and _visible(p) and _is_image(p))

    def fail_or_warn(self, title: str, help_text: str) -> None:
        if self.problems:
            raise ImageDataError(f"{title}:\n  - " + "\n  - ".join(self.problems)
                                 + "\n" + help_text)
        _warn_skipped(self.root, self.not_images, "files that are not images by extension",
                      f"Convert them to JPEG or PNG ({', '.join(IMAGE_EXTENSIONS)} are read), "
                      "or move them out of the class folders.")
        _warn_skipped(self.root, self.nested, "images in sub-folders of class folders",
                      "Only photos directly in <split>/<class>/ are read: move them up into "
                      "their class folder.")
        _warn_skipped(self.root, self.loose, "images outside any class folder",
                      "Only photos inside a class folder are read: move each into the folder "
                      "of its class.")


def _check_split_tree(root: Path, expected: Sequence[str] | None, help_text: str,
                      title: str) -> tuple[tuple[str, ...], dict[str, dict[str, list[Path]]]]:
    """The classes and photos of ``<root>/<split>/<class>/``; raises `ImageDataError`.

    ``expected``: the exact class folders (the hot-dog set), or None for "the folders found",
    which must be the same in every split and at least two.
    """
    scan = _Scan(root)
    found_in: dict[str, list[str]] = {}
    for split in SPLITS:
        sdir = root / split
        if not sdir.is_dir():
            found = _subfolders(root)
            scan.problems.append(f"missing folder {sdir} (found sub-folders: {found or 'none'})")
            continue
        found_in[split] = _subfolders(sdir)
        if expected is None:
            scan.loose_images(sdir)
    if expected is not None:
        classes = tuple(expected)
        for split, found in found_in.items():
            extra = sorted(set(found) - set(classes))
            if extra:
                scan.problems.append(f"{root / split} has unexpected class folders {extra} "
                                     f"(found {found}, expected exactly {list(classes)})")
    else:
        classes = tuple(sorted(set().union(*found_in.values()))) if found_in else ()
        for split, found in found_in.items():
            if not found:
                scan.problems.append(f"{root / split} has no class folders (one folder per "
                                     "class, named by its class, holding its photos)")
        if len(found_in) == len(SPLITS):
            for split, other in (SPLITS, SPLITS[::-1]):
                only = sorted(set(found_in[split]) - set(found_in[other]))
                for cls in only:
                    scan.problems.append(
                        f"class {cls!r} is in {split}/ but not in {other}/ (missing folder "
                        f"{root / other / cls}): every class needs photos in both")
        if len(classes) == 1:
            scan.problems.append(f"only one class folder ({classes[0]!r}) under {root}: a "
                                 "classifier needs at least 2 classes, one folder each")
    for split, found in found_in.items():
        scan.files[split] = {}
        for cls in classes:
            cdir = root / split / cls
            if not cdir.is_dir():
                if expected is not None:
                    scan.problems.append(f"missing class folder {cdir} (found {found})")
                continue
            scan.files[split][cls] = scan.class_folder(cdir)
    scan.fail_or_warn(title, help_text)
    return classes, scan.files


def check_layout(root: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Check the book's layout under ``root`` and count the photos per split and class.

    Raises `HotdogDataError` that says what was found and what is expected. Files in a class
    folder that are not images by extension (see ``IMAGE_EXTENSIONS``), and images in
    sub-folders of a class folder, are not read: a `HotdogLayoutWarning` names them and
    says what to do. (Any other tree of classes: `scan_folder`.)
    """
    root = Path(root)
    if not root.is_dir():
        raise HotdogDataError(f"Hot-dog folder {root} does not exist. {LAYOUT_HELP}")
    _, files = _check_split_tree(root, CLASSES, LAYOUT_HELP, "Bad hot-dog folder layout")
    return {split: {cls: len(f) for cls, f in by_class.items()} for split, by_class in files.items()}


# ---------------------------------------------------------------- any tree of class folders

def _check_fraction(test_fraction: float) -> float:
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real) \
            or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be a number between 0 and 1 (the share of each "
                         f"class's photos kept for testing), not {test_fraction!r}.")
    return float(test_fraction)


def stratified_split(files: dict[str, Sequence[Path]], test_fraction: float = 0.2,
                     seed: int = 0) -> dict[str, dict[str, list[Path]]]:
    """Split each class's photos into train and test: ``round(n * test_fraction)`` photos
    (at least 1, at most n - 1) go to test, drawn by a seeded shuffle.

    Each class is shuffled by its own generator, seeded by ``seed`` and the class name, so a
    class's split does not change when other classes are added or removed. Both lists come
    back sorted by file name.

    Example:
        >>> files = {"a": [Path(f"a{i}.jpg") for i in range(10)], "b": [Path("b0.jpg"), Path("b1.jpg")]}
        >>> split = stratified_split(files, 0.2, seed=0)
        >>> {s: {c: len(v) for c, v in by.items()} for s, by in split.items()}
        {'train': {'a': 8, 'b': 1}, 'test': {'a': 2, 'b': 1}}
        >>> split == stratified_split(files, 0.2, seed=0) != stratified_split(files, 0.2, seed=1)
        True
    """
    import zlib

    test_fraction = _check_fraction(test_fraction)
    out: dict[str, dict[str, list[Path]]] = {"train": {}, "test": {}}
    for cls, paths_ in files.items():
        ordered = sorted(paths_)
        n = len(ordered)
        if n < 2:
            raise ImageDataError(f"class {cls!r} has {n} photo(s); a train/test split needs "
                                 "at least 2 per class")
        n_test = min(max(1, round(n * test_fraction)), n - 1)
        rng = onp.random.default_rng([int(seed), zlib.crc32(cls.encode())])
        test_idx = set(rng.permutation(n)[:n_test].tolist())
        out["test"][cls] = [p for i, p in enumerate(ordered) if i in test_idx]
        out["train"][cls] = [p for i, p in enumerate(ordered) if i not in test_idx]
    return out


@dataclass(frozen=True, eq=False)
class ImageTree:
    """A checked folder of classes: its classes, layout and photos per split and class.

    Made by `scan_folder` (any tree) or `hotdog_tree` (the hot-dog set). ``split`` is None
    when the folder has train/ and test/ of its own, else how it was split (``kind``,
    ``test_fraction``, ``seed`` and a SHA-1 of the test photos' names), recorded with runs.
    """

    root: Path
    classes: tuple[str, ...]
    layout: str
    files: dict[str, dict[str, list[Path]]] = field(repr=False)
    split: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def counts(self) -> dict[str, dict[str, int]]:
        """Photos per split and class, e.g. ``{"train": {"apple_pie": 100, ...}, "test": ...}``."""
        return {s: {c: len(self.files[s][c]) for c in self.classes} for s in SPLITS}

    def items(self, split: str, per_class: int | None = None) -> list[tuple[Path, int]]:
        """``(path, label)`` of ``split``'s photos, class by class in name order; with
        ``per_class`` the first that many of each class."""
        _check_split(split)
        per_class = _check_per_class("per_class", per_class)
        out = []
        for label, cls in enumerate(self.classes):
            files = self.files[split][cls]
            out += [(p, label) for p in (files if per_class is None else files[:per_class])]
        return out

    def to_dict(self) -> dict[str, Any]:
        """What a run records about its data: folder, classes, layout, split, counts."""
        return {"data_dir": str(self.root), "classes": list(self.classes),
                "layout": self.layout, "split": self.split, "counts": self.counts()}

    def describe(self) -> str:
        """One line for the run-info table (no machine path: `paths.display_path`)."""
        counts = self.counts()
        n_train, n_test = (sum(counts[s].values()) for s in SPLITS)
        how = ("its own train/ and test/" if self.split is None else
               f"split {1 - self.split['test_fraction']:.0%}/{self.split['test_fraction']:.0%} "
               f"per class by seed {self.split['seed']}")
        return (f"a local folder: {paths.display_path(self.root)} ({self.num_classes} classes, "
                f"{n_train} train / {n_test} test; {how})")


def _split_record(split: dict[str, dict[str, list[Path]]], root: Path, test_fraction: float,
                  seed: int) -> dict[str, Any]:
    names = sorted(str(p.relative_to(root)) for by in split["test"].values() for p in by)
    return {"kind": "stratified per class, seeded", "test_fraction": test_fraction,
            "seed": int(seed),
            "test_files_sha1": hashlib.sha1("\n".join(names).encode()).hexdigest()[:16]}


def scan_folder(root: str | os.PathLike, *, test_fraction: float = 0.2,
                split_seed: int = 0) -> ImageTree:
    """Check any tree of class folders and list its photos; raises `ImageDataError`.

    ``<root>/train/<class>/`` and ``<root>/test/<class>/`` are used as they are (the same
    class folders in both). ``<root>/<class>/`` alone is split per class by
    `stratified_split` (``test_fraction``, ``split_seed``), and the split is recorded in the
    returned tree's ``split``. Problems found (a missing split, a class in one split only,
    an empty class folder, a single class, a class too small to split) are listed together
    in one error, with the expected layout; files that are not read are named in an
    `ImageLayoutWarning`.

    Example:
        >>> tree = scan_folder(get_hotdog_dir())
        >>> tree.classes, tree.layout, tree.split is None
        (('hotdog', 'not-hotdog'), 'train/test folders', True)
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ImageDataError(f"Image folder {root} does not exist. {FOLDER_HELP}")
    test_fraction = _check_fraction(test_fraction)
    top = _subfolders(root)
    if any(s in top for s in SPLITS):
        classes, files = _check_split_tree(root, None, FOLDER_HELP, "Bad image folder layout")
        return ImageTree(root, classes, SPLIT_LAYOUT, files)
    scan = _Scan(root)
    scan.loose_images(root)
    if not top:
        scan.problems.append(f"no class folders in {root} (found {len(scan.loose)} images "
                             "directly in it): put each class's photos in a folder named by "
                             "the class")
        scan.loose = []
    elif len(top) == 1:
        scan.problems.append(f"only one class folder ({top[0]!r}) in {root}: a classifier "
                             "needs at least 2 classes, one folder each")
    by_class = {cls: scan.class_folder(root / cls, min_images=2) for cls in top}
    scan.fail_or_warn("Bad image folder layout", FOLDER_HELP)
    files = stratified_split(by_class, test_fraction, split_seed)
    return ImageTree(root, tuple(top), FLAT_LAYOUT, files,
                     _split_record(files, root, test_fraction, split_seed))


def hotdog_tree(root: str | os.PathLike) -> ImageTree:
    """The hot-dog set at ``root`` as an `ImageTree` (checked by `check_layout`)."""
    root = Path(root)
    check_layout(root)
    files = {s: {c: _list_images(root / s / c) for c in CLASSES} for s in SPLITS}
    return ImageTree(root, CLASSES, SPLIT_LAYOUT, files)


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
        d2l_helpers.data.ImageDataError: HOTDOG_DIR='/no/such/folder': ... does not exist. ...
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
        d2l_helpers.data.ImageDataError: upload.jpg is an empty file (0 bytes). ...
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


def files_key(items: Sequence[tuple[Path, int]], *parts: object) -> str:
    """A SHA-1 (20 hex digits) of ``items`` (each file's path, size, modification time and
    label) and ``parts``: the key of the caches made from a selection of photos."""
    h = hashlib.sha1(":".join(str(p) for p in parts).encode())
    for path, label in items:
        st = path.stat()
        h.update(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{label}\n".encode())
    return h.hexdigest()[:20]


def _cache_file(split: str, short_side: int | None, items: Sequence[tuple[Path, int]]) -> Path:
    key = files_key(items, f"v{_CACHE_VERSION}", short_side)
    return paths.cache_dir() / "decoded" / f"{split}-{short_side}-{key}.npz"


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


class ImageFolder:
    """One split of a tree of class folders, decoded once and held in memory.

    Behaves like ``gluon.data.vision.ImageFolderDataset`` (``ds[i] -> (image, label)`` with
    an HWC ``uint8`` image, ``ds.synsets``, ``transform_first``) but decodes each photo once,
    shrunk to ``short_side``, and caches the pixels on disk in an ``.npz`` file keyed by the
    files and the size (``cache=False`` to skip). ``per_class`` keeps the first that many
    photos of each class. ``root`` is a folder (checked by `scan_folder`, with
    ``test_fraction`` and ``split_seed`` for a tree without train/test) or an `ImageTree`.

    Memory grows with the number of photos (about ``short_side**2 * 4`` bytes each for 4:3
    photos): for sets that do not fit, `recordio.RecordImages` streams from a packed file.

    Example:
        >>> ds = ImageFolder(get_hotdog_dir(), "test", short_side=64, per_class=2)
        >>> len(ds), ds.synsets, list(ds.labels)
        (4, ['hotdog', 'not-hotdog'], [0, 0, 1, 1])
    """

    def __init__(self, root: str | os.PathLike | ImageTree, split: str,
                 short_side: int | None = None, per_class: int | None = None,
                 cache: bool = True, *, test_fraction: float = 0.2, split_seed: int = 0):
        _check_split(split)
        per_class = _check_per_class("per_class", per_class)
        self.tree = (root if isinstance(root, ImageTree)
                     else self._scan(Path(root), test_fraction, split_seed))
        self.root, self.split, self.short_side = self.tree.root, split, short_side
        self.synsets = list(self.tree.classes)
        self.items = self.tree.items(split, per_class)
        # The cache folder is checked here, before the (slow) decoding.
        self.cache_file = _cache_file(split, short_side, self.items) if cache else None
        self._images = self._load_cached() if cache else None
        if self._images is None:
            self._images = [read_image(p, short_side) for p, _ in self.items]
            if cache:
                self._save_cache()
        self.labels = onp.array([label for _, label in self.items], dtype=onp.int32)

    @staticmethod
    def _scan(root: Path, test_fraction: float, split_seed: int) -> ImageTree:
        return scan_folder(root, test_fraction=test_fraction, split_seed=split_seed)

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
                          stacklevel=3)
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


class HotdogImages(ImageFolder):
    """One split of the hot-dog photos, decoded once and held in memory: an `ImageFolder`
    whose folder must be in the book's layout (`check_layout`).

    Example:
        >>> ds = HotdogImages(get_hotdog_dir(), "train", short_side=256)
        >>> img, label = ds[0]; img.shape[2], ds.synsets[label]
        (3, 'hotdog')
    """

    def __init__(self, root: str | os.PathLike, split: str, short_side: int | None = None,
                 per_class: int | None = None, cache: bool = True):
        super().__init__(root, split, short_side, per_class, cache)

    @staticmethod
    def _scan(root: Path, test_fraction: float, split_seed: int) -> ImageTree:
        return hotdog_tree(root)


def folder_images(tree: ImageTree, split: str, short_side: int | None = None,
                  per_class: int | None = None, storage: str = "memory"):
    """``split`` of ``tree`` in memory (`ImageFolder`) or streamed from a RecordIO file
    (`recordio.RecordImages`): ``storage`` is ``"memory"`` or ``"recordio"`` (choose with
    `recordio.choose_storage`)."""
    if storage == "memory":
        return ImageFolder(tree, split, short_side, per_class)
    if storage == "recordio":
        from .recordio import RecordImages

        return RecordImages(tree, split, short_side, per_class)
    raise ValueError(f"storage must be 'memory' or 'recordio' here, not {storage!r}")


def load_data_folder(root: str | os.PathLike | ImageTree, batch_size: int,
                     image_size: int = 224, resize: int = 256, *,
                     decode_size: int | None = None, train_per_class: int | None = None,
                     test_per_class: int | None = None, mean: Sequence[float] | None = None,
                     std: Sequence[float] | None = None, num_workers: int | None = None,
                     storage: str = "auto", test_fraction: float = 0.2, split_seed: int = 0):
    """Train and test ``DataLoader`` s over any tree of class folders (`scan_folder`), with
    the book's augmentations; `load_data_hotdog` for any folder and N classes.

    ``storage``: ``"memory"`` (decode once, `ImageFolder`), ``"recordio"`` (pack once, decode
    per batch in ``num_workers`` worker processes, `recordio.RecordImages`) or ``"auto"``
    (`recordio.choose_storage`: RecordIO when the decoded photos would take more than
    ``$D2L_IN_MEMORY_MAX_MB``, default 1024 MB). ``num_workers`` defaults to 0 in memory
    and to `recordio.default_num_workers` for RecordIO.

    Example:
        >>> train_iter, test_iter = load_data_folder(get_hotdog_dir(), 32, 96, 110,
        ...                                          train_per_class=4, test_per_class=2)
        >>> X, y = next(iter(train_iter)); X.shape
        (8, 3, 96, 96)
    """
    from mxnet import gluon

    from . import recordio
    from .transforms import IMAGENET_MEAN, IMAGENET_STD, test_augs, train_augs

    train_per_class = _check_per_class("train_per_class", train_per_class)
    test_per_class = _check_per_class("test_per_class", test_per_class)
    tree = root if isinstance(root, ImageTree) else scan_folder(
        root, test_fraction=test_fraction, split_seed=split_seed)
    decode_size = decode_size or resize
    mean, std = mean or IMAGENET_MEAN, std or IMAGENET_STD
    storage, _ = recordio.choose_storage(tree, decode_size, train_per_class, test_per_class,
                                         storage)
    if num_workers is None:
        num_workers = recordio.default_num_workers() if storage == "recordio" else 0
    train = folder_images(tree, "train", decode_size, train_per_class, storage)
    test = folder_images(tree, "test", decode_size, test_per_class, storage)
    train_iter = gluon.data.DataLoader(train.transform_first(train_augs(image_size, mean, std)),
                                       batch_size, shuffle=True, num_workers=num_workers)
    test_iter = gluon.data.DataLoader(test.transform_first(test_augs(image_size, resize, mean, std)),
                                      batch_size, num_workers=num_workers)
    return train_iter, test_iter


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
