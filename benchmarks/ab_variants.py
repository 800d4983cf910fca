"""Side-by-side timing and exactness checks of EfficientNet-Lite0 `_ConvBN` variants.

    cd /work/speed
    # in one process: variants interleaved (A B C A B C ...), ratios to the first one
    python benchmarks/ab_variants.py inproc --variants explicit/clip,kernel/clip --reps 5
    # exactness of each variant against the first (logits on real photos, gradients)
    python benchmarks/ab_variants.py check --variants explicit/clip,kernel/clip,explicit/min_act
    # environment settings / hybridize flags: one fresh process per run, interleaved
    python benchmarks/ab_variants.py procs --configs "base:;passive:OMP_WAIT_POLICY=PASSIVE" --reps 3

A variant is ``<pad>/<act>``: pad ``explicit`` (the current Pad op before stride-2 convs)
or ``kernel`` (the (k+1)x(k+1) zero-led kernel with symmetric padding p+1); act ``clip``
(current), ``min_act`` (minimum(Activation relu, 6)), ``act_diff`` (relu(x) - relu(x - 6)),
``min_relu`` (minimum(relu, 6)), ``hsig`` (6 * hard_sigmoid(x / 6 + 0)).
This file patches `_ConvBN.hybrid_forward` for the experiment only.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet import autograd, gluon  # noqa: E402

import d2l_helpers  # noqa: E402,F401
from d2l_helpers import efficientnet_lite as E  # noqa: E402

ACTS = {
    "clip": lambda F, x: F.clip(x, 0, 6),
    "min_act": lambda F, x: F.minimum(F.Activation(x, act_type="relu"), 6.0),
    "act_diff": lambda F, x: F.Activation(x, act_type="relu") - F.Activation(x - 6.0, act_type="relu"),
    "min_relu": lambda F, x: F.minimum(F.relu(x), 6.0),
    "hsig": lambda F, x: 6.0 * F.hard_sigmoid(x, alpha=1 / 6, beta=0.0),
}


def _variant_forward(self, F, x):
    pad_mode, act = getattr(self, "_v", ("explicit", "clip"))
    pad = getattr(self, "_pad", None)
    if pad is not None and pad_mode == "kernel":
        w = self.conv.weight.var() if F is mx.sym else self.conv.weight.data(x.context)
        w = F.pad(w, mode="constant", pad_width=(0, 0, 0, 0, 1, 0, 1, 0))
        kw = self.conv._kwargs
        k = kw["kernel"][0] + 1
        x = F.Convolution(x, w, kernel=(k, k), stride=kw["stride"], pad=(pad[1], pad[1]),
                          num_filter=kw["num_filter"], num_group=kw["num_group"], no_bias=True)
    else:
        if pad is not None:
            b, a = pad
            x = F.pad(x, mode="constant", pad_width=(0, 0, 0, 0, b, a, b, a))
        x = self.conv(x)
    x = self.bn(x)
    return ACTS[act](F, x) if self._act else x


def patch() -> None:
    E._ConvBN.hybrid_forward = _variant_forward


def set_variant(net, spec: str) -> None:
    pad_mode, act = spec.split("/")
    assert pad_mode in ("explicit", "kernel") and act in ACTS, spec
    for blk in _convbns(net):
        blk._v = (pad_mode, act)
        # back to a plain k x k Conv2D (undoes _PadKernelConv2D if the module has it)
        k, stride = blk.conv.weight.shape[-1], blk.conv._kwargs["stride"][0]
        total = max(k - stride, 0)
        b, a = total // 2, total - total // 2
        blk._pad = (b, a) if b != a else None
        if blk._pad is not None:
            blk.conv.__class__ = gluon.nn.Conv2D
            blk.conv._kwargs.update(kernel=(k, k), pad=(0, 0))


def _convbns(block):
    if isinstance(block, E._ConvBN):
        yield block
    for child in block._children.values():
        yield from _convbns(child)


def finetune_net(seed=0):
    from d2l_helpers.backbones import build_finetune_net

    net, _ = build_finetune_net("efficientnet_lite0", seed=seed, ctx=mx.cpu())
    return net


def make_batch(batch, size, seed=0):
    mx.random.seed(seed)
    X = mx.nd.random.normal(shape=(batch, 3, size, size))
    y = mx.nd.array((np.arange(batch) % 2).astype("float32"))
    return X, y


class Runner:
    """A hybridized fine-tune net with its own trainer, ready to time steps."""

    def __init__(self, spec, batch, size, static_shape=False):
        from d2l_helpers.training import FINETUNE_LR, WEIGHT_DECAY

        self.spec = spec
        self.net = finetune_net()
        set_variant(self.net, spec)
        self.net.hybridize(static_alloc=True, static_shape=static_shape)
        self.trainer = gluon.Trainer(self.net.collect_params(), "sgd",
                                     {"learning_rate": FINETUNE_LR, "wd": WEIGHT_DECAY})
        self.loss = gluon.loss.SoftmaxCrossEntropyLoss()
        self.X, self.y = make_batch(batch, size)

    def train_step(self):
        from d2l_helpers.training import train_batch_ch13

        t0 = time.perf_counter()
        l, _ = train_batch_ch13(self.net, self.X, self.y, self.loss, self.trainer, [mx.cpu()])
        l.wait_to_read()
        mx.nd.waitall()
        return time.perf_counter() - t0

    def eval_step(self):
        t0 = time.perf_counter()
        self.net(self.X).wait_to_read()
        mx.nd.waitall()
        return time.perf_counter() - t0


def summarize(label, ratios, times):
    r = sorted(ratios)
    return (f"{label:<22} median step {statistics.median(times) * 1000:8.1f} ms "
            f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}); ratio to base "
            f"median {statistics.median(r):.3f} (min {r[0]:.3f}, max {r[-1]:.3f}, n={len(r)})")


def cmd_inproc(args):
    patch()
    specs = args.variants.split(",")
    runners = [Runner(s, args.batch, args.size) for s in specs]
    for kind in args.kinds.split(","):
        for r in runners:  # warm-up
            for _ in range(args.warmup):
                getattr(r, f"{kind}_step")()
        times = {s: [] for s in specs}
        for rep in range(args.reps):  # one round: one step of each variant, order rotated
            order = runners[rep % len(runners):] + runners[:rep % len(runners)]
            for r in order:
                times[r.spec].append(getattr(r, f"{kind}_step")())
        print(f"\n{kind}: batch {args.batch}, {args.size} px, {args.reps} rounds of one step "
              f"per variant, interleaved; load {os.getloadavg()[0]:.1f}")
        base = times[specs[0]]
        for s in specs:
            ratios = [t / b for t, b in zip(times[s], base)]
            print(summarize(s, ratios, times[s]) + f"; min/min {min(times[s]) / min(base):.3f}")


def _photos(n=4, size=224):
    """A few real test photos, the book's eval transform with this backbone's mean/std."""
    from mxnet.gluon.data.vision import transforms

    root = os.path.join(os.environ["HOTDOG_DIR"], "test")
    files = []
    for cls in sorted(os.listdir(root)):
        files += [os.path.join(root, cls, f) for f in sorted(os.listdir(os.path.join(root, cls)))[:n // 2]]
    tf = transforms.Compose([transforms.Resize(256, keep_ratio=True), transforms.CenterCrop(size),
                             transforms.ToTensor(), transforms.Normalize(E.MEAN, E.STD)])
    return mx.nd.stack(*[tf(mx.image.imread(f)) for f in files])


def _grads(net, X, y):
    with autograd.record():
        loss = gluon.loss.SoftmaxCrossEntropyLoss()(net(X), y)
    loss.backward()
    return {k: p.grad().asnumpy() for k, p in net._collect_params_with_prefix().items()
            if p.grad_req != "null"}


def cmd_check(args):
    patch()
    specs = args.variants.split(",")
    X224, X160 = _photos(size=224), _photos(size=160)
    y = mx.nd.array([1, 1, 0, 0])
    ref = {}
    for s in specs:
        for hyb in (False, True):
            out = {}
            pre = E.efficientnet_lite0(pretrained=True)  # the 1000-class ImageNet net
            set_variant(pre, s)
            if hyb:
                pre.hybridize(static_alloc=True)
            with autograd.predict_mode():
                out["logits224"] = pre(X224).asnumpy()
                out["logits160"] = pre(X160).asnumpy()
            net = finetune_net()
            set_variant(net, s)
            if hyb:
                net.hybridize(static_alloc=True)
            out["grads"] = _grads(net, X160, y)
            key = "hybrid" if hyb else "imperative"
            if s == specs[0]:
                ref[key] = out
                continue
            r = ref[key]
            dl = max(np.abs(out[k] - r[k]).max() for k in ("logits224", "logits160"))
            g, gr = out["grads"], r["grads"]
            scale = max(np.abs(v).max() for v in gr.values())
            gabs = max(np.abs(g[k] - gr[k]).max() for k in gr)
            # per parameter, relative to its own largest gradient; parameters whose gradient
            # is pure rounding noise (< 1e-3 of the largest anywhere) are left out
            grel = max(np.abs(g[k] - gr[k]).max() / np.abs(gr[k]).max() for k in gr
                       if np.abs(gr[k]).max() > 1e-3 * scale)
            top1 = all((out[k].argmax(1) == r[k].argmax(1)).all() for k in ("logits224", "logits160"))
            print(f"{s:<20} {key:<10} max|dlogits| {dl:.2e} (|logits| max "
                  f"{np.abs(r['logits224']).max():.1f}), top-1 equal {top1}, grads: max abs diff "
                  f"{gabs:.2e} (max|grad| {scale:.2e}), per param max diff / max|grad| {grel:.2e}")


def cmd_child(args):
    """One fresh-process run: warm-up, timed steps; prints JSON (times, peak RSS)."""
    patch()
    r = Runner(args.variants.split(",")[0], args.batch, args.size, static_shape=args.static_shape)
    res = {}
    for kind in args.kinds.split(","):
        for _ in range(args.warmup):
            getattr(r, f"{kind}_step")()
        res[kind] = statistics.median(getattr(r, f"{kind}_step")() for _ in range(args.steps))
    res["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(res))


def cmd_procs(args):
    """Configs 'label:VAR=v VAR2=v [--static-shape] [--variant p/a]' run interleaved."""
    configs = []
    for item in args.configs.split(";"):
        label, _, rest = item.partition(":")
        env, extra = {}, []
        toks = rest.split()
        i = 0
        while i < len(toks):
            t = toks[i]
            if t.startswith("--"):
                extra.append(t)
                if t == "--variants":
                    extra.append(toks[i + 1])
                    i += 1
            else:
                k, v = t.split("=", 1)
                env[k] = v
            i += 1
        configs.append((label, env, extra))
    results = {c[0]: [] for c in configs}
    for rep in range(args.reps):
        order = configs[rep % len(configs):] + configs[:rep % len(configs)]
        for label, env, extra in order:
            cmd = [sys.executable, __file__, "child", "--batch", str(args.batch), "--size",
                   str(args.size), "--kinds", args.kinds, "--steps", str(args.steps),
                   "--warmup", str(args.warmup)] + extra
            if "--variants" not in extra:
                cmd += ["--variants", "explicit/clip"]
            out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
            line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
            if not line:
                print(out.stdout[-2000:], out.stderr[-2000:])
                raise SystemExit(1)
            res = json.loads(line[0][7:])
            res["load"] = os.getloadavg()[0]
            results[label].append(res)
            print(f"  rep {rep} {label}: {res}", flush=True)
    base = configs[0][0]
    print(f"\nbatch {args.batch}, {args.size} px, {args.reps} fresh processes per config, interleaved")
    for kind in args.kinds.split(",") + ["maxrss_mb"]:
        for label, _, _ in configs:
            v = [r[kind] for r in results[label]]
            ratios = sorted(a[kind] / b[kind] for a, b in zip(results[label], results[base]))
            unit = "MB" if kind == "maxrss_mb" else "s/step"
            print(f"{kind:<10} {label:<24} median {statistics.median(v):8.3f} {unit} "
                  f"(min {min(v):.3f}, max {max(v):.3f}); ratio to {base}: median "
                  f"{statistics.median(ratios):.3f} (min {ratios[0]:.3f}, max {ratios[-1]:.3f})")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=("inproc", "check", "child", "procs"))
    p.add_argument("--variants", default="explicit/clip,kernel/clip")
    p.add_argument("--configs", default="base:")
    p.add_argument("--kinds", default="train,eval")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--static-shape", action="store_true")
    args = p.parse_args()
    {"inproc": cmd_inproc, "check": cmd_check, "child": cmd_child, "procs": cmd_procs}[args.command](args)


if __name__ == "__main__":
    main()
