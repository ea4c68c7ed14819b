"""regionblip_ros.describe: one frame's regions checked, clipped, described and turned into messages."""

import math

import numpy as np
import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")

from geometry_msgs.msg import Quaternion  # noqa: E402

from describer_double import DescriberDouble  # noqa: E402
from node_rig import boxes, camera_image, cubes, header, lidar_cloud  # noqa: E402
from regionblip_ros.describe import (  # noqa: E402
    DESCRIBER, IMAGE, POINTS, REGION_2D, REGION_3D, SMALL_REGION_2D, TOO_MANY_REGIONS, SerializedDescriber,
    describe_camera_frame, describe_lidar_frame,
)


class RecordingDescriber(DescriberDouble):
    """The double, remembering the boxes and corners it was given."""

    def __init__(self):
        super().__init__()
        self.boxes, self.corners = [], []

    def describe_image_regions(self, image, boxes_xyxy_px):
        self.boxes.append(boxes_xyxy_px)
        return super().describe_image_regions(image, boxes_xyxy_px)

    def describe_point_regions(self, points, corners):
        self.corners.append(corners)
        return super().describe_point_regions(points, corners)


@pytest.fixture
def describer():
    return RecordingDescriber()


def camera(describer, regions, width=64, height=48, max_regions=32, min_region_px=4.0):
    image = camera_image(header(5, 0), width=width, height=height)
    return describe_camera_frame(describer, image, regions, max_regions=max_regions, min_region_px=min_region_px)


def kinds(result) -> list[str]:
    return [problem.kind for problem in result.problems]


def test_boxes_reach_the_describer_as_pixel_xyxy_float32(describer):
    camera(describer, boxes((2, 3, 20, 10), (30, 20, 16, 16)))
    np.testing.assert_array_equal(describer.boxes[0], np.array([[2, 3, 22, 13], [30, 20, 46, 36]], np.float32))
    assert describer.boxes[0].dtype == np.float32


def test_a_box_partly_outside_the_image_is_clipped_to_it(describer):
    result = camera(describer, boxes((50, 40, 30, 30), (-10, -5, 20, 20)), width=64, height=48)
    np.testing.assert_array_equal(describer.boxes[0], [[50, 40, 64, 48], [0, 0, 10, 15]])
    np.testing.assert_array_equal(result.boxes, describer.boxes[0])
    assert result.problems == []


def test_unusable_boxes_are_skipped_with_their_reason_and_the_rest_described(describer):
    regions = boxes((4, 4, 20, 20), (100, 100, 10, 10), (30, 4, -20, 20), (math.nan, 4, 20, 20), (4, 4, 3, 20),
                    (10, 10, 8, 8))
    result = camera(describer, regions, width=64, height=48)

    assert [d.id for d in result.descriptions.descriptions] == ["det-0", "det-5"]
    assert kinds(result) == [REGION_2D, REGION_2D, REGION_2D, SMALL_REGION_2D]
    messages = [problem.message for problem in result.problems]
    assert messages[0].startswith("skipped Region2D 'det-1': box [100.0, 100.0, 110.0, 110.0] covers 0 x 0 pixels")
    assert "has negative size (-20 x 20)" in messages[1]
    assert "not finite" in messages[2]
    assert messages[3] == ("skipped Region2D 'det-4': 3 x 20 pixels inside the image is smaller than "
                           "min_region_px 4 (lower min_region_px to describe it)")


def test_only_the_first_max_regions_are_described_and_the_rest_reported(describer):
    result = camera(describer, boxes(*[(i, 0, 8, 8) for i in range(10)]), max_regions=4)
    assert [d.id for d in result.descriptions.descriptions] == ["det-0", "det-1", "det-2", "det-3"]
    assert result.problems[0].kind == TOO_MANY_REGIONS
    assert result.problems[0].message.startswith("10 image_regions in one frame, max_regions is 4: described "
                                                 "the first 4, dropped 6")


def test_when_every_box_is_skipped_the_describer_is_not_called_and_no_description_is_made(describer):
    result = camera(describer, boxes((100, 100, 10, 10)))
    assert describer.calls == []
    assert result.descriptions.descriptions == []
    assert result.descriptions.header == header(5, 0)


def test_an_unreadable_image_gives_an_image_problem_and_no_descriptions(describer):
    image = camera_image(header(5, 0))
    image.encoding = "16UC1"
    result = describe_camera_frame(describer, image, boxes((4, 4, 8, 8)), max_regions=32, min_region_px=4.0)
    assert result.descriptions is None
    assert kinds(result) == [IMAGE]
    assert result.problems[0].message.startswith("skipped an image: image encoding '16UC1' is not supported")


def test_a_describer_value_error_becomes_a_describer_problem(describer):
    result = camera(describer, boxes((0, 0, 4, 4)), width=4, height=4)  # the double refuses images under 8 px
    assert result.descriptions is None
    assert kinds(result) == [DESCRIBER]
    assert result.problems[0].message == "the describer refused the frame: image 4x4 is smaller than 8x8"


def test_a_describer_returning_the_wrong_number_of_descriptions_is_a_describer_problem(describer):
    describer.describe_image_regions = lambda image, boxes: []
    result = camera(describer, boxes((4, 4, 8, 8)))
    assert result.descriptions is None
    assert result.problems[0].message.startswith("the describer returned 0 descriptions for 1 regions")


def test_cloud_regions_reach_the_describer_as_corners_and_come_back_in_order(describer):
    cloud = lidar_cloud(header(6, 0, "lidar"), points=200)
    result = describe_lidar_frame(describer, cloud, cubes((1, 2, 3), (0, 0, 0), label="crate"), max_regions=32)
    assert describer.corners[0].shape == (2, 8, 3)
    np.testing.assert_allclose(describer.corners[0][0].mean(axis=0), [1, 2, 3])
    assert [(d.id, d.label, d.text) for d in result.descriptions.descriptions] == [
        ("obj-0", "crate", "object 0 among 200 points"), ("obj-1", "crate", "object 1 among 200 points")]
    assert result.descriptions.header == cloud.header


def test_a_3d_region_with_a_zero_quaternion_is_skipped_and_named(describer):
    regions = cubes((1, 2, 3), (0, 0, 0))
    regions[0].center.orientation = Quaternion(x=0.0, y=0.0, z=0.0, w=0.0)
    result = describe_lidar_frame(describer, lidar_cloud(header(6, 0)), regions, max_regions=32)
    assert [d.id for d in result.descriptions.descriptions] == ["obj-1"]
    assert kinds(result) == [REGION_3D]
    assert "Region3D 'obj-0': center.orientation is a zero quaternion" in result.problems[0].message


def test_a_cloud_of_only_nan_points_is_skipped(describer):
    cloud = lidar_cloud(header(6, 0), points=10)
    cloud.data = np.full((10, 3), np.nan, np.float32).tobytes()
    result = describe_lidar_frame(describer, cloud, cubes((0, 0, 0)), max_regions=32)
    assert result.descriptions is None
    assert kinds(result) == [POINTS]
    assert "none of its 10 points is finite" in result.problems[0].message


def test_the_serialized_describer_passes_calls_through_and_names_the_backend(describer):
    serialized = SerializedDescriber(describer)
    assert serialized.backend == "double"
    out = serialized.describe_image_regions(np.zeros((8, 8, 3), np.uint8), np.zeros((1, 4), np.float32))
    assert [d.text for d in out] == ["region 0 of 8x8 image"]
