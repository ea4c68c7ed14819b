"""The package is what it says it is: manifests agree, interfaces match DESIGN.md, all imports work."""
import importlib
import os
import pkgutil
import runpy
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON_PACKAGES = ["regionblip_ros", "runtime", "export", "training"]
DESIGN_INTERFACES = {
    "msg": {"Region2D", "Region2DArray", "Region3D", "Region3DArray",
            "RegionDescription", "RegionDescriptionArray"},
    "srv": {"DescribeRegions"},
}

catkin_pkg = pytest.importorskip("catkin_pkg.package", reason="catkin_pkg is installed by make setup")


@pytest.fixture(scope="module")
def setup_args() -> dict:
    """The keyword arguments setup.py passes to setuptools.setup (nothing is built)."""
    captured = {}
    cwd = os.getcwd()
    os.chdir(ROOT)  # setup.py globs launch/ and config/ relative to the project root
    try:
        with mock.patch("setuptools.setup", side_effect=lambda **kw: captured.update(kw)):
            runpy.run_path("setup.py", run_name="__main__")
    finally:
        os.chdir(cwd)
    return captured


@pytest.fixture(scope="module")
def manifest():
    return catkin_pkg.parse_package(ROOT / "package.xml")


def test_package_xml_is_format_3_ament_python(manifest):
    assert manifest.package_format == 3
    assert manifest.get_build_type() == "ament_python"


def test_package_xml_declares_the_ros_dependencies(manifest):
    depends = {d.name for d in manifest.exec_depends}
    assert {"rclpy", "std_msgs", "sensor_msgs", "geometry_msgs", "visualization_msgs",
            "diagnostic_msgs", "regionblip_msgs", "python3-numpy", "python3-yaml"} <= depends


def test_setup_py_agrees_with_package_xml(setup_args, manifest):
    assert setup_args["name"] == manifest.name
    assert setup_args["version"] == manifest.version
    assert setup_args["description"] == manifest.description
    assert setup_args["license"] == manifest.licenses[0]
    assert setup_args["maintainer_email"] == manifest.maintainers[0].email


def test_setup_py_installs_the_ament_index_marker_manifest_launch_and_config(setup_args):
    installed = {dest: set(files) for dest, files in setup_args["data_files"]}
    assert installed["share/ament_index/resource_index/packages"] == {"resource/regionblip_ros"}
    assert "package.xml" in installed["share/regionblip_ros"]
    assert set(installed["share/regionblip_ros/launch"]) == {
        str(p.relative_to(ROOT)) for p in (ROOT / "launch").glob("*.launch.py")}
    assert set(installed["share/regionblip_ros/config"]) == {
        str(p.relative_to(ROOT)) for pattern in ("*.yaml", "*.xml") for p in (ROOT / "config").glob(pattern)}
    assert (ROOT / "resource" / "regionblip_ros").is_file()


def test_setup_py_declares_the_node_console_script_and_it_resolves(setup_args):
    scripts = setup_args["entry_points"]["console_scripts"]
    assert "region_describer = regionblip_ros.describer_node:main" in scripts
    module, _, attr = scripts[0].split(" = ")[1].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_setup_py_ships_every_python_package(setup_args):
    assert set(PYTHON_PACKAGES) <= set(setup_args["packages"])


def test_interface_package_declares_exactly_the_design_interfaces():
    msgs = catkin_pkg.parse_package(ROOT / "regionblip_msgs" / "package.xml")
    assert msgs.get_build_type() == "ament_cmake"
    assert "rosidl_interface_packages" in {g.name for g in msgs.member_of_groups}
    for kind, names in DESIGN_INTERFACES.items():
        files = {p.stem for p in (ROOT / "regionblip_msgs" / kind).glob(f"*.{kind}")}
        assert files == names
        cmake = (ROOT / "regionblip_msgs" / "CMakeLists.txt").read_text()
        assert all(f'"{kind}/{name}.{kind}"' in cmake for name in names)


@pytest.mark.ros
def test_built_interfaces_import_with_the_design_fields():
    from regionblip_msgs.msg import Region2D, Region3D, RegionDescription, RegionDescriptionArray
    from regionblip_msgs.srv import DescribeRegions

    assert list(Region2D.get_fields_and_field_types()) == [
        "id", "x", "y", "width", "height", "label", "prompt", "refresh"]
    assert Region3D.get_fields_and_field_types() == {
        "id": "string", "center": "geometry_msgs/Pose", "size": "geometry_msgs/Vector3",
        "label": "string", "prompt": "string", "refresh": "boolean"}
    assert RegionDescription.get_fields_and_field_types() == {
        "id": "string", "text": "string", "score": "float", "label": "string",
        "modality": "string", "region_2d": "regionblip_msgs/Region2D",
        "region_3d": "regionblip_msgs/Region3D", "cached": "boolean", "camera_text": "string",
        "camera_score": "float"}
    assert RegionDescriptionArray.get_fields_and_field_types() == {
        "header": "std_msgs/Header",
        "descriptions": "sequence<regionblip_msgs/RegionDescription>",
        "inference_ms": "float"}
    request = DescribeRegions.Request.get_fields_and_field_types()
    assert request["image"] == "sensor_msgs/Image" and request["cloud"] == "sensor_msgs/PointCloud2"
    assert DescribeRegions.Response.get_fields_and_field_types()["descriptions"] == (
        "regionblip_msgs/RegionDescriptionArray")


@pytest.mark.parametrize("package", PYTHON_PACKAGES)
def test_every_module_of_the_package_imports(package):
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, prefix=package + "."):
        importlib.import_module(info.name)
