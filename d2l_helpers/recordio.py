"""Streaming photos from MXNet RecordIO files, for sets that do not fit in memory.

`data.ImageFolder` decodes every photo once and keeps the pixels in memory: fast, but its
memory grows with the number of photos (about 170 kB per food10 photo at the cpu profile's
224 px decode size: 3.5 GB for 20,000, see docs/own-data.md). `RecordImages` instead packs
the photos once into one MXNet RecordIO file (``images.rec`` and its index ``images.idx``)
and decodes each JPEG again when a batch needs it, in the ``DataLoader``'s worker processes
(``num_workers``): memory stays flat whatever the number of photos.

Packing (`pack`):

* each photo is decoded by `data.decode_image` (EXIF orientation applied, colour and 16-bit
  modes converted to 8-bit RGB) at the profile's decode size (short side), then encoded as
  JPEG at quality `JPEG_QUALITY` (90, 4:2:0 chroma) with Pillow and stored with
  ``mx.recordio.pack`` under an ``IRHeader`` holding its label. (``mx.recordio.pack_img``
  would do the same through OpenCV, which the pip wheel does not bring as a Python module;
  its ``cv2.imencode`` also expects BGR pixels.) Records are read back with Gluon's
  ``ImageRecordDataset``, i.e. MXNet's own JPEG decoder, as RGB;
* it runs in worker processes (one per CPU) and writes into a temporary folder that is
  renamed into place when whole (`paths.atomic_dir`): a killed packing never leaves a
  half-written file that a later run would take as complete;
* the folder, ``$D2L_HELPERS_CACHE/recordio/<split>-<size>-q<quality>-<key>/``, is keyed
  like the decoded-pixel cache (`data.files_key`: every file's path, size, modification time
  and label) plus the size and quality, so any change to the photos packs afresh. The photo
  folder itself is only read.

Which storage a run uses (`choose_storage`): RecordIO when the decoded photos of both splits
would take more than ``$D2L_IN_MEMORY_MAX_MB`` (default `IN_MEMORY_MAX_MB`, 1024 MB; the
estimate reads the sizes of up to 64 photos' headers), else memory; or as the caller says.

Example:
    >>> from d2l_helpers import data, recordio
    >>> tree = data.scan_folder(data.get_hotdog_dir())
    >>> ds = recordio.RecordImages(tree, "test", short_side=64, per_class=2)
    >>> len(ds), ds.synsets, [ds[i][1] for i in range(len(ds))]
    (4, ['hotdog', 'not-hotdog'], [0, 0, 1, 1])
    >>> ds.rec_file.name
    'images.rec'
"""
from __future__ import annotations

import io
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as onp

from . import paths
from .data import ImageTree, _check_per_class, _check_split, files_key, read_image, scan_folder

JPEG_QUALITY = 90
IN_MEMORY_MAX_MB = 1024
_PACK_VERSION = 1
_ESTIMATE_SAMPLE = 64
STORAGES = ("auto", "memory", "recordio")


def in_memory_max_mb() -> float:
    """``$D2L_IN_MEMORY_MAX_MB`` (MB of decoded photos above which RecordIO is chosen), else
    `IN_MEMORY_MAX_MB`."""
    value = os.environ.get("D2L_IN_MEMORY_MAX_MB")
    if not value:
        return float(IN_MEMORY_MAX_MB)
    try:
        limit = float(value)
        if limit < 0:
            raise ValueError
    except ValueError:
        raise ValueError(f"D2L_IN_MEMORY_MAX_MB={value!r}: use a number of megabytes >= 0 "
                         f"(default {IN_MEMORY_MAX_MB}).") from None
    return limit


def estimate_decoded_bytes(files: Sequence[Path], short_side: int | None,
                           sample: int = _ESTIMATE_SAMPLE) -> int:
    """About how many bytes ``files`` take decoded to RGB at ``short_side`` (None: as stored).

    Reads the headers (sizes) of up to ``sample`` evenly spaced files, no pixels.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> photo = Path(tempfile.mkdtemp()) / "wide.jpg"
        >>> Image.new("RGB", (400, 300)).save(photo)
        >>> estimate_decoded_bytes([photo] * 10, short_side=150)   # 10 x 200 x 150 x 3
        900000
    """
    from PIL import Image

    files = list(files)
    if not files:
        return 0
    picks = sorted({round(i * (len(files) - 1) / max(1, sample - 1))
                    for i in range(min(sample, len(files)))})
    pixels, seen = 0.0, 0
    for i in picks:
        try:
            with Image.open(files[i]) as img:
                w, h = img.size
        except Exception:  # an unreadable photo is reported when it is decoded
            continue
        if short_side is not None and min(w, h) > short_side:
            scale = short_side / min(w, h)
            w, h = max(short_side, round(w * scale)), max(short_side, round(h * scale))
        pixels += w * h
        seen += 1
    return int(pixels / max(seen, 1) * len(files) * 3)


def choose_storage(tree: ImageTree, short_side: int | None, train_per_class: int | None = None,
                   test_per_class: int | None = None, storage: str = "auto") -> tuple[str, str]:
    """``("memory" | "recordio", why)`` for the photos of both splits at ``short_side``.

    ``storage`` ``"memory"`` or ``"recordio"`` is taken as it is; ``"auto"`` picks RecordIO
    when `estimate_decoded_bytes` of the selection exceeds `in_memory_max_mb`.
    """
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, not {storage!r}")
    if storage != "auto":
        return storage, "chosen by the caller"
    files = [p for p, _ in tree.items("train", train_per_class) + tree.items("test", test_per_class)]
    mb = estimate_decoded_bytes(files, short_side) / 2**20
    limit = in_memory_max_mb()
    if mb > limit:
        return "recordio", (f"{len(files)} photos would take about {mb:,.0f} MB decoded, over "
                            f"the {limit:,.0f} MB limit ($D2L_IN_MEMORY_MAX_MB): streamed")
    return "memory", (f"{len(files)} photos take about {mb:,.0f} MB decoded, under the "
                      f"{limit:,.0f} MB limit ($D2L_IN_MEMORY_MAX_MB): in memory")


