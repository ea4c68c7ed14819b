"""regionblip_ros.detections: a detector's vision_msgs arrays as region arrays, read from plain objects with the
messages' fields (vision_msgs itself has no wheel: tests/test_detections_vision_msgs.py builds it and runs the
same conversions on real messages, and the node over DDS)."""

import math
import sys
import types
from types import SimpleNamespace as Fields

import numpy as np
import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")

from regionblip_msgs.msg import Region2DArray, Region3DArray  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from describer_double import DescriberDouble  # noqa: E402
from node_rig import NodeRig, camera_image, header, subscribed_topics  # noqa: E402
from regionblip_ros.describer_node import RegionDescriber  # noqa: E402
from regionblip_ros.conversions import region3d_to_corners  # noqa: E402
from regionblip_ros.detections import (  # noqa: E402
    DETECTION_2D, FLOAT32_MAX, detections_to_regions_2d, detections_to_regions_3d, subscribe_detections,
)


def stamp(sec: int, nanosec: int = 0, frame_id: str = "camera_optical"):
    return Fields(stamp=Fields(sec=sec, nanosec=nanosec), frame_id=frame_id)


def result(class_id: str, score: float):
    return Fields(hypothesis=Fields(class_id=class_id, score=score), pose=None)


def detection_2d(cx, cy, size_x, size_y, theta=0.0, id="", results=()):
    bbox = Fields(center=Fields(position=Fields(x=cx, y=cy), theta=theta), size_x=size_x, size_y=size_y)
    return Fields(header=stamp(0), id=id, results=list(results), bbox=bbox)


def detection_3d(position, orientation, size, id="", results=()):
    center = Fields(position=Fields(**dict(zip("xyz", position))), orientation=Fields(**dict(zip("xyzw", orientation))))
    bbox = Fields(center=center, size=Fields(**dict(zip("xyz", size))))
    return Fields(header=stamp(0), id=id, results=list(results), bbox=bbox)


def detections(header, *items):
    return Fields(header=header, detections=list(items))


# ---- 2-D --------------------------------------------------------------------------------------------------------

def test_a_2d_box_becomes_its_top_left_corner_and_size_with_the_detection_id_and_best_label():
    converted = detections_to_regions_2d(detections(stamp(5), detection_2d(
        40.0, 30.0, 20.0, 10.0, id="track-7", results=[result("cup", 0.3), result("mug", 0.8), result("bowl", 0.1)])))

    (region,) = converted.regions.regions
    assert (region.id, region.label) == ("track-7", "mug")
    assert (region.x, region.y, region.width, region.height) == (30.0, 25.0, 20.0, 10.0)
    assert (region.prompt, region.refresh) == ("", False)
    assert converted.problems == [] and converted.rotated == 0


def test_the_array_header_is_copied_and_the_detections_own_headers_are_not_read():
    msg = detections(stamp(1_700_000_000, 250_000_000, "cam"), detection_2d(5, 5, 2, 2, id="a"))
    msg.detections[0].header = stamp(3, 0, "elsewhere")

    regions = detections_to_regions_2d(msg).regions
    assert isinstance(regions, Region2DArray)
    assert regions.header == Header(frame_id="cam", stamp=regions.header.stamp)
    assert (regions.header.stamp.sec, regions.header.stamp.nanosec) == (1_700_000_000, 250_000_000)


def test_a_detection_without_an_id_is_named_by_the_frame_stamp_and_its_index():
    frame_1 = detections(stamp(12, 5), detection_2d(5, 5, 2, 2), detection_2d(9, 9, 2, 2, id="kept"),
                         detection_2d(7, 7, 2, 2))
    frame_2 = detections(stamp(12, 6), detection_2d(5, 5, 2, 2))

    ids = [r.id for r in detections_to_regions_2d(frame_1).regions.regions]
    assert ids == ["12.000000005#0", "kept", "12.000000005#2"]
    assert [r.id for r in detections_to_regions_2d(frame_1).regions.regions] == ids  # the same message, the same ids
    assert [r.id for r in detections_to_regions_2d(frame_2).regions.regions] == ["12.000000006#0"]


@pytest.mark.parametrize("results, expected", [
    ([], ""),
    ([result("cat", 0.5), result("dog", 0.5)], "cat"),                           # first of equal scores
    ([result("cat", math.nan), result("dog", 0.01)], "dog"),                     # NaN ranks lowest
    ([result("cat", math.nan)], "cat"),
    ([result("cat", 0.9), result("dog", math.inf)], "dog"),
], ids=["no-results", "tie", "nan-lowest", "only-nan", "inf-highest"])
def test_the_label_is_the_class_of_the_highest_scoring_result(results, expected):
    converted = detections_to_regions_2d(detections(stamp(1), detection_2d(5, 5, 2, 2, results=results)))
    assert converted.regions.regions[0].label == expected


