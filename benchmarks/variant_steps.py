"""Training-step speed of notebook 08's methods, side by side in one process.

    HOTDOG_DIR=../shared/data/hotdog python benchmarks/variant_steps.py --rounds 3
    python benchmarks/variant_steps.py --repo /tmp/base     # the code of another checkout

Each method's net (`variants.build_variant`, ImageNet weights, seed 0) is hybridized as
`training.train_fine_tuning` does (``static_alloc``) and trained with `train_batch_ch13`
(SGD, the book's rate) on one in-memory batch at the profile's crop and batch size: the
step alone, no data loading or evaluation. Rounds interleave the methods (A B C D A B C D
...), two warm-up steps then ``--steps`` timed steps per method per round; the JSON line
has each method's images/s per round and the median. Compare two checkouts by running
both alternately in fresh processes (``--repo``), at least three of each.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from checkout import add_repo_argument, import_checkout  # benchmarks/checkout.py

METHODS = ("full fine-tune", "BitFit", "LoRA", "residual adapters")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_repo_argument(p)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--array-mode", choices=("np", "nd"), default="np",
                   help="np: NumPy arrays, as the notebooks (npx.set_np); nd: the legacy "
                        "arrays of a plain script, as the study step")
    a = p.parse_args(argv)
    import_checkout(a.repo)   # before mxnet: it sets the thread count
    import mxnet as mx
    import numpy as onp
    from mxnet import gluon

    from d2l_helpers import arrays
    from d2l_helpers.profiles import get_profile
    from d2l_helpers.training import FINETUNE_LR, WEIGHT_DECAY, train_batch_ch13
    from d2l_helpers.variants import build_variant

    if a.array_mode == "np":
        mx.npx.set_np()
    prof = get_profile(a.profile)
    rs = onp.random.RandomState(0)
    X = arrays.array(rs.rand(prof.batch_size, 3, prof.image_size, prof.image_size)
                     .astype("float32"))
    y = arrays.array(rs.randint(0, 2, prof.batch_size).astype("float32"))
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    nets, loss = {}, gluon.loss.SoftmaxCrossEntropyLoss()
    for m in methods:
        net, _ = build_variant(m, "efficientnet_lite0", seed=0)
        net.hybridize(static_alloc=True)
        trainer = gluon.Trainer(net.collect_params(), "sgd",
                                {"learning_rate": FINETUNE_LR, "wd": WEIGHT_DECAY})
        nets[m] = (net, trainer)
    rates: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(a.rounds):
        for m in methods:
            net, trainer = nets[m]
            for i in range(2 + a.steps):
                if i == 2:
                    start = time.perf_counter()
                loss_sum, _ = train_batch_ch13(net, X, y, loss, trainer, [mx.cpu()])
                float(arrays.to_numpy(loss_sum))
            rates[m].append(a.steps * prof.batch_size / (time.perf_counter() - start))
    print(json.dumps({"repo": os.path.abspath(a.repo), "profile": prof.name,
                      "array_mode": a.array_mode,
                      "batch": prof.batch_size, "image_size": prof.image_size,
                      "images_per_sec": {m: [round(r, 2) for r in v] for m, v in rates.items()},
                      "median": {m: round(statistics.median(v), 2) for m, v in rates.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
