"""The hot-dog data: layout checks, bad files, the decoded cache and the download."""
from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path

import numpy as onp
import pooch
import pytest
from conftest import make_hotdog_tree, write_image, zip_tree
from PIL import Image, features

from d2l_helpers import data, paths
from d2l_helpers.data import (
    HotdogDataError,
    HotdogImages,
    HotdogLayoutWarning,
    check_layout,
    decode_image,
    read_image,
)


def _boom(*args, **kwargs):
    raise AssertionError("decoded or downloaded although the input was rejected")


def _age(path: Path, seconds: float = 2 * paths.STALE_SECONDS) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


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


def test_hotdog_dir_from_env(tiny_hotdog, tmp_path, monkeypatch):
    monkeypatch.delenv("HOTDOG_DIR", raising=False)
    assert data.hotdog_dir_from_env() is None
    monkeypatch.setenv("HOTDOG_DIR", str(tiny_hotdog))
    assert data.hotdog_dir_from_env() == tiny_hotdog == data.get_hotdog_dir()
    monkeypatch.setenv("HOTDOG_DIR", str(tiny_hotdog / "train"))
    with pytest.raises(HotdogDataError, match=r"(?s)HOTDOG_DIR=.*missing folder.*"
                                              r"Point HOTDOG_DIR at the folder that holds"):
        data.hotdog_dir_from_env()


@pytest.mark.parametrize("suffix,fmt", [(".tif", "TIFF"), (".tiff", "TIFF"), (".gif", "GIF"),
                                        (".webp", "WEBP"), (".JPG", "JPEG")])
def test_other_photo_formats_are_read(tiny_hotdog, suffix, fmt):
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("this Pillow has no WebP support")
    write_image(tiny_hotdog / "train" / "hotdog" / f"extra{suffix}", fmt=fmt)
    assert check_layout(tiny_hotdog)["train"]["hotdog"] == 4
    ds = HotdogImages(tiny_hotdog, "train", cache=False)
    assert ds._images[3].shape == (30, 40, 3) and ds._images[3].dtype == onp.uint8


def test_files_that_are_not_read_are_named_in_a_warning(tiny_hotdog):
    cls = tiny_hotdog / "train" / "hotdog"
    for name in ("notes.txt", "IMG_0001.heic", "scan.pdf", "zz.doc"):
        (cls / name).write_bytes(b"x")
    (cls / ".DS_Store").write_bytes(b"x")  # file-browser litter: skipped quietly
    (cls / "Thumbs.db").write_bytes(b"x")
    write_image(tiny_hotdog / "test" / "not-hotdog" / "more" / "deeper" / "a.jpg")
    write_image(tiny_hotdog / "test" / "not-hotdog" / "more" / "b.png", fmt="PNG")
    with pytest.warns(HotdogLayoutWarning) as caught:
        counts = check_layout(tiny_hotdog)
    assert counts["train"]["hotdog"] == 3 and counts["test"]["not-hotdog"] == 3
    not_images, nested = (str(w.message) for w in caught)
    assert not_images.startswith("4 files that are not images by extension in ")
    assert "train/hotdog/IMG_0001.heic, train/hotdog/notes.txt, train/hotdog/scan.pdf and " \
           "1 more" in not_images and "Convert them to JPEG or PNG" in not_images
    assert ".DS_Store" not in not_images and "Thumbs.db" not in not_images
    assert nested.startswith("2 images in sub-folders of class folders")
    assert "test/not-hotdog/more/b.png" in nested and "test/not-hotdog/more/deeper/a.jpg" in nested
    assert "move them up into their class folder" in nested


def test_a_clean_layout_warns_nothing(tiny_hotdog, recwarn):
    check_layout(tiny_hotdog)
    assert not [w for w in recwarn if issubclass(w.category, HotdogLayoutWarning)]


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


