"""Why does the from-scratch baseline not train? One run per setting, JSON lines out.

    HOTDOG_DIR=../shared/data/hotdog python benchmarks/scratch_diagnosis.py \
        --profile cpu --settings "0.1:0.99,0.1:0.9,0.01:0.9" --out build/scratch_diag.jsonl

A setting is ``<lr per batch of 128>:<BatchNorm momentum>``. Each run is the book's scratch
recipe (EfficientNet-Lite0 with every weight Xavier, SGD, wd 0.001, the profile's crops,
batch and epochs, seed 0) with that learning rate and momentum. Per epoch it records the
training loss and accuracy (BatchNorm on batch statistics, as training sees it); at the
end the test accuracy three ways:

* ``test_acc_eval``: inference mode, BatchNorm on its running statistics (what
  ``evaluate_accuracy_gpus`` reports);
* ``test_acc_recalibrated``: the same after the running statistics are recomputed from the
  training photos (forward passes only, no weight update): if this is much higher, the
  running statistics, not the weights, make the scratch net fail at test time;
* ``train_acc_eval``: the training photos through the test transform, inference mode.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import d2l_helpers  # noqa: E402,F401  (threads before mxnet)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--settings", default="0.1:0.99")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, help="default: the profile's")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    from mxnet import gluon

    from d2l_helpers import backbones, batchnorm, training
    from d2l_helpers.profiles import get_profile
    from d2l_helpers.runtime import seed_everything, try_all_gpus
    from d2l_helpers.session import run_loaders

    prof = get_profile(args.profile)
    devices = try_all_gpus()
    for setting in args.settings.split(","):
        lr128, momentum = (float(v) for v in setting.split(":"))
        net = backbones.build_scratch_net(args.backbone, seed=args.seed)
        batchnorm.set_momentum(net, momentum)
        seed_everything(args.seed)
        train_iter, test_iter = run_loaders(prof, args.backbone)
        net.hybridize(static_alloc=True)
        loss = gluon.loss.SoftmaxCrossEntropyLoss()
        trainer = gluon.Trainer(net.collect_params(), "sgd",
                                {"learning_rate": lr128 / 128, "wd": training.WEIGHT_DECAY})
        rec = {"lr_per_128": lr128, "bn_momentum": momentum, "profile": prof.name,
               "num_epochs": args.epochs or prof.num_epochs,
               "seed": args.seed, "epochs": []}
        start = time.perf_counter()
        for _epoch in range(args.epochs or prof.num_epochs):
            ls = cs = n = 0.0
            for X, y in train_iter:
                l, c = training.train_batch_ch13(net, X, y, loss, trainer, devices)
                ls += float(l.asnumpy().item())
                cs += float(c.asnumpy().item())
                n += y.shape[0]
            rec["epochs"].append({"train_loss": ls / n, "train_acc": cs / n})
        rec["test_acc_eval"] = training.evaluate_accuracy_gpus(net, test_iter, devices)
        train_eval_iter = run_loaders(prof, args.backbone)[0]
        batchnorm.recalibrate(net, train_eval_iter, devices)
        rec["test_acc_recalibrated"] = training.evaluate_accuracy_gpus(net, test_iter, devices)
        rec["seconds"] = round(time.perf_counter() - start, 1)
        print(json.dumps(rec), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        net._clear_cached_op()


if __name__ == "__main__":
    main()
