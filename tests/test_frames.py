"""regionblip_ros.frames: one frame's regions read, described (the runtime checks each box) and turned into
messages of the described ones."""

import math

import numpy as np
import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")

from geometry_msgs.msg import Quaternion  # noqa: E402

from describer_double import DescriberDouble  # noqa: E402
from node_rig import boxes, camera_image, cubes, header, lidar_cloud  # noqa: E402
from regionblip_ros.frames import (  # noqa: E402
    DESCRIBER, IMAGE, POINTS, REGION_2D, REGION_3D, TOO_MANY_REGIONS, SerializedDescriber, describe_camera_frame,
    describe_lidar_frame,
)


class RecordingDescriber(DescriberDouble):
    """The double, remembering the boxes, min_region_px and corners it was given."""

    def __init__(self):
        super().__init__()
        self.boxes, self.min_region_px, self.corners = [], [], []

    def describe_image_regions(self, image, boxes_xyxy_px, min_region_px=0.0):
        self.boxes.append(boxes_xyxy_px)
        self.min_region_px.append(min_region_px)
        return super().describe_image_regions(image, boxes_xyxy_px, min_region_px)

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


def test_boxes_reach_the_describer_as_pixel_xyxy_float32_with_min_region_px(describer):
    camera(describer, boxes((2, 3, 20, 10), (30, 20, 16, 16)), min_region_px=2.5)
    np.testing.assert_array_equal(describer.boxes[0], np.array([[2, 3, 22, 13], [30, 20, 46, 36]], np.float32))
    assert describer.boxes[0].dtype == np.float32
    assert describer.min_region_px == [2.5]


def test_a_box_partly_outside_the_image_goes_as_given_and_is_drawn_clipped(describer):
    result = camera(describer, boxes((50, 40, 30, 30), (-10, -5, 20, 20)), width=64, height=48)
    np.testing.assert_array_equal(describer.boxes[0], [[50, 40, 80, 70], [-10, -5, 10, 15]])  # the runtime clips
    np.testing.assert_array_equal(result.boxes, [[50, 40, 64, 48], [0, 0, 10, 15]])
    assert result.boxes.dtype == np.float32
    assert result.problems == []


def test_every_box_goes_to_the_describer_and_its_refusals_are_skipped_with_the_runtimes_reason(describer):
    regions = boxes((4, 4, 20, 20), (100, 100, 10, 10), (30, 4, -20, 20), (math.nan, 4, 20, 20), (4, 4, 3, 20),
                    (10, 10, 8, 8))
    result = camera(describer, regions, width=64, height=48)

    assert describer.calls == [("describe_image_regions", 6)]  # one call, every box: the runtime checks them
    assert np.isnan(describer.boxes[0][3]).all()  # the region that could not be read is a NaN row
    assert [d.id for d in result.descriptions.descriptions] == ["det-0", "det-5"]
    assert [(d.text, d.score) for d in result.descriptions.descriptions] == [
        ("region 0 of 64x48 image", -0.5), ("region 5 of 64x48 image", -5.5)]
    np.testing.assert_array_equal(result.boxes, [[4, 4, 24, 24], [10, 10, 18, 18]])  # the described ones
    assert kinds(result) == [REGION_2D] * 4
    messages = [problem.message for problem in result.problems]
    assert messages[0].startswith("skipped Region2D 'det-1': box [100.0, 100.0, 110.0, 110.0] covers 0 x 0 pixels")
    assert "has negative size (-20 x 20)" in messages[1]
    assert messages[2] == "skipped Region2D 'det-3': x, y, width or height has NaN or inf values"
    assert messages[3].startswith("skipped Region2D 'det-4': box [4.0, 4.0, 7.0, 24.0] covers 3 x 20 pixels "
                                  "inside the image, less than the minimum region size 4 px")


def test_a_box_beyond_float32_reaches_the_runtime_as_inf_and_is_refused_there(describer):
    result = camera(describer, boxes((3e38, 4, 3e38, 20), (4, 4, 20, 20)))
    assert [d.id for d in result.descriptions.descriptions] == ["det-1"]
    assert kinds(result) == [REGION_2D]
    assert "not finite" in result.problems[0].message


def test_only_the_first_max_regions_are_described_and_the_rest_reported(describer):
    result = camera(describer, boxes(*[(i, 0, 8, 8) for i in range(10)]), max_regions=4)
    assert [d.id for d in result.descriptions.descriptions] == ["det-0", "det-1", "det-2", "det-3"]
    assert result.problems[0].kind == TOO_MANY_REGIONS
    assert result.problems[0].message.startswith("10 image_regions in one frame, max_regions is 4: described "
                                                 "the first 4, dropped 6")


def test_when_every_box_is_refused_an_empty_array_with_the_frames_header_is_made(describer):
    result = camera(describer, boxes((100, 100, 10, 10)))
    assert kinds(result) == [REGION_2D]
    assert not result.failed
    assert result.descriptions.descriptions == []
    assert result.boxes.shape == (0, 4)
    assert result.descriptions.header == header(5, 0)


