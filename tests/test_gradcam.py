"""Grad-CAM maps come from real gradients: they find a bright patch a tiny net looks for."""
from __future__ import annotations

import mxnet as mx
import numpy as onp
import pytest
from mxnet import init, npx
from mxnet.gluon import nn

from d2l_helpers import arrays
from d2l_helpers.gradcam import grad_cam, grad_cam_images, pooling_index

SIZE = 32          # input pixels; the feature map is SIZE / 4 = 8 cells a side



def patch_net(hybridize: bool = False):
    """Channel 0 of the last feature map fires on bright pixels, channel 1 on dark ones;
    class 0 = bright - dark, class 1 = dark - bright (weights set by hand)."""
    net = nn.HybridSequential()
    with net.name_scope():
        net.features = nn.HybridSequential()
        net.features.add(nn.Conv2D(2, 1, in_channels=3), nn.Activation("relu"),
                         nn.AvgPool2D(4), nn.GlobalAvgPool2D(), nn.Flatten())
        net.output = nn.Dense(2, in_units=2)
    net.initialize()
    conv = net.features[0]
    conv.weight.set_data(arrays.array(onp.array([[1 / 3] * 3, [-1 / 3] * 3],
                                                "float32").reshape(2, 3, 1, 1)))
    conv.bias.set_data(arrays.array(onp.array([-0.5, 0.5], "float32")))
    net.output.weight.set_data(arrays.array(onp.array([[1, -1], [-1, 1]], "float32")))
    net.output.bias.set_data(arrays.array(onp.zeros(2, "float32")))
    if hybridize:
        net.hybridize(static_alloc=True)
    return net


def photo(top: int, left: int, n: int = 1) -> onp.ndarray:
    """Dark (N, 3, SIZE, SIZE) images with a bright 8 x 8 patch at (top, left)."""
    x = onp.zeros((n, 3, SIZE, SIZE), "float32")
    x[:, :, top:top + 8, left:left + 8] = 1.0
    return x


def quadrant_means(m: onp.ndarray) -> onp.ndarray:
    """(2, 2) mean of the map over each quadrant: [top, bottom] x [left, right]."""
    h = SIZE // 2
    return onp.array([[m[:h, :h].mean(), m[:h, h:].mean()], [m[h:, :h].mean(), m[h:, h:].mean()]])