@pytest.mark.parametrize("theta, expected", [
    (math.pi / 2, (15.0, 20.0, 10.0, 20.0)),                    # a quarter turn swaps width and height
    (math.pi, (10.0, 25.0, 20.0, 10.0)),
    (math.pi / 4, (20 - 15 / math.sqrt(2), 30 - 15 / math.sqrt(2), 30 / math.sqrt(2), 30 / math.sqrt(2))),
])
def test_a_rotated_box_becomes_its_axis_aligned_bounds_and_is_counted(theta, expected):
    converted = detections_to_regions_2d(detections(stamp(1), detection_2d(20.0, 30.0, 20.0, 10.0, theta=theta)))

    region = converted.regions.regions[0]
    assert np.allclose((region.x, region.y, region.width, region.height), expected, atol=1e-9)
    assert converted.rotated == 1 and converted.problems == []


@pytest.mark.parametrize("box, reason", [
    (dict(cx=math.nan, cy=5, size_x=2, size_y=2), "bbox center.position.x is nan"),
    (dict(cx=5, cy=5, size_x=2, size_y=math.inf), "bbox size_y is inf"),
    (dict(cx=5, cy=5, size_x=2, size_y=2, theta=-math.inf), "bbox center.theta is -inf"),
    (dict(cx=5, cy=5, size_x=-2, size_y=2), "bbox size is negative (size_x -2, size_y 2)"),
    (dict(cx=5, cy=5, size_x=2 * FLOAT32_MAX, size_y=2), "do not fit float32"),
    (dict(cx=-1e300, cy=5, size_x=2, size_y=2), "do not fit float32"),
], ids=["nan-centre", "inf-size", "inf-theta", "negative-size", "too-wide", "too-far"])
def test_a_box_that_cannot_be_a_region_is_left_out_with_its_reason_and_the_others_are_kept(box, reason):
    converted = detections_to_regions_2d(detections(stamp(1), detection_2d(10, 10, 4, 4, id="good"),
                                                    detection_2d(**box, id="bad")))

    assert [r.id for r in converted.regions.regions] == ["good"]
    (problem,) = converted.problems
    assert problem.kind == DETECTION_2D
    assert problem.message.startswith("skipped Detection2D 'bad': ") and reason in problem.message


def test_an_empty_array_gives_an_empty_region_array():
    converted = detections_to_regions_2d(detections(stamp(1)))
    assert (list(converted.regions.regions), converted.problems, converted.rotated) == ([], [], 0)


# ---- 3-D --------------------------------------------------------------------------------------------------------

def test_a_3d_box_is_copied_pose_and_size_with_the_detection_id_and_best_label():
    converted = detections_to_regions_3d(detections(stamp(8, 1, "lidar"), detection_3d(
        (1.0, -2.0, 0.5), (0.0, 0.0, 0.6, 0.8), (4.0, 2.0, 1.5), id="car-3",
        results=[result("car", 0.9), result("van", 0.4)]), detection_3d((0, 0, 0), (0, 0, 0, 1), (1, 1, 1))))

    assert isinstance(converted.regions, Region3DArray)
    assert (converted.regions.header.frame_id, converted.regions.header.stamp.nanosec) == ("lidar", 1)
    first, second = converted.regions.regions
    assert (first.id, first.label, second.id, second.label) == ("car-3", "car", "8.000000001#1", "")
    position, orientation = first.center.position, first.center.orientation
    assert (position.x, position.y, position.z) == (1.0, -2.0, 0.5)
    assert (orientation.x, orientation.y, orientation.z, orientation.w) == (0.0, 0.0, 0.6, 0.8)
    assert (first.size.x, first.size.y, first.size.z) == (4.0, 2.0, 1.5)


def test_a_3d_box_with_a_nan_is_refused_with_its_reason_by_the_node_s_box_reader():
    converted = detections_to_regions_3d(detections(stamp(1), detection_3d((0, 0, 0), (0, 0, 0, 1), (1, 1, 1)),
                                                    detection_3d((math.nan, 0, 0), (0, 0, 0, 1), (1, 1, 1))))

    corners, unreadable = region3d_to_corners(list(converted.regions.regions))
    assert np.isfinite(corners[0]).all()
    assert unreadable == {1: "center.position has NaN or inf values"}


