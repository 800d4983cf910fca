"""RecordIO streaming: packed once (atomically, keyed like the decoded cache), photos as
`data.decode_image` sees them, chosen by size, decoded in DataLoader workers."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as onp
import pytest
from conftest import write_image
from PIL import Image
from test_folders import CLASSES3, make_tree

from d2l_helpers import data, paths, recordio
from d2l_helpers.data import ImageDataError, read_image, scan_folder
from d2l_helpers.recordio import RecordImages


@pytest.fixture
def tree3(tmp_path) -> Path:
    return make_tree(tmp_path / "animals", size=(48, 36))


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_packs_once_into_the_cache_and_reads_back(tree3):
    before = _listing(tree3)
    ds = RecordImages(tree3, "train", short_side=24)
    assert ds.pack_seconds is not None and ds.rec_file.is_file() and ds.idx_file.is_file()
    assert ds.folder.parent == paths.cache_dir() / "recordio"
    assert _listing(tree3) == before  # the photo folder is only read
    assert not list(ds.folder.parent.glob(paths.TMP_PREFIX + "*"))
    assert len(ds) == 12 and ds.synsets == list(CLASSES3)
    assert [ds[i][1] for i in range(len(ds))] == ds.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    for i, (path, _) in enumerate(ds.items):
        expected = read_image(path, 24).astype(int)
        got = ds[i][0].asnumpy().astype(int)
        assert got.shape == expected.shape == (24, 32, 3)
        assert onp.abs(got - expected).mean() < 6  # JPEG quality 90 of a solid colour
    again = RecordImages(tree3, "train", short_side=24)
    assert again.pack_seconds is None and again.folder == ds.folder


def test_the_key_follows_the_files_the_size_and_the_quality(tree3):
    first = RecordImages(tree3, "test", short_side=24).folder
    assert RecordImages(tree3, "test", short_side=20).folder != first
    assert RecordImages(tree3, "test", short_side=24, quality=80).folder != first
    assert RecordImages(tree3, "test", short_side=24, per_class=1).folder != first
    write_image(tree3 / "test" / "cat" / "new.jpg", size=(48, 36))
    assert RecordImages(tree3, "test", short_side=24).folder != first


def test_exif_orientation_and_modes_are_applied_when_packing(tmp_path):
    root = make_tree(tmp_path / "t", classes=("a", "b"), per_class=(1, 1))
    sideways = Image.new("RGB", (40, 20), (250, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": upright it is 20 wide, 40 high
    sideways.save(root / "train" / "a" / "phone.jpg", exif=exif.tobytes())
    write_image(root / "train" / "b" / "clear.png", mode="RGBA", fmt="PNG")  # transparent
    write_image(root / "train" / "b" / "gray.png", mode="L", fmt="PNG")
    ds = RecordImages(root, "train")
    shapes = {p.name: ds[i][0].shape for i, (p, _) in enumerate(ds.items)}
    assert shapes["phone.jpg"] == (40, 20, 3)
    clear = [i for i, (p, _) in enumerate(ds.items) if p.name == "clear.png"][0]
    assert ds[clear][0].asnumpy().min() >= 250  # laid on white, not black


def test_a_broken_photo_stops_packing_and_leaves_nothing(tree3):
    (tree3 / "train" / "dog" / "002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImageDataError, match=r"002\.jpg"):
        RecordImages(tree3, "train", short_side=24)
    folder = paths.cache_dir() / "recordio"
    assert not [p for p in folder.iterdir() if not p.name.startswith(paths.TMP_PREFIX)]
    assert not list(folder.glob(paths.TMP_PREFIX + "*"))


def test_storage_is_chosen_by_the_estimated_decoded_size(tree3, monkeypatch):
    tree = scan_folder(tree3)
    est = recordio.estimate_decoded_bytes([p for p, _ in tree.items("train")], 24)
    assert est == 12 * 24 * 32 * 3
    assert recordio.estimate_decoded_bytes([p for p, _ in tree.items("train")], None) == 12 * 48 * 36 * 3
    storage, why = recordio.choose_storage(tree, 24)
    assert storage == "memory" and "under the 1,024 MB limit" in why
    monkeypatch.setenv("D2L_IN_MEMORY_MAX_MB", "0.01")
    storage, why = recordio.choose_storage(tree, 24)
    assert storage == "recordio" and "18 photos" in why and "$D2L_IN_MEMORY_MAX_MB" in why
    assert recordio.choose_storage(tree, 24, storage="memory")[0] == "memory"
    monkeypatch.setenv("D2L_IN_MEMORY_MAX_MB", "lots")
    with pytest.raises(ValueError, match="D2L_IN_MEMORY_MAX_MB='lots'"):
        recordio.choose_storage(tree, 24)
    with pytest.raises(ValueError, match="storage must be one of"):
        recordio.choose_storage(tree, 24, storage="disk")


@pytest.mark.parametrize("mode", ["nd", "np"])
def test_loaders_decode_in_worker_processes(tree3, mode):
    from d2l_helpers.arrays import np_semantics

    with np_semantics(mode == "np"):
        train_iter, test_iter = data.load_data_folder(tree3, 5, 16, 18, decode_size=24,
                                                      storage="recordio", num_workers=1)
        labels = sorted(int(v) for _, y in train_iter for v in y.asnumpy())
        X, _ = next(iter(test_iter))
    assert labels == [0] * 4 + [1] * 4 + [2] * 4
    assert tuple(X.shape) == (5, 3, 16, 16)


def test_run_info_streams_above_the_limit(tree3, monkeypatch):
    import d2l_helpers

    monkeypatch.setenv("D2L_IN_MEMORY_MAX_MB", "0")
    run = d2l_helpers.setup(seed=0, profile="ci", backbone="efficientnet_lite0", data=tree3)
    assert run.storage_choice()[0] == "recordio" and "streamed" in str(run)
    assert isinstance(run.images("test"), RecordImages)
    assert run.data_info()["storage"] == "recordio"


def test_jpeg_quality_is_what_is_stored(tree3):
    ds = RecordImages(tree3, "test", short_side=24, per_class=1, quality=50)
    import mxnet as mx

    rec = mx.recordio.MXIndexedRecordIO(str(ds.idx_file), str(ds.rec_file), "r")
    header, jpeg = mx.recordio.unpack(rec.read_idx(0))
    rec.close()
    assert header.label == 0.0 and Image.open(io.BytesIO(jpeg)).format == "JPEG"
