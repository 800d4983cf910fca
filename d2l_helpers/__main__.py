"""Command line: ``python -m d2l_helpers {info,prefetch,run}``.

* ``info``: the profile, data set, backbone and devices a run would use.
* ``prefetch``: fill the caches (data set, backbone weights, decoded photos) ahead of class;
  one line per item (ok / fetched / MISSING, path, MB, hash check); offline it
  names what is missing and where to put it.
* ``run``: execute the notebooks headless into ``build/notebooks`` (or ``--in-place``) and
  write ``build/results.md`` from the results the notebooks saved.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import configure_threads  # noqa: F401  (sets MXNet threads before mxnet loads)
from .profiles import PROFILES

REPO = Path(__file__).resolve().parent.parent


def _cmd_info(args) -> int:
    from .session import setup

    print(setup(seed=args.seed, profile=args.profile, backbone=args.backbone))
    return 0


def _cmd_prefetch(args) -> int:
    from .prefetch import format_table, prefetch

    results = prefetch(profile=args.profile, progressbar=sys.stderr.isatty())
    print(format_table(results))
    return 0 if all(r.ok for r in results) else 1


def _cmd_run(args) -> int:
    from .notebook_runner import run_notebooks

    out = None if args.in_place else Path(args.output)
    return run_notebooks(REPO / "notebooks", out, profile=args.profile,
                         pattern=args.pattern, timeout=args.timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m d2l_helpers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("info", help="show what a run would use")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", choices=list(PROFILES),
                   help="default: $D2L_PROFILE or by hardware")
    p.add_argument("--backbone")
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
    p.set_defaults(func=_cmd_run)
    args = parser.parse_args(argv)
    from .profiles import get_profile

    try:
        get_profile(getattr(args, "profile", None))  # D2L_PROFILE too, before any work
    except ValueError as err:
        parser.error(str(err))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
