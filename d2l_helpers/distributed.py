"""Data-parallel training across processes with MXNet's kvstore ``dist_sync`` (ps-lite).

The pip CPU wheel of MXNet 1.9.1 has ps-lite compiled in, so several processes (on one
machine or several) can train one model: every **worker** computes gradients on its shard of
each batch, the **servers** sum them, and every worker applies the same update. A
**scheduler** introduces them to each other. Which role a process plays, and where the
scheduler is, comes from the ``DMLC_*`` environment variables, set by a launcher:

=====================  ==================================================================
variable               value set by `launch_local` (as MXNet's ``tools/launch.py``, local)
=====================  ==================================================================
``DMLC_ROLE``          ``scheduler``, ``server`` or ``worker``
``DMLC_PS_ROOT_URI``   ``127.0.0.1``: the scheduler's address (loopback only here)
``DMLC_PS_ROOT_PORT``  a free port on the loopback interface (`free_port`)
``DMLC_NUM_SERVER``    the number of server processes (``-s``)
``DMLC_NUM_WORKER``    the number of worker processes (``-n``)
``DMLC_NODE_HOST``     ``127.0.0.1``: the address each process binds to and announces
=====================  ==================================================================

Every process runs the same command. In the server and scheduler roles ``import mxnet``
serves until the workers are done and then exits (`serve_if_server` does it first thing);
in the worker role the program creates the kvstore (`kvstore_from_env`) and trains:

* each worker reads its **shard** of the training photos (`ShardSampler`): every epoch all
  workers draw the same seeded permutation and worker ``rank`` takes every
  ``num_workers``-th photo of it, so one step of W workers with batch b covers exactly the
  photos one process with batch W*b would see in that step (the last ``n % W`` photos of
  each epoch's permutation are left out, so every worker does the same number of steps);
* the ``gluon.Trainer`` gets ``kvstore=kv`` and ``update_on_kvstore=False``: the summed
  gradients are pulled back and each worker runs SGD itself. (With ``update_on_kvstore=True``
  MXNet pickles the optimizer to the servers *without* its ``param_dict``, so every
  ``lr_mult``, e.g. the head's 10x, would silently be dropped.);
* the step is the SAME `training.train_batch_ch13` (every GPU of a worker, else its CPU)
  with ``trainer.step(1)``: gradients are sums, the servers sum those of the workers, so W
  workers with batch b take the step of one process with batch W*b, learning rates per
  example unchanged;
* BatchNorm statistics are per worker batch (b, not W*b), as in any data-parallel training
  without synchronised BatchNorm; the equality test therefore uses a net without BatchNorm;
* worker 0 evaluates on the test photos and saves the run; the others skip evaluation.

Example (2 workers, 1 server, on this machine; see docs/own-data.md for several machines)::

    python -m d2l_helpers launch -n 2 -s 1 -- python -m d2l_helpers train FOLDER --profile ci
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

LOOPBACK = "127.0.0.1"
ROLES = ("scheduler", "server", "worker")


# ---------------------------------------------------------------- launching

def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on at ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def dmlc_env(role: str, port: int, num_workers: int, num_servers: int,
             host: str = LOOPBACK, threads: int | None = None) -> dict[str, str]:
    """The ``DMLC_*`` variables of one process of a local job (see the module's table).

    ``threads`` sets ``MXNET_OMP_MAX_THREADS`` (servers and the scheduler need 1).

    Example:
        >>> env = dmlc_env("worker", 9091, num_workers=2, num_servers=1)
        >>> env["DMLC_ROLE"], env["DMLC_PS_ROOT_URI"], env["DMLC_NUM_WORKER"]
        ('worker', '127.0.0.1', '2')
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    if num_workers < 1 or num_servers < 1:
        raise ValueError("dist_sync needs at least 1 worker and 1 server "
                         f"(got {num_workers} workers, {num_servers} servers)")
    env = {"DMLC_ROLE": role, "DMLC_PS_ROOT_URI": host, "DMLC_PS_ROOT_PORT": str(port),
           "DMLC_NUM_SERVER": str(num_servers), "DMLC_NUM_WORKER": str(num_workers),
           "DMLC_NODE_HOST": host}
    if threads is not None:
        env["MXNET_OMP_MAX_THREADS"] = str(threads)
    return env


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the process and its children (e.g. DataLoader workers)
    except (ProcessLookupError, PermissionError):
        pass


def stop_all(procs: Sequence[subprocess.Popen], grace: float = 5.0) -> None:
    """SIGTERM every process group of ``procs``, then SIGKILL what is left after ``grace``."""
    for p in procs:
        _kill_group(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        _kill_group(p, signal.SIGKILL)  # also children whose leader has exited
        if p.poll() is None:
            p.wait()


def launch_local(command: Sequence[str], num_workers: int = 2, num_servers: int = 1, *,
                 timeout: float = 3600.0, port: int | None = None,
                 env: dict[str, str] | None = None, cwd: str | None = None,
                 worker_threads: int | None = None, grace: float = 30.0) -> int:
    """Run ``command`` as a ``dist_sync`` job on this machine; return 0 when every worker
    succeeded, else 1 (and say why on stderr).

    Starts one scheduler, ``num_servers`` servers and ``num_workers`` workers, all running
    ``command`` with the variables of `dmlc_env` on the loopback interface, each in its own
    process group. When a process fails, or the workers are not done after ``timeout``
    seconds, or this process gets SIGTERM/SIGINT, every group is stopped (`stop_all`).
    Workers get ``MXNET_OMP_MAX_THREADS`` = ``worker_threads`` (default: CPUs / workers, at
    least 1), servers and the scheduler 1 thread: the job's threads must not outnumber the
    CPUs, or OpenMP's spinning threads starve each other (2 workers x 2 threads on 2 CPUs
    trained 25x slower than 2 x 1 here). The variable in this process's environment is not used
    for the workers: ``import d2l_helpers`` sets it to all CPUs for one process.
    """
    from .runtime import available_cpus

    command = list(command)
    if not command:
        raise ValueError("nothing to launch: give the command after --")
    port = port or free_port()
    base = dict(os.environ if env is None else env)
    if worker_threads is None:
        worker_threads = max(1, available_cpus() // num_workers)
    roles = ([("scheduler", 0)] + [("server", i) for i in range(num_servers)]
             + [("worker", i) for i in range(num_workers)])
    procs: list[tuple[str, int, subprocess.Popen]] = []
    failed: str | None = None

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {}
    if _in_main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        for role, i in roles:
            child = {**base, **dmlc_env(role, port, num_workers, num_servers,
                                        threads=worker_threads if role == "worker" else 1)}
            procs.append((role, i, subprocess.Popen(command, env=child, cwd=cwd,
                                                    start_new_session=True)))
        deadline = time.monotonic() + timeout
        workers = [p for role, _, p in procs if role == "worker"]
        while failed is None:
            bad = [(role, i, p.returncode) for role, i, p in procs
                   if p.poll() is not None and p.returncode != 0]
            if bad:
                failed = ", ".join(f"{role} {i} exited with code {rc}" for role, i, rc in bad)
            elif all(p.returncode == 0 for p in workers):
                break
            elif time.monotonic() > deadline:
                failed = f"the workers were not done after {timeout:g} s"
            else:
                time.sleep(0.2)
        if failed is None:  # servers and the scheduler stop once every worker has finished
            end = time.monotonic() + grace
            for role, i, p in procs:
                try:
                    p.wait(timeout=max(0.1, end - time.monotonic()))
                except subprocess.TimeoutExpired:
                    failed = f"{role} {i} did not stop {grace:g} s after the workers finished"
                    break
    except KeyboardInterrupt as err:
        failed = f"interrupted ({err})"
    finally:
        stop_all([p for _, _, p in procs])
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed:
        print(f"launch: {failed}; every process of the job was stopped.", file=sys.stderr,
              flush=True)
        return 1
    return 0


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# ---------------------------------------------------------------- inside the job

def role() -> str | None:
    """This process's ``DMLC_ROLE`` (None outside a job)."""
    return os.environ.get("DMLC_ROLE") or None


def serve_if_server() -> None:
    """In the server or scheduler role: serve (``import mxnet`` does) and exit. Call it first
    thing in a program that a launcher starts in every role; elsewhere it does nothing."""
    if role() in ("server", "scheduler"):
        from . import configure_threads

        configure_threads()
        import mxnet  # noqa: F401  (runs the server or scheduler, then exits)

        raise SystemExit(0)


def kvstore_from_env(kind: str = "dist_sync"):
    """A ``kind`` kvstore when this process is a worker of a job (``DMLC_ROLE=worker``), else
    None (one process: no kvstore). Blocks until every process of the job has joined."""
    if role() != "worker":
        return None
    import mxnet as mx

    return mx.kv.create(kind)


class ShardSampler:
    """Indices of worker ``rank``'s shard of ``n`` examples, epoch after epoch.

    Each epoch (each ``iter()``) every worker draws the same permutation (seeded by
    ``seed`` and the epoch; ``shuffle=False``: 0..n-1), drops its last ``n % num_workers``
    entries and takes entries ``rank, rank + num_workers, ...``. With batch b per worker,
    step t of the W workers covers entries ``[t*W*b, (t+1)*W*b)`` of the permutation, which
    is step t of one process with batch W*b.

    Example:
        >>> [list(ShardSampler(7, r, 2, shuffle=False)) for r in (0, 1)]
        [[0, 2, 4], [1, 3, 5]]
        >>> s = ShardSampler(8, 0, 1, seed=0); first, second = list(s), list(s)
        >>> sorted(first) == list(range(8)) and first != second
        True
    """

    def __init__(self, n: int, rank: int = 0, num_workers: int = 1, *, shuffle: bool = True,
                 seed: int = 0):
        if not 0 <= rank < num_workers:
            raise ValueError(f"rank {rank} is not in 0..{num_workers - 1}")
        self.n, self.rank, self.num_workers = n, rank, num_workers
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def __iter__(self):
        import numpy as onp

        order = (onp.random.default_rng([self.seed, self.epoch]).permutation(self.n)
                 if self.shuffle else onp.arange(self.n))
        self.epoch += 1
        usable = self.n - self.n % self.num_workers
        return iter(order[:usable][self.rank::self.num_workers].tolist())

    def __len__(self) -> int:
        return self.n // self.num_workers


def fit_data_parallel(run, net, learning_rate: float, kv=None, *,
                      batch_size: int | None = None, num_epochs: int | None = None,
                      augment: bool = True, callback: Callable | None = None,
                      progress: bool | None = None, num_workers: int | None = None):
    """Train ``net`` on ``run``'s photos as one worker of a ``dist_sync`` job (``kv``), or as
    one process with the same sampler (``kv=None``); return the `training.History`.

    ``batch_size`` is per worker (default: the profile's), so the global batch is
    ``batch_size * kv.num_workers``. ``augment=False`` feeds the training photos through the
    test transform (no randomness: what the equality test needs). Uses
    `training.train_ch13`, i.e. `training.train_batch_ch13`, with a Trainer on ``kv``
    (``update_on_kvstore=False``); ``num_workers`` is the DataLoader's worker processes.
    """
    from mxnet import gluon

    from .recordio import default_num_workers
    from .runtime import seed_everything, try_all_gpus
    from .training import WEIGHT_DECAY, run_config, train_ch13

    prof = run.profile
    rank, workers = (kv.rank, kv.num_workers) if kv is not None else (0, 1)
    batch_size = batch_size or prof.batch_size
    num_epochs = num_epochs or prof.num_epochs
    devices = list(try_all_gpus())
    # Augmentations differ per worker; the weights do not: the kvstore starts every worker
    # from worker 0's (Trainer's kvstore init), and every worker applies the same update.
    seed_everything(run.seed + 7919 * rank)
    if num_workers is None:
        num_workers = default_num_workers() if run.storage_choice()[0] == "recordio" else 0
    train_tf = run.train_augs() if augment else run.test_augs()
    train_ds = run.images("train").transform_first(train_tf)
    sampler = ShardSampler(len(train_ds), rank, workers, shuffle=True, seed=run.seed)
    train_iter = gluon.data.DataLoader(train_ds, batch_size, sampler=sampler,
                                       last_batch="keep", num_workers=num_workers)
    test_iter: Any = (gluon.data.DataLoader(run.images("test").transform_first(run.test_augs()),
                                            batch_size, num_workers=num_workers)
                      if rank == 0 else [])
    net.collect_params().reset_ctx(devices)
    net.hybridize(static_alloc=True)
    trainer = gluon.Trainer(net.collect_params(), "sgd",
                            {"learning_rate": learning_rate, "wd": WEIGHT_DECAY},
                            kvstore=kv, update_on_kvstore=False if kv is not None else None)
    if kv is not None:
        _start_in_step(net, trainer, run.profile.image_size, devices)
    config = run_config(net, prof, run.backbone, learning_rate, batch_size, num_epochs, run.seed)
    config.update(kvstore=kv.type if kv is not None else None, num_workers=workers, rank=rank,
                  global_batch_size=batch_size * workers, steps_per_epoch=len(train_iter),
                  photos_left_out_per_epoch=len(train_ds) % workers,
                  evaluated=rank == 0)
    history = train_ch13(net, train_iter, test_iter, gluon.loss.SoftmaxCrossEntropyLoss(),
                         trainer, num_epochs, devices, callback=callback,
                         progress=progress if rank == 0 else False, config=config)
    net._clear_cached_op()
    return history


def _start_in_step(net, trainer, image_size: int, devices) -> None:
    """Give every worker worker 0's weights before the first step, and wait for them.

    The Trainer would do it inside its first ``step``: push worker 0's weights to the
    servers, then pull them into every worker, then push-pull the first gradients. In
    MXNet 1.9.1 that pull and that push-pull are not ordered on a CPU worker
    (``KVStoreDist::PushPullImpl`` swaps the key's communication buffer for the gradient,
    so the two no longer share an engine variable): the pull can arrive at the server after
    the gradient sum has replaced the weights there, and a worker then starts from the
    gradient sum. (Without this: 3 runs in 9 of the equality test, 2 workers with 2 threads
    each, ended far from the 1-process weights.) So the kvstore is set up here and the
    pulls are waited for. Deferred shapes (the new head's input width) are inferred
    symbolically (``infer_shape``), not by a forward pass: an inference-mode pass would
    leave convolution weights in oneDNN's layout, which the kvstore cannot send.
    """
    import mxnet as mx
    import numpy as onp

    from .arrays import array

    deferred = [p for p in net.collect_params().values() if p._deferred_init]
    if deferred:
        net.infer_shape(array(onp.zeros((1, 3, image_size, image_size), onp.float32),
                              ctx=devices[0]))
        for p in deferred:
            p._finish_deferred_init()
        net._clear_cached_op()
    trainer._init_kvstore()
    trainer._init_params()
    mx.nd.waitall()
