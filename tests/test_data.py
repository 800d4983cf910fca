"""The hot-dog data: layout checks, bad files, the decoded cache and the download."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as onp
import pytest

from d2l_helpers import data
from d2l_helpers.data import HotdogDataError, HotdogImages, check_layout, read_image

from conftest import make_hotdog_tree, write_image, zip_tree


def test_constants_match_the_book():
    from d2l import mxnet as d2l

    assert data.DATA_URL == d2l.DATA_URL
    assert data.HOTDOG_URL == d2l.DATA_URL + "hotdog.zip"
    assert data.HOTDOG_SHA1 == "fba480ffa8aa7e0febbb511d181409f899b9baa5"


def test_layout_counts(tiny_hotdog):
    assert check_layout(tiny_hotdog) == {"train": {"hotdog": 3, "not-hotdog": 3},
                                         "test": {"hotdog": 3, "not-hotdog": 3}}


def test_missing_class_folder_says_what_was_found(tiny_hotdog):
    for p in (tiny_hotdog / "test" / "not-hotdog").iterdir():
        p.unlink()
    (tiny_hotdog / "test" / "not-hotdog").rmdir()
    with pytest.raises(HotdogDataError) as err:
        check_layout(tiny_hotdog)
    msg = str(err.value)
    assert "test/not-hotdog" in msg and "found ['hotdog']" in msg and "Expected" in msg


def test_empty_class_and_extra_class(tiny_hotdog):
    for p in (tiny_hotdog / "train" / "hotdog").iterdir():
        p.unlink()
    (tiny_hotdog / "train" / "pizza").mkdir()
    with pytest.raises(HotdogDataError) as err:
        check_layout(tiny_hotdog)
    msg = str(err.value)
    assert "train/hotdog holds no" in msg and "unexpected class folders ['pizza']" in msg


def test_missing_split_and_missing_root(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(HotdogDataError, match="missing folder .*test"):
        check_layout(tmp_path)
    with pytest.raises(HotdogDataError, match="does not exist"):
        check_layout(tmp_path / "nope")


def test_hotdog_dir_env_with_bad_layout_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("HOTDOG_DIR", str(tmp_path))
    with pytest.raises(HotdogDataError, match="HOTDOG_DIR="):
        data.get_hotdog_dir()


@pytest.mark.parametrize("mode,fmt,suffix", [("L", "JPEG", ".jpg"), ("CMYK", "JPEG", ".jpg"),
                                             ("RGBA", "PNG", ".png"), ("P", "PNG", ".png"),
                                             ("RGB", "PNG", ".png")])
def test_every_colour_mode_decodes_to_rgb(tmp_path, mode, fmt, suffix):
    path = write_image(tmp_path / f"img{suffix}", mode=mode, fmt=fmt)
    img = read_image(path)
    assert img.shape == (30, 40, 3) and img.dtype == onp.uint8
    if mode == "RGBA":  # transparent pixels are laid on white
        assert (img == 255).all()


def test_read_image_shrinks_short_side(tmp_path):
    img = read_image(write_image(tmp_path / "a.jpg", size=(400, 200)), short_side=100)
    assert img.shape == (100, 200, 3)
    small = read_image(write_image(tmp_path / "b.jpg", size=(40, 30)), short_side=100)
    assert small.shape == (30, 40, 3)  # never enlarged


def test_empty_and_corrupt_files_name_the_file(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(HotdogDataError, match=r"empty\.jpg is an empty file"):
        read_image(empty)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(HotdogDataError, match=r"corrupt\.jpg.*Delete or replace"):
        read_image(corrupt)


def test_corrupt_file_in_the_dataset_is_reported(tiny_hotdog):
    (tiny_hotdog / "train" / "hotdog" / "001.jpg").write_bytes(b"garbage")
    with pytest.raises(HotdogDataError, match="001.jpg"):
        HotdogImages(tiny_hotdog, "train")


def test_decoded_cache_is_reused_and_rebuilt_when_corrupt(tiny_hotdog, monkeypatch):
    ds = HotdogImages(tiny_hotdog, "train", short_side=20)
    assert ds.cache_file.exists() and len(ds) == 6
    img, label = ds[0]
    assert img.shape == (20, 27, 3) and label == 0 and ds.synsets[ds[5][1]] == "not-hotdog"

    def boom(*a, **k):
        raise AssertionError("decoded again although cached")

    real_read_image = data.read_image
    monkeypatch.setattr(data, "read_image", boom)
    again = HotdogImages(tiny_hotdog, "train", short_side=20)
    assert (again[3][0].asnumpy() == ds[3][0].asnumpy()).all()

    ds.cache_file.write_bytes(ds.cache_file.read_bytes()[:100])  # truncate the cache
    monkeypatch.setattr(data, "read_image", real_read_image)
    with pytest.warns(UserWarning, match="unreadable cache"):
        rebuilt = HotdogImages(tiny_hotdog, "train", short_side=20)
    assert (rebuilt[3][0].asnumpy() == ds[3][0].asnumpy()).all()


def test_cache_key_changes_with_the_files(tiny_hotdog):
    first = HotdogImages(tiny_hotdog, "test", short_side=20).cache_file
    write_image(tiny_hotdog / "test" / "hotdog" / "new.jpg")
    assert HotdogImages(tiny_hotdog, "test", short_side=20).cache_file != first


def test_per_class_subset(tiny_hotdog):
    ds = HotdogImages(tiny_hotdog, "test", per_class=2, cache=False)
    assert len(ds) == 4 and list(ds.labels) == [0, 0, 1, 1]


def test_load_data_hotdog_batches(tiny_hotdog):
    train_iter, test_iter = data.load_data_hotdog(4, image_size=32, resize=36, root=tiny_hotdog)
    X, y = next(iter(train_iter))
    assert X.shape == (4, 3, 32, 32) and y.shape == (4,)
    assert sum(b[0].shape[0] for b in test_iter) == 6


# ------------------------------------------------------------------ download

def _serve_zip(www: Path, payload: bytes) -> str:
    (www / "hotdog.zip").write_bytes(payload)
    return hashlib.sha1(payload).hexdigest()


def test_download_extract_verified_and_atomic(tmp_path, http_server):
    www, base = http_server
    payload = zip_tree(make_hotdog_tree(tmp_path / "src", per_class=2))
    sha1 = _serve_zip(www, payload)
    cache = tmp_path / "dl"
    root = data.download_extract_hotdog(base + "hotdog.zip", sha1, cache=cache, progressbar=False)
    assert check_layout(root)["test"] == {"hotdog": 2, "not-hotdog": 2}
    assert not [p for p in cache.iterdir() if p.name.startswith(".extract-")]
    (www / "hotdog.zip").unlink()  # cached now: no network needed
    assert data.download_extract_hotdog(base + "hotdog.zip", sha1, cache=cache,
                                        progressbar=False) == root


def test_download_with_wrong_hash_keeps_nothing(tmp_path, http_server):
    www, base = http_server
    _serve_zip(www, zip_tree(make_hotdog_tree(tmp_path / "src", per_class=1)))
    cache = tmp_path / "dl"
    with pytest.raises(HotdogDataError, match="SHA-1 .* does not match"):
        data.download_extract_hotdog(base + "hotdog.zip", "0" * 40, cache=cache,
                                     progressbar=False)
    assert not (cache / "hotdog.zip").exists() and not (cache / "hotdog").exists()


def test_truncated_zip_is_deleted_with_a_clear_error(tmp_path, http_server):
    www, base = http_server
    payload = zip_tree(make_hotdog_tree(tmp_path / "src", per_class=2))[:-200]
    sha1 = _serve_zip(www, payload)  # the hash matches the truncated bytes
    cache = tmp_path / "dl"
    with pytest.raises(HotdogDataError, match="not a valid zip"):
        data.download_extract_hotdog(base + "hotdog.zip", sha1, cache=cache, progressbar=False)
    assert not (cache / "hotdog.zip").exists() and not (cache / "hotdog").exists()


def test_offline_with_nothing_cached_says_how_to_provide_the_data(tmp_path, closed_port_url,
                                                                monkeypatch):
    monkeypatch.delenv("HOTDOG_DIR", raising=False)
    with pytest.raises(HotdogDataError) as err:
        data.download_extract_hotdog(closed_port_url + "hotdog.zip", cache=tmp_path / "dl",
                                     progressbar=False)
    msg = str(err.value)
    assert "HOTDOG_DIR" in msg and "hotdog.zip" in msg and str(tmp_path / "dl") in msg


def test_describe_source_names_the_stand_in(shared_hotdog):
    assert "stand-in" in data.describe_source(shared_hotdog)
    assert "498 train / 500 test" in data.describe_source(shared_hotdog)
