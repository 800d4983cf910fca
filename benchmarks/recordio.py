"""Benchmark: photos in memory (`data.ImageFolder`) vs streamed from RecordIO (`recordio.RecordImages`).

    python benchmarks/recordio.py                        # food10 and a 20,000-photo tree, cpu profile
    python benchmarks/recordio.py --sets food10 --profile ci --batches 50

For each photo set and storage, fresh worker processes (one per measurement, so each peak
RSS is that of a process doing only that) measure:

* **prepare, cold**: with an empty cache, what a first run pays before the first batch:
  decoding every photo and writing the ``.npz`` cache (memory), or packing the ``.rec``
  file (RecordIO), as the training split and the test split of the profile;
* **prepare, warm**: the same with the cache filled (loading the ``.npz``; opening the
  index);
* **loader images/s**: ``--batches`` batches of the training ``DataLoader`` with the book's
  augmentations at the profile's sizes (shuffled), after 3 warm-up batches; RecordIO with
  0, 1 and 2 ``DataLoader`` worker processes, memory with 0 (its photos are decoded);
* **peak RSS**: of the measuring process and of its DataLoader workers together (sampled
  every 20 ms from /proc), warm and cold.

The 20,000-photo tree is food10's photos repeated under new names as symbolic links in
``--tmp`` (16 x the 1,000 training photos, 8 x the 500 test photos): no copies, and nothing
is written next to the photos. Caches go to ``--tmp`` too. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's d2l_helpers, whatever the environment installed
FOOD10 = Path(os.environ.get("FOOD10_DIR") or REPO.parent / "shared" / "data" / "food10")


# ---------------------------------------------------------------- memory of a process tree

def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def tree_rss_mb(pid: int | None = None) -> float:
    """RSS of a process and all its descendants, MB (shared pages counted in each)."""
    pid = pid or os.getpid()
    todo, total = [pid], 0
    while todo:
        p = todo.pop()
        total += _rss_kb(p)
        todo += _children(p)
    return total / 1024


class TreePeak:
    def __init__(self, interval: float = 0.02):
        self.interval, self.peak = interval, 0.0

    def __enter__(self):
        self._stop = threading.Event()

        def run():
            while not self._stop.wait(self.interval):
                self.peak = max(self.peak, tree_rss_mb())

        self._t = threading.Thread(target=run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, tree_rss_mb())


# ---------------------------------------------------------------- one measurement (a child)

def measure(folder: str, storage: str, profile: str, batches: int, num_workers: int) -> dict:
    from mxnet import gluon

    import d2l_helpers  # noqa: F401  (threads)
    from d2l_helpers import data, recordio
    from d2l_helpers.profiles import get_profile
    from d2l_helpers.transforms import train_augs

    prof = get_profile(profile)
    tree = data.scan_folder(folder)
    make = (lambda split, pc: data.ImageFolder(tree, split, prof.decode_size, pc)) \
        if storage == "memory" else \
        (lambda split, pc: recordio.RecordImages(tree, split, prof.decode_size, pc))
    result = {"photos": {s: sum(tree.counts()[s].values()) for s in ("train", "test")}}
    with TreePeak() as mem:
        start = time.perf_counter()
        train = make("train", prof.train_per_class)
        make("test", prof.test_per_class)
        result["prepare_s"] = time.perf_counter() - start
        result["rss_after_prepare_mb"] = tree_rss_mb()
        loader = gluon.data.DataLoader(train.transform_first(train_augs(prof.image_size)),
                                       prof.batch_size, shuffle=True, num_workers=num_workers,
                                       last_batch="discard")
        it = iter(loader)
        for _ in range(3):  # warm-up: worker start, first allocations
            next(it)
        n, start = 0, time.perf_counter()
        for _ in range(batches):
            try:
                X, _y = next(it)
            except StopIteration:
                it = iter(loader)
                X, _y = next(it)
            X.wait_to_read()
            n += X.shape[0]
        result["loader_img_s"] = n / (time.perf_counter() - start)
        result["loader_images"] = n
        del it, loader
    result["peak_rss_mb"] = mem.peak
    return result


def _child(args) -> None:
    print(json.dumps(measure(args.folder, args.storage, args.profile, args.batches,
                             args.num_workers)))


# ---------------------------------------------------------------- the parent

def synthetic_tree(target: Path, source: Path = FOOD10, train_copies: int = 16,
                   test_copies: int = 8) -> Path:
    """``target`` with every photo of ``source`` linked ``*_copies`` times under new names."""
    if (target / ".complete").exists():
        return target
    if target.exists():
        shutil.rmtree(target)
    for split, copies in (("train", train_copies), ("test", test_copies)):
        for cls in sorted(p.name for p in (source / split).iterdir() if p.is_dir()):
            out = target / split / cls
            out.mkdir(parents=True)
            for photo in sorted((source / split / cls).iterdir()):
                for k in range(copies):
                    (out / f"r{k:02d}_{photo.name}").symlink_to(photo.resolve())
    (target / ".complete").write_text("")
    return target


def _run_child(folder: Path, storage: str, profile: str, batches: int, workers: int,
               cache: Path, timeout: float) -> dict:
    env = {**os.environ, "D2L_HELPERS_CACHE": str(cache)}
    cmd = [sys.executable, __file__, "--child", "--folder", str(folder), "--storage", storage,
           "--profile", profile, "--batches", str(batches), "--num-workers", str(workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default="food10,synthetic20k")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--batches", type=int, default=150, help="timed batches per loader run")
    p.add_argument("--tmp", default="/tmp/d2l-recordio-bench")
    p.add_argument("--output", default=str(REPO / "build" / "recordio-benchmark.json"))
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--storage", help=argparse.SUPPRESS)
    p.add_argument("--num-workers", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args)
        return 0
    tmp = Path(args.tmp)
    if str(tmp.resolve()).startswith(str(FOOD10.resolve().parent)):
        p.error("--tmp must not be inside the shared data folder")
    folders = {"food10": FOOD10}
    if "synthetic20k" in args.sets:
        folders["synthetic20k"] = synthetic_tree(tmp / "food10x20k")
    rows = []
    for name in args.sets.split(","):
        folder = folders[name]
        for storage, worker_counts in (("memory", (0,)), ("recordio", (0, 1, 2))):
            cache = tmp / f"cache-{name}-{storage}"
            shutil.rmtree(cache, ignore_errors=True)
            print(f"{name} {storage}: cold", flush=True)
            cold = _run_child(folder, storage, args.profile, args.batches, worker_counts[0],
                              cache, args.timeout)
            for workers in worker_counts:
                print(f"{name} {storage}: warm, {workers} loader workers", flush=True)
                warm = _run_child(folder, storage, args.profile, args.batches, workers, cache,
                                  args.timeout)
                rows.append({"set": name, "storage": storage, "workers": workers,
                             "photos": cold["photos"], "prepare_cold_s": cold["prepare_s"],
                             "peak_rss_cold_mb": cold["peak_rss_mb"],
                             "prepare_warm_s": warm["prepare_s"],
                             "loader_img_s": warm["loader_img_s"],
                             "peak_rss_warm_mb": warm["peak_rss_mb"],
                             "cache_mb": sum(f.stat().st_size for f in cache.rglob("*")
                                             if f.is_file()) / 2**20})
            shutil.rmtree(cache, ignore_errors=True)
    report = {"date": datetime.now().astimezone().isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
              "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "profile": args.profile, "batches": args.batches, "rows": rows}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=1))
    print("| set | photos | storage | loader workers | prepare cold s | prepare warm s | "
          "loader img/s | peak RSS cold MB | peak RSS warm MB | cache MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        photos = r["photos"]["train"] + r["photos"]["test"]
        print(f"| {r['set']} | {photos:,} | {r['storage']} | {r['workers']} | "
              f"{r['prepare_cold_s']:.1f} | {r['prepare_warm_s']:.1f} | {r['loader_img_s']:.0f} | "
              f"{r['peak_rss_cold_mb']:,.0f} | {r['peak_rss_warm_mb']:,.0f} | {r['cache_mb']:,.0f} |")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
