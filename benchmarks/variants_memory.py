"""Peak memory of each notebook-08 method, each in a fresh process.

    HOTDOG_DIR=../shared/data/hotdog .venv/bin/python benchmarks/variants_memory.py --epochs 1

Notebook 08 trains every method in one kernel, one after another; MXNet keeps freed
memory in its pool, so the process's RSS only grows and its "peak RSS" column cannot rank
the methods. Here each method trains alone in a new Python process (same profile, data,
seed and recipe as the notebook, ``variants.build_variant`` + ``variants.train_variant``)
and the process's peak RSS (``ru_maxrss``) is reported, with the test accuracy and seconds
of the run. One epoch is enough for the peak: the memory plan is the same every epoch.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def worker(method: str, profile: str, epochs: int, seed: int) -> dict:
    import dataclasses

    import d2l_helpers  # noqa: F401  (threads)
    from d2l_helpers.backbones import default_backbone_name
    from d2l_helpers.profiles import get_profile
    from d2l_helpers.variants import build_variant, train_variant

    backbone = default_backbone_name()
    prof = dataclasses.replace(get_profile(profile), num_epochs=epochs)
    net, details = build_variant(method, backbone, seed=seed)
    h = train_variant(net, details, backbone, profile=prof, seed=seed, progress=False)
    return {"method": method, "backbone": backbone, "profile": profile, "epochs": epochs,
            "seed": seed, "test_acc": h.test_acc[-1], "seconds": h.total_seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> int:
    from d2l_helpers.variants import METHODS

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.profile, a.epochs, a.seed)))
        return 0
    print("| method | peak RSS (fresh process) | seconds | test acc |\n|---|---|---|---|")
    for method in METHODS:
        out = subprocess.run([sys.executable, __file__, "--worker", method, "--profile",
                              a.profile, "--epochs", str(a.epochs), "--seed", str(a.seed)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{method} failed:\n{out.stderr[-2000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {method} | {r['peak_rss_mb'] / 1024:.2f} GB | {r['seconds']:.0f} | "
              f"{r['test_acc']:.3f} |", flush=True)
    print(f"({a.profile} profile, {a.epochs} epoch(s), seed {a.seed}, {r['backbone']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
