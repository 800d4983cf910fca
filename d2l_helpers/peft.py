"""Parameter-efficient fine-tuning for Gluon nets: BitFit, LoRA and residual adapters.

All three start from the ImageNet weights, freeze most of them and train a small set of
numbers next to a new head (which always trains in full: it is new, 2 x d + 2 numbers).

* **BitFit** (Ben Zaken et al., 2022) trains only the bias vectors. Conv layers in
  EfficientNet-Lite0 and ResNet-18 v2 have no bias (a BatchNorm follows them), so the
  biases here are the BatchNorm shifts (beta) plus any conv/dense bias. ``bn_scale=True``
  also trains the BatchNorm scales (gamma); `bitfit` reports the two groups separately.
* **LoRA** (Hu et al., 2022) keeps a layer's weight ``W`` frozen and learns a low-rank
  update, ``W + (alpha / r) B A``, with ``A`` of rank ``r`` and ``B`` initialised to zero,
  so the wrapped net computes exactly the pretrained function at step 0.
  For a ``Dense`` layer, ``A`` is ``r x in`` and ``B`` is ``out x r``. For a ``Conv2D``
  ``A`` is a conv with the layer's kernel, stride, padding and dilation into ``r``
  channels and ``B`` a 1 x 1 conv back to the output channels, so ``B A`` is a conv
  weight of the layer's own shape and merges into it exactly. A wrapped conv therefore
  runs once per call with the weight ``W + (alpha / r) B A`` built in the graph (the
  branch form ``base(x) + B(A(x))`` made two more convs and two more passes over the
  activations: this is the same function up to rounding, and faster: 1.66x the training
  images/s on EfficientNet-Lite0, docs/speed-profile.md). The base weight (and bias) stay
  frozen: the graph stops their gradient even if ``grad_req`` is changed later, and a
  conv built with its own ``activation`` (none here) would get it after the sum, so wrap
  only convs without one. That covers 1 x 1 convs
  (``A`` is then a matrix too) and ``k x k`` convs such as ResNet's 3 x 3 ones
  (``kxk=True``; off by default). Grouped and depthwise convs are never wrapped: a
  depthwise 3 x 3 kernel has 9 numbers per channel, already fewer than any rank-r factor.

* **Residual adapters** (Rebuffi et al., 2017, 2018, the parallel form) put a small 1 x 1
  convolution beside each pretrained *spatial* convolution (kernel larger than 1 x 1),
  ``base(x) + adapter(x)``, with the adapter initialised to zero, so training starts from
  the pretrained function. The adapter has the base's stride and groups: beside a
  depthwise ``k x k`` conv it is a depthwise 1 x 1 conv (one number per channel), beside an
  ungrouped one (ResNet's 3 x 3, EfficientNet's stem) a full 1 x 1 conv (1/9 of a 3 x 3's
  weights). It reads the centre pixel of each of the base's windows, whatever padding the
  base uses (`ResidualAdapter`), so the two outputs always line up; it is computed inside
  the base's kernel (one conv with ``W + a``, see `ResidualAdapter`). 1 x 1 convs get no
  adapter: a parallel 1 x 1 beside a 1 x 1 would just be a second copy of its weights.

`merge_lora` folds every update into its base weight for good (for inference: the plain
layer again, no ``B A`` product per call and no adapter parameters read); `unmerge_lora`
takes it back out so training can go on.

`param_kind` is the package's one classifier of parameters by name (weight, bias, BatchNorm
shift, scale or running statistic) and `trainable_summary` its one count of what trains:
BatchNorm's running mean and variance are statistics, not weights, and are in no total.

Example (random weights; `backbones.build_finetune_net` gives the ImageNet ones):
    >>> from d2l_helpers.efficientnet_lite import EfficientNetLite0
    >>> net = EfficientNetLite0(classes=2); net.initialize()
    >>> info = add_lora(net.features, rank=8)
    >>> info["wrapped"], info["trainable"], info["skipped"]
    (32, 182272, {'grouped/depthwise conv': 16, 'k x k conv': 1})
    >>> s = trainable_summary(net)            # the adapters and the 2-way head train
    >>> s["trainable"], s["total"], f"{s['share']:.2%}"
    (184834, 3555842, '5.20%')
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

from mxnet import gluon, init, nd
from mxnet.gluon import nn

from . import arrays

__all__ = ["LoRA", "add_lora", "lora_layers", "merge_lora", "unmerge_lora", "bitfit",
           "ResidualAdapter", "add_adapters", "freeze", "param_kind", "trainable_summary"]


def freeze(block) -> None:
    """Set ``grad_req = 'null'`` on every parameter of ``block``."""
    for p in block.collect_params().values():
        p.grad_req = "null"


def param_kind(name: str) -> str:
    """``'bn_stat'``, ``'bn_shift'``, ``'bn_scale'``, ``'bias'`` or ``'weight'`` from a Gluon
    parameter name: the one classifier that BitFit and every parameter count use.

    Example:
        >>> [param_kind(n) for n in ("conv0_weight", "dense0_bias", "batchnorm0_gamma",
        ...                          "batchnorm0_beta", "batchnorm0_running_var")]
        ['weight', 'bias', 'bn_scale', 'bn_shift', 'bn_stat']
    """
    if name.endswith(("running_mean", "running_var")):
        return "bn_stat"
    if name.endswith("beta"):
        return "bn_shift"
    if name.endswith("gamma"):
        return "bn_scale"
    if name.endswith("bias"):
        return "bias"
    return "weight"


def _size(p) -> int:
    """Scalars in parameter ``p``; ``ValueError`` while its shape is unknown (deferred
    initialisation: Gluon shows the missing sizes as 0, or -1 in NumPy mode)."""
    if p.shape is None or any(d <= 0 for d in p.shape):
        raise ValueError(
            f"parameter {p.name} has no shape yet {p.shape}: its size is inferred at the first "
            "forward pass. Run one batch through the net (or net.infer_shape(x)) before "
            "counting its parameters.")
    n = 1
    for d in p.shape:
        n *= d
    return n


def bitfit(features, bn_scale: bool = True) -> dict[str, int]:
    """Freeze ``features`` except its biases (BatchNorm beta, conv/dense bias).

    ``bn_scale=True`` also trains the BatchNorm scales (gamma). Returns the number of
    trainable scalars per group: ``{"bias": ..., "bn_shift": ..., "bn_scale": ...}``
    (``bn_scale`` is 0 when they stay frozen). The head is not touched: train it in full.

    Example:
        >>> from d2l_helpers.efficientnet_lite import EfficientNetLite0
        >>> bitfit(EfficientNetLite0(classes=2).features)
        {'bias': 0, 'bn_shift': 21008, 'bn_scale': 21008}
    """
    counts = {"bias": 0, "bn_shift": 0, "bn_scale": 0}
    for name, p in features.collect_params().items():
        kind = param_kind(name)
        train = kind in ("bias", "bn_shift") or (kind == "bn_scale" and bn_scale)
        p.grad_req = "write" if train else "null"
        if train:
            counts[kind] += _size(p)
    return counts


class LoRA(nn.HybridBlock):
    """``base(x) + (alpha / rank) * B(A(x))`` around a frozen ``Dense`` or ``Conv2D``.

    ``A`` starts from a Xavier draw and ``B`` from zeros, so at step 0 the block computes
    exactly ``base(x)``. A ``Dense`` base runs the branch ``B(A(x))`` beside it; a
    ``Conv2D`` base runs once with the weight ``W + (alpha / rank) B A`` (module docstring).
    ``merge()`` adds ``(alpha / rank) B A`` to ``base.weight`` for good and runs the base
    layer alone; ``unmerge()`` subtracts it again.

    Example:
        >>> layer = nn.Dense(4, in_units=3); layer.initialize()
        >>> lora = LoRA(layer, rank=2); lora.initialize_adapters()
        >>> float(lora.lora_B.weight.data().asnumpy().sum())
        0.0
    """

    def __init__(self, base, rank: int = 8, alpha: float | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if not isinstance(base, (nn.Dense, nn.Conv2D)):
            raise TypeError(f"LoRA wraps Dense or Conv2D layers, not {type(base).__name__}")
        self.rank = int(rank)
        self.alpha = float(alpha if alpha is not None else rank)
        self.scale = self.alpha / self.rank
        self.merged = False
        out_units, in_units = base.weight.shape[0], base.weight.shape[1]
        if isinstance(base, nn.Conv2D):
            kw = base._kwargs
            if kw.get("num_group", 1) != 1:
                raise ValueError("LoRA does not wrap grouped/depthwise convs (see module doc)")
            self._kernel = tuple(kw["kernel"])
        with self.name_scope():
            self.base = base
            if isinstance(base, nn.Dense):
                self.lora_A = nn.Dense(self.rank, in_units=in_units, use_bias=False,
                                       flatten=base._flatten)
                self.lora_B = nn.Dense(out_units, in_units=self.rank, use_bias=False,
                                       flatten=base._flatten)
            else:
                self.lora_A = nn.Conv2D(self.rank, self._kernel, kw["stride"], kw["pad"],
                                        kw["dilate"], in_channels=in_units, use_bias=False,
                                        layout=kw.get("layout", "NCHW"))
                self.lora_B = nn.Conv2D(out_units, 1, in_channels=self.rank, use_bias=False,
                                        layout=kw.get("layout", "NCHW"))
        freeze(self.base)

    def initialize_adapters(self, ctx=None) -> None:
        """Initialise ``A`` (Xavier) and ``B`` (zeros) on the base weight's devices."""
        ctx = ctx or self.base.weight.list_ctx()
        self.lora_A.initialize(init.Xavier(), ctx=ctx, force_reinit=True)
        self.lora_B.initialize(init.Zero(), ctx=ctx, force_reinit=True)

    def delta(self):
        """``(alpha / rank) B A`` as an array of ``base.weight``'s shape."""
        A = self.lora_A.weight.data()
        B = self.lora_B.weight.data()
        shape = self.base.weight.shape
        B, A = B.reshape(shape[0], self.rank), A.reshape(self.rank, -1)
        return arrays.dot(nd, B, A).reshape(shape) * self.scale

    def merge(self) -> None:
        """Fold the update into ``base.weight``; the block then runs the base layer only."""
        if not self.merged:
            self.base.weight.set_data(self.base.weight.data() + self.delta())
            self.merged = True

    def unmerge(self) -> None:
        """Undo `merge`: subtract the update again and apply it on each call."""
        if self.merged:
            self.base.weight.set_data(self.base.weight.data() - self.delta())
            self.merged = False

    def hybrid_forward(self, F, x):
        if self.merged:
            return self.base(x)
        if isinstance(self.base, nn.Dense):
            return self.base(x) + self.lora_B(self.lora_A(x)) * self.scale
        # A conv runs once, with the weight W + (alpha / r) B A built on each call: the same
        # function as the branch base(x) + B(A(x)) * scale (up to rounding), with no extra
        # pass over the activations; the gradients reach A and B through the weight.
        W = arrays.param_input(self.base.weight, x, frozen=True)
        A = arrays.param_input(self.lora_A.weight, x)
        B = arrays.param_input(self.lora_B.weight, x)
        shape = self.base.weight.shape
        BA = arrays.dot(F, arrays.reshape(F, B, (shape[0], self.rank)),
                        arrays.reshape(F, A, (self.rank, -1)))
        return _conv_with_weight(F, self.base, x, W + arrays.reshape(F, BA, shape) * self.scale)

    def __repr__(self) -> str:
        return f"LoRA(rank={self.rank}, alpha={self.alpha:g}, merged={self.merged}, {self.base!r})"


