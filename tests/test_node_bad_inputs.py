"""The region_describer survives bad input: each kind is counted, logged throttled and skipped.

One test per kind of problem, then a barrage of 150 malformed messages drawn by hypothesis; after each, a
good frame is still described and the service still answers.
"""

import math
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from regionblip_msgs.msg import Region2D, Region2DArray, Region3DArray  # noqa: E402
from regionblip_msgs.srv import DescribeRegions  # noqa: E402
from geometry_msgs.msg import Quaternion  # noqa: E402
from sensor_msgs.msg import Image, PointCloud2, PointField  # noqa: E402

from describer_double import DescriberDouble  # noqa: E402
from node_rig import (  # noqa: E402
    NodeRig, boxes, camera_image, cubes, header, lidar_cloud, wait_for,
)

BARRAGE_EXAMPLES = 150


@pytest.fixture
def rig(ros_context):
    rig = NodeRig(ros_context, DescriberDouble())
    yield rig
    rig.close()


def assert_still_describes(rig: NodeRig, sec: int | None = None) -> None:
    """A good camera frame and a good cloud, stamped now unless `sec` says otherwise, are described, and the
    service answers."""
    sec = int(time.time()) if sec is None else sec
    assert rig.node.worker.wait_idle(10.0)
    rig.descriptions.clear()
    image = camera_image(header(sec, 0))
    rig.send_image(image, boxes((4, 4, 20, 20)))
    assert wait_for(lambda: any(d.header == image.header for d in rig.descriptions)), "the good image was lost"
    cloud = lidar_cloud(header(sec, 1, "lidar"))
    rig.send_cloud(cloud, cubes((0, 0, 0)))
    assert wait_for(lambda: any(d.header == cloud.header for d in rig.descriptions)), "the good cloud was lost"
    response = rig.call(DescribeRegions.Request(image=image, regions_2d=boxes((0, 0, 16, 16))))
    assert response.success, response.message


# --- one kind at a time --------------------------------------------------------------------------------------


