"""The book's augmentation pipelines: shapes and statistics."""
from __future__ import annotations

import numpy as onp
import pytest
from mxnet import nd

from d2l_helpers.backbones import IMAGENET_MEAN, IMAGENET_STD
from d2l_helpers.runtime import seed_everything
from d2l_helpers.transforms import test_augs as make_test_augs  # not collected as a test
from d2l_helpers.transforms import train_augs


def photo(h=300, w=400, seed=0):
    return nd.array(onp.random.RandomState(seed).randint(0, 256, (h, w, 3)), dtype="uint8")


@pytest.mark.parametrize("size,resize", [(224, 256), (96, 110)])
def test_shapes(size, resize):
    assert train_augs(size)(photo()).shape == (3, size, size)
    assert make_test_augs(size, resize)(photo()).shape == (3, size, size)


def test_normalisation_statistics():
    """A photo whose colour is the mean becomes 0; one std brighter becomes +1."""
    mean = onp.array(IMAGENET_MEAN) * 255
    img = nd.array(onp.broadcast_to(onp.round(mean), (260, 260, 3)).copy(), dtype="uint8")
    out = make_test_augs(224, 256)(img).asnumpy()
    onp.testing.assert_allclose(out.mean(axis=(1, 2)), 0, atol=0.01)
    bright = nd.array(onp.broadcast_to(onp.round(mean + onp.array(IMAGENET_STD) * 255),
                                       (260, 260, 3)).copy(), dtype="uint8")
    onp.testing.assert_allclose(make_test_augs(224, 256)(bright).asnumpy().mean(axis=(1, 2)), 1,
                                atol=0.01)


def test_custom_mean_std_for_other_backbones():
    img = nd.array(onp.full((64, 64, 3), 255), dtype="uint8")
    out = make_test_augs(32, 40, mean=(0.5,) * 3, std=(0.5,) * 3)(img).asnumpy()
    onp.testing.assert_allclose(out, 1.0, atol=1e-5)


def test_train_augs_are_random_but_seedable():
    img = photo()
    seed_everything(0)
    a = train_augs(64)(img).asnumpy()
    b = train_augs(64)(img).asnumpy()
    seed_everything(0)
    c = train_augs(64)(img).asnumpy()
    assert not onp.allclose(a, b)
    onp.testing.assert_array_equal(a, c)


def test_test_augs_are_deterministic_and_central():
    img = onp.zeros((256, 256, 3), onp.uint8)
    img[16:240, 16:240] = 255  # a white square exactly where the centre crop falls
    out = make_test_augs(224, 256, mean=(0, 0, 0), std=(1, 1, 1))(nd.array(img, dtype="uint8"))
    onp.testing.assert_allclose(out.asnumpy(), 1.0)
