"""Where a training step's time goes: MXNet's aggregate operator profile of the fine-tune net.

    # from the repository root; the d2l_helpers profiled is this checkout's, or --repo's
    python benchmarks/profile_step.py --backbone efficientnet_lite0 --profile cpu --steps 3
    python benchmarks/profile_step.py --backbone resnet18_v2 --profile cpu --steps 3
    python benchmarks/profile_step.py --method LoRA --array-mode np --repo /tmp/base

Builds the book's fine-tune net (``backbones.build_finetune_net``; resnet18_v2 gets random
weights when its ImageNet weights are not cached: speed does not depend on weight values),
hybridizes it like ``training.train_fine_tuning`` (``static_alloc=True``), runs warm-up
steps, then prints ``mx.profiler``'s aggregate operator table for ``--steps`` training
steps (forward + backward + ``trainer.step``, as ``training.train_batch_ch13``) and for
``--steps`` evaluation steps (forward in predict mode through `fusion.forward`, as
``training.evaluate_accuracy_gpus`` does: oneDNN's fused Conv+BatchNorm+ReLU6 on the CPU;
``D2L_FUSED_INFERENCE=0`` profiles the unfused net), a summary by operator family and
the steady-state images/s of each, timed over ``--time-steps`` steps with the profiler off.

``--method`` profiles one of notebook 08's nets instead (`variants.build_variant`),
``--array-mode np`` the NumPy arrays the notebooks use, ``--repo`` another checkout's code.

The input is one synthetic batch (normal noise, random labels) of the profile's batch and
crop size, so the numbers are compute only, no data pipeline. Profiler files go to a
temporary folder that is deleted afterwards.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time

from checkout import add_repo_argument, import_checkout  # benchmarks/checkout.py

# Operator families, by name prefix (backward ops share their forward op's family).
FAMILIES = (("conv", ("Convolution", "_sg_mkldnn_conv")),
            ("relu6/activation", ("clip", "Activation", "relu", "LeakyReLU", "minimum",
                                  "_minimum_scalar", "hard_sigmoid")),
            ("BatchNorm", ("BatchNorm",)),
            ("Pad", ("Pad", "pad")),
            ("elementwise", ("elemwise_", "_plus", "_mul", "_minus", "_rminus", "_div",
                             "broadcast_", "_copy", "_zeros", "_ones", "ElementWiseSum",
                             "add_n", "_grad_add")),
            ("sgd update", ("sgd_", "_sgd", "multi_sgd", "preloaded_multi_sgd")),
            ("free memory", ("DeleteVariable",)))


def family(op: str) -> str:
    name = op[len("_backward_"):] if op.startswith("_backward_") else op
    for fam, prefixes in FAMILIES:
        if name.startswith(prefixes):
            return fam
    return "other"


def machine_line() -> str:
    import mxnet as mx

    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                                                    "MXNET_MKLDNN_ENABLED", "D2L_FUSED_INFERENCE")
                   if k in os.environ)
    return (f"machine: {cpu}, {cores} cores, MXNET_OMP_MAX_THREADS="
            f"{os.environ.get('MXNET_OMP_MAX_THREADS', '(unset)')}, mxnet {mx.__version__}, "
            f"python {platform.python_version()}, {datetime.datetime.now():%Y-%m-%d %H:%M %Z}"
            + (f", {env}" if env else ""))


def build_net(name: str, seed: int, method: str = "full fine-tune"):
    import mxnet as mx

    from d2l_helpers import backbones

    if method != "full fine-tune":
        from d2l_helpers.variants import build_variant

        return build_variant(method, name, seed=seed)[0]

    if name == "resnet18_v2" and not backbones._resnet_file(backbones.model_dir()).exists():
        print("resnet18_v2: ImageNet weights not available here, using RANDOM weights "
              "(Xavier; operator times do not depend on the values)")
        net = backbones.build_scratch_net(name, classes=2, seed=seed)
        net.output.collect_params().setattr("lr_mult", 10.0)
        return net
    net, _ = backbones.build_finetune_net(name, seed=seed, ctx=mx.cpu())
    return net


def operator_table(title: str, stats: dict, n_steps: int) -> dict[str, float]:
    """Print the profiler's operator rows (ms per step) and return total ms per family."""
    ops = stats["Time"].get("operator", {})
    total = sum(v["Total"] for v in ops.values()) or 1.0
    print(f"\n{title}: operator time, {n_steps} steps (ms per step; share of operator time)")
    print(f"{'operator':<34}{'calls/step':>11}{'ms/step':>10}{'share':>8}  family")
    fams: dict[str, float] = {}
    for op, v in sorted(ops.items(), key=lambda kv: -kv[1]["Total"]):
        fams[family(op)] = fams.get(family(op), 0.0) + v["Total"]
        if v["Total"] / total >= 0.001:
            print(f"{op:<34}{v['Count'] / n_steps:>11.0f}{v['Total'] / n_steps:>10.2f}"
                  f"{100 * v['Total'] / total:>7.1f}%  {family(op)}")
    print(f"{'total (rows < 0.1% not shown)':<34}{'':>11}{total / n_steps:>10.2f}")
    print("by family: " + ", ".join(f"{k} {100 * v / total:.1f}%"
                                    for k, v in sorted(fams.items(), key=lambda kv: -kv[1])))
    return fams


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="efficientnet_lite0",
                   choices=("efficientnet_lite0", "resnet18_v2"))
    p.add_argument("--profile", default="cpu", help="run profile: full, cpu or ci")
    p.add_argument("--steps", type=int, default=3, help="steps profiled (train and eval)")
    p.add_argument("--warmup", type=int, default=3, help="unprofiled warm-up steps")
    p.add_argument("--time-steps", type=int, default=5, help="unprofiled steps timed")
    p.add_argument("--image-size", type=int, help="override the profile's crop size")
    p.add_argument("--batch-size", type=int, help="override the profile's batch size")
    p.add_argument("--static-shape", action="store_true", help="hybridize(static_shape=True)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", default="full fine-tune",
                   help="notebook 08's method: full fine-tune (the book's net), BitFit, LoRA "
                        "or residual adapters (`variants.build_variant`)")
    p.add_argument("--array-mode", choices=("nd", "np"), default="nd",
                   help="nd: legacy arrays (a plain script, the study); np: npx.set_np(), "
                        "as the notebooks")
    add_repo_argument(p)
    args = p.parse_args(argv)
    d2l_helpers = import_checkout(args.repo)   # before mxnet: threads
    import mxnet as mx
    from mxnet import gluon

    from d2l_helpers import fusion
    from d2l_helpers.profiles import get_profile
    from d2l_helpers.training import FINETUNE_LR, WEIGHT_DECAY, _correct, train_batch_ch13

    prof = get_profile(args.profile)
    size, batch = args.image_size or prof.image_size, args.batch_size or prof.batch_size
    print(machine_line())
    print(f"{args.backbone}, profile {prof.name}: batch {batch}, {size} px, hybridize("
          f"static_alloc=True{', static_shape=True' if args.static_shape else ''}), "
          f"{args.warmup} warm-up, {args.steps} profiled, {args.time_steps} timed steps; "
          f"evaluation {'fused (oneDNN Conv+BN+ReLU6)' if fusion.enabled() else 'unfused'}")

    if args.array_mode == "np":
        mx.npx.set_np()
    print(f"method {args.method}, {args.array_mode} arrays, d2l_helpers from "
          f"{os.path.dirname(d2l_helpers.__file__)}")
    net = build_net(args.backbone, args.seed, args.method)
    net.hybridize(static_alloc=True, static_shape=args.static_shape)
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), "sgd",
                            {"learning_rate": FINETUNE_LR, "wd": WEIGHT_DECAY})
    devices = [mx.cpu()]
    mx.random.seed(args.seed)
    X = mx.nd.random.normal(shape=(batch, 3, size, size))
    y = mx.nd.array(mx.nd.random.randint(0, 2, shape=(batch,)).asnumpy().astype("float32"))
    if args.array_mode == "np":
        X, y = X.as_np_ndarray(), y.as_np_ndarray()

    def train_step():
        l, c = train_batch_ch13(net, X, y, loss, trainer, devices)
        l.wait_to_read()
        mx.nd.waitall()

    def eval_step():
        _correct(fusion.forward(net, X), y).wait_to_read()
        mx.nd.waitall()

    with tempfile.TemporaryDirectory(prefix="profile_step-") as tmp:
        mx.profiler.set_config(profile_all=True, aggregate_stats=True,
                               filename=os.path.join(tmp, "profile.json"))
        rates = {}
        for kind, step in (("training", train_step), ("evaluation", eval_step)):
            for _ in range(args.warmup):
                step()
            mx.profiler.dumps(reset=True)  # drop anything recorded before
            mx.profiler.set_state("run")
            for _ in range(args.steps):
                step()
            mx.profiler.set_state("stop")
            stats = json.loads(mx.profiler.dumps(reset=True, format="json"))
            operator_table(f"{kind.upper()} ({args.backbone}, batch {batch}, {size} px)",
                           stats, args.steps)
            times = []
            for _ in range(args.time_steps):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            rates[kind] = (batch / statistics.median(times), batch / max(times),
                           batch / min(times))
    print("\nsteady state, profiler off (median of "
          f"{args.time_steps} steps, min-max):")
    for kind, (med, lo, hi) in rates.items():
        print(f"  {kind:<11} {med:7.1f} images/s  ({lo:.1f}-{hi:.1f})")


if __name__ == "__main__":
    main()