def truncated_image():
    image = camera_image(header(10, 0))
    image.data = image.data[: len(image.data) // 2]
    return image


def image_with_short_step():
    image = camera_image(header(10, 0))
    image.step = image.width * 3 - 1
    return image


def image_with_unknown_encoding(sec: int = 10):
    image = camera_image(header(sec, 0))
    image.encoding = "yuv422"
    return image


def raw_cloud(data: bytes, width: int, sec: int = 10, point_step: int = 12) -> PointCloud2:
    """An unorganized cloud of FLOAT32 x, y, z whose data, width and point_step are taken as given."""
    cloud = lidar_cloud(header(sec, 0, "lidar"), points=1)
    cloud.width, cloud.point_step, cloud.row_step, cloud.data = width, point_step, point_step * width, data
    return cloud


def nan_cloud():
    return raw_cloud(np.full((50, 3), np.nan, np.float32).tobytes(), width=50)


def cloud_with_integer_coordinates():
    cloud = lidar_cloud(header(10, 0, "lidar"))
    cloud.fields = [PointField(name=n, offset=4 * i, datatype=PointField.INT32, count=1) for i, n in enumerate("xyz")]
    return cloud


def box_with_zero_quaternion():
    region = cubes((0, 0, 0))[0]
    region.center.orientation = Quaternion(x=0.0, y=0.0, z=0.0, w=0.0)
    return [region]


CAMERA_CASES = {  # id: (image, regions, the counter it raises)
    "truncated image data": (truncated_image, boxes((4, 4, 20, 20)), "image"),
    "image step shorter than a row": (image_with_short_step, boxes((4, 4, 20, 20)), "image"),
    "unknown image encoding": (image_with_unknown_encoding, boxes((4, 4, 20, 20)), "image"),
    "box with negative width": (lambda: camera_image(header(10, 0)), boxes((30, 4, -20, 20)), "region_2d"),
    "box outside the image": (lambda: camera_image(header(10, 0)), boxes((500, 500, 20, 20)), "region_2d"),
    "box with a NaN corner": (lambda: camera_image(header(10, 0)), boxes((math.nan, 4, 20, 20)), "region_2d"),
    "box smaller than min_region_px": (lambda: camera_image(header(10, 0)), boxes((4, 4, 2, 20)),
                                       "region_2d"),
    "10 000 regions": (lambda: camera_image(header(10, 0)), boxes(*[(1, 1, 10, 10)] * 10_000),
                       "too_many_regions"),
    "empty region array": (lambda: camera_image(header(10, 0)), [], "empty_regions"),
    "image the describer refuses": (lambda: camera_image(header(10, 0), width=4, height=4),
                                    boxes((0, 0, 4, 4)), "describer"),
}

LIDAR_CASES = {
    "cloud of NaN points": (nan_cloud, cubes((0, 0, 0)), "points"),
    "cloud with integer coordinates": (cloud_with_integer_coordinates, cubes((0, 0, 0)), "points"),
    "3D box with a zero quaternion": (lambda: lidar_cloud(header(10, 0, "lidar")), box_with_zero_quaternion(),
                                      "region_3d"),
    "cloud the describer refuses": (lambda: lidar_cloud(header(10, 0, "lidar"), points=3), cubes((0, 0, 0)),
                                    "describer"),
}


@pytest.mark.parametrize("case", CAMERA_CASES, ids=list(CAMERA_CASES))
def test_a_bad_camera_input_is_counted_by_kind_and_skipped(rig, case):
    make_image, regions, kind = CAMERA_CASES[case]
    rig.send_image(make_image(), regions)
    assert wait_for(lambda: rig.problems().get(kind, 0) >= 1), f"no {kind} problem was counted: {rig.problems()}"
    assert_still_describes(rig)


@pytest.mark.parametrize("case", LIDAR_CASES, ids=list(LIDAR_CASES))
def test_a_bad_lidar_input_is_counted_by_kind_and_skipped(rig, case):
    make_cloud, regions, kind = LIDAR_CASES[case]
    rig.send_cloud(make_cloud(), regions)
    assert wait_for(lambda: rig.problems().get(kind, 0) >= 1), f"no {kind} problem was counted: {rig.problems()}"
    assert_still_describes(rig)


def test_a_partly_outside_box_is_clipped_to_the_image_and_described(rig):
    rig.send_image(camera_image(header(11, 0), width=64, height=48), boxes((50, 40, 30, 30)))
    out = rig.next_descriptions()
    assert [d.id for d in out.descriptions] == ["det-0"]
    assert rig.problems() == {}


def test_stamps_going_back_are_counted_and_the_frames_still_matched(rig):
    rig.send_image(camera_image(header(20, 0)), boxes((4, 4, 20, 20)))
    rig.next_descriptions(1)
    rig.send_image(camera_image(header(19, 0)), boxes((4, 4, 20, 20)))
    assert rig.next_descriptions(2).header.stamp.sec == 19
    assert rig.problems()["stamp_out_of_order"] == 2  # the image, then its regions


def test_a_problem_kind_is_logged_once_and_then_throttled(rig, capfd):
    for answered, sec in enumerate(range(30, 33), start=1):
        rig.send_image(image_with_unknown_encoding(sec), boxes((4, 4, 20, 20)))
        rig.next_descriptions(answered)  # each frame's (empty) answer, so that no job replaces another
    assert rig.problems().get("image", 0) == 3
    logged = [line for line in capfd.readouterr().err.splitlines() if "image encoding 'yuv422'" in line]
    assert len(logged) == 1
    assert logged[0].endswith("[image]")


# --- a barrage of everything at once -------------------------------------------------------------------------

floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
PAST_SEC = int(time.time()) - 60  # stamps ahead of the node's clock are dropped: tests/test_node_reliability.py
stamps = st.builds(header, st.integers(0, PAST_SEC), st.integers(0, 999_999_999))  # in no particular order


@st.composite
def malformed_images(draw) -> Image:
    """Truncated data, short or long steps, unknown encodings and empty images, with random bytes."""
    width, height = draw(st.integers(0, 24)), draw(st.integers(0, 24))
    encoding = draw(st.sampled_from(["rgb8", "bgr8", "mono8", "yuv422", "16UC1", "bayer_rggb8", ""]))
    step = draw(st.integers(0, 3 * width + 4))
    data = draw(st.binary(max_size=step * height + 8))
    return Image(header=draw(stamps), width=width, height=height, encoding=encoding, step=step, data=data)


@st.composite
def malformed_regions_2d(draw) -> list[Region2D]:
    """Empty, many (up to 500), degenerate, NaN or infinite, outside or partly outside boxes."""
    distinct = [Region2D(id=f"r{i}", x=draw(floats), y=draw(floats), width=draw(floats), height=draw(floats))
                for i in range(3)]
    return (distinct * 200)[: draw(st.sampled_from([0, 1, 3, 40, 500]))]


@st.composite
def malformed_clouds(draw) -> PointCloud2:
    """NaN and infinite points, truncated data, point_step too short for x, y, z."""
    points = draw(st.integers(0, 20))
    xyz = np.array(draw(st.lists(floats, min_size=3 * points, max_size=3 * points)), np.float32)
    data = xyz.tobytes()[: draw(st.integers(0, 12 * points))]
    return raw_cloud(data, points, sec=draw(st.integers(0, PAST_SEC)), point_step=draw(st.sampled_from([12, 8, 0])))


@st.composite
def malformed_regions_3d(draw) -> list:
    """Empty, many, NaN centres, zero quaternions, negative sizes."""
    regions = cubes(*[(draw(floats), 0.0, 1.0) for _ in range(draw(st.sampled_from([0, 1, 3, 40])))])
    for region in regions[:3]:
        region.center.orientation.w = draw(st.sampled_from([1.0, 0.0, math.nan]))
        region.size.x = draw(st.sampled_from([1.0, -1.0, math.inf]))
    return regions


@st.composite
def barrage_messages(draw):
    """(frame publisher name, frame, region array): a bad frame, or a good frame with bad regions."""
    if draw(st.booleans()):
        bad_frame = draw(st.booleans())
        image = draw(malformed_images()) if bad_frame else camera_image(draw(stamps))
        regions = boxes((4, 4, 20, 20)) if bad_frame else draw(malformed_regions_2d())
        return "image", image, Region2DArray(header=image.header, regions=regions)
    bad_frame = draw(st.booleans())
    cloud = draw(malformed_clouds()) if bad_frame else lidar_cloud(draw(stamps), points=50)
    regions = cubes((0, 0, 0)) if bad_frame else draw(malformed_regions_3d())
    return "points", cloud, Region3DArray(header=cloud.header, regions=regions)


def test_a_barrage_of_malformed_messages_leaves_the_node_describing(rig):
    sent = []

    @settings(max_examples=BARRAGE_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(barrage_messages())
    def publish(message):
        topic, frame, regions = message
        region_topic = "regions_2d" if topic == "image" else "regions_3d"

        def settled() -> int:
            """Region arrays answered (each job publishes one array) or counted as needing no job."""
            counts = rig.problems()
            return len(rig.descriptions) + counts.get("empty_regions", 0) + counts.get(f"unmatched_{region_topic}", 0)

        before = settled()
        (rig.image_pub if topic == "image" else rig.points_pub).publish(frame)
        (rig.regions_2d_pub if topic == "image" else rig.regions_3d_pub).publish(regions)
        # One message at a time to its end, so that no job is replaced by the next one however slow the machine
        assert wait_for(lambda: settled() > before), "the node stopped answering region arrays"
        sent.append(topic)

    publish()
    assert len(sent) == BARRAGE_EXAMPLES
    assert_still_describes(rig)  # stamped now: after the barrage's random stamps, a jump back or forward
    counted = rig.problems()
    assert {"image", "points", "region_2d", "region_3d", "too_many_regions", "empty_regions",
            "stamp_out_of_order"} <= set(counted), counted
