"""The augmentation explorer: builds headless, draws at once, redraws when a control moves."""
from __future__ import annotations

import random

import numpy as onp
import pytest

pytest.importorskip("ipywidgets")

from d2l_helpers import widgets  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture
def photo() -> onp.ndarray:
    """A 48 x 64 RGB gradient with noise: every crop of it looks different."""
    rng = onp.random.default_rng(0)
    y, x = onp.mgrid[0:48, 0:64]
    img = onp.stack([x * 4, y * 5, (x + y) * 2], axis=-1) + rng.integers(0, 20, (48, 64, 3))
    return onp.clip(img, 0, 255).astype(onp.uint8)


def _by_description(widget, cls):
    found, stack = {}, [widget]
    while stack:
        w = stack.pop()
        if isinstance(w, cls) and getattr(w, "description", None):
            found[w.description] = w
        stack.extend(getattr(w, "children", ()))
    return found


def test_builds_headless_and_draws_once(photo):
    random.seed(0)
    ex = widgets.augmentation_explorer(photo, 32, MEAN, STD, num_views=4)
    assert ex.draw_count == 1
    assert ex.last_views.shape == (4, 32, 32, 3)
    assert 0.0 <= ex.last_views.min() and ex.last_views.max() <= 1.0
    assert ex.last_image.startswith(b"\xff\xd8") and ex.image_widget.value == ex.last_image
    bundle = ex._repr_mimebundle_()
    assert "image/jpeg" in bundle and "application/vnd.jupyter.widget-view+json" in bundle


def test_controls_have_the_documented_names(photo):
    import ipywidgets as W

    ex = widgets.augmentation_explorer(photo, 32, MEAN, STD, num_views=2)
    sliders = _by_description(ex, (W.FloatSlider, W.FloatLogSlider))
    assert set(widgets.SLIDER_NAMES) <= set(sliders)
    assert "flip" in _by_description(ex, W.Checkbox)
    assert {"resample", "book defaults"} <= set(_by_description(ex, W.Button))


def test_moving_a_slider_redraws_with_the_new_range(photo):
    random.seed(0)
    ex = widgets.augmentation_explorer(photo, 32, MEAN, STD, num_views=6)
    before_views, before_image = ex.last_views.copy(), ex.last_image
    ex.sliders["scale max"].value = 0.1
    ex.sliders["scale min"].value = 0.05
    assert ex.draw_count == 3
    assert not onp.array_equal(before_views, ex.last_views)
    assert ex.last_image != before_image and ex.image_widget.value == ex.last_image
    area = photo.shape[0] * photo.shape[1]
    for x0, y0, w, h in ex.last_boxes:  # small crops now (rounding allows a little slack)
        assert w * h <= 0.1 * area * 1.25
        assert 0 <= x0 and x0 + w <= photo.shape[1] and 0 <= y0 and y0 + h <= photo.shape[0]


def test_flip_off_never_mirrors_and_defaults_restore(photo):
    ex = widgets.augmentation_explorer(photo, 32, MEAN, STD, num_views=8)
    ex.flip.value = False
    assert not any(ex.last_flipped)
    ex.sliders["ratio min"].value = 2.0  # above ratio max: swapped, not an error
    assert ex.ranges()[1] == (pytest.approx(4 / 3), 2.0)
    n = ex.draw_count
    ex.reset()
    assert ex.draw_count == n + 1  # one redraw, not one per control
    assert ex.ranges() == (widgets.BOOK_SCALE, pytest.approx(widgets.BOOK_RATIO))
    assert ex.flip.value is True


def test_resample_button_draws_new_views(photo):
    ex = widgets.augmentation_explorer(photo, 32, MEAN, STD, num_views=4)
    before = ex.last_views.copy()
    ex.resample_button.click()
    assert ex.draw_count == 2 and not onp.array_equal(before, ex.last_views)


# ---------------------------------------------------------------- photo upload

def _png_bytes(array: onp.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def test_photo_upload_hands_the_decoded_photo_and_its_name(photo):
    seen = []
    panel = widgets.photo_upload(lambda image, name: seen.append((name, image)) or "ok")
    assert panel.handle("lunch.png", _png_bytes(photo)) == "ok"
    assert seen[0][0] == "lunch.png" and (seen[0][1] == photo).all()
    assert panel.errors == []


@pytest.mark.parametrize("name, content", [("notes.txt", b"a shopping list, not a photo"),
                                           ("empty.jpg", b"")])
def test_photo_upload_shows_bad_files_in_its_own_output(name, content, capsys):
    called = []
    panel = widgets.photo_upload(lambda image, n: called.append(n))
    assert panel.handle(name, content) is None
    assert called == []
    assert len(panel.errors) == 1 and name in panel.errors[0]
    assert "BytesIO" not in panel.errors[0]
    assert "Upload a photo instead" in panel.errors[0]


def test_photo_upload_names_a_photo_over_the_pixel_limit(photo, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # the photo has 3,072 pixels
    panel = widgets.photo_upload(lambda image, n: n)
    assert panel.handle("huge.png", _png_bytes(photo)) is None
    assert "huge.png" in panel.errors[0] and "MAX_IMAGE_PIXELS" in panel.errors[0]


def test_upload_button_routes_to_handle(photo):
    seen = []
    panel = widgets.photo_upload(lambda image, name: seen.append(name))
    panel._on_value({"new": [{"name": "a.png", "content": memoryview(_png_bytes(photo))}]})
    assert seen == ["a.png"]
