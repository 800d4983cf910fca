"""Test-time augmentation: the centre view is the book's test_augs, the others are the
right crops and mirrors, and the average and the accuracy comparison add up."""
from __future__ import annotations

import mxnet as mx
import numpy as onp
import pytest
from mxnet import init, npx
from mxnet.gluon import nn

from d2l_helpers import arrays, predict, transforms
from d2l_helpers.tta import (
    DEFAULT_VIEWS,
    TEN_CROP,
    TTAComparison,
    compare_tta,
    tta_predict,
    tta_view_probs,
    view_transforms,
)

SIZE, RESIZE = 8, 10
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)



def conv_net():
    """Not mirror-symmetric: a 3 x 3 convolution sees left and right differently."""
    mx.random.seed(0)
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 3, in_channels=3), nn.Activation("relu"), nn.GlobalAvgPool2D(),
            nn.Flatten(), nn.Dense(2, in_units=4))
    net.initialize(init.Xavier())
    return net


def photos(n: int = 5) -> list[onp.ndarray]:
    rng = onp.random.RandomState(0)
    return [rng.randint(0, 256, (12 + k, 9 + 2 * k, 3)).astype("uint8") for k in range(n)]


def normalised(crop: onp.ndarray) -> onp.ndarray:
    """ToTensor + Normalize in NumPy: HWC uint8 -> CHW float."""
    x = crop.astype("float32") / 255
    return ((x - onp.array(MEAN, "float32")) / onp.array(STD, "float32")).transpose(2, 0, 1)


def test_center_view_is_exactly_the_books_test_augs(array_mode):
    net, images = conv_net(), photos()
    book = predict.predict_proba(net, images, transforms.test_augs(SIZE, RESIZE, MEAN, STD))
    center = tta_predict(net, images, SIZE, RESIZE, MEAN, STD, views=("center",))
    onp.testing.assert_array_equal(center, book)
    both = tta_view_probs(net, images, SIZE, RESIZE, MEAN, STD)
    assert list(both) == list(DEFAULT_VIEWS)
    onp.testing.assert_array_equal(both["center"], book)
    assert not onp.allclose(both["flip"], both["center"])   # the mirror is another view


def test_views_are_the_right_crops_and_mirrors(array_mode):
    # A photo already RESIZE x RESIZE: Resize keeps it, so each view is a plain crop.
    img = onp.random.RandomState(1).randint(0, 256, (RESIZE, RESIZE, 3)).astype("uint8")
    tfs = view_transforms(SIZE, RESIZE, MEAN, STD, views=TEN_CROP)
    assert list(tfs) == list(TEN_CROP) and len(TEN_CROP) == 10
    lo, hi = RESIZE - SIZE, RESIZE
    c = (RESIZE - SIZE) // 2
    expected = {"center": img[c:c + SIZE, c:c + SIZE], "top_left": img[:SIZE, :SIZE],
                "top_right": img[:SIZE, lo:hi], "bottom_left": img[lo:hi, :SIZE],
                "bottom_right": img[lo:hi, lo:hi]}
    expected["flip"] = expected["center"][:, ::-1]
    for name in ("top_left", "top_right", "bottom_left", "bottom_right"):
        expected[name + "_flip"] = expected[name][:, ::-1]
    x = arrays.array(img, dtype="uint8")
    for name, tf in tfs.items():
        got = arrays.to_numpy(tf(x))
        onp.testing.assert_allclose(got, normalised(expected[name]), rtol=1e-5, atol=1e-5,
                                    err_msg=name)


def test_average_over_views_and_keep_ratio_corners():
    npx.set_np()
    try:
        net, images = conv_net(), photos(3)
        per_view = tta_view_probs(net, images, SIZE, RESIZE, MEAN, STD, views=TEN_CROP,
                                  batch_size=2)
        assert len(per_view) == 10 and all(p.shape == (3, 2) for p in per_view.values())
        avg = tta_predict(net, images, SIZE, RESIZE, MEAN, STD, views=TEN_CROP, batch_size=2)
        onp.testing.assert_allclose(avg, onp.mean(list(per_view.values()), axis=0), rtol=1e-6)
        onp.testing.assert_allclose(avg.sum(axis=1), 1, rtol=1e-5)
        # Short side to RESIZE, long side longer: the corners still fit.
        wide = tta_predict(net, images, SIZE, RESIZE, MEAN, STD, views=TEN_CROP,
                           keep_ratio=True)
        assert wide.shape == (3, 2) and onp.isfinite(wide).all()
        with pytest.raises(ValueError, match="unknown view"):
            view_transforms(SIZE, RESIZE, views=("middle",))
        with pytest.raises(ValueError, match="smaller than"):
            view_transforms(SIZE, SIZE - 2, views=("top_left",))["top_left"](
                arrays.array(images[0], dtype="uint8"))
    finally:
        npx.reset_np()


def test_compare_tta_reports_accuracies_and_seconds(array_mode):
    net, images = conv_net(), photos(6)
    labels = [0, 1, 0, 1, 0, 1]
    res = compare_tta(net, images, labels, SIZE, RESIZE, MEAN, STD, views=TEN_CROP)
    assert isinstance(res, TTAComparison) and res.views == TEN_CROP and res.num_images == 6
    book = predict.predict_proba(net, images, transforms.test_augs(SIZE, RESIZE, MEAN, STD))
    onp.testing.assert_array_equal(res.probs, book)
    assert res.accuracy == pytest.approx(float((book.argmax(1) == onp.array(labels)).mean()))
    tta = tta_predict(net, images, SIZE, RESIZE, MEAN, STD, views=TEN_CROP)
    onp.testing.assert_allclose(res.probs_tta, tta, rtol=1e-6)
    assert res.accuracy_tta == pytest.approx(float((tta.argmax(1) == onp.array(labels)).mean()))
    assert res.gain == pytest.approx(res.accuracy_tta - res.accuracy)
    assert res.seconds > 0 and res.seconds_tta > 0
    d = res.to_dict()
    assert set(d) == {"accuracy", "accuracy_tta", "gain", "seconds", "seconds_tta", "views",
                      "num_images"}
