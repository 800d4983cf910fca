"""Threads and seeds: what every kernel and CI job gets from importing d2l_helpers."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from d2l_helpers.profiles import PROFILES, get_profile
from d2l_helpers.runtime import available_cpus


def _python(code: str, **env) -> str:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("MXNET_OMP_MAX_THREADS", "OMP_NUM_THREADS")}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env}, text=True,
                          capture_output=True, check=True, timeout=120).stdout.strip()


def test_import_gives_mxnet_one_thread_per_cpu():
    out = _python("import d2l_helpers, os, mxnet; print(os.environ['MXNET_OMP_MAX_THREADS'])")
    assert int(out) == available_cpus()


def test_idle_openmp_threads_sleep_unless_the_user_chose_a_policy():
    code = "import d2l_helpers, os; print(os.environ['OMP_WAIT_POLICY'])"
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=clean, text=True,
                         capture_output=True, check=True, timeout=120).stdout.strip()
    assert out == "PASSIVE"
    assert _python(code, OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"


def test_a_users_own_setting_wins():
    out = _python("import d2l_helpers, os; print(d2l_helpers.configure_threads())",
                  OMP_NUM_THREADS="1")
    assert out == "1"


def test_importing_mxnet_first_warns_and_still_sets_threads():
    out = _python("import warnings, mxnet\nwith warnings.catch_warnings(record=True) as w:\n"
                  "    warnings.simplefilter('always')\n    import d2l_helpers\n"
                  "print(any('imported before d2l_helpers' in str(x.message) for x in w))")
    assert out == "True"


def test_same_seed_same_random_numbers():
    import random

    import mxnet as mx
    import numpy as onp

    from d2l_helpers.runtime import seed_everything

    def draw():
        return (random.random(), onp.random.rand(), float(mx.nd.random.uniform().asscalar()))

    seed_everything(3)
    a = draw()
    seed_everything(3)
    assert draw() == a


def test_profiles(monkeypatch):
    monkeypatch.setenv("D2L_PROFILE", "ci")
    assert get_profile().name == "ci"
    assert get_profile("full") == PROFILES["full"]
    full = PROFILES["full"]
    assert (full.image_size, full.resize, full.batch_size, full.num_epochs) == (224, 256, 128, 5)
    monkeypatch.setenv("D2L_PROFILE", "tiny")
    with pytest.raises(ValueError, match="Unknown profile 'tiny'"):
        get_profile()
    for p in PROFILES.values():  # EfficientNet's static "same" padding needs multiples of 32
        assert p.image_size % 32 == 0


@pytest.mark.parametrize("var", ["MXNET_OMP_MAX_THREADS", "OMP_NUM_THREADS"])
@pytest.mark.parametrize("value", ["abc", "0", "-2", "1.5"])
def test_a_bad_thread_count_names_the_variable_and_the_fix(var, value, monkeypatch):
    from d2l_helpers.runtime import configure_threads

    for other in ("MXNET_OMP_MAX_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match=rf"{var}='{value}' is not a thread count.*"
                                         r"whole number >= 1.*or unset it"):
        configure_threads()


def test_importing_with_a_bad_thread_count_fails_with_the_message():
    clean = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    proc = subprocess.run([sys.executable, "-c", "import d2l_helpers"], text=True,
                          capture_output=True, timeout=120,
                          env={**clean, "MXNET_OMP_MAX_THREADS": "abc"})
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError: MXNET_OMP_MAX_THREADS='abc' is not a thread count")
    assert "whole number >= 1" in last and "unset it" in last
