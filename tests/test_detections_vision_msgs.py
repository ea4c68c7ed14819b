"""Detector inputs against real vision_msgs messages, where the pip ROS 2 wheels have no vision_msgs.

Builds tests/data/vision_msgs (upstream's definitions, test-only) into a temporary prefix the way
tools/setup_venv.sh (step 4) builds regionblip_msgs into the venv, then runs tests/test_vision_msgs_inputs.py
(the conversions on real messages, and the node over DDS) in a process that sees that prefix. Nothing is
installed into the venv.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ros]

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tests" / "data" / "vision_msgs"
CHECKS = ROOT / "tests" / "test_vision_msgs_inputs.py"
PREFIX = Path(sys.prefix)


def prepend(path: Path, variable: str) -> str:
    return os.pathsep.join(filter(None, [str(path), os.environ.get(variable)]))


def build_interface_package(source: Path, work: Path) -> Path:
    """Configure, build and install an interface package with the commands and environment of
    tools/setup_venv.sh step 4, into work/install instead of the venv; the install prefix is returned."""
    build, install = work / "build", work / "install"
    build.mkdir(parents=True)
    env = dict(os.environ, AMENT_PREFIX_PATH=prepend(PREFIX, "AMENT_PREFIX_PATH"),
               PATH=prepend(PREFIX / "bin", "PATH"))
    steps = [
        ["cmake", str(source), f"-DCMAKE_INSTALL_PREFIX={install}", f"-DCMAKE_PREFIX_PATH={PREFIX}",
         f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF", "-DCMAKE_BUILD_TYPE=Release"],
        ["cmake", "--build", ".", "-j", str(os.cpu_count() or 1)],
        ["cmake", "--install", "."],
    ]
    for step in steps:
        done = subprocess.run(step, cwd=build, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{' '.join(step)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return install


def test_detections_from_real_vision_msgs_messages_are_converted_and_described(tmp_path):
    install = build_interface_package(PACKAGE, tmp_path)
    site = install / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    env = dict(os.environ, PYTHONPATH=prepend(site, "PYTHONPATH"),
               LD_LIBRARY_PATH=prepend(install / "lib", "LD_LIBRARY_PATH"),
               AMENT_PREFIX_PATH=os.pathsep.join([str(install), prepend(PREFIX, "AMENT_PREFIX_PATH")]))
    probe = subprocess.run([sys.executable, "-c", "import vision_msgs.msg; print(vision_msgs.msg.__file__)"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0 and probe.stdout.startswith(str(site)), probe.stdout + probe.stderr

    checks = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CHECKS)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

    summary = checks.stdout.strip().splitlines()[-1] if checks.stdout.strip() else ""
    assert checks.returncode == 0, checks.stdout[-4000:] + checks.stderr[-2000:]
    assert re.fullmatch(r"\d+ passed(, \d+ warnings?)? in [\d.]+s", summary), f"not every check ran: {summary!r}"
