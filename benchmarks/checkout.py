"""Which checkout's ``d2l_helpers`` a benchmark times, shared by the benchmarks that compare
a change with the code before it (``--repo``, e.g. a ``git worktree add /tmp/base <commit>``).
The benchmarks import it as a sibling module: run them as ``python benchmarks/<name>.py``.

    p = argparse.ArgumentParser()
    add_repo_argument(p)
    args = p.parse_args()
    d2l_helpers = import_checkout(args.repo)   # before mxnet: it sets MXNet's thread count

Example:
    >>> import argparse
    >>> p = argparse.ArgumentParser(); add_repo_argument(p)
    >>> p.parse_args([]).repo == REPO
    True
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from types import ModuleType

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def add_repo_argument(parser: argparse.ArgumentParser) -> None:
    """``--repo``: the checkout whose ``d2l_helpers`` is timed (default: this one)."""
    parser.add_argument("--repo", default=REPO,
                        help="the checkout whose d2l_helpers is timed (default: this one)")


def import_checkout(repo: str) -> ModuleType:
    """Import ``d2l_helpers`` from ``repo`` and return it. Call it before anything imports
    mxnet: importing ``d2l_helpers`` sets MXNet's OpenMP thread count, which MXNet reads once
    when it loads."""
    if "mxnet" in sys.modules:
        raise RuntimeError("import_checkout() must run before mxnet is imported: d2l_helpers "
                           "sets MXNet's thread count when it is imported first")
    repo = os.path.abspath(repo)
    sys.path.insert(0, repo)
    module = importlib.import_module("d2l_helpers")
    where = os.path.dirname(os.path.dirname(os.path.abspath(module.__file__)))
    if where != repo:
        raise RuntimeError(f"d2l_helpers came from {where}, not from --repo {repo}: pass the "
                           "folder that holds d2l_helpers/, or run in a fresh process")
    return module
