"""Command line: ``python -m d2l_helpers {info,prefetch,run,study,train,predict,launch}``.

* ``info``: the profile, data set, backbone and devices a run would use (``--data FOLDER``
  for a folder of classes).
* ``prefetch``: fill the caches (data set, backbone weights, decoded photos) ahead of class;
  one line per item (ok / fetched / MISSING, path, MB, hash check); offline it
  names what is missing and where to put it.
* ``run``: execute the notebooks headless into ``build/notebooks`` (or ``--in-place``) and
  write ``build/results.md`` from the results the notebooks saved.
* ``study``: the seed study of notebooks 04-06 (`study`): the scratch learning-rate sweep
  and every compared run on the profile's seeds, then notebook 08's comparison
  (`variants.run_comparison`: five methods on seeds 0-2; ``--no-variants`` skips it), saved
  in the run store; runs saved with the same recipe and code are reused. ``run`` does it
  first, as its own timed step, so that the notebooks load these runs.
* ``train FOLDER``: fine-tune (``--method finetune``, the book's recipe), train a head on
  cached features (``features``) or train from scratch (``scratch``) on any folder of
  classes (``<root>/<split>/<class>/*`` or ``<root>/<class>/*``), with a progress bar, and
  save the run in the run store (``$D2L_RUNS_DIR``) as ``<folder name>-<method>`` (or
  ``--name``): notebook 09 replays it, ``predict`` uses it.
* ``predict RUN IMAGE...``: the top classes of each photo, with their probabilities.
* ``launch -n 2 -s 1 -- COMMAND...``: run COMMAND as a ``dist_sync`` job of 2 workers and 1
  server on this machine (loopback only); ``train`` under it trains data-parallel.

Examples::

    python -m d2l_helpers train ../shared/data/food10 --profile ci --epochs 1
    python -m d2l_helpers predict food10-finetune photo.jpg other.png
    python -m d2l_helpers launch -n 2 -s 1 -- python -m d2l_helpers train ../shared/data/food10
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from . import configure_threads  # noqa: F401  (sets MXNet threads before mxnet loads)
from .profiles import PROFILES

REPO = Path(__file__).resolve().parent.parent


def _cmd_info(args) -> int:
    from .data import ImageDataError
    from .session import setup

    try:
        print(setup(seed=args.seed, profile=args.profile, backbone=args.backbone, data=args.data))
    except ImageDataError as err:
        return _fail(err)
    return 0


def _fail(err: Exception | str, code: int = 2) -> int:
    print(f"error: {err}", file=sys.stderr, flush=True)
    return code


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, not {text}")
    return value


def default_run_name(folder: str | Path, method: str) -> str:
    """``<folder name>-<method>``, e.g. ``food10-finetune`` (what notebook 09 replays).

    Example:
        >>> default_run_name("../shared/data/food10/", "scratch")
        'food10-scratch'
    """
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(folder).expanduser().resolve().name) or "data"
    return f"{name}-{method}"


def _cmd_train(args) -> int:
    from tqdm import tqdm

    from . import distributed
    from .backbones import BackboneUnavailable
    from .data import ImageDataError
    from .paths import display_path
    from .runs import save_run
    from .session import setup

    try:
        run = setup(seed=args.seed, profile=args.profile, backbone=args.backbone,
                    data=args.folder, test_fraction=args.test_fraction,
                    split_seed=args.split_seed, storage=args.storage)
        if args.train_per_class or args.test_per_class:
            run = run.limit(args.train_per_class, args.test_per_class)
    except (ImageDataError, ValueError) as err:
        return _fail(err)
    name = args.name or default_run_name(args.folder, args.method)
    kv = distributed.kvstore_from_env()
    rank = kv.rank if kv is not None else 0
    say = (lambda *a: tqdm.write(" ".join(map(str, a)))) if rank == 0 else (lambda *a: None)
    epochs = args.epochs or run.profile.num_epochs
    job = f", worker 0 of {kv.num_workers} ({kv.type})" if kv is not None else ""
    say(f"Training {args.method} on {run.data_source}\n  {run.num_classes} classes, profile "
        f"{run.profile.name}, backbone {run.backbone}, seed {run.seed}, {epochs} epochs{job}; "
        f"photos {run.storage_choice()[1]}")

    def on_epoch(event, history, **info):
        if event == "epoch" and info["train_loss"] is None:
            say(f"epoch 0 (before training): test acc {info['test_acc']:.3f}")
        elif event == "epoch":
            say(f"epoch {info['epoch']}/{epochs}: loss {info['train_loss']:.3f}, train acc "
                f"{info['train_acc']:.3f}, test acc {info['test_acc']:.3f}")

    try:
        net = run.build_net(args.method)
        history = run.train(net, args.method, learning_rate=args.lr, num_epochs=epochs,
                            batch_size=args.batch_size, kv=kv, callback=on_epoch,
                            progress=not args.no_progress and rank == 0,
                            num_workers=args.num_workers)
    except (ImageDataError, BackboneUnavailable, ValueError) as err:
        return _fail(err)
    if rank != 0:
        return 0
    command = "python -m d2l_helpers " + " ".join(sys.argv[1:] if args.argv is None else args.argv)
    meta = {**run.to_dict(), "method": args.method, "command": command}
    folder = save_run(name, history, net, meta, saved_by="`python -m d2l_helpers train`")
    say(history.summary())
    say(f"Saved run {name!r} to {display_path(folder)}. Try it: python -m d2l_helpers "
        f"predict {name} PHOTO.jpg")
    return 0


def _cmd_predict(args) -> int:
    from . import predict
    from .data import ImageDataError, read_image
    from .profiles import get_profile
    from .runs import RunStoreError, load_classifier

    try:
        net, transform, names, saved = load_classifier(args.run)
    except (FileNotFoundError, RunStoreError, RuntimeError) as err:
        return _fail(err)
    decode_size = get_profile(saved.history.config["profile"]).decode_size
    failures = 0
    for image in args.images:
        try:
            img = read_image(image, decode_size)
        except ImageDataError as err:
            failures += 1
            _fail(err)
            continue
        probs = predict.predict_proba(net, [img], transform)[0]
        print(image)
        for _, cls, p in predict.top_k(probs, names, k=min(args.top, len(names))):
            print(f"  {p:6.3f}  {cls}")
    return 1 if failures else 0


def _cmd_launch(args) -> int:
    from .distributed import launch_local

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        return _fail("nothing to launch: give the command after --, e.g. "
                     "launch -n 2 -s 1 -- python -m d2l_helpers train FOLDER")
    return launch_local(command, args.num_workers, args.num_servers, timeout=args.timeout,
                        worker_threads=args.worker_threads)


def _cmd_prefetch(args) -> int:
    from .prefetch import format_table, prefetch

    results = prefetch(profile=args.profile, progressbar=sys.stderr.isatty())
    print(format_table(results))
    return 0 if all(r.ok for r in results) else 1


def _cmd_study(args) -> int:
    from .session import setup
    from .study import format_table, run_study

    run = setup(seed=args.seed, profile=args.profile, backbone=args.backbone)
    seeds = list(range(args.seed, args.seed + (args.seeds or run.profile.seeds)))
    print(f"Seed study: profile {run.profile.name}, backbone {run.backbone}, seeds "
          f"{seeds[0]}-{seeds[-1]}, {run.data_source}; saved runs with the same recipe are "
          "reused", flush=True)
    result = run_study(run, seeds, say=lambda line: print(line, flush=True))
    print(format_table(result))
    if not args.no_variants:
        from . import study, variants

        print(f"Notebook 08's comparison: {', '.join(variants.METHODS)}; seeds "
              f"{', '.join(map(str, variants.SEEDS))}", flush=True)
        start = time.perf_counter()
        histories, _ = variants.run_comparison(run, say=lambda line: print(line, flush=True),
                                               saved_by=study.SAVED_BY)
        for row in variants.summarize(histories):
            print(f"{row['method']:<19} test acc {row['test acc mean']:.3f} "
                  f"({row['acc min']:.3f}-{row['acc max']:.3f}), {row['seconds mean']:.0f} s a run")
        print(f"Comparison time: {time.perf_counter() - start:.0f} s.")
    return 0


def _cmd_run(args) -> int:
    from .notebook_runner import run_notebooks

    out = None if args.in_place else Path(args.output)
    return run_notebooks(REPO / "notebooks", out, profile=args.profile,
                         pattern=args.pattern, timeout=args.timeout, study=not args.no_study)


def main(argv: list[str] | None = None) -> int:
    from .distributed import serve_if_server

    serve_if_server()  # a launched job's server or scheduler serves here and exits
    parser = argparse.ArgumentParser(prog="python -m d2l_helpers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("info", help="show what a run would use")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", choices=list(PROFILES),
                   help="default: $D2L_PROFILE or by hardware")
    p.add_argument("--backbone")
    p.add_argument("--data", metavar="FOLDER", help="a folder of classes (default: the hot-dog set)")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("prefetch", help="fill the data, weight and decoded-image caches")
    p.add_argument("--profile", choices=list(PROFILES),
                   help="whose decoded-image caches (default: $D2L_PROFILE or by hardware)")
    p.set_defaults(func=_cmd_prefetch)
    p = sub.add_parser("run", help="execute the notebooks headless")
    p.add_argument("--profile", choices=list(PROFILES),
                   help="default: $D2L_PROFILE or by hardware")
    p.add_argument("--output", default=str(REPO / "build" / "notebooks"))
    p.add_argument("--in-place", action="store_true",
                   help="overwrite notebooks/*.ipynb with the executed copies")
    p.add_argument("--pattern", default="[0-9][0-9]_*.ipynb")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    p.add_argument("--no-study", action="store_true",
                   help="skip the seed study step (notebooks 05-06 and 08 then train what is missing)")
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("study", help="the seed study of notebooks 04-06 and 08 (trains what is "
                       "not saved yet)", description="Train, or reuse when saved with the same "
                       "recipe, the scratch sweep and every arm of `d2l_helpers.study` on "
                       "several seeds; print the table.")
    p.add_argument("--profile", choices=list(PROFILES),
                   help="default: $D2L_PROFILE or by hardware")
    p.add_argument("--backbone")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--seeds", type=_positive_int, help="how many (default: the profile's)")
    p.add_argument("--no-variants", action="store_true",
                   help="skip notebook 08's comparison (five methods, seeds 0-2)")
    p.set_defaults(func=_cmd_study)
    p = sub.add_parser("train", help="train on a folder of classes and save the run",
                       description="Train on FOLDER (<root>/<split>/<class>/* or "
                       "<root>/<class>/*) and save the run in the run store.")
    p.add_argument("folder", metavar="FOLDER")
    p.add_argument("--method", choices=("finetune", "features", "scratch"), default="finetune",
                   help="finetune: the book's recipe (backbone eta, head 10 eta); features: "
                        "frozen backbone, head on cached features; scratch: random weights")
    p.add_argument("--backbone", help="resnet18_v2 or efficientnet_lite0 (default: "
                                      "$D2L_BACKBONE or what is cached)")
    p.add_argument("--profile", choices=list(PROFILES),
                   help="default: $D2L_PROFILE or by hardware")
    p.add_argument("--epochs", type=_positive_int, help="default: the profile's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", help="run name (default: <folder name>-<method>)")
    p.add_argument("--batch-size", type=_positive_int, help="per process; default: the profile's")
    p.add_argument("--lr", type=float, help="learning rate per example (default: the book's "
                                            "0.01/128, scratch 0.1/128)")
    p.add_argument("--train-per-class", type=_positive_int, help="at most this many per class")
    p.add_argument("--test-per-class", type=_positive_int, help="at most this many per class")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="share of each class tested, for a folder without train/ and test/")
    p.add_argument("--split-seed", type=int, default=0,
                   help="seed of that split (recorded with the run)")
    p.add_argument("--storage", choices=("auto", "memory", "recordio"), default="auto",
                   help="photos in memory or streamed from RecordIO (auto: by size)")
    p.add_argument("--num-workers", type=int, help="DataLoader worker processes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("predict", help="top classes of photos with a saved run",
                       description="Print the top classes of each IMAGE with their "
                       "probabilities, using the run RUN of the run store.")
    p.add_argument("run", metavar="RUN")
    p.add_argument("images", metavar="IMAGE", nargs="+")
    p.add_argument("--top", type=_positive_int, default=3)
    p.set_defaults(func=_cmd_predict)
    p = sub.add_parser("launch", help="run a command as a local dist_sync job",
                       description="Run COMMAND as 1 scheduler, S servers and N workers on "
                       "this machine (loopback), with MXNet's DMLC_* variables.")
    p.add_argument("-n", "--num-workers", type=_positive_int, default=2)
    p.add_argument("-s", "--num-servers", type=_positive_int, default=1)
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="seconds before every process is stopped (default 3600)")
    p.add_argument("--worker-threads", type=_positive_int,
                   help="MXNet threads per worker (default: CPUs / workers)")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    p.set_defaults(func=_cmd_launch)
    args = parser.parse_args(argv)
    args.argv = argv
    from .profiles import get_profile

    try:
        get_profile(getattr(args, "profile", None))  # D2L_PROFILE too, before any work
    except ValueError as err:
        parser.error(str(err))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
