"""The one array-mode policy: MXNet's NumPy mode (``npx.set_np()``) or its legacy ``nd``.

The book's notebooks turn on NumPy mode (``npx.set_np()`` after ``from d2l import mxnet as
d2l``), while plain MXNet scripts run in the legacy ``nd`` mode. The helper
package works in whichever mode its caller is in: every branch on the mode lives here, and
the rest of the package calls these functions.

Example:
    >>> from d2l_helpers import arrays
    >>> x = arrays.array([[1.0, 3.0]])
    >>> [round(float(v), 3) for v in arrays.to_numpy(arrays.softmax(x))[0]]
    [0.119, 0.881]
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager


def is_np() -> bool:
    """True when MXNet's NumPy mode is on (``npx.set_np()``, as in the book's notebooks)."""
    from mxnet.util import is_np_array

    return bool(is_np_array())


def array(x, dtype=None, ctx=None):
    """``x`` (a NumPy array, list or MXNet array) as an MXNet array of the active mode."""
    from mxnet import nd, np

    if hasattr(x, "asnumpy"):
        x = x.asnumpy()
    kwargs = {"dtype": dtype} if dtype is not None else {}
    if ctx is not None:
        kwargs["ctx"] = ctx
    return np.array(x, **kwargs) if is_np() else nd.array(x, **kwargs)


def stack(xs: Sequence, axis: int = 0):
    """Stack equally shaped arrays along a new ``axis``."""
    from mxnet import nd, np

    return np.stack(list(xs), axis=axis) if is_np() else nd.stack(*xs, axis=axis)


def concat(xs: Sequence, axis: int = 0):
    """Join arrays along an existing ``axis``."""
    from mxnet import nd, np

    return np.concatenate(list(xs), axis=axis) if is_np() else nd.concat(*xs, dim=axis)


def softmax(x, axis: int = -1):
    """Softmax along ``axis``."""
    from mxnet import nd, npx

    return npx.softmax(x, axis=axis) if is_np() else nd.softmax(x, axis=axis)


def to_numpy(x):
    """A host NumPy copy of an MXNet array (either mode)."""
    return x.asnumpy()


# Inside hybrid_forward, ``F`` is the symbol or ndarray module of the legacy mode, or the
# ``mxnet.symbol``/``mxnet.ndarray`` module whose ``np`` attribute is NumPy mode.

def clip(F, x, lo: float, hi: float):
    """``x`` clipped to [lo, hi] inside ``hybrid_forward``."""
    return F.np.clip(x, lo, hi) if is_np() else F.clip(x, lo, hi)


def pad_hw(F, x, before: int, after: int):
    """Zero-pad the last two axes (H, W) of an NCHW ``x`` inside ``hybrid_forward``.

    Both array modes run MXNet's legacy ``Pad`` operator: NumPy mode's ``np.pad`` computes
    the same zeros, but its backward pass took 2.6x as long in EfficientNet-Lite0's training
    step (operator profiles of both modes in docs/speed-profile.md).
    """
    width = (0, 0, 0, 0, before, after, before, after)
    if is_np():
        return F.pad(x.as_nd_ndarray(), mode="constant", pad_width=width).as_np_ndarray()
    return F.pad(x, mode="constant", pad_width=width)


def centre_kernel(F, w, k: int):
    """The 1 x 1 kernels ``w`` (out, in, 1, 1) at the centre of k x k kernels of zeros, inside
    ``hybrid_forward``: ``w`` times a one-hot k x k mask. (Padding ``w`` itself with ``Pad``
    gives the same numbers but took 20-30 ms a call on 1,152 1 x 1 kernels.)"""
    half = k // 2
    if is_np():
        return w * pad_hw(F, F.np.ones((1, 1, 1, 1)), half, half)
    return F.broadcast_mul(w, pad_hw(F, F.ones(shape=(1, 1, 1, 1)), half, half))


def convolution(F, x, weight, bias=None, **kwargs):
    """MXNet's ``Convolution`` (kernel, stride, pad, num_filter, num_group, no_bias)
    inside ``hybrid_forward``; ``bias`` only with ``no_bias=False``."""
    args = (x, weight) if bias is None else (x, weight, bias)
    return F.npx.convolution(*args, **kwargs) if is_np() else F.Convolution(*args, **kwargs)


def reshape(F, x, shape: tuple):
    """``x`` reshaped to ``shape`` inside ``hybrid_forward`` (either array mode)."""
    return F.np.reshape(x, shape) if is_np() else F.reshape(x, shape=shape)


def dot(F, a, b):
    """Matrix product of two 2-D arrays (either array mode): inside ``hybrid_forward`` with its
    ``F``, or imperatively with ``F = mxnet.nd``.

    Example:
        >>> from mxnet import nd
        >>> dot(nd, nd.ones((2, 3)), nd.ones((3, 1))).asnumpy().ravel().tolist()
        [3.0, 3.0]
    """
    return F.np.dot(a, b) if is_np() else F.dot(a, b)


def param_input(p, x, frozen: bool = False):
    """Parameter ``p`` where ``hybrid_forward`` needs it as an array although it belongs to
    a child block: its variable while Gluon traces the graph (``x`` a symbol), else its data
    on ``x``'s device (recorded by autograd like any input).

    ``frozen=True`` puts a gradient stop on the variable. Needed, not cosmetic: MXNet 1.9's
    ``static_alloc`` graphs compute wrong gradients for the *other* input of a sum when one
    input is a parameter with ``grad_req='null'`` (tests/test_peft.py shows it; a known MXNet
    bug: apache/mxnet#20293, ``elemwise_add`` hands both inputs one gradient buffer).
    """
    from mxnet import symbol

    if isinstance(x, symbol.Symbol):
        v = p.var()
        if frozen:  # BlockGrad is a legacy operator: it takes the classic symbol
            v = symbol.BlockGrad(v.as_nd_ndarray() if isinstance(v, symbol.numpy._Symbol) else v)
        return v.as_np_ndarray() if is_np() else v
    return p.data(x.context)


@contextmanager
def np_semantics(on: bool = True) -> Iterator[None]:
    """Run a block with NumPy shape semantics on (or off), then restore the caller's mode.

    Parameters saved in NumPy mode can only be loaded with NumPy shape semantics on (MXNet:
    "ndarray was saved in np shape semantics, must be loaded in the same semantics").
    """
    from mxnet import util

    # MXNet refuses NumPy arrays without NumPy shapes: shapes go on first and off last.
    if on:
        with util.np_shape(True), util.np_array(True):
            yield
    else:
        with util.np_array(False), util.np_shape(False):
            yield