def _conv_with_weight(F, conv, x, weight):
    """``conv(x)`` with ``weight`` in place of ``conv.weight`` (its bias and activation kept)."""
    bias = arrays.param_input(conv.bias, x, frozen=True) if conv.bias is not None else None
    y = arrays.convolution(F, x, weight, bias, **conv._kwargs)
    return conv.act(y) if conv.act is not None else y


def _wrappable(layer, kxk: bool) -> bool:
    if isinstance(layer, nn.Dense):
        return True
    if isinstance(layer, nn.Conv2D) and layer._kwargs.get("num_group", 1) == 1:
        return kxk or all(k == 1 for k in layer._kwargs["kernel"])
    return False


def _replace_child(parent, key: str, new) -> None:
    """Swap child ``key`` of ``parent`` for ``new`` (Gluon forbids it through setattr)."""
    parent._children[key] = new
    if getattr(parent, key, None) is not None and not key.isdigit():
        object.__setattr__(parent, key, new)


def add_lora(block, rank: int = 8, alpha: float | None = None, kxk: bool = False,
             dense: bool = True) -> dict[str, Any]:
    """Wrap ``block``'s 1 x 1 convs (``kxk``: every ungrouped conv; ``dense``: Dense layers)
    in `LoRA`, freeze everything else in ``block`` and initialise the adapters.

    Returns ``{"wrapped": n_layers, "trainable": n_adapter_scalars, "skipped": {...}}``
    where ``skipped`` counts the conv layers left alone (grouped/depthwise, k x k).
    Call it on ``net.features`` so the new head keeps training in full. Convs already
    inside a `LoRA` or a `ResidualAdapter` are left as they are (not wrapped twice); like
    everything else in ``block``, such adapters are frozen.
    """
    freeze(block)
    wrapped, trainable = 0, 0
    skipped = {"grouped/depthwise conv": 0, "k x k conv": 0}

    def visit(parent) -> None:
        nonlocal wrapped, trainable
        for key, child in list(parent._children.items()):
            if isinstance(child, (LoRA, ResidualAdapter)):   # an adapted conv is left as it is
                continue
            if isinstance(child, nn.Conv2D) and not _wrappable(child, kxk):
                skipped["grouped/depthwise conv" if child._kwargs.get("num_group", 1) != 1
                        else "k x k conv"] += 1
            elif isinstance(child, nn.Conv2D) or (dense and isinstance(child, nn.Dense)):
                lora = LoRA(child, rank, alpha)
                lora.initialize_adapters()
                _replace_child(parent, key, lora)
                wrapped += 1
                trainable += _size(lora.lora_A.weight) + _size(lora.lora_B.weight)
            else:
                visit(child)

    visit(block)
    return {"wrapped": wrapped, "trainable": trainable, "skipped": skipped}


