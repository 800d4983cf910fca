"""Threads, seeds and devices: the process-level settings every run needs.

MXNet's CPU build sizes its OpenMP pool at start-up. On x86 it takes the number of
processors and *halves* it, assuming every core is a pair of hyper-threads. On a 2-vCPU
laptop or cloud VM that leaves one thread, so every convolution runs on half the machine.
`configure_threads` sets ``MXNET_OMP_MAX_THREADS`` to the number of CPUs this process may
use *before* MXNet is loaded; `d2l_helpers/__init__.py` calls it first thing, so a notebook
that imports ``d2l_helpers`` before ``d2l``/``mxnet`` gets all its cores.

It also sets ``OMP_WAIT_POLICY=PASSIVE`` (unless the user set a policy): idle OpenMP threads
sleep instead of spinning. When another process keeps a core busy (a browser, a second
kernel, a shared VM), spinning threads fight it for the core; measured on 2 vCPUs with a
busy neighbour, training steps took 0.37x and evaluation 0.34x the default's time, while
on a quiet machine PASSIVE cost 5 % (docs/speed-profile.md: both measurements, commands).

Example:
    >>> import d2l_helpers            # sets the thread count before mxnet loads
    >>> from d2l_helpers.runtime import seed_everything, try_all_gpus
    >>> seed_everything(0)
    0
    >>> try_all_gpus()                # [cpu(0)] on a machine without GPUs
    [cpu(0)]
"""
from __future__ import annotations

import os
import platform
import random
import sys
import warnings
from typing import Any

_THREAD_VARS = ("MXNET_OMP_MAX_THREADS", "OMP_NUM_THREADS")


def available_cpus() -> int:
    """Number of CPUs this process may run on (respects taskset/cgroup affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _thread_count_from_env(var: str) -> int:
    value = os.environ[var]
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(
            f"{var}={value!r} is not a thread count. Set {var} to a whole number >= 1 "
            f"(e.g. {var}={available_cpus()}, one thread per CPU here), or unset it to let "
            "d2l_helpers choose.")
    return n


def configure_threads(num_threads: int | None = None) -> int:
    """Give MXNet's operators one OpenMP thread per available CPU.

    Must run before ``import mxnet`` to take full effect. A value the user already set in
    ``MXNET_OMP_MAX_THREADS`` or ``OMP_NUM_THREADS`` is respected; one that is not a whole
    number >= 1 raises a `ValueError` naming the variable. If MXNet is already loaded, the
    thread count is set through MXNet's C API and a warning says to import ``d2l_helpers``
    first next time.

    ``OMP_WAIT_POLICY`` is set to ``PASSIVE`` unless already set (see the module docstring;
    like the thread count, libgomp reads it when MXNet loads).

    Returns the thread count in force.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    user = {var: _thread_count_from_env(var) for var in _THREAD_VARS if os.environ.get(var)}
    if user and num_threads is None:
        return next(iter(user.values()))
    n = int(num_threads or available_cpus())
    os.environ["MXNET_OMP_MAX_THREADS"] = str(n)
    if "mxnet" in sys.modules:
        import ctypes

        import mxnet as mx

        mx.base._LIB.MXSetNumOMPThreads(ctypes.c_int(n))
        warnings.warn(
            "mxnet was imported before d2l_helpers; set the thread count through the C API. "
            "Import d2l_helpers first (or set MXNET_OMP_MAX_THREADS) for the full effect.",
            stacklevel=2,
        )
    return n


def seed_everything(seed: int) -> int:
    """Seed Python's ``random``, NumPy and MXNet (all devices); return the seed.

    Data order (the DataLoader's sampler uses NumPy), random crops (Python's ``random``),
    flips and weight init (MXNet) all follow from it.
    """
    import mxnet as mx
    import numpy as onp

    random.seed(seed)
    onp.random.seed(seed)
    mx.random.seed(seed)
    for i in range(num_gpus()):
        mx.random.seed(seed, ctx=mx.gpu(i))
    return seed


def num_gpus() -> int:
    """Number of GPUs MXNet can use (0 with the CPU build)."""
    import mxnet as mx

    try:
        return mx.context.num_gpus()
    except mx.base.MXNetError:  # CUDA build without a driver
        return 0


def try_all_gpus() -> list:
    """Every visible GPU, or ``[mx.cpu()]`` when there is none (the book's ``d2l.try_all_gpus``)."""
    import mxnet as mx

    n = num_gpus()
    return [mx.gpu(i) for i in range(n)] if n else [mx.cpu()]


def hardware_info() -> dict[str, Any]:
    """What this process runs on: CPUs, threads, GPUs, MXNet build, Python."""
    import mxnet as mx

    feats = mx.runtime.Features()
    return {
        "python": platform.python_version(),
        "mxnet": mx.__version__,
        "mxnet_cuda": feats.is_enabled("CUDA"),
        "cpus": available_cpus(),
        "omp_threads": int(os.environ.get("MXNET_OMP_MAX_THREADS")
                           or os.environ.get("OMP_NUM_THREADS") or 0) or None,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "gpus": num_gpus(),
        "machine": platform.machine(),
    }


def current_rss_mb() -> float:
    """This process's resident memory now, in MB (Linux ``/proc``; else the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakRSS:
    """Context manager sampling the process's RSS in a thread; ``.peak_mb`` is the highest.

    The process-wide peak (``ru_maxrss``) only ever grows, so it cannot tell the second
    of two runs in one notebook from the first; this samples every ``interval`` seconds
    while the block runs. ``.start_mb`` is the RSS when the block began.

    Example:
        >>> with PeakRSS() as mem:
        ...     big = bytearray(50 * 2**20)
        >>> mem.peak_mb >= mem.start_mb
        True
    """

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.start_mb = self.peak_mb = 0.0
        self._stop = None
        self._thread = None

    def __enter__(self) -> PeakRSS:
        import threading

        self.start_mb = self.peak_mb = current_rss_mb()
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(self.interval):
                self.peak_mb = max(self.peak_mb, current_rss_mb())

        self._thread = threading.Thread(target=sample, name="PeakRSS", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, current_rss_mb())
