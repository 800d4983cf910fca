"""Backbones: the model-zoo download path, the offline fallback, fresh weights per call,
the choice without network I/O, normalisation and parameter counts."""
from __future__ import annotations

import socket
import urllib.request

import mxnet as mx
import numpy as onp
import pytest
from mxnet.gluon.model_zoo import vision

from d2l_helpers import backbones
from d2l_helpers.backbones import BackboneUnavailable, get_backbone


@pytest.fixture
def offline_zoo(tmp_path, closed_port_url, monkeypatch):
    monkeypatch.setenv("MXNET_GLUON_REPO", closed_port_url)
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "empty_home"))
    monkeypatch.delenv("D2L_BACKBONE", raising=False)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("network I/O")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_resnet18_v2_downloads_from_the_model_zoo_into_mxnet_home(fake_model_zoo, tmp_path):
    assert backbones.weights_available("resnet18_v2") == (False, "not cached in $MXNET_HOME/models")
    ok, why = backbones.weights_available("resnet18_v2", check_url=True)
    assert ok and "downloadable" in why
    assert backbones.default_backbone_name() == "efficientnet_lite0"  # not cached yet
    net = get_backbone("resnet18_v2", pretrained=True)
    onp.testing.assert_array_equal(net.output.weight.data().asnumpy(),
                                   fake_model_zoo.output.weight.data().asnumpy())
    assert list((tmp_path / "mxnet_home" / "models").glob("resnet18_v2-*.params"))
    assert "cached" in backbones.weights_available("resnet18_v2")[1]
    name, reason = backbones.choose_backbone()
    assert name == "resnet18_v2" == backbones.default_backbone_name()
    assert "cached" in reason and str(tmp_path) not in reason


def test_choice_needs_no_network_and_prints_nothing(tmp_path, monkeypatch, no_network, capsys):
    monkeypatch.delenv("D2L_BACKBONE", raising=False)
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "empty_home"))
    name, reason = backbones.choose_backbone()
    assert name == "efficientnet_lite0" == backbones.default_backbone_name()
    assert "python -m d2l_helpers prefetch" in reason and "D2L_BACKBONE" in reason
    assert "$MXNET_HOME/models" in reason and str(tmp_path) not in reason
    assert "http" not in reason  # no URL either
    assert backbones.weights_available("resnet18_v2")[0] is False
    assert capsys.readouterr() == ("", "")


def test_offline_check_url_says_why(offline_zoo):
    ok, why = backbones.weights_available("resnet18_v2", check_url=True)
    assert not ok and "unreachable" in why and "$MXNET_HOME/models" in why


def test_offline_resnet_never_returns_random_weights(offline_zoo):
    with pytest.raises(BackboneUnavailable, match="D2L_BACKBONE=efficientnet_lite0"):
        get_backbone("resnet18_v2", pretrained=True)


def test_backbone_env_variable_and_validation(monkeypatch, no_network):
    monkeypatch.setenv("D2L_BACKBONE", "efficientnet_lite0")
    assert backbones.choose_backbone() == ("efficientnet_lite0", "set by $D2L_BACKBONE")
    assert backbones.default_backbone_name() == "efficientnet_lite0"
    monkeypatch.setenv("D2L_BACKBONE", "vgg11")
    with pytest.raises(ValueError, match="Unknown backbone 'vgg11'"):
        backbones.default_backbone_name()


def test_each_backbone_owns_its_normalisation():
    from d2l_helpers import efficientnet_lite, transforms

    resnet = backbones.backbone_spec("resnet18_v2")
    assert (resnet.mean, resnet.std) == (backbones.IMAGENET_MEAN, backbones.IMAGENET_STD)
    assert resnet.mean == (0.485, 0.456, 0.406) and resnet.std == (0.229, 0.224, 0.225)
    eff = backbones.backbone_spec("efficientnet_lite0")
    assert (eff.mean, eff.std) == (efficientnet_lite.MEAN, efficientnet_lite.STD)
    # transforms' defaults are the book's, i.e. resnet18_v2's
    assert transforms.test_augs.__defaults__[2:4] == (resnet.mean, resnet.std)


def test_parameter_counts_leave_out_running_statistics():
    """One definition (peft.trainable_summary): BatchNorm running statistics are in no
    total; a scratch resnet18_v2, whose model-zoo shapes wait for the first batch, is
    counted right before it."""
    net = backbones.build_scratch_net("resnet18_v2")
    size = {name: int(onp.prod(p.shape)) for name, p in net.collect_params().items()}
    stats = sum(n for name, n in size.items() if name.endswith(("running_mean", "running_var")))
    assert stats > 0 and min(size.values()) > 0
    before = backbones.count_parameters(net)
    assert before == sum(size.values()) - stats
    net(mx.nd.zeros((1, 3, 32, 32)))
    assert backbones.count_parameters(net) == before
    # the input BatchNorm (no scale, no shift: fixed) is the only thing that never trains
    assert backbones.count_parameters(net, trainable_only=True) == before - 2 * 3
    for p in net.features.collect_params().values():
        p.grad_req = "null"
    assert backbones.count_parameters(net, trainable_only=True) == 512 * 2 + 2


def test_counting_a_net_whose_shapes_are_unknown_fails_loudly():
    net = vision.resnet18_v2(classes=2)
    net.initialize()
    with pytest.raises(ValueError, match="first forward pass"):
        backbones.count_parameters(net)


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