def lora_layers(block) -> Iterator[LoRA]:
    """Every `LoRA` block inside ``block``."""
    for child in block._children.values():
        if isinstance(child, LoRA):
            yield child
        else:
            yield from lora_layers(child)


def _clear(block) -> None:
    from . import fusion

    fusion.clear()  # the fused inference twins were traced from the old graph
    if isinstance(block, gluon.HybridBlock):
        block._clear_cached_op()
    for child in block._children.values():
        _clear(child)


def merge_lora(net) -> int:
    """Merge every LoRA update of ``net`` into its base weight; returns how many.

    A hybridized net is re-traced on its next call; the merged graph no longer reads the
    adapters, which Gluon would report as "Parameter lora... is not used by any
    computation": that warning is expected here and silenced.
    """
    warnings.filterwarnings("ignore", message=r"Parameter lora\d+_", category=UserWarning)
    layers = list(lora_layers(net))
    for layer in layers:
        layer.merge()
    _clear(net)  # hybridized graphs were traced with the branch
    return len(layers)


def unmerge_lora(net) -> int:
    """Undo `merge_lora`; returns how many layers were unmerged."""
    layers = list(lora_layers(net))
    for layer in layers:
        layer.unmerge()
    _clear(net)
    return len(layers)


class ResidualAdapter(nn.HybridBlock):
    """``base(x) + adapter(x)`` around a frozen spatial ``Conv2D`` (kernel larger than 1 x 1).

    The adapter is a 1 x 1 conv with ``base``'s stride and groups (depthwise stays
    depthwise); its ``weight`` (a parameter of this block) starts at zero, so the block
    computes exactly ``base(x)``. It reads the centre pixel of each window of ``base``,
    whatever its padding (EfficientNet's TensorFlow-"same" stride-2 convs get an input
    padded beforehand), because it runs *inside* the base's kernel: the block is one conv
    with ``base``'s kernel size, stride and padding and the weight ``W + a``, ``a`` the
    1 x 1 numbers placed at the centre of a k x k kernel of zeros. That is ``base(x) +
    adapter(x)`` up to rounding, at the cost of one conv instead of two and a sum. Only the
    1 x 1 numbers are parameters; the base's kernel must be square and odd, and the base
    stays frozen (the graph stops its gradient; `add_adapters` also sets its ``grad_req``).

    Example:
        >>> import mxnet as mx
        >>> conv = nn.Conv2D(4, 3, strides=2, padding=0, in_channels=4, groups=4, use_bias=False)
        >>> conv.initialize()
        >>> block = ResidualAdapter(conv); block.initialize_adapter()
        >>> x = mx.nd.random.uniform(shape=(1, 4, 9, 9))
        >>> bool((block(x) == conv(x)).asnumpy().all()), block.weight.shape
        (True, (4, 1, 1, 1))
    """

    def __init__(self, base, **kwargs: Any):
        super().__init__(**kwargs)
        if not isinstance(base, nn.Conv2D):
            raise TypeError(f"ResidualAdapter wraps Conv2D layers, not {type(base).__name__}")
        kw = base._kwargs
        kernel = tuple(kw["kernel"])
        if all(k == 1 for k in kernel):
            raise ValueError("a residual adapter goes beside a spatial conv, not a 1 x 1 one")
        if len(set(kernel)) != 1 or kernel[0] % 2 == 0:
            raise ValueError(f"a residual adapter needs a square kernel of odd size, not {kernel}")
        self._kernel_size = kernel[0]
        with self.name_scope():
            self.base = base
            self.weight = self.params.get("weight", shape=(base.weight.shape[0],
                                                           base.weight.shape[1], 1, 1),
                                          init=init.Zero())

    def initialize_adapter(self, ctx=None) -> None:
        """Zero the adapter (a no-op at step 0)."""
        self.weight.initialize(init.Zero(), ctx=ctx, force_reinit=True)

    def hybrid_forward(self, F, x, weight):
        # One conv with the base's kernel plus the adapter's numbers at its centre: the same
        # function as base(x) + adapter(x) (up to rounding), without a second pass over x.
        centred = arrays.centre_kernel(F, weight, self._kernel_size)
        W = arrays.param_input(self.base.weight, x, frozen=True)
        return _conv_with_weight(F, self.base, x, W + centred)