def _pattern(h: int = 32, w: int = 48) -> onp.ndarray:
    """An upright test picture no rotation or flip maps onto itself: 16 px blocks in colours."""
    img = onp.zeros((h, w, 3), onp.uint8)
    img[:16, :16] = (255, 0, 0)    # red top-left
    img[:16, 32:] = (0, 255, 0)    # green top-right
    img[16:, :16] = (0, 0, 255)    # blue bottom-left
    return img


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_exif_orientation_6_comes_out_upright(tmp_path, fmt, suffix):
    upright = _pattern()
    stored = onp.rot90(upright, 1)  # a phone held sideways stores the picture turned left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / f"phone{suffix}"
    Image.fromarray(onp.ascontiguousarray(stored)).save(path, fmt, exif=exif, quality=95)
    got = read_image(path)
    assert got.shape == upright.shape
    diff = onp.abs(got.astype(int) - upright)
    assert diff.max() == 0 if fmt == "PNG" else diff.mean() < 3
    assert read_image(path, short_side=16).shape == (16, 24, 3)


@pytest.mark.parametrize("mode,fmt,value", [("I;16", "PNG", 32768), ("I;16B", "TIFF", 32768),
                                            ("I", "PPM", 32768), ("I", "TIFF", 32768),
                                            ("F", "TIFF", 0.5)])
def test_wide_modes_are_scaled_to_8_bits(tmp_path, mode, fmt, value):
    dtype = {"I;16": "<u2", "I;16B": ">u2", "I": "<i4", "F": "<f4"}[mode]
    pixels = onp.full((30, 40), value, dtype)
    pixels[:, :10] = 0
    if fmt == "PPM":  # Pillow writes 16-bit PGM from I;16 and reads it back as mode I
        img = Image.frombytes("I;16", (40, 30), pixels.astype("<u2").tobytes())
    else:
        img = Image.frombytes(mode, (40, 30), pixels.tobytes())
    path = tmp_path / f"wide.{fmt.lower()}"
    img.save(path, fmt)
    with Image.open(path) as check:
        assert check.mode == mode  # the file really is in that mode
    got = read_image(path)
    assert got.shape == (30, 40, 3) and got.dtype == onp.uint8
    assert (got[:, 10:] == 128).all() and (got[:, :10] == 0).all()  # not white, not black


def test_16_bit_full_range_is_white(tmp_path):
    Image.fromarray(onp.full((30, 40), 65535, onp.uint16)).save(tmp_path / "w.png")
    assert (read_image(tmp_path / "w.png") == 255).all()