# ---- subscriptions ----------------------------------------------------------------------------------------------

class RecordingNode:
    """What subscribe_detections asks of a node: its logger and create_subscription."""

    def __init__(self):
        self.infos, self.subscriptions = [], []
        self.logger = Fields(info=self.infos.append)

    def get_logger(self):
        return self.logger

    def create_subscription(self, msg_type, topic, callback, qos, callback_group=None):
        self.subscriptions.append((msg_type, topic, callback))


def test_without_vision_msgs_nothing_is_subscribed_and_the_node_says_so_once_at_info(monkeypatch):
    monkeypatch.setitem(sys.modules, "vision_msgs.msg", None)  # import vision_msgs.msg fails, installed or not
    node = RecordingNode()

    assert subscribe_detections(node, print, qos=10, callback_group=None, camera=True, lidar=True) is False
    assert node.subscriptions == []
    (line,) = node.infos
    assert line.startswith("detection inputs (detections_2d, detections_3d) are off: vision_msgs is not importable")


@pytest.mark.parametrize("camera, lidar, topics", [
    (True, True, ["detections_2d", "detections_3d"]),
    (True, False, ["detections_2d"]),
    (False, True, ["detections_3d"]),
])
def test_with_vision_msgs_each_enabled_sensor_subscribes_its_detections(monkeypatch, camera, lidar, topics):
    fake = types.ModuleType("vision_msgs.msg")
    fake.Detection2DArray, fake.Detection3DArray = type("Detection2DArray", (), {}), type("Detection3DArray", (), {})
    monkeypatch.setitem(sys.modules, "vision_msgs.msg", fake)
    node, calls = RecordingNode(), []

    assert subscribe_detections(node, lambda *args: calls.append(args), qos=10, callback_group=None,
                                camera=camera, lidar=lidar) is True
    assert [topic for _, topic, _ in node.subscriptions] == topics
    assert node.infos == []
    for msg_type, topic, callback in node.subscriptions:
        callback("msg")
        assert msg_type is (fake.Detection2DArray if topic == "detections_2d" else fake.Detection3DArray)
        assert calls[-1] == (topic, detections_to_regions_2d if topic == "detections_2d" else detections_to_regions_3d,
                             "msg")


def test_a_node_without_vision_msgs_subscribes_no_detections_and_still_starts(ros_context, monkeypatch):
    monkeypatch.setitem(sys.modules, "vision_msgs.msg", None)
    node = RegionDescriber(describer=DescriberDouble(), context=ros_context)
    try:
        topics = subscribed_topics(node)
        assert {"image", "regions_2d", "points", "regions_3d"} <= topics
        assert not topics & {"detections_2d", "detections_3d"}
    finally:
        node.destroy_node()


# ---- the node's path, fed plain objects (over DDS with real messages: tests/test_detections_vision_msgs.py) -----

@pytest.fixture
def rig(ros_context):
    rig = NodeRig(ros_context, DescriberDouble())
    yield rig
    rig.close()


def test_the_node_describes_converted_detections_as_the_frame_s_regions(rig):
    image = camera_image(header(1_700_000_100, 0, "camera_optical"), width=64, height=48)
    rig.publish_frame(rig.image_pub, "image", image)
    msg = detections(stamp(1_700_000_100, 0, "camera_optical"),
                     detection_2d(12, 10, 8, 6, id="p-1", results=[result("person", 0.9)]),
                     detection_2d(40, 20, 10, 10, results=[result("chair", 0.6), result("sofa", 0.7)]),
                     detection_2d(math.nan, 20, 10, 10, id="broken"))

    rig.node.on_detections("detections_2d", detections_to_regions_2d, msg)

    out = rig.next_descriptions()
    assert out.header == image.header
    assert [(d.id, d.label, d.text) for d in out.descriptions] == [
        ("p-1", "person", "region 0 of 64x48 image"), ("1700000100.000000000#1", "sofa", "region 1 of 64x48 image")]
    assert (out.descriptions[0].region_2d.x, out.descriptions[0].region_2d.y) == (8.0, 7.0)
    assert rig.problems() == {DETECTION_2D: 1}


def test_the_node_takes_an_empty_detection_array_as_a_frame_with_nothing_in_it(rig):
    rig.node.on_detections("detections_3d", detections_to_regions_3d, detections(stamp(1_700_000_200, 0, "lidar")))

    assert rig.received("detections_3d") == 1
    assert rig.problems() == {}  # not an empty_regions bad input, as an empty regions_3d array is
