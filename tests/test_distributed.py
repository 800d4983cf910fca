"""dist_sync on loopback: the launcher's variables, shards, bounded processes, and a 2-worker
run equal to a 1-process run at the same global batch."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as onp
import pytest
from test_folders import make_tree

from d2l_helpers import distributed
from d2l_helpers.distributed import ShardSampler, dmlc_env, launch_local

REPO = Path(__file__).resolve().parent.parent


def _clean_env() -> dict[str, str]:
    """This environment without DMLC_* variables, importing this checkout's d2l_helpers
    (a worker script's own folder comes first on its sys.path, not the repository)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMLC_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _run(cmd, timeout: float, env=None) -> subprocess.CompletedProcess:
    """``cmd`` in its own process group; the whole group is killed when it overruns."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or _clean_env(), cwd=REPO, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        distributed.stop_all([proc], grace=5)
        out, err = proc.communicate()
        pytest.fail(f"{cmd} did not finish in {timeout} s:\n{out}\n{err}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_dmlc_env_is_loopback_only():
    env = dmlc_env("server", 9999, num_workers=2, num_servers=1, threads=1)
    assert env == {"DMLC_ROLE": "server", "DMLC_PS_ROOT_URI": "127.0.0.1",
                   "DMLC_PS_ROOT_PORT": "9999", "DMLC_NUM_SERVER": "1", "DMLC_NUM_WORKER": "2",
                   "DMLC_NODE_HOST": "127.0.0.1", "MXNET_OMP_MAX_THREADS": "1"}
    with pytest.raises(ValueError, match="role must be one of"):
        dmlc_env("boss", 1, 1, 1)
    with pytest.raises(ValueError, match="at least 1 worker and 1 server"):
        dmlc_env("worker", 1, 2, 0)
    assert 0 < distributed.free_port() < 65536


@pytest.mark.parametrize("n,workers,batch", [(24, 2, 4), (25, 2, 4), (30, 3, 2)])
def test_shards_of_a_step_are_the_step_of_one_process(n, workers, batch):
    single = list(ShardSampler(n - n % workers, 0, 1, seed=3))
    shards = [list(ShardSampler(n, r, workers, seed=3)) for r in range(workers)]
    assert sum(map(len, shards)) == n - n % workers
    for t in range(len(shards[0]) // batch):
        union = sorted(i for s in shards for i in s[t * batch:(t + 1) * batch])
        assert union == sorted(single[t * batch * workers:(t + 1) * batch * workers])
    sampler = ShardSampler(n, 1, workers, seed=3)
    assert list(sampler) != list(sampler)  # a new permutation every epoch
    with pytest.raises(ValueError, match="rank 2 is not in 0..1"):
        ShardSampler(4, 2, 2)


def test_a_failing_process_stops_the_whole_job(capfd):
    start = time.monotonic()
    rc = launch_local([sys.executable, "-c", "import sys, time; time.sleep(0.5); sys.exit(3)"],
                      2, 1, timeout=60, env=_clean_env())
    assert rc == 1 and time.monotonic() - start < 30
    assert "exited with code 3" in capfd.readouterr().err


def test_a_job_over_its_timeout_is_killed_with_its_children(tmp_path, capfd):
    pids = tmp_path / "pids"
    pids.mkdir()
    code = ("import os, subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            f"open(os.path.join({str(pids)!r}, str(os.getpid())), 'w').write(str(child.pid))\n"
            "time.sleep(120)\n")
    start = time.monotonic()
    rc = launch_local([sys.executable, "-c", code], 2, 1, timeout=3, env=_clean_env(), grace=2)
    assert rc == 1 and time.monotonic() - start < 30
    assert "not done after 3 s" in capfd.readouterr().err
    procs = [int(p.name) for p in pids.iterdir()] + [int(p.read_text()) for p in pids.iterdir()]
    assert len(procs) == 8  # scheduler, server, 2 workers, and a child of each
    time.sleep(0.5)
    assert [pid for pid in procs if _alive(pid)] == []


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


WORKER = textwrap.dedent("""
    import sys
    import d2l_helpers
    from d2l_helpers import distributed
    distributed.serve_if_server()          # the server and scheduler stop here
    import mxnet as mx
    from mxnet.gluon import nn
    from d2l_helpers.runtime import seed_everything
    from d2l_helpers.session import setup

    folder, out, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    run = setup(seed=0, profile="ci", backbone="efficientnet_lite0", data=folder)


    class Tiny(nn.HybridBlock):
        # a net without BatchNorm (per-worker batch statistics would differ) or dropout
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            with self.name_scope():
                self.features = nn.HybridSequential()
                self.features.add(nn.Conv2D(6, 5, strides=4, in_channels=3, activation="relu"),
                                  nn.GlobalAvgPool2D(), nn.Flatten())
                self.output = nn.Dense(3, in_units=6)

        def hybrid_forward(self, F, x):
            return self.output(self.features(x))


    seed_everything(0)
    net = Tiny()
    net.initialize(mx.init.Xavier())
    for p in net.output.collect_params().values():
        p.lr_mult = 10                      # the head's 10x must survive the kvstore
    kv = distributed.kvstore_from_env()
    if kv is None or kv.rank == 0:
        net.save_parameters(out + ".init")
    history = distributed.fit_data_parallel(run, net, 0.002, kv, batch_size=batch,
                                            num_epochs=2, augment=False, progress=False)
    if kv is None or kv.rank == 0:
        net.save_parameters(out)
        print("steps per epoch", history.config["steps_per_epoch"],
              "global batch", history.config["global_batch_size"])
""")


def test_two_workers_equal_one_process_at_the_same_global_batch(tmp_path):
    """2 workers x batch 4 (+ 1 server) == 1 process x batch 8, after 6 SGD steps."""
    import mxnet as mx

    folder = make_tree(tmp_path / "animals", per_class=(8, 2), size=(64, 48))
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    one, two = tmp_path / "one.params", tmp_path / "two.params"
    single = _run([sys.executable, str(script), str(folder), str(one), "8"], timeout=240)
    assert single.returncode == 0, single.stderr
    assert "steps per epoch 3 global batch 8" in single.stdout
    job = _run([sys.executable, "-m", "d2l_helpers", "launch", "-n", "2", "-s", "1",
                "--timeout", "240", "--", sys.executable, str(script), str(folder), str(two), "4"],
               timeout=300)
    assert job.returncode == 0, job.stderr
    assert "steps per epoch 3 global batch 8" in job.stdout
    a, b = mx.nd.load(str(one)), mx.nd.load(str(two))
    init_one, init_two = mx.nd.load(f"{one}.init"), mx.nd.load(f"{two}.init")
    assert sorted(a) == sorted(b) == sorted(init_one) == sorted(init_two)
    for name in a:  # the same seeded start, which training moved ...
        assert (init_one[name].asnumpy() == init_two[name].asnumpy()).all(), name
        assert not onp.allclose(init_one[name].asnumpy(), a[name].asnumpy(), atol=1e-4), name
    for name in a:  # ... to the same weights
        onp.testing.assert_allclose(b[name].asnumpy(), a[name].asnumpy(), rtol=1e-4, atol=1e-6,
                                    err_msg=name)


def test_train_command_under_the_launcher(tmp_path):
    folder = make_tree(tmp_path / "animals", per_class=(4, 2))
    job = _run([sys.executable, "-m", "d2l_helpers", "launch", "-n", "2", "-s", "1",
                "--timeout", "240", "--", sys.executable, "-m", "d2l_helpers", "train",
                str(folder), "--profile", "ci", "--epochs", "1", "--backbone",
                "efficientnet_lite0", "--no-progress", "--name", "dist"],
               timeout=300, env={**_clean_env()})
    assert job.returncode == 0, job.stderr
    assert job.stdout.count("Saved run 'dist'") == 1  # worker 0 saves
    from d2l_helpers import runs

    cfg = runs.load_run("dist").history.config
    assert cfg["kvstore"] == "dist_sync" and cfg["num_workers"] == 2
    assert cfg["global_batch_size"] == 64 and cfg["head_lr_mult"] == 10
