"""Backbones: the model-zoo download path, the offline fallback, fresh weights per call."""
from __future__ import annotations

import hashlib
import zipfile

import numpy as onp
import pytest

import mxnet as mx
from mxnet.gluon.model_zoo import model_store, vision

from d2l_helpers import backbones
from d2l_helpers.backbones import BackboneUnavailable, get_backbone


@pytest.fixture
def fake_model_zoo(tmp_path, http_server, monkeypatch):
    """A loopback model zoo serving a (randomly initialised) resnet18_v2 in the zoo's format."""
    www, base = http_server
    net = vision.resnet18_v2()
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 32, 32)))
    params = tmp_path / "resnet18_v2.params"
    net.save_parameters(str(params))
    sha1 = hashlib.sha1(params.read_bytes()).hexdigest()
    monkeypatch.setitem(model_store._model_sha1, "resnet18_v2", sha1)
    name = f"resnet18_v2-{sha1[:8]}"
    (www / "gluon" / "models").mkdir(parents=True)
    with zipfile.ZipFile(www / "gluon" / "models" / f"{name}.zip", "w") as zf:
        zf.write(params, f"{name}.params")
    monkeypatch.setenv("MXNET_GLUON_REPO", base)
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mxnet_home"))
    monkeypatch.delenv("D2L_BACKBONE", raising=False)
    return net


@pytest.fixture
def offline_zoo(tmp_path, closed_port_url, monkeypatch):
    monkeypatch.setenv("MXNET_GLUON_REPO", closed_port_url)
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "empty_home"))
    monkeypatch.delenv("D2L_BACKBONE", raising=False)


def test_resnet18_v2_downloads_from_the_model_zoo_into_mxnet_home(fake_model_zoo, tmp_path):
    ok, why = backbones.weights_available("resnet18_v2")
    assert ok and "downloadable" in why
    assert backbones.default_backbone_name(announce=pytest.fail) == "resnet18_v2"
    net = get_backbone("resnet18_v2", pretrained=True)
    onp.testing.assert_array_equal(net.output.weight.data().asnumpy(),
                                   fake_model_zoo.output.weight.data().asnumpy())
    assert list((tmp_path / "mxnet_home" / "models").glob("resnet18_v2-*.params"))
    assert "cached" in backbones.weights_available("resnet18_v2")[1]


def test_offline_default_falls_back_to_efficientnet_with_a_notice(offline_zoo):
    said = []
    assert backbones.default_backbone_name(announce=said.append) == "efficientnet_lite0"
    assert len(said) == 1 and "resnet18_v2" in said[0] and "D2L_BACKBONE" in said[0]


def test_offline_resnet_never_returns_random_weights(offline_zoo):
    with pytest.raises(BackboneUnavailable, match="D2L_BACKBONE=efficientnet_lite0"):
        get_backbone("resnet18_v2", pretrained=True)


def test_backbone_env_variable_and_validation(monkeypatch):
    monkeypatch.setenv("D2L_BACKBONE", "efficientnet_lite0")
    assert backbones.default_backbone_name(announce=pytest.fail) == "efficientnet_lite0"
    monkeypatch.setenv("D2L_BACKBONE", "vgg11")
    with pytest.raises(ValueError, match="Unknown backbone 'vgg11'"):
        backbones.default_backbone_name()


def test_pretrained_needs_the_imagenet_head():
    with pytest.raises(ValueError, match="1000-class"):
        get_backbone("efficientnet_lite0", pretrained=True, classes=2)


@pytest.mark.parametrize("name", ["resnet18_v2", "efficientnet_lite0"])
def test_same_interface_as_the_model_zoo(name):
    net = backbones.build_scratch_net(name)
    x = mx.nd.random.uniform(shape=(2, 3, 64, 64))
    feats = net.features(x)
    assert feats.shape == (2, backbones.backbone_spec(name).feature_dim)
    assert net.output(feats).shape == (2, 2) and net(x).shape == (2, 2)


def test_every_finetune_net_starts_from_imagenet_not_the_last_run():
    net1, pre1 = backbones.build_finetune_net("efficientnet_lite0")
    w = net1.features.collect_params()
    first = next(iter(w.values()))
    original = first.data().asnumpy().copy()
    first.set_data(first.data() * 0)  # "train" the shared backbone
    assert (next(iter(pre1.features.collect_params().values())).data().asnumpy() == 0).all()
    net2, _ = backbones.build_finetune_net("efficientnet_lite0")
    onp.testing.assert_array_equal(next(iter(net2.features.collect_params().values()))
                                   .data().asnumpy(), original)
    assert {p.lr_mult for p in net2.output.collect_params().values()} == {10.0}
    assert {p.lr_mult for p in net2.features.collect_params().values()} == {1.0}
