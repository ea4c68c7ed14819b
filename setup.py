"""regionblip_ros: an ament_python package, also pip-installable (pip install -e .)."""
from glob import glob

from setuptools import find_packages, setup

package_name = "regionblip_ros"

setup(
    name=package_name,
    version="0.1.0",
    description=(
        "RegionBLIP for robots: describes regions of camera images and LiDAR scans in "
        "natural language, with an optimized ONNX Runtime / TensorRT runtime."
    ),
    maintainer="regionblip_ros developers",
    maintainer_email="dev@regionblip-ros.org",
    license="BSD-3-Clause",
    python_requires=">=3.10",
    packages=find_packages(include=["contract*", "regionblip_ros*", "runtime*", "export*", "training*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    # The Python dependencies are pinned in requirements.txt and installed by the Makefile
    # (torch first, from its CPU wheel) or by pip on a robot; ROS packages come from
    # package.xml through rosdep. Listing them here would let pip pick another torch.
    install_requires=["setuptools"],
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "region_describer = regionblip_ros.describer_node:main",
        ],
    },
)
