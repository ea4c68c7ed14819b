"""Both packages build the way a robot builds them: colcon, in a workspace, against an installed ROS 2.

Here the installed ROS 2 is the pip wheels in the venv; on a robot it is /opt/ros/<distro>. The
message package is nested in the repository, so colcon needs both base paths (see README).
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ros]

ROOT = Path(__file__).resolve().parents[1]
PREFIX = Path(sys.prefix)


def test_colcon_builds_and_installs_both_packages(tmp_path):
    colcon = shutil.which("colcon", path=str(PREFIX / "bin"))
    assert colcon, "colcon is missing from the venv: make setup installs it (requirements-ros.txt)"
    env = dict(os.environ, AMENT_PREFIX_PATH=str(PREFIX), CMAKE_PREFIX_PATH=str(PREFIX),
               PATH=f"{PREFIX / 'bin'}:{os.environ['PATH']}")
    build = subprocess.run(
        [colcon, "build", "--base-paths", str(ROOT), str(ROOT / "regionblip_msgs"),
         "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install"),
         "--event-handlers", "console_cohesion-",
         "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert "2 packages finished" in build.stdout

    install = tmp_path / "install"
    share = install / "regionblip_ros" / "share" / "regionblip_ros"
    assert (install / "regionblip_ros" / "lib" / "regionblip_ros" / "region_describer").is_file()
    assert (share / "launch" / "describe.launch.py").is_file()
    assert (share / "config" / "describe.yaml").is_file()
    assert (install / "regionblip_ros" / "share" / "ament_index" / "resource_index" / "packages"
            / "regionblip_ros").is_file()

    msgs = install / "regionblip_msgs"
    site = msgs / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    probe = subprocess.run(
        [sys.executable, "-c", "import regionblip_msgs.msg as m; print(m.__file__); "
         "print(m.RegionDescriptionArray(inference_ms=2.5).inference_ms)"],
        env=dict(env, PYTHONPATH=str(site),
                 LD_LIBRARY_PATH=f"{msgs / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}"),
        capture_output=True, text=True, timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    module_file, value = probe.stdout.split()
    assert module_file.startswith(str(site)) and value == "2.5"