def assert_failed_with_no_descriptions(result, stamp):
    assert result.failed
    assert result.descriptions.descriptions == []
    assert result.descriptions.header == stamp  # still answered, so a consumer knows the frame was seen


def test_an_unreadable_image_gives_an_image_problem_and_an_empty_answer(describer):
    image = camera_image(header(5, 0))
    image.encoding = "16UC1"
    result = describe_camera_frame(describer, image, boxes((4, 4, 8, 8)), max_regions=32, min_region_px=4.0)
    assert_failed_with_no_descriptions(result, header(5, 0))
    assert kinds(result) == [IMAGE]
    assert result.problems[0].message.startswith("skipped an image: image encoding '16UC1' is not supported")


def test_a_describer_value_error_becomes_a_describer_problem(describer):
    result = camera(describer, boxes((0, 0, 4, 4)), width=4, height=4)  # the double refuses images under 8 px
    assert result.failed and result.descriptions.descriptions == []
    assert kinds(result) == [DESCRIBER]
    assert result.problems[0].message == "the describer refused the frame: image 4x4 is smaller than 8x8"


def test_a_describer_returning_the_wrong_number_of_descriptions_is_a_describer_problem(describer):
    describer.describe_image_regions = lambda image, boxes, min_region_px: []
    result = camera(describer, boxes((4, 4, 8, 8)))
    assert result.failed and result.descriptions.descriptions == []
    assert result.problems[0].message.startswith("the describer returned 0 descriptions for 1 regions")


def test_cloud_regions_reach_the_describer_as_corners_and_come_back_in_order(describer):
    cloud = lidar_cloud(header(6, 0, "lidar"), points=200)
    result = describe_lidar_frame(describer, cloud, cubes((1, 2, 3), (0, 0, 0), label="crate"), max_regions=32)
    assert describer.corners[0].shape == (2, 8, 3)
    np.testing.assert_allclose(describer.corners[0][0].mean(axis=0), [1, 2, 3])
    assert [(d.id, d.label, d.text) for d in result.descriptions.descriptions] == [
        ("obj-0", "crate", "object 0 among 200 points"), ("obj-1", "crate", "object 1 among 200 points")]
    assert result.descriptions.header == cloud.header


def test_unreadable_3d_regions_are_skipped_with_the_conversions_reason_and_the_rest_described(describer):
    regions = cubes((1, 2, 3), (0, 0, 0), (4, 5, 6), (7, 8, 9))
    regions[0].center.orientation = Quaternion(x=0.0, y=0.0, z=0.0, w=0.0)
    regions[2].size.y = -1.0
    regions[3].center.position.x = math.nan
    result = describe_lidar_frame(describer, lidar_cloud(header(6, 0)), regions, max_regions=32)
    assert describer.calls == [("describe_point_regions", 4)]
    assert np.isnan(describer.corners[0][[0, 2, 3]]).all()
    assert [(d.id, d.text) for d in result.descriptions.descriptions] == [("obj-1", "object 1 among 500 points")]
    assert kinds(result) == [REGION_3D] * 3
    messages = [problem.message for problem in result.problems]
    assert messages[0].startswith("skipped Region3D 'obj-0': center.orientation is a zero quaternion")
    assert messages[1] == "skipped Region3D 'obj-2': size [1.0, -1.0, 1.0] is negative: give full extents >= 0"
    assert messages[2] == "skipped Region3D 'obj-3': center.position has NaN or inf values"


def test_a_3d_region_whose_corners_overflow_float32_is_refused_by_the_runtime(describer):
    regions = cubes((0, 0, 0), (1, 1, 1))
    regions[0].size.x = 1e300
    result = describe_lidar_frame(describer, lidar_cloud(header(6, 0)), regions, max_regions=32)
    assert [d.id for d in result.descriptions.descriptions] == ["obj-1"]
    assert kinds(result) == [REGION_3D]
    assert result.problems[0].message.startswith("skipped Region3D 'obj-0': its corners are not all finite")


def test_a_cloud_of_only_nan_points_is_skipped(describer):
    cloud = lidar_cloud(header(6, 0), points=10)
    cloud.data = np.full((10, 3), np.nan, np.float32).tobytes()
    result = describe_lidar_frame(describer, cloud, cubes((0, 0, 0)), max_regions=32)
    assert_failed_with_no_descriptions(result, header(6, 0))
    assert kinds(result) == [POINTS]
    assert "none of its 10 points is finite" in result.problems[0].message


def test_the_serialized_describer_passes_calls_and_min_region_px_through_and_names_the_backend(describer):
    serialized = SerializedDescriber(describer)
    assert serialized.backend == "double"
    out = serialized.describe_image_regions(np.zeros((8, 8, 3), np.uint8), np.array([[0, 0, 4, 4]], np.float32),
                                            min_region_px=3.0)
    assert [d.text for d in out] == ["region 0 of 8x8 image"]
    assert describer.min_region_px == [3.0]