def quadrant(m: onp.ndarray) -> tuple[int, int]:
    """(row half, column half) of the map's peak, which must be in its hottest quadrant."""
    r, c = onp.unravel_index(int(m.argmax()), m.shape)
    peak = int(r >= SIZE // 2), int(c >= SIZE // 2)
    assert peak == onp.unravel_index(int(quadrant_means(m).argmax()), (2, 2))
    return peak


def test_map_peaks_on_the_patch_and_follows_it(array_mode):
    net = patch_net()
    x = onp.concatenate([photo(4, 4), photo(20, 20)])      # top-left, bottom-right
    cam = grad_cam(net, arrays.array(x), class_index=0)
    assert cam.maps.shape == (2, SIZE, SIZE) and cam.maps.dtype == onp.float32
    assert [quadrant(m) for m in cam.maps] == [(0, 0), (1, 1)]
    assert cam.maps.max() == pytest.approx(1.0) and cam.maps.min() >= 0
    # The channel weights are the gradient d score / d A: output row / (8 * 8 cells).
    onp.testing.assert_allclose(cam.channel_weights, [[1 / 64, -1 / 64]] * 2, rtol=1e-5)
    # Far from the patch the map is zero (no evidence for class 0 there).
    assert cam.maps[0, 24:, 24:].max() == 0 and cam.maps[1, :8, :8].max() == 0
    onp.testing.assert_allclose(cam.probs.sum(axis=1), 1, rtol=1e-5)
    assert cam.probs.argmax(axis=1).tolist() == [1, 1]     # the patch is small: mostly dark


def test_a_class_that_weighs_the_patch_negatively_does_not_peak_there(array_mode):
    net = patch_net()
    cam = grad_cam(net, photo(4, 4), class_index=1)
    onp.testing.assert_allclose(cam.channel_weights, [[-1 / 64, 1 / 64]], rtol=1e-5)
    means = quadrant_means(cam.maps[0])
    assert means[0, 0] < means.ravel()[1:].min()                  # coldest: top-left
    assert cam.maps[0, 6:10, 6:10].max() == 0        # nothing on the patch (its interior:
    assert cam.maps[0].max() == pytest.approx(1.0)   # bilinear upsampling blurs its edge)
    assert cam.maps[0, 16:, 16:].min() == pytest.approx(1.0)   # evidence all over the dark


def test_per_image_classes_default_prediction_and_hybridized_net():
    npx.set_np()
    try:
        x = onp.concatenate([photo(4, 4), photo(20, 20)])
        plain = grad_cam(patch_net(), x, class_index=[0, 1])
        assert plain.class_index.tolist() == [0, 1]
        assert quadrant(plain.maps[0]) == (0, 0) and plain.maps[1, 22:26, 22:26].max() == 0
        predicted = grad_cam(patch_net(), x)                  # None: the argmax, class 1
        assert predicted.class_index.tolist() == [1, 1]
        net = patch_net(hybridize=True)
        net(arrays.array(x))                                  # builds the cached graph
        hybrid = grad_cam(net, x, class_index=[0, 1])
        onp.testing.assert_allclose(hybrid.maps, plain.maps, rtol=1e-5, atol=1e-6)
        with pytest.raises(ValueError, match="class_index"):
            grad_cam(patch_net(), x, class_index=2)
    finally:
        npx.reset_np()


def test_grad_cam_images_applies_the_transform():
    npx.set_np()
    try:
        img = onp.zeros((SIZE, SIZE, 3), "uint8")
        img[20:28, 4:12] = 255                                # bottom-left
        to_chw = lambda a: a.transpose(2, 0, 1).astype("float32") / 255   # noqa: E731
        cam = grad_cam_images(patch_net(), [img], to_chw, class_index=0)
        assert quadrant(cam.maps[0]) == (1, 0)
    finally:
        npx.reset_np()


def test_efficientnet_lite0_random_weights_shapes_and_range():
    from d2l_helpers.efficientnet_lite import efficientnet_lite0

    npx.set_np()
    try:
        mx.random.seed(0)
        net = efficientnet_lite0(classes=2)
        net.initialize(init.Xavier())
        assert pooling_index(net) == len(net.features) - 2
        x = mx.np.random.uniform(-1, 1, (2, 3, 64, 64))
        cam = grad_cam(net, x)
        assert cam.maps.shape == (2, 64, 64) and cam.raw.shape == (2, 2, 2)
        assert cam.channel_weights.shape == (2, 1280) and cam.probs.shape == (2, 2)
        assert onp.isfinite(cam.maps).all() and cam.maps.min() >= 0 and cam.maps.max() <= 1
        assert set(onp.round(cam.maps.max(axis=(1, 2)), 5)) <= {0.0, 1.0}
        assert cam.class_index.tolist() == cam.probs.argmax(axis=1).tolist()
    finally:
        npx.reset_np()


def test_no_pooling_child_asks_for_target_layer():
    net = nn.HybridSequential()
    with net.name_scope():
        net.features = nn.HybridSequential()
        net.features.add(nn.Conv2D(2, 1, in_channels=3), nn.Flatten())
        net.output = nn.Dense(2, in_units=2 * 4 * 4)
    net.initialize()
    with pytest.raises(ValueError, match="target_layer"):
        grad_cam(net, onp.zeros((1, 3, 4, 4), "float32"))
    cam = grad_cam(net, onp.ones((1, 3, 4, 4), "float32"), class_index=0, target_layer=0)
    assert cam.maps.shape == (1, 4, 4)
