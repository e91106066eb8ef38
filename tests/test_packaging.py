"""The image's install steps give a working, lean ``lagscaler`` in a clean virtual environment.

No Docker engine runs here, so the test replays what the Dockerfile does: copy the build stage's
``COPY`` sources into an empty context, ``pip wheel`` it, and ``pip install`` the wheels into a fresh
virtualenv, as the runtime stage does. Then it runs the commands the image is for. The Dockerfile is
read, not restated: a changed ``COPY`` or ``pip`` line changes what this test does.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"

pytestmark = pytest.mark.slow


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions, per stage (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv holding exactly what the image installs."""
    build, runtime = _stages()
    work = tmp_path_factory.mktemp("image")
    context = work / "src"
    context.mkdir()
    for line in build:
        if line.upper().startswith("COPY "):
            *sources, _dest = line.split()[1:]
            for source in sources:
                path = ROOT / source
                target = context / source
                if path.is_dir():
                    shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    shutil.copy2(path, target)
    wheel_runs = [line for line in build if line.startswith("RUN pip wheel")]
    install_runs = [line for line in runtime if line.startswith("RUN pip install")]
    assert len(wheel_runs) == 1, wheel_runs
    assert "--wheel-dir /wheels ." in wheel_runs[0]
    assert len(install_runs) == 1, install_runs
    assert "/wheels/*.whl" in install_runs[0]

    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    wheels = work / "wheels"
    subprocess.run([*pip, "wheel", "--wheel-dir", str(wheels), str(context)], check=True, timeout=900)
    subprocess.run([*pip, "install", *map(str, sorted(wheels.glob("*.whl")))], check=True, timeout=900)
    return venv


def _lagscaler(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "lagscaler"), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=venv.parent,
    )


def test_the_image_runs_serve_policy_and_simulate(image_venv: Path) -> None:
    serve = _lagscaler(image_venv, "serve", "--help")
    assert serve.returncode == 0, serve.stderr
    assert "--bootstrap-server" in serve.stdout
    check = _lagscaler(image_venv, "policy", "check", str(ROOT / "policies"))
    assert check.returncode == 0, check.stdout + check.stderr
    simulate = _lagscaler(image_venv, "simulate", "--help")
    assert simulate.returncode == 0, simulate.stderr


def test_the_image_carries_no_demo_or_test_tooling(image_venv: Path) -> None:
    python = str(image_venv / "bin" / "python")
    probe = subprocess.run(
        [python, "-c", "import importlib.util as u; print(u.find_spec('lagscaler_demo'))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=image_venv.parent,
    )
    assert probe.stdout.strip() == "None"
    demo = _lagscaler(image_venv, "demo")
    assert demo.returncode != 0
    assert demo.stderr.startswith(
        "lagscaler: error: 'demo' is part of the demo tooling, which is not installed"
    )
    assert "Traceback" not in demo.stderr


def test_the_wheel_holds_only_the_runtime_package(image_venv: Path) -> None:
    (wheel,) = (image_venv.parent / "wheels").glob("lagscaler-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"lagscaler"}
    assert not [n for n in names if re.search(r"localkafka|playground|standin|harness", n)]
    assert "lagscaler/edges/api/openapi.json" in names  # package data the API serves
