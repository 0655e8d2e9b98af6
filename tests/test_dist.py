"""The package as users install it: the sdist and the wheel (built by setuptools' PEP 517 hooks,
as `make dist` does) carry the reference weights, and the wheel installed into a fresh virtual
environment runs `evtp demo` from its own files, not from this checkout.

Nothing is downloaded: the fresh environment reaches the running environment's dependencies
(torch, transformers, ...) through a .pth line, and the wheel is installed with ``--no-deps``.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ("evtp/weights/reference.safetensors", "evtp/weights/reference.json", "evtp/weights/MODEL_CARD.md")


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """sdist and wheel of a copy of the checkout (the build writes nothing into the checkout)."""
    work = tmp_path_factory.mktemp("dist")
    src = work / "evtp"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = work / "out"
    # (the hooks rewrite sys.argv while they run: the folder is read first)
    _run([sys.executable, "-c", "import sys; from setuptools import build_meta as b; out = sys.argv[1]; "
          "b.build_sdist(out); b.build_wheel(out)", str(out)], cwd=src)
    return out


def test_sdist_and_wheel_carry_the_weights(dist):
    (wheel,) = dist.glob("evtp-*.whl")
    (sdist,) = dist.glob("evtp-*.tar.gz")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(WEIGHTS) <= names and "evtp/cli/__init__.py" in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "evtp = evtp.cli:main" in entry_points
    with tarfile.open(sdist) as tar:
        members = {m.split("/", 1)[1] for m in tar.getnames() if "/" in m}
    assert {f"src/{w}" for w in WEIGHTS} <= members


def test_the_wheel_runs_the_demo_in_a_fresh_environment(dist, tmp_path):
    (wheel,) = dist.glob("evtp-*.whl")
    env_dir = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)])
    python = env_dir / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # the dependencies of this environment, appended after the fresh one's own site-packages
    (site / "evtp_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
          "--disable-pip-version-check", str(wheel)])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    where = _run([str(python), "-c", "import evtp, evtp.models.reference.saving as s, inspect; "
                  "print(evtp.__file__); print(inspect.getsourcefile(s))"], cwd=tmp_path, env=env).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where  # the wheel's files, not src/
    out = tmp_path / "demo"
    done = _run([str(env_dir / "bin" / "evtp"), "demo", "--samples", "1", "--repeats", "1", "--out", str(out)],
                cwd=tmp_path, env=env)
    assert "Reference IVS model on 1 synthetic test images" in done.stdout  # the shipped weights loaded
    result = json.loads((out / "demo.json").read_text())
    assert {"selection", "examples", "reference"} <= set(result)
    assert (out / "example_image.png").stat().st_size > 0
