"""Detector inputs with real vision_msgs messages: the conversions, and the node over DDS.

Runs wherever vision_msgs imports (an apt ROS 2 with ros-$ROS_DISTRO-vision-msgs). Where it does not (the pip
wheels have none), tests/test_detections_vision_msgs.py (slow) builds the upstream definitions in
tests/data/vision_msgs into a temporary prefix and runs this file against them.
"""

import math

import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")
pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not installed: tests/test_detections_vision_msgs.py "
                    "(make test-slow) builds it from tests/data/vision_msgs and runs this file")

from geometry_msgs.msg import Point, Pose, Quaternion, Vector3  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from vision_msgs.msg import (  # noqa: E402
    BoundingBox2D, BoundingBox3D, Detection2D, Detection2DArray, Detection3D, Detection3DArray, ObjectHypothesis,
    ObjectHypothesisWithPose, Point2D, Pose2D,
)

from describer_double import DescriberDouble  # noqa: E402
from node_rig import QOS, NodeRig, camera_image, header, lidar_cloud, subscribed_topics, wait_for  # noqa: E402
from regionblip_ros.describer_node import RegionDescriber  # noqa: E402
from regionblip_ros.detections import DETECTION_2D, detections_to_regions_2d, detections_to_regions_3d  # noqa: E402


def results(*scored):
    return [ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=class_id, score=score))
            for class_id, score in scored]


def detection_2d(cx, cy, size_x, size_y, theta=0.0, id="", scored=()):
    bbox = BoundingBox2D(center=Pose2D(position=Point2D(x=float(cx), y=float(cy)), theta=theta),
                         size_x=float(size_x), size_y=float(size_y))
    return Detection2D(bbox=bbox, id=id, results=results(*scored))


def detection_3d(position, size, id="", scored=()):
    center = Pose(position=Point(**dict(zip("xyz", map(float, position)))), orientation=Quaternion(w=1.0))
    return Detection3D(bbox=BoundingBox3D(center=center, size=Vector3(**dict(zip("xyz", map(float, size))))),
                       id=id, results=results(*scored))


# ---- the conversions, on messages -------------------------------------------------------------------------------

def test_a_detection2darray_converts_to_regions_with_ids_labels_and_top_left_boxes():
    msg = Detection2DArray(header=header(1_700_000_000, 5, "camera_optical"), detections=[
        detection_2d(40, 30, 20, 10, id="track-7", scored=[("cup", 0.3), ("mug", 0.8)]),
        detection_2d(10, 10, 4, 8, theta=math.pi / 2),
        detection_2d(10, math.nan, 4, 4, id="broken"),
    ])

    converted = detections_to_regions_2d(msg)
    assert converted.regions.header == msg.header
    first, rotated = converted.regions.regions
    assert (first.id, first.label, first.x, first.y, first.width, first.height) == ("track-7", "mug", 30, 25, 20, 10)
    assert (rotated.id, rotated.label) == ("1700000000.000000005#1", "")
    assert (rotated.x, rotated.y, rotated.width, rotated.height) == pytest.approx((6, 8, 8, 4))  # a quarter turn
    assert converted.rotated == 1
    assert [(p.kind, p.message) for p in converted.problems] == [
        (DETECTION_2D, "skipped Detection2D 'broken': bbox center.position.y is nan")]


def test_a_detection3darray_converts_to_regions_with_the_box_pose_and_size():
    msg = Detection3DArray(header=header(1_700_000_001, 0, "lidar"), detections=[
        detection_3d((1, -2, 0.5), (4, 2, 1.5), id="car-3", scored=[("car", 0.9), ("van", 0.4)])])
    msg.detections[0].bbox.center.orientation = Quaternion(z=0.6, w=0.8)

    converted = detections_to_regions_3d(msg)
    (region,) = converted.regions.regions
    assert converted.regions.header == msg.header
    assert (region.id, region.label) == ("car-3", "car")
    assert region.center == msg.detections[0].bbox.center and region.size == msg.detections[0].bbox.size


# ---- the node over DDS ------------------------------------------------------------------------------------------

@pytest.fixture
def rig(ros_context):
    rig = NodeRig(ros_context, DescriberDouble())
    rig.detections_2d_pub = rig.peer.create_publisher(Detection2DArray, "detections_2d", QOS)
    rig.detections_3d_pub = rig.peer.create_publisher(Detection3DArray, "detections_3d", QOS)
    yield rig
    rig.close()


def test_a_published_detection2darray_is_described_with_the_detections_ids_and_labels(rig):
    assert wait_for(rig.detections_2d_pub.get_subscription_count), "detections_2d never matched"
    image = camera_image(header(1_700_000_010, 0, "camera_optical"), width=64, height=48)
    rig.publish_frame(rig.image_pub, "image", image)
    rig.detections_2d_pub.publish(Detection2DArray(header=image.header, detections=[
        detection_2d(12, 10, 8, 6, id="p-1", scored=[("person", 0.9)]),
        detection_2d(40, 20, 10, 10, scored=[("chair", 0.6), ("sofa", 0.7)])]))

    out = rig.next_descriptions()
    assert out.header == image.header
    assert [(d.id, d.label, d.text, d.modality) for d in out.descriptions] == [
        ("p-1", "person", "region 0 of 64x48 image", "image_region"),
        ("1700000010.000000000#1", "sofa", "region 1 of 64x48 image", "image_region")]
    assert (out.descriptions[1].region_2d.x, out.descriptions[1].region_2d.width) == (35.0, 10.0)
    assert rig.received("detections_2d") == 1


def test_a_published_detection3darray_is_described_with_the_detections_ids_and_labels(rig):
    assert wait_for(rig.detections_3d_pub.get_subscription_count), "detections_3d never matched"
    cloud = lidar_cloud(header(1_700_000_011, 0, "lidar"), points=500)
    rig.publish_frame(rig.points_pub, "points", cloud)
    rig.detections_3d_pub.publish(Detection3DArray(header=cloud.header, detections=[
        detection_3d((1, 2, 0.5), (1, 1, 1), id="crate-4", scored=[("crate", 0.8)]),
        detection_3d((-3, 0, 1), (2, 1, 1), scored=[("barrel", 0.2)])]))

    out = rig.next_descriptions()
    assert out.header == cloud.header
    assert [(d.id, d.label, d.text, d.modality) for d in out.descriptions] == [
        ("crate-4", "crate", "object 0 among 500 points", "pointcloud_region"),
        ("1700000011.000000000#1", "barrel", "object 1 among 500 points", "pointcloud_region")]
    assert out.descriptions[1].region_3d.center.position.x == -3.0


@pytest.mark.parametrize("parameters, expected", [
    ({}, {"detections_2d", "detections_3d"}),
    ({"enable_lidar": False}, {"detections_2d"}),
    ({"enable_camera": False}, {"detections_3d"}),
    ({"enable_detections": False}, set()),
], ids=["default", "camera-only", "lidar-only", "off"])
def test_the_node_subscribes_the_detections_of_its_enabled_sensors(ros_context, parameters, expected):
    node = RegionDescriber(describer=DescriberDouble(), context=ros_context,
                           parameter_overrides=[Parameter(name, value=value) for name, value in parameters.items()])
    try:
        assert subscribed_topics(node) & {"detections_2d", "detections_3d"} == expected
    finally:
        node.destroy_node()
