"""python -m regionblip_ros.bringup: the nodes of a parameter file in one process, stopped by a signal."""

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")

from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from regionblip_msgs.srv import DescribeRegions  # noqa: E402

from describer_double import DescriberDouble  # noqa: E402
from node_rig import boxes, camera_image, header  # noqa: E402
from regionblip_ros import bringup  # noqa: E402
from regionblip_ros.describer_node import PARAMETERS, RegionDescriber  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "describe.yaml"
DEMO_CONFIG = ROOT / "config" / "demo.yaml"
DEFAULTS = {name: default for name, (default, _) in PARAMETERS.items()}
TIMEOUT_S = 20.0
# bringup.main with the describer double injected, as a process of its own (signals go to a main thread).
WITH_DOUBLE = (
    f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
    "from describer_double import DescriberDouble; from regionblip_ros import bringup; "
    "sys.exit(bringup.main(sys.argv[1:], describer=DescriberDouble()))"
)


def params_file(tmp_path: Path, node_key: str, **overrides) -> Path:
    """config/describe.yaml with its node under `node_key` and some parameters overridden."""
    parameters = {**yaml.safe_load(CONFIG.read_text())["region_describer"]["ros__parameters"], **overrides}
    path = tmp_path / "describe.yaml"
    path.write_text(yaml.safe_dump({node_key: {"ros__parameters": parameters}}))
    return path


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {text!r}"
    return lines[0]


@pytest.mark.parametrize("config", [CONFIG, DEMO_CONFIG], ids=["describe.yaml", "demo.yaml"])
def test_a_shipped_config_sets_only_declared_parameters_and_only_to_values_other_than_their_defaults(config):
    parameters = yaml.safe_load(config.read_text())["region_describer"]["ros__parameters"]
    assert set(parameters) <= set(PARAMETERS), set(parameters) - set(PARAMETERS)
    same = {name: value for name, value in parameters.items() if value == DEFAULTS[name]}
    assert not same, f"{config.name} repeats these defaults of node_parameters.PARAMETERS: {same}"
    if config == CONFIG:  # demo.yaml also configures sim_sensors, which the demo runs itself
        assert bringup.nodes_in(config) == [("/", "region_describer")]


def test_config_describe_yaml_overrides_nothing_and_names_every_parameter_in_its_comments():
    text = CONFIG.read_text()
    assert yaml.safe_load(text) == {"region_describer": {"ros__parameters": {}}}
    comments = " ".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    assert [name for name in PARAMETERS if name not in comments] == []


def test_an_empty_ros__parameters_mapping_starts_the_node_on_its_defaults(tmp_path):
    namespace = "/t_" + uuid.uuid4().hex[:10]
    params = params_file(tmp_path, f"{namespace}/region_describer")  # describe.yaml's {}
    assert yaml.safe_load(params.read_text()) == {f"{namespace}/region_describer": {"ros__parameters": {}}}
    context = Context()
    rclpy.init(args=[bringup.PROG, "--ros-args", "--params-file", str(params)], context=context)  # as bringup does
    try:
        node = RegionDescriber(describer=DescriberDouble(), context=context, namespace=namespace)
        try:
            assert {name: node.get_parameter(name).value for name in PARAMETERS} == DEFAULTS
        finally:
            node.destroy_node()
    finally:
        context.try_shutdown()


def test_the_demo_config_changes_only_the_node_parameters_it_names(tmp_path):
    namespace = "/t_" + uuid.uuid4().hex[:10]
    section = yaml.safe_load(DEMO_CONFIG.read_text())["region_describer"]
    params = tmp_path / "demo.yaml"
    params.write_text(yaml.safe_dump({f"{namespace}/region_describer": section}))
    context = Context()
    rclpy.init(args=[bringup.PROG, "--ros-args", "--params-file", str(params)], context=context)
    try:
        node = RegionDescriber(describer=DescriberDouble(), context=context, namespace=namespace)
        try:
            values = {name: node.get_parameter(name).value for name in PARAMETERS}
        finally:
            node.destroy_node()
    finally:
        context.try_shutdown()
    assert values == {**DEFAULTS, **section["ros__parameters"]}
    assert values["sync_slop"] == 0.0