def add_adapters(block) -> dict[str, Any]:
    """Put a `ResidualAdapter` beside every spatial conv of ``block``, freeze the rest of
    ``block`` and zero the adapters; returns ``{"wrapped": n, "trainable": n_scalars}``.

    Call it on ``net.features`` so the new head keeps training in full.
    """
    freeze(block)
    wrapped, trainable = 0, 0

    def visit(parent) -> None:
        nonlocal wrapped, trainable
        for key, child in list(parent._children.items()):
            if isinstance(child, (ResidualAdapter, LoRA)):
                continue
            if isinstance(child, nn.Conv2D):
                if any(k > 1 for k in child._kwargs["kernel"]):
                    adapter = ResidualAdapter(child)
                    adapter.initialize_adapter()
                    _replace_child(parent, key, adapter)
                    wrapped += 1
                    trainable += _size(adapter.weight)
            else:
                visit(child)

    visit(block)
    return {"wrapped": wrapped, "trainable": trainable}


def trainable_summary(net) -> dict[str, int | float]:
    """What trains in ``net``: the package's one definition of "trainable" and "all".

    ``trainable``: scalars that an optimiser updates (``grad_req != 'null'``);
    ``total``: every scalar but BatchNorm's running mean and variance (statistics, not
    weights; `param_kind` ``'bn_stat'``); ``share``: ``trainable / total`` (0 to 1);
    ``weight``, ``bias``, ``bn_shift``, ``bn_scale``: the trainable scalars by kind.
    A parameter whose shape is not known yet raises ``ValueError`` rather than count as 0.

    Example:
        >>> layer = nn.HybridSequential()
        >>> layer.add(nn.Conv2D(4, 3, in_channels=2, use_bias=False), nn.BatchNorm(in_channels=4))
        >>> freeze(layer[0])
        >>> trainable_summary(layer)   # doctest: +NORMALIZE_WHITESPACE
        {'weight': 0, 'bias': 0, 'bn_shift': 4, 'bn_scale': 4, 'trainable': 8, 'total': 80,
         'share': 0.1}
    """
    out: dict[str, int | float] = {"weight": 0, "bias": 0, "bn_shift": 0, "bn_scale": 0,
                                   "trainable": 0, "total": 0}
    for name, p in net.collect_params().items():
        kind = param_kind(name)
        if kind == "bn_stat":
            continue
        n = _size(p)
        out["total"] += n
        if p.grad_req != "null":
            out[kind] += n
            out["trainable"] += n
    out["share"] = out["trainable"] / out["total"] if out["total"] else 0.0
    return out