def default_num_workers() -> int:
    """DataLoader worker processes for RecordIO: one fewer than the CPUs (one is left for
    the training process), at least 1, at most 4."""
    from .runtime import available_cpus

    return max(1, min(4, available_cpus() - 1))


def record_folder(items: Sequence[tuple[Path, int]], split: str, short_side: int | None,
                  quality: int = JPEG_QUALITY) -> Path:
    """The cache folder holding ``items`` packed at ``short_side`` (nothing is written)."""
    key = files_key(items, f"rec-v{_PACK_VERSION}", short_side, quality)
    return paths.cache_dir() / "recordio" / f"{split}-{short_side}-q{quality}-{key}"


def _encode(job: tuple[str, int | None, int]) -> bytes:
    """Decode one photo (`data.read_image`) and encode it as JPEG: runs in a worker process."""
    from PIL import Image

    path, short_side, quality = job
    buf = io.BytesIO()
    Image.fromarray(read_image(path, short_side)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def pack(items: Sequence[tuple[Path, int]], folder: str | os.PathLike,
         short_side: int | None, quality: int = JPEG_QUALITY, *, processes: int | None = None,
         progress: bool = False) -> Path:
    """Pack ``items`` (``(path, label)``) into ``folder/images.rec`` and ``images.idx``.

    Photos are decoded and re-encoded in ``processes`` worker processes (default: one per
    CPU; 0 decodes in this process) and written in order; record ``i`` holds item ``i``
    with its label in the header. ``folder`` appears whole or not at all. Returns it.
    """
    import mxnet as mx
    from tqdm import tqdm

    from .runtime import available_cpus

    folder = Path(folder)
    processes = available_cpus() if processes is None else processes
    jobs = [(str(p), short_side, quality) for p, _ in items]
    paths.clean_stale(folder.parent)
    with paths.atomic_dir(folder) as tmp:
        writer = mx.recordio.MXIndexedRecordIO(str(tmp / "images.idx"), str(tmp / "images.rec"), "w")
        pool = None
        try:
            if processes > 0 and len(jobs) > 1:
                import multiprocessing as mp

                # fork, as Gluon's DataLoader workers: MXNet stops its engine around fork()
                # and the workers only run Pillow (forkserver/spawn would re-run __main__)
                pool = mp.get_context("fork").Pool(processes)
                encoded = pool.imap(_encode, jobs, chunksize=16)
            else:
                encoded = map(_encode, jobs)
            bar = tqdm(encoded, total=len(jobs), disable=not progress, leave=False,
                       desc=f"packing {folder.name.split('-')[0]}")
            for i, ((_, label), jpeg) in enumerate(zip(items, bar)):
                header = mx.recordio.IRHeader(0, float(label), i, 0)
                writer.write_idx(i, mx.recordio.pack(header, jpeg))
        finally:
            writer.close()
            if pool is not None:
                pool.terminate()
                pool.join()
    return folder


class RecordImages:
    """One split of a tree of class folders, streamed from a packed RecordIO file.

    The same interface as `data.ImageFolder` (``ds[i] -> (image, label)``, ``synsets``,
    ``labels``, ``items``, ``transform_first``), but only the record index is in memory:
    each access decodes one JPEG (Gluon's ``ImageRecordDataset``). The file is packed on
    first use (`pack`, timed in ``pack_seconds``; None when it was already there).
    """

    def __init__(self, root: str | os.PathLike | ImageTree, split: str,
                 short_side: int | None = None, per_class: int | None = None,
                 quality: int = JPEG_QUALITY, *, test_fraction: float = 0.2,
                 split_seed: int = 0, progress: bool = False):
        from mxnet.gluon.data.vision import ImageRecordDataset

        _check_split(split)
        per_class = _check_per_class("per_class", per_class)
        self.tree = root if isinstance(root, ImageTree) else scan_folder(
            root, test_fraction=test_fraction, split_seed=split_seed)
        self.root, self.split, self.short_side = self.tree.root, split, short_side
        self.synsets = list(self.tree.classes)
        self.items = self.tree.items(split, per_class)
        self.labels = onp.array([label for _, label in self.items], dtype=onp.int32)
        self.folder = record_folder(self.items, split, short_side, quality)
        self.rec_file, self.idx_file = self.folder / "images.rec", self.folder / "images.idx"
        self.pack_seconds = None
        if not (self.rec_file.is_file() and self.idx_file.is_file()):
            start = time.perf_counter()
            pack(self.items, self.folder, short_side, quality, progress=progress)
            self.pack_seconds = time.perf_counter() - start
        self._records = ImageRecordDataset(str(self.rec_file))
        if len(self._records) != len(self.items):  # a damaged pack: make it again
            pack(self.items, self.folder, short_side, quality, progress=progress)
            self._records = ImageRecordDataset(str(self.rec_file))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int):
        from . import arrays

        img, _ = self._records[idx]
        return arrays.array(img, dtype="uint8"), int(self.labels[idx])

    def transform_first(self, fn):
        """Apply ``fn`` to the image of each sample (like Gluon's ``Dataset.transform_first``)."""
        from mxnet.gluon.data import SimpleDataset

        return SimpleDataset(self).transform_first(fn)

