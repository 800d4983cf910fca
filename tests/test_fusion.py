"""The fused inference twin computes what the net computes, follows its updates, and steps
aside where fusion does not apply (training mode, switched off)."""
from __future__ import annotations

import numpy as onp
import pytest

import d2l_helpers  # noqa: F401  (threads before mxnet)
from d2l_helpers import arrays, fusion, transforms
from d2l_helpers.data import read_image
from d2l_helpers.efficientnet_lite import MEAN, STD, efficientnet_lite0
from d2l_helpers.training import evaluate_accuracy_gpus


def _close(fused, plain) -> None:
    """Rounding only: within 1e-5 of the logits' scale, and the same decisions."""
    scale = max(1.0, float(onp.abs(plain).max()))
    assert onp.abs(fused - plain).max() <= 1e-5 * scale
    assert (fused.argmax(1) == plain.argmax(1)).all()


def _photos(shared_hotdog, size: int, n: int = 6):
    paths = sorted((shared_hotdog / "test" / "hotdog").iterdir())[:n // 2]
    paths += sorted((shared_hotdog / "test" / "not-hotdog").iterdir())[:n // 2]
    tf = transforms.test_augs(size, size * 256 // 224, MEAN, STD)
    return arrays.stack([tf(arrays.array(read_image(p), dtype="uint8")) for p in paths])


@pytest.mark.parametrize("size", [160, 224])
def test_pretrained_logits_on_real_photos(shared_hotdog, array_mode, size):
    net = efficientnet_lite0(pretrained=True)
    net.hybridize(static_alloc=True)
    x = _photos(shared_hotdog, size)
    plain = arrays.to_numpy(net(x))
    twin = fusion.inference_twin(net, x)
    assert twin is not net
    _close(arrays.to_numpy(fusion.forward(net, x)), plain)
    assert fusion.inference_twin(net, x) is twin  # built once


def _finetune_net():
    import mxnet as mx

    pretrained = efficientnet_lite0(pretrained=True)
    net = efficientnet_lite0(classes=2)
    net.features = pretrained.features
    net.output.initialize(mx.init.Xavier())
    return net


def _train_step(net, x, frozen_features: bool = False):
    import mxnet as mx
    from mxnet import autograd, gluon

    if frozen_features:
        for p in net.features.collect_params().values():
            p.grad_req = "null"
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.05})
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    for _ in range(2):
        with autograd.record():
            l = loss(net(x * 1.5 + 0.3), mx.nd.array([0, 1] * (x.shape[0] // 2)))
        l.backward()
        trainer.step(x.shape[0])


@pytest.mark.parametrize("frozen", [False, True])
def test_the_twin_follows_training(shared_hotdog, frozen):
    """Trained through the net (all of it, or the head only while BatchNorm's running
    statistics still move), the twin shares its Parameters and refolds."""
    net = _finetune_net()
    net.hybridize(static_alloc=True)
    x = _photos(shared_hotdog, 160)
    before = net(x).asnumpy()
    _close(fusion.forward(net, x).asnumpy(), before)
    _train_step(net, x, frozen_features=frozen)
    after = net(x).asnumpy()
    assert onp.abs(after - before).max() > 1e-2  # training moved the logits
    _close(fusion.forward(net, x).asnumpy(), after)


def test_batchnorm_statistics_alone_are_followed(shared_hotdog):
    net = _finetune_net()
    x = _photos(shared_hotdog, 160)
    fusion.forward(net, x)
    for name, p in net.collect_params().items():
        if name.endswith("running_mean"):
            p.set_data(p.data() + 0.25)
    _close(fusion.forward(net, x).asnumpy(), net(x).asnumpy())


def test_training_mode_and_the_switch_use_the_net_itself(shared_hotdog, monkeypatch):
    from mxnet import autograd

    net = _finetune_net()
    x = _photos(shared_hotdog, 160)
    with autograd.train_mode():  # BatchNorm on batch statistics: no folding possible
        assert fusion.inference_twin(net, x) is net
    monkeypatch.setenv(fusion.ENV_SWITCH, "0")
    assert not fusion.enabled()
    assert fusion.inference_twin(net, x) is net


def test_a_new_head_gets_a_new_twin(shared_hotdog):
    import mxnet as mx
    from mxnet.gluon import nn

    net = _finetune_net()
    x = _photos(shared_hotdog, 160)
    first = fusion.inference_twin(net, x)
    net.output = nn.Dense(3)
    net.output.initialize(mx.init.Xavier())
    out = fusion.forward(net, x)
    assert fusion.inference_twin(net, x) is not first
    assert out.shape == (x.shape[0], 3)
    fusion.release(net)
    assert net not in fusion._TWINS


def test_merging_lora_drops_the_twin_traced_from_the_unmerged_graph(shared_hotdog):
    """merge_lora keeps the Parameters (the cache key) but changes the graph: a twin traced
    before would add the low-rank update twice."""
    from mxnet import autograd

    from d2l_helpers.peft import add_lora, lora_layers, merge_lora

    net = _finetune_net()
    add_lora(net.features, rank=4, alpha=4.0)
    for layer in lora_layers(net.features):       # a non-zero update, as after training
        layer.lora_B.weight.set_data(layer.lora_B.weight.data() + 0.01)
    x = _photos(shared_hotdog, 160)
    with autograd.predict_mode():
        before = net(x).asnumpy()
    _close(fusion.forward(net, x).asnumpy(), before)
    assert merge_lora(net.features) > 0
    assert net not in fusion._TWINS
    with autograd.predict_mode():
        merged = net(x).asnumpy()
    _close(merged, before)
    _close(fusion.forward(net, x).asnumpy(), merged)


@pytest.mark.parametrize("method", ["LoRA", "residual adapters"])
def test_the_twin_follows_adapters_that_live_in_the_weights(shared_hotdog, method):
    """LoRA and the residual adapters build their conv weights in the graph (W + update):
    the fused twin refolds BatchNorm into the new weights after every training step."""
    from d2l_helpers.peft import add_adapters, add_lora

    net = _finetune_net()
    if method == "LoRA":
        add_lora(net.features, rank=4, alpha=4.0)
    else:
        add_adapters(net.features)
    for p in net.features.collect_params().values():
        if p.grad_req != "null":
            p.lr_mult = 50.0                      # let the adapters move visibly in 2 steps
    for p in net.output.collect_params().values():
        p.grad_req = "null"                       # only the adapters move the logits
    adapters = [p for p in net.features.collect_params().values() if p.grad_req != "null"]
    net.hybridize(static_alloc=True)
    x = _photos(shared_hotdog, 160)
    for _ in range(2):                            # the twin must follow each update
        before, weights = net(x).asnumpy(), [p.data().asnumpy().copy() for p in adapters]
        _close(fusion.forward(net, x).asnumpy(), before)
        _train_step(net, x)
        assert any(onp.abs(p.data().asnumpy() - w).max() > 0 for p, w in zip(adapters, weights))
        assert onp.abs(net(x).asnumpy() - before).max() > 1e-3
    _close(fusion.forward(net, x).asnumpy(), net(x).asnumpy())


def test_prediction_releases_its_twin(shared_hotdog):
    from d2l_helpers.predict import predict_logits

    net = _finetune_net()
    images = [read_image(p) for p in sorted((shared_hotdog / "test" / "hotdog").iterdir())[:3]]
    logits = predict_logits(net, images, transforms.test_augs(160, 183, MEAN, STD))
    assert logits.shape == (3, 2) and net not in fusion._TWINS


def test_evaluation_accuracy_is_the_same_fused_or_not(shared_hotdog, monkeypatch):
    """The accuracy the training loop records, on real photos, with and without fusion:
    a 2-way head that starts as ImageNet's hot-dog row (`head_init.init_from_row`)."""
    import mxnet as mx

    from d2l_helpers.head_init import init_from_row
    from d2l_helpers.session import run_loaders

    monkeypatch.setenv("HOTDOG_DIR", str(shared_hotdog))
    pretrained = efficientnet_lite0(pretrained=True)
    net = _finetune_net()
    init_from_row(net, pretrained, logit_threshold=10.0)
    net.hybridize(static_alloc=True)
    _, test_iter = run_loaders("ci", "efficientnet_lite0")
    fused = evaluate_accuracy_gpus(net, test_iter, [mx.cpu()])
    assert fusion.inference_twin(net, next(iter(test_iter))[0]) is not net
    monkeypatch.setenv(fusion.ENV_SWITCH, "0")
    plain = evaluate_accuracy_gpus(net, test_iter, [mx.cpu()])
    assert fused == plain > 0.6  # the same decisions, and better than chance
