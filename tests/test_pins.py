"""One pin list: requirements/ is the source; conda, Binder and pyproject.toml must agree."""
from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent


def read_pins(path: Path) -> dict[str, str]:
    """name -> pinned version, following ``-r`` includes."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            pins.update(read_pins(path.parent / line[3:].strip()))
        elif line.startswith("-e "):
            continue
        else:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{path.name}: {line} is not an exact pin"
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def pip_lines_of_conda_file(path: Path) -> list[str]:
    text = path.read_text()
    return re.findall(r"^\s+- (-r .+|-e .+)$", text, flags=re.M)


def test_cpu_and_gpu_differ_only_in_the_mxnet_build():
    cpu, gpu = read_pins(REPO / "requirements/cpu.txt"), read_pins(REPO / "requirements/gpu.txt")
    assert cpu.pop("mxnet") == gpu.pop("mxnet-cu112") == "1.9.1"
    assert cpu == gpu
    assert cpu["d2l"] == "1.0.3" and cpu["numpy"] == "1.23.5"


@pytest.mark.parametrize("conda_file,req", [("environment.yml", "requirements/cpu.txt"),
                                            ("environment-gpu.yml", "requirements/gpu.txt")])
def test_conda_files_install_the_pin_list(conda_file, req):
    lines = pip_lines_of_conda_file(REPO / conda_file)
    assert f"-r {req}" in lines and "-e ." in lines
    assert "python=3.11" in (REPO / conda_file).read_text()


def test_binder_installs_the_pin_list():
    text = (REPO / "binder/requirements.txt").read_text()
    assert "-r ../requirements/cpu.txt" in text and "-e ." in text
    assert (REPO / "binder/runtime.txt").read_text().strip() == "python-3.11"
    assert read_pins(REPO / "binder/requirements.txt") == read_pins(REPO / "requirements/cpu.txt")


def test_pyproject_ranges_admit_the_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {}
    for name in ("cpu", "gpu", "peer"):
        pins |= read_pins(REPO / f"requirements/{name}.txt")
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values()
                                      for r in extra]
    for line in reqs:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pins, f"pyproject.toml needs {name}, which requirements/ does not pin"
        assert req.specifier.contains(pins[name]), f"{line} excludes the pin {pins[name]}"


def test_the_installed_environment_is_the_pinned_one():
    """The pip route (scripts/_venv.sh) installed exactly the pins."""
    pins = read_pins(REPO / "requirements/cpu.txt")
    wrong = {n: (v, metadata.version(n)) for n, v in pins.items() if metadata.version(n) != v}
    assert not wrong, f"installed versions differ from requirements/: {wrong}"