def test_a_namespaced_key_starts_the_node_in_that_namespace(tmp_path):
    assert bringup.nodes_in(params_file(tmp_path, "/robot1/region_describer")) == [("/robot1", "region_describer")]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_bringup_serves_the_node_from_the_yaml_until_a_signal_stops_it(tmp_path, ros_context, stop):
    namespace = "/t_" + uuid.uuid4().hex[:10]
    params = params_file(tmp_path, f"{namespace}/region_describer", max_regions=2, enable_lidar=False)
    process = subprocess.Popen([sys.executable, "-c", WITH_DOUBLE, "--params", str(params)], cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        client_node = rclpy.create_node("bringup_client", context=ros_context)
        client = client_node.create_client(DescribeRegions, f"{namespace}/describe_regions")
        assert client.wait_for_service(timeout_sec=TIMEOUT_S), "bringup never offered describe_regions"
        request = DescribeRegions.Request(image=camera_image(header(1, 0)),
                                          regions_2d=boxes((0, 0, 16, 16), (16, 0, 16, 16), (32, 0, 16, 16)))
        future = client.call_async(request)
        executor = SingleThreadedExecutor(context=ros_context)
        executor.add_node(client_node)
        executor.spin_until_future_complete(future, timeout_sec=TIMEOUT_S)
        response = future.result()
        assert [d.text for d in response.descriptions.descriptions] == [
            "region 0 of 64x48 image", "region 1 of 64x48 image"]  # max_regions: 2, from the YAML
        assert response.message.startswith("3 image_regions in one frame, max_regions is 2")

        process.send_signal(stop)
        _, err = process.communicate(timeout=TIMEOUT_S)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "Traceback" not in err


def test_a_missing_params_file_exits_non_zero_with_one_line():
    result = subprocess.run([sys.executable, "-m", "regionblip_ros.bringup", "--params", "/no/such/describe.yaml"],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                            timeout=TIMEOUT_S)
    assert result.returncode == 2
    assert one_line(result.stderr) == (
        "python -m regionblip_ros.bringup: cannot read parameters file '/no/such/describe.yaml': "
        "No such file or directory")


@pytest.mark.parametrize(("content", "says"), [
    ("region_describer: {ros__parameters: [unclosed", "is not valid YAML"),
    ("- just\n- a list\n", "holds no nodes"),
    ("region_describer:\n  max_regions: 3\n", "'region_describer' has no ros__parameters mapping"),
    ("region_describer:\n  ros__parameters:\n    # all commented out\n",
     "'region_describer' has an empty ros__parameters, which rcl cannot read: write 'ros__parameters: {}'"),
    ("camera_driver: {ros__parameters: {fps: 30}}", "configures node 'camera_driver', but bringup starts only"),
    ("/**: {ros__parameters: {max_regions: 3}}", "names no node, only wildcards"),
], ids=["bad YAML", "not a mapping", "no ros__parameters", "null ros__parameters", "unknown node",
        "only wildcards"])
def test_a_bad_params_file_exits_2_with_one_line_saying_what_is_wrong(tmp_path, capsys, content, says):
    params = tmp_path / "bad.yaml"
    params.write_text(content)
    assert bringup.main(["--params", str(params)]) == 2
    assert says in one_line(capsys.readouterr().err)


def test_a_missing_argument_exits_2_with_one_line(capsys):
    assert bringup.main([]) == 2
    assert one_line(capsys.readouterr().err) == (
        "python -m regionblip_ros.bringup: the following arguments are required: --params (see --help)")


def test_a_node_that_cannot_load_its_bundle_exits_1_with_one_line(tmp_path, capsys):
    params = params_file(tmp_path, f"/t_{uuid.uuid4().hex[:10]}/region_describer", bundle=str(tmp_path / "none"))
    assert bringup.main(["--params", str(params)]) == 1
    assert one_line(capsys.readouterr().err).startswith("python -m regionblip_ros.bringup: ")
