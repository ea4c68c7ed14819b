#!/usr/bin/env bash
# Creates or refreshes the project venv (default .venv). Order matters:
#  1. torch==2.13.0 alone, so pip takes the local CPU wheel and nothing later can swap it
#     for a CUDA build (constraints.txt pins it for every later step);
#  2. the pinned Python requirements;
#  3. the ROS 2 Kilted wheels, unless a system ROS 2 is sourced (ROS_DISTRO set), in which
#     case the venv sees the system site-packages and keeps the system NumPy;
#  4. regionblip_msgs, built with plain cmake and installed into the venv prefix;
#  5. this package, editable.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
root=$PWD

if [ ! -x "$VENV/bin/python" ]; then
  if [ -n "${ROS_DISTRO:-}" ]; then
    echo "setup: creating $VENV on top of the sourced ROS 2 $ROS_DISTRO (system site-packages visible)"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    echo "setup: creating $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither" >&2); }

echo "setup: [1/5] torch 2.13.0 (CPU wheel) first"
pip install -c constraints.txt "torch==2.13.0"

echo "setup: [2/5] pinned Python requirements"
if [ -n "${ROS_DISTRO:-}" ]; then
  # The system ROS 2 Python extensions are built against the system NumPy: keep it.
  pip install -c <(grep -v '^numpy' constraints.txt) -r <(grep -v '^numpy' requirements.txt)
else
  pip install -c constraints.txt -r requirements.txt
fi

if [ -n "${ROS_DISTRO:-}" ]; then
  echo "setup: [3/5] ROS 2 $ROS_DISTRO is sourced: not installing the ROS 2 wheels"
else
  echo "setup: [3/5] ROS 2 Kilted wheels"
  pip install -c constraints.txt -r requirements-ros.txt
fi

echo "setup: [4/5] building regionblip_msgs into $VENV"
prefix=$(cd "$VENV" && pwd)
build=build/regionblip_msgs
rm -rf "$build" && mkdir -p "$build"
export AMENT_PREFIX_PATH="$prefix${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export PATH="$prefix/bin:$PATH"
(
  cd "$build"
  cmake "$root/regionblip_msgs" -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_PREFIX_PATH="$prefix" \
    -DPython3_EXECUTABLE="$prefix/bin/python" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release >cmake.log 2>&1 \
    || { tail -40 cmake.log; echo "setup: cmake configure of regionblip_msgs failed (log: $build/cmake.log)"; exit 1; }
  cmake --build . -j "$(nproc)" >build.log 2>&1 \
    || { tail -40 build.log; echo "setup: build of regionblip_msgs failed (log: $build/build.log)"; exit 1; }
  cmake --install . >install.log 2>&1 \
    || { tail -20 install.log; echo "setup: install of regionblip_msgs failed (log: $build/install.log)"; exit 1; }
)

echo "setup: [5/5] regionblip_ros (editable)"
pip install --no-deps --no-build-isolation -e .

"$VENV/bin/python" -c "import torch, rclpy, regionblip_msgs.msg, regionblip_ros; print('setup: ok, torch', torch.__version__)"
