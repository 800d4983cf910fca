"""BitFit and LoRA (d2l_helpers.peft): step-0 no-op, gradients only where intended,
merge/unmerge round trips, BitFit leaves weights alone. Random weights, small inputs."""
import mxnet as mx
import numpy as onp
import pytest
from mxnet import autograd, gluon, nd
from mxnet.gluon import nn

import d2l_helpers  # noqa: F401  (threads)
from d2l_helpers.backbones import build_scratch_net, count_parameters
from d2l_helpers.peft import (
    LoRA,
    add_lora,
    bitfit,
    lora_layers,
    merge_lora,
    param_kind,
    trainable_summary,
    unmerge_lora,
)


def _x(n=4, size=64, seed=0):
    return nd.array(onp.random.RandomState(seed).randn(n, 3, size, size).astype("float32"))


def _net(name):
    net = build_scratch_net(name, classes=2, seed=0)
    net(_x(1))  # finish deferred shapes
    return net


def _params(net):
    """Parameters by structural name, e.g. ``features.1.expand.conv.lora_B.weight``."""
    return net._collect_params_with_prefix()


def _snapshot(net):
    return {k: p.data().asnumpy().copy() for k, p in _params(net).items()}


def _sgd_steps(net, X, steps=1, lr=0.05):
    y = nd.array([0, 1] * (X.shape[0] // 2))
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": lr})
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    for _ in range(steps):
        with autograd.record():
            l = loss(net(X), y)
        l.backward()
        trainer.step(X.shape[0], ignore_stale_grad=True)


@pytest.mark.parametrize("name,kxk", [("efficientnet_lite0", False), ("resnet18_v2", True)])
def test_lora_is_a_no_op_at_step_0(name, kxk):
    net = _net(name)
    X = _x()
    with autograd.predict_mode():
        before = net(X).asnumpy()
    info = add_lora(net.features, rank=4, kxk=kxk)
    assert info["wrapped"] > 0 and info["trainable"] > 0
    with autograd.predict_mode():
        after = net(X).asnumpy()
    # B = 0: the same function. Each wrapped layer is bit-identical (test below: W + 0 is W);
    # in the whole net a weight computed in the graph may lead oneDNN to other memory
    # layouts or kernels, which may move the last bits.
    onp.testing.assert_allclose(after, before, rtol=0, atol=1e-5)
    layer = next(lora_layers(net))
    x = nd.random.normal(shape=(2, layer.base.weight.shape[1], 8, 8))
    onp.testing.assert_array_equal(layer(x).asnumpy(), layer.base(x).asnumpy())
    for layer in lora_layers(net):
        assert float(layer.lora_B.weight.data().abs().sum().asscalar()) == 0.0
        assert float(layer.lora_A.weight.data().abs().sum().asscalar()) > 0.0


def test_efficientnet_wraps_1x1_convs_and_skips_depthwise():
    net = _net("efficientnet_lite0")
    info = add_lora(net.features, rank=4)
    assert info["skipped"]["grouped/depthwise conv"] == 16      # one per MBConv block
    assert info["skipped"]["k x k conv"] == 1                   # the 3x3 stem
    assert info["wrapped"] == 15 + 16 + 1                       # expand + project + head conv
    for layer in lora_layers(net):
        assert all(k == 1 for k in layer.base._kwargs["kernel"])
    with pytest.raises(ValueError, match="depthwise"):
        LoRA(nn.Conv2D(8, 3, groups=8, in_channels=8), rank=2)


def test_only_adapters_and_head_get_gradients():
    net = _net("efficientnet_lite0")
    add_lora(net.features, rank=4)
    trainable = {k for k, p in _params(net).items() if p.grad_req != "null"}
    assert trainable and all(".lora_A." in k or ".lora_B." in k or k.startswith("output.")
                             for k in trainable)
    X = _x()
    before = _snapshot(net)
    _sgd_steps(net, X, steps=1)
    after = _snapshot(net)
    changed = {k for k in before if not onp.array_equal(before[k], after[k])}
    stats = {k for k in before if k.endswith(("running_mean", "running_var"))}
    # Every base weight, BN affine included, is untouched; B and the head moved. A gets a
    # zero gradient at step 0 (dL/dA is B^T times something, and B = 0).
    assert changed - stats <= trainable
    assert {k for k in changed if k.startswith("output.")} == {"output.weight", "output.bias"}
    assert {k for k in changed if ".lora_B." in k}
    assert not {k for k in changed if ".lora_A." in k}
    _sgd_steps(net, X, steps=1)
    again = _snapshot(net)
    assert {k for k in before if ".lora_A." in k and not onp.array_equal(before[k], again[k])}


@pytest.mark.parametrize("name,kxk,hybridize", [("efficientnet_lite0", False, True),
                                                ("resnet18_v2", True, False)])
def test_merge_unmerge_round_trip(name, kxk, hybridize):
    net = _net(name)
    add_lora(net.features, rank=4, alpha=8, kxk=kxk)
    X = _x()
    _sgd_steps(net, X, steps=2)              # B != 0 now
    bases = {l.base.weight.name: l.base.weight.data().asnumpy().copy() for l in lora_layers(net)}
    if hybridize:
        net.hybridize(static_alloc=True)
    with autograd.predict_mode():
        unmerged = net(X).asnumpy()
        n = merge_lora(net)
        merged = net(X).asnumpy()
    assert n == len(bases)
    assert all(l.merged for l in lora_layers(net))
    assert any(not onp.array_equal(bases[l.base.weight.name], l.base.weight.data().asnumpy())
               for l in lora_layers(net))
    onp.testing.assert_allclose(merged, unmerged, rtol=1e-4, atol=1e-4)
    unmerge_lora(net)
    with autograd.predict_mode():
        again = net(X).asnumpy()
    onp.testing.assert_allclose(again, unmerged, rtol=1e-5, atol=1e-5)
    for l in lora_layers(net):
        onp.testing.assert_allclose(l.base.weight.data().asnumpy(), bases[l.base.weight.name],
                                    rtol=1e-6, atol=1e-6)


def test_dense_and_strided_kxk_conv_merge_exactly():
    mx.random.seed(1)
    for layer, shape in ((nn.Dense(5, in_units=7), (3, 7)),
                         (nn.Conv2D(6, 3, strides=2, padding=1, in_channels=4), (2, 4, 9, 9))):
        layer.initialize(mx.init.Xavier())
        lora = LoRA(layer, rank=2, alpha=4)
        lora.initialize_adapters()
        lora.lora_B.weight.set_data(nd.random.normal(shape=lora.lora_B.weight.shape))
        x = nd.random.normal(shape=shape)
        y = lora(x).asnumpy()
        lora.merge()
        onp.testing.assert_allclose(lora(x).asnumpy(), y, rtol=1e-4, atol=1e-5)
        lora.unmerge()
        onp.testing.assert_allclose(lora(x).asnumpy(), y, rtol=1e-5, atol=1e-5)


def test_lora_in_numpy_mode_merges():
    from mxnet import np as mnp
    from mxnet import npx
    npx.set_np()
    try:
        layer = nn.Conv2D(6, 1, in_channels=4)
        layer.initialize()
        lora = LoRA(layer, rank=2)
        lora.initialize_adapters()
        lora.lora_B.weight.set_data(mnp.ones(lora.lora_B.weight.shape))
        x = mnp.random.normal(size=(2, 4, 5, 5))
        y = lora(x).asnumpy()
        lora.merge()
        onp.testing.assert_allclose(lora(x).asnumpy(), y, rtol=1e-4, atol=1e-5)
    finally:
        npx.reset_np()


@pytest.mark.parametrize("bn_scale", [False, True])
def test_bitfit_leaves_every_weight_unchanged(bn_scale):
    net = _net("efficientnet_lite0")
    counts = bitfit(net.features, bn_scale=bn_scale)
    assert counts["bn_shift"] > 0 and (counts["bn_scale"] > 0) == bn_scale
    before = _snapshot(net)
    _sgd_steps(net, _x(), steps=1)
    after = _snapshot(net)
    for k in before:
        if k.startswith("output.") or k.endswith(("running_mean", "running_var")):
            continue
        moved = not onp.array_equal(before[k], after[k])
        if k.endswith("beta") or (bn_scale and k.endswith("gamma")):
            continue  # may move
        assert not moved, f"{k} changed under BitFit"
    assert any(not onp.array_equal(before[k], after[k]) for k in before if k.endswith("beta"))
    s = trainable_summary(net)
    head = 1280 * 2 + 2
    assert s["trainable"] == counts["bn_shift"] + counts["bn_scale"] + counts["bias"] + head
    assert s["weight"] == 1280 * 2     # only the head's weight matrix


def test_lora_params_save_and_load():
    net = _net("efficientnet_lite0")
    add_lora(net.features, rank=4)
    _sgd_steps(net, _x(), steps=2)
    import os
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        f = os.path.join(d, "net.params")
        net.save_parameters(f)
        other = _net("efficientnet_lite0")
        add_lora(other.features, rank=4)
        other.load_parameters(f)
    X = _x()
    with autograd.predict_mode():
        onp.testing.assert_array_equal(net(X).asnumpy(), other(X).asnumpy())


def test_one_definition_of_trainable_and_all():
    """Full fine-tune: 100 % of the weights train; the running statistics are not weights
    (counting them in the total gave 98.77 % for EfficientNet-Lite0)."""
    net = _net("efficientnet_lite0")
    s = trainable_summary(net)
    kinds = {}
    for name, p in net.collect_params().items():
        kinds[param_kind(name)] = kinds.get(param_kind(name), 0) + p.data().size
    assert s["total"] == sum(n for k, n in kinds.items() if k != "bn_stat") == count_parameters(net)
    assert s["trainable"] == s["total"] and s["share"] == 1.0
    assert {k: s[k] for k in ("weight", "bias", "bn_shift", "bn_scale")} == \
        {k: kinds[k] for k in ("weight", "bias", "bn_shift", "bn_scale")}
    assert s["total"] / (s["total"] + kinds["bn_stat"]) == pytest.approx(0.9877, abs=5e-5)
    counts = bitfit(net.features, bn_scale=False)
    s = trainable_summary(net)
    assert s["trainable"] == counts["bn_shift"] + 1280 * 2 + 2 == count_parameters(net, True)
    assert s["share"] == s["trainable"] / s["total"]


def test_lora_delta_in_both_modes():
    """LoRA.delta is (alpha / rank) B A in nd and in NumPy mode (arrays.dot)."""
    from mxnet import npx
    for np_mode in (False, True):
        if np_mode:
            npx.set_np()
        try:
            mx.random.seed(3)
            layer = nn.Dense(5, in_units=7)
            layer.initialize()
            lora = LoRA(layer, rank=2, alpha=4)
            lora.initialize_adapters()
            B = onp.arange(10, dtype="float32").reshape(5, 2)
            lora.lora_B.weight.set_data(mx.np.array(B) if np_mode else nd.array(B))
            A = lora.lora_A.weight.data().asnumpy()
            onp.testing.assert_allclose(lora.delta().asnumpy(), 2.0 * B @ A, rtol=1e-6)
        finally:
            if np_mode:
                npx.reset_np()


@pytest.mark.parametrize("np_mode,hybridize,conv", [(False, False, (6, 1, 1, 0)),
                                                      (False, True, (6, 3, 2, 1)),
                                                      (True, True, (6, 1, 1, 0))])
def test_lora_conv_is_the_branch_form_with_its_gradients(np_mode, hybridize, conv):
    """A wrapped conv runs once with W + (alpha / r) B A: the same outputs and the same
    gradients for A and B as the branch base(x) + B(A(x)) * scale, computed here from the
    child layers themselves."""
    from mxnet import npx
    if np_mode:
        npx.set_np()
    try:
        mx.random.seed(5)
        channels, kernel, stride, pad = conv
        layer = nn.Conv2D(channels, kernel, stride, pad, in_channels=4, use_bias=False)
        layer.initialize(mx.init.Xavier())
        lora = LoRA(layer, rank=2, alpha=6)
        lora.initialize_adapters()
        B = onp.random.RandomState(2).randn(*lora.lora_B.weight.shape).astype("float32")
        lora.lora_B.weight.set_data(mx.np.array(B) if np_mode else nd.array(B))
        rs = onp.random.RandomState(4).randn(2, 4, 9, 9).astype("float32")
        x = mx.np.array(rs) if np_mode else nd.array(rs)
        params = (lora.lora_A.weight, lora.lora_B.weight)

        def run(f):
            with autograd.record():
                y = f(x)
                (y * y).sum().backward()
            return y.asnumpy(), [p.grad().asnumpy().copy() for p in params]

        ref_y, ref_grads = run(lambda v: layer(v) + lora.lora_B(lora.lora_A(v)) * lora.scale)
        if hybridize:
            lora.hybridize(static_alloc=True)
        y, grads = run(lora)
        onp.testing.assert_allclose(y, ref_y, rtol=1e-4, atol=1e-4)
        for g, ref in zip(grads, ref_grads):
            assert onp.abs(ref).max() > 0
            onp.testing.assert_allclose(g, ref, rtol=1e-3, atol=1e-3 * onp.abs(ref).max())
        assert layer.weight.grad_req == "null"
    finally:
        if np_mode:
            npx.reset_np()


def test_static_alloc_needs_the_gradient_stop_on_the_frozen_weight(monkeypatch):
    """Why `arrays.param_input` has ``frozen``: without the stop, MXNet 1.9's static_alloc
    graph gives A and B wrong gradients (the sum W + (alpha / r) B A, W with grad_req null)."""
    from d2l_helpers import arrays

    plain = arrays.param_input

    def grads(stop: bool):
        if not stop:
            monkeypatch.setattr(arrays, "param_input", lambda p, x, frozen=False: plain(p, x))
        mx.random.seed(5)
        layer = nn.Conv2D(6, 1, in_channels=4, use_bias=False)
        layer.initialize(mx.init.Xavier())
        lora = LoRA(layer, rank=2, alpha=6)
        lora.initialize_adapters()
        lora.lora_B.weight.set_data(nd.ones(lora.lora_B.weight.shape))
        x = nd.array(onp.random.RandomState(4).randn(2, 4, 9, 9).astype("float32"))
        with autograd.record():
            y = layer(x) + lora.lora_B(lora.lora_A(x)) * lora.scale
            (y * y).sum().backward()
        ref = lora.lora_A.weight.grad().asnumpy().copy()
        lora.hybridize(static_alloc=True)
        with autograd.record():
            y = lora(x)
            (y * y).sum().backward()
        monkeypatch.undo()
        return onp.abs(lora.lora_A.weight.grad().asnumpy() - ref).max() / onp.abs(ref).max()

    assert grads(stop=True) < 1e-5
    assert grads(stop=False) > 0.1   # MXNet's bug; if this fails, MXNet no longer has it


# ---------------------------------------------------------------- residual adapters

def _reference_adapter(base, adapter_w, x):
    """NumPy: base(x) plus a 1 x 1 conv reading the centre pixel of each of base's windows."""
    kw = base._kwargs
    (kh, _), (sh, _), (ph, _) = kw["kernel"], kw["stride"], kw["pad"]
    g = kw.get("num_group", 1)
    y = base(x).asnumpy()
    xp = onp.pad(x.asnumpy(), ((0, 0), (0, 0), (ph, ph), (ph, ph)))
    centre = xp[:, :, kh // 2::sh, kh // 2::sh][:, :, :y.shape[2], :y.shape[3]]
    w = adapter_w[:, :, 0, 0]                           # (out, in / groups)
    out_c, in_g = w.shape
    groups = centre.reshape(centre.shape[0], g, in_g, *centre.shape[2:])
    w = w.reshape(g, out_c // g, in_g)
    return y + onp.einsum("goi,ngihw->ngohw", w, groups).reshape(y.shape)


@pytest.mark.parametrize("channels,kernel,stride,pad,groups", [
    (6, 3, 2, 0, 6),    # EfficientNet's stride-2 depthwise 3x3 (input padded beforehand)
    (6, 5, 2, 0, 6),    # ... and 5x5
    (6, 5, 1, 2, 6),    # stride-1 depthwise, symmetric padding
    (8, 3, 1, 1, 1),    # ResNet's ungrouped 3x3
    (8, 3, 2, 1, 1),    # ResNet's strided 3x3
])
def test_residual_adapter_reads_the_centre_of_each_window(channels, kernel, stride, pad, groups):
    from d2l_helpers.peft import ResidualAdapter

    base = nn.Conv2D(channels, kernel, stride, pad, groups=groups, in_channels=6, use_bias=False)
    base.initialize(mx.init.Xavier())
    block = ResidualAdapter(base)
    block.initialize_adapter()
    x = nd.random.normal(shape=(2, 6, 11, 11))
    onp.testing.assert_array_equal(block(x).asnumpy(), base(x).asnumpy())   # zero at step 0
    w = onp.random.RandomState(1).randn(*block.weight.shape).astype("float32")
    block.weight.set_data(nd.array(w))
    onp.testing.assert_allclose(block(x).asnumpy(), _reference_adapter(base, w, x), atol=1e-5)
    block.hybridize()
    onp.testing.assert_allclose(block(x).asnumpy(), _reference_adapter(base, w, x), atol=1e-5)
    # The gradient of the loss sum(y * g) for the adapter: sum over the centre pixels x * g.
    g = onp.random.RandomState(2).randn(*block(x).shape).astype("float32")
    with autograd.record():
        (block(x) * nd.array(g)).sum().backward()
    xp = onp.pad(x.asnumpy(), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    centre = xp[:, :, kernel // 2::stride, kernel // 2::stride][:, :, :g.shape[2], :g.shape[3]]
    in_g = block.weight.shape[1]
    centre = centre.reshape(2, groups, in_g, *g.shape[2:])
    ref = onp.einsum("ngohw,ngihw->goi", g.reshape(2, groups, channels // groups, *g.shape[2:]),
                     centre).reshape(block.weight.shape)
    onp.testing.assert_allclose(block.weight.grad().asnumpy(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("np_mode", [False, True])
def test_residual_adapter_gradient_in_a_static_alloc_graph(np_mode):
    """As training runs it: base frozen, hybridized with static_alloc, in both array modes;
    the adapter's gradient equals the NumPy reference (sum over the centre pixels x * g)."""
    from mxnet import npx

    from d2l_helpers.peft import ResidualAdapter, freeze

    if np_mode:
        npx.set_np()
    try:
        mx.random.seed(7)
        base = nn.Conv2D(6, 3, 2, 0, groups=6, in_channels=6, use_bias=False)
        base.initialize(mx.init.Xavier())
        block = ResidualAdapter(base)
        block.initialize_adapter()
        freeze(base)
        w = onp.random.RandomState(1).randn(*block.weight.shape).astype("float32")
        xs = onp.random.RandomState(3).randn(2, 6, 11, 11).astype("float32")
        g = onp.random.RandomState(2).randn(2, 6, 5, 5).astype("float32")
        arr = mx.np.array if np_mode else nd.array
        block.weight.set_data(arr(w))
        block.hybridize(static_alloc=True)
        for _ in range(2):                       # the second call reuses the static plan
            with autograd.record():
                (block(arr(xs)) * arr(g)).sum().backward()
            centre = xs[:, :, 1::2, 1::2][:, :, :5, :5]
            ref = (g * centre).sum(axis=(0, 2, 3)).reshape(block.weight.shape)
            onp.testing.assert_allclose(block.weight.grad().asnumpy(), ref, rtol=1e-4, atol=1e-4)
    finally:
        if np_mode:
            npx.reset_np()


@pytest.mark.parametrize("name,expected", [("efficientnet_lite0", 17), ("resnet18_v2", 17)])
def test_adapters_go_beside_every_spatial_conv_and_start_as_a_no_op(name, expected):
    from d2l_helpers.peft import ResidualAdapter, add_adapters

    net = _net(name)
    X = _x()
    with autograd.predict_mode():
        before = net(X).asnumpy()
    info = add_adapters(net.features)
    assert info["wrapped"] == expected and info["trainable"] > 0
    with autograd.predict_mode():
        after = net(X).asnumpy()
    onp.testing.assert_allclose(after, before, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="1 x 1"):
        ResidualAdapter(nn.Conv2D(4, 1, in_channels=4))


def test_adapters_and_head_are_all_that_train():
    from d2l_helpers.peft import add_adapters

    net = _net("efficientnet_lite0")
    info = add_adapters(net.features)
    trainable = {k for k, p in _params(net).items() if p.grad_req != "null"}
    assert all(k.startswith("output.") or (k.endswith(".weight") and ".base." not in k)
               for k in trainable)
    assert any(not k.startswith("output.") for k in trainable)
    assert trainable_summary(net)["trainable"] == info["trainable"] + count_parameters(net.output)
    before = _snapshot(net)
    _sgd_steps(net, _x(), steps=1)
    after = _snapshot(net)
    changed = {k for k in before if not onp.array_equal(before[k], after[k])}
    stats = {k for k in before if k.endswith(("running_mean", "running_var"))}
    assert changed - stats <= trainable
    moved = {k for k in changed if k in trainable and not k.startswith("output.")}
    assert moved, "the zero-initialised adapters must move at step 1 (their gradient is not 0)"


def test_add_lora_leaves_adapted_convs_alone():
    """`add_lora` after `add_adapters` wraps no adapter's base conv: the adapted convs stay
    ResidualAdapters and the net still computes what it did (both start as a no-op)."""
    from d2l_helpers.peft import LoRA, ResidualAdapter, add_adapters, add_lora

    net = _net("efficientnet_lite0")
    X = _x()
    with autograd.predict_mode():
        before = net(X).asnumpy()
    n_adapters = add_adapters(net.features)["wrapped"]
    add_lora(net.features, rank=2, kxk=True)
    blocks = []

    def walk(block):
        for child in block._children.values():
            blocks.append(child)
            walk(child)

    walk(net.features)
    adapters = [b for b in blocks if isinstance(b, ResidualAdapter)]
    assert len(adapters) == n_adapters
    assert not any(isinstance(a.base, LoRA) for a in adapters)
    assert not any(isinstance(b, LoRA) and isinstance(b.base, ResidualAdapter) for b in blocks)
    assert all(a.weight.grad_req == "null" for a in adapters)   # frozen like the rest
    with autograd.predict_mode():
        onp.testing.assert_allclose(net(X).asnumpy(), before, rtol=0, atol=1e-5)
