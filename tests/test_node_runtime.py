"""The region_describer over the real runtime: it loads the bundle its parameters name and describes with it."""

import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (make setup installs it)")

from rclpy.parameter import Parameter  # noqa: E402
from regionblip_msgs.srv import DescribeRegions  # noqa: E402

from node_rig import boxes, camera_image, cubes, header, lidar_cloud  # noqa: E402
from regionblip_ros.describer_node import RegionDescriber  # noqa: E402


def test_the_node_builds_its_describer_from_the_bundle_parameter_and_describes_both_modalities(
        ros_context, tiny_bundle):
    node = RegionDescriber(context=ros_context, namespace="/t_runtime", parameter_overrides=[
        Parameter("bundle", value=str(tiny_bundle)), Parameter("max_new_tokens", value=4)])
    try:
        assert node.describer.backend == "onnxruntime"
        request = DescribeRegions.Request(
            image=camera_image(header(1, 0), width=64, height=48), regions_2d=boxes((2, 3, 20, 10), (40, 30, 30, 30)),
            cloud=lidar_cloud(header(1, 0, "lidar"), points=300), regions_3d=cubes((1, 2, 0.5)))

        response = node.on_describe_regions(request, DescribeRegions.Response())  # the service callback itself
        assert response.success, response.message
        out = response.descriptions.descriptions
        assert [(d.id, d.modality) for d in out] == [
            ("det-0", "image_region"), ("det-1", "image_region"), ("obj-0", "pointcloud_region")]
        assert all(d.text and d.score <= 0.0 for d in out)
        assert response.descriptions.inference_ms > 0.0
    finally:
        node.destroy_node()