@pytest.mark.parametrize("size,band", [((40, 30), "warning"), ((100, 100), "error")])
def test_decompression_bomb_names_the_file_pixels_limit_and_fix(tmp_path, monkeypatch,
                                                                size, band):
    path = write_image(tmp_path / "huge.png", size=size, fmt="PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1,200 pixels: warning band
    with pytest.raises(HotdogDataError) as err:
        read_image(path)
    msg = str(err.value)
    assert str(path) in msg and f"{size[0] * size[1]:,} pixels" in msg and "1,000" in msg
    assert "PIL.Image.MAX_IMAGE_PIXELS" in msg and "shrink it" in msg


def test_decode_image_reads_bytes_memoryviews_and_files(tmp_path):
    path = write_image(tmp_path / "a.png", fmt="PNG")
    raw = path.read_bytes()
    expected = read_image(path)
    with open(path, "rb") as f:
        sources = [raw, bytearray(raw), memoryview(raw), io.BytesIO(raw), f]
        for source in sources:
            assert (decode_image(source, "upload.png") == expected).all()


@pytest.mark.parametrize("payload,why", [
    (b"", "is an empty file"),
    (b"just some notes, not a photo\n", "not an image format Pillow can read"),
])
def test_decode_image_names_the_upload_in_errors(payload, why):
    with pytest.raises(HotdogDataError, match=rf"my photo\.jpg.*{why}|{why}.*my photo\.jpg") as info:
        decode_image(payload, "my photo.jpg")
    assert "BytesIO" not in str(info.value)  # Pillow's own text names the file object


def test_text_and_truncated_jpeg_files_name_the_file(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("a text file saved with the wrong extension")
    with pytest.raises(HotdogDataError, match=r"notes\.jpg.*Delete or replace"):
        read_image(text)
    whole = write_image(tmp_path / "whole.jpg", size=(200, 150))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(HotdogDataError, match=r"cut\.jpg.*truncated"):
        read_image(cut)
    with pytest.raises(HotdogDataError, match=r"missing\.jpg.*exists"):
        read_image(tmp_path / "missing.jpg")


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


def test_decoded_cache_file_is_the_one_hotdog_images_uses(tiny_hotdog, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(data, "read_image", _boom)
        name = data.decoded_cache_file(tiny_hotdog, "train", 20, per_class=2)  # decodes nothing
        assert name.parent == paths.cache_dir() / "decoded" and not name.exists()
        assert name != data.decoded_cache_file(tiny_hotdog, "train", 20, per_class=3)
        assert name != data.decoded_cache_file(tiny_hotdog, "train", 24, per_class=2)
    assert HotdogImages(tiny_hotdog, "train", 20, per_class=2).cache_file == name


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3", True])
def test_bad_per_class_is_rejected_before_any_decoding(tiny_hotdog, monkeypatch, bad):
    monkeypatch.setattr(data, "read_image", _boom)
    monkeypatch.setattr(pooch, "retrieve", _boom)
    monkeypatch.delenv("HOTDOG_DIR", raising=False)  # nor any download
    allowed = r"must be None \(every photo\) or an int >= 1"
    with pytest.raises(ValueError, match=rf"^per_class {allowed}.*not {bad!r}"):
        HotdogImages(tiny_hotdog, "train", per_class=bad)
    with pytest.raises(ValueError, match=rf"^per_class {allowed}"):
        data.decoded_cache_file(tiny_hotdog, "train", per_class=bad)
    for name in ("train_per_class", "test_per_class"):
        with pytest.raises(ValueError, match=rf"^{name} {allowed}"):
            data.load_data_hotdog(4, 32, 36, **{name: bad})


def test_numpy_ints_are_fine_as_per_class(tiny_hotdog):
    assert len(HotdogImages(tiny_hotdog, "test", per_class=onp.int64(1), cache=False)) == 2


def test_a_cache_setting_naming_a_file_fails_before_decoding(tiny_hotdog, tmp_path, monkeypatch):
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("D2L_HELPERS_CACHE", str(not_a_folder))
    assert len(HotdogImages(tiny_hotdog, "test", 20, per_class=1, cache=False)) == 2  # no cache
    monkeypatch.setattr(data, "read_image", _boom)
    for make in (lambda: HotdogImages(tiny_hotdog, "train"),
                 lambda: data.load_data_hotdog(4, 32, 36, root=tiny_hotdog),
                 lambda: data.decoded_cache_file(tiny_hotdog, "test")):
        with pytest.raises(paths.PathSettingError, match="D2L_HELPERS_CACHE=.* names a file"):
            make()


def test_stale_temporaries_in_the_decoded_folder_are_cleaned(tiny_hotdog):
    folder = paths.cache_dir() / "decoded"
    folder.mkdir(parents=True)
    old, fresh = folder / ".tmp-killed.npz", folder / ".tmp-live.npz"
    old.write_bytes(b"half")
    fresh.write_bytes(b"half")
    _age(old)
    ds = HotdogImages(tiny_hotdog, "train", short_side=20)
    assert sorted(p.name for p in folder.iterdir()) == [".tmp-live.npz", ds.cache_file.name]


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
    assert not [p for p in cache.iterdir() if p.name.startswith(paths.TMP_PREFIX)]
    (www / "hotdog.zip").unlink()  # cached now: no network needed
    assert data.download_extract_hotdog(base + "hotdog.zip", sha1, cache=cache,
                                        progressbar=False) == root


def test_stale_temporaries_in_the_download_folder_are_cleaned(tmp_path, http_server):
    www, base = http_server
    sha1 = _serve_zip(www, zip_tree(make_hotdog_tree(tmp_path / "src", per_class=1)))
    cache = tmp_path / "dl"
    (cache / ".tmp-hotdog-killed" / "train").mkdir(parents=True)  # a killed extraction
    _age(cache / ".tmp-hotdog-killed")
    (cache / ".tmp-hotdog-live").mkdir()  # another process extracting right now
    data.download_extract_hotdog(base + "hotdog.zip", sha1, cache=cache, progressbar=False)
    assert sorted(p.name for p in cache.iterdir()) == [".tmp-hotdog-live", "hotdog", "hotdog.zip"]


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
