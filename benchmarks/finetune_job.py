"""Notebook 04's job as one process: the book's fine-tune in a profile, seed 0, every epoch
evaluated (epoch 0 included); prints one JSON line (job seconds, curves, rates, peak RSS).

    HOTDOG_DIR=../shared/data/hotdog python benchmarks/finetune_job.py            # this checkout
    HOTDOG_DIR=../shared/data/hotdog python benchmarks/finetune_job.py --repo /tmp/base

``--repo`` imports ``d2l_helpers`` from another checkout (e.g. ``git worktree add /tmp/base
<commit>``), so a change is timed against the code before it: run the two alternately in
fresh processes (A B A B ...), at least three of each, and compare medians and the ratio
pair by pair (docs/speed-profile.md). ``--static-shape`` passes ``static_shape=True`` (only
where `training.train_fine_tuning` has it).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from checkout import add_repo_argument, import_checkout  # benchmarks/checkout.py


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_repo_argument(p)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--static-shape", action="store_true")
    a = p.parse_args(argv)
    d2l_helpers = import_checkout(a.repo)   # before mxnet: threads
    from d2l_helpers.backbones import build_finetune_net
    from d2l_helpers.session import run_loaders
    from d2l_helpers.training import FINETUNE_LR, train_fine_tuning

    iters = run_loaders(a.profile, a.backbone)
    net, _ = build_finetune_net(a.backbone, seed=a.seed)
    extra = {"static_shape": True} if a.static_shape else {}
    start = time.perf_counter()
    h = train_fine_tuning(net, FINETUNE_LR, profile=a.profile, backbone=a.backbone, seed=a.seed,
                          data_iters=iters, progress=False, **extra)
    print(json.dumps({"repo": os.path.abspath(a.repo), "d2l_helpers": d2l_helpers.__file__,
                      "job_seconds": round(time.perf_counter() - start, 2),
                      "test_acc": h.test_acc, "train_loss": h.train_loss,
                      "examples_per_sec": h.examples_per_sec, "seconds": h.seconds,
                      "peak_rss_mb": h.config.get("peak_rss_mb"),
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
