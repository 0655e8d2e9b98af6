"""The Makefile installs the torch build the user chose (TORCH_INDEX), and refuses a name that is no
build. `make -n` prints the commands without running them."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _dry_run(*variables: str) -> subprocess.CompletedProcess:
    # -B: print the venv recipe even where .venv is already built
    return subprocess.run(["make", "-n", "-B", "-C", str(ROOT), "venv", *variables],
                          capture_output=True, text=True, timeout=60)


def _torch_install_line(*variables: str) -> str:
    done = _dry_run(*variables)
    assert done.returncode == 0, done.stderr
    (line,) = [ln for ln in done.stdout.splitlines() if "pip install" in ln and "torch==" in ln]
    return line


def test_default_is_pips_own_index():
    line = _torch_install_line()
    assert line.endswith("install -q --disable-pip-version-check torch==2.13.0")
    assert "--index-url" not in line


@pytest.mark.parametrize("choice, url", [
    ("cpu", "https://download.pytorch.org/whl/cpu"),
    ("cu128", "https://download.pytorch.org/whl/cu128"),
    ("cu126", "https://download.pytorch.org/whl/cu126"),
    ("rocm6.4", "https://download.pytorch.org/whl/rocm6.4"),
    ("https://mirror.example.org/torch/simple", "https://mirror.example.org/torch/simple"),
])
def test_a_chosen_build_comes_from_its_index(choice, url):
    line = _torch_install_line(f"TORCH_INDEX={choice}")
    assert line.endswith(f"torch==2.13.0 --index-url {url}")


def test_only_torch_comes_from_the_chosen_index():
    done = _dry_run("TORCH_INDEX=cpu")
    others = [ln for ln in done.stdout.splitlines() if "pip install" in ln and "torch==" not in ln]
    assert others and not any("--index-url" in ln for ln in others)


@pytest.mark.parametrize("choice", ["gpu", "cuda", "CPU"])
def test_an_unknown_build_is_refused(choice):
    done = _dry_run(f"TORCH_INDEX={choice}")
    assert done.returncode != 0
    assert f"TORCH_INDEX={choice} names no torch build: use cpu, cuNNN (e.g. cu128)" in done.stderr
