"""contract.boxes: rotations, the 3D box corner convention of every layer, and image box checks."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.boxes import (
    BOX_CORNER_CONVENTION,
    box_corners,
    corner_convention_problem,
    clip_boxes_xyxy,
    image_box_problems,
    normalize_boxes_xyxy,
    quaternion_to_matrix,
    yaw_to_matrix,
)

angles = st.floats(min_value=-2 * math.pi, max_value=2 * math.pi, allow_nan=False)


def yaw_quaternion(yaw: float) -> list[float]:
    return [0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)]


# --- rotations ---------------------------------------------------------------------------------------------


def test_identity_quaternion_is_the_identity_matrix():
    np.testing.assert_array_equal(quaternion_to_matrix([[0, 0, 0, 1]]), [np.eye(3)])


def test_half_turn_about_x_flips_y_and_z():
    np.testing.assert_allclose(quaternion_to_matrix([[1, 0, 0, 0]]), [np.diag([1.0, -1.0, -1.0])], atol=1e-12)


def test_quarter_yaw_maps_x_to_y_and_y_to_minus_x():
    expected = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    np.testing.assert_allclose(yaw_to_matrix([math.pi / 2]), [expected], atol=1e-12)
    np.testing.assert_allclose(quaternion_to_matrix([yaw_quaternion(math.pi / 2)]), [expected], atol=1e-12)


@settings(max_examples=150, deadline=None)
@given(yaw=angles)
def test_quaternion_about_z_agrees_with_yaw_to_matrix(yaw):
    np.testing.assert_allclose(quaternion_to_matrix([yaw_quaternion(yaw)]), yaw_to_matrix([yaw]), atol=1e-12)


@settings(max_examples=150, deadline=None)
@given(q=st.lists(st.floats(min_value=-10, max_value=10), min_size=4, max_size=4).filter(
    lambda q: np.linalg.norm(q) > 1e-3), scale=st.floats(min_value=1e-2, max_value=1e2))
def test_quaternions_of_any_length_give_the_rotation_of_the_unit_quaternion(q, scale):
    rotation = quaternion_to_matrix([q])[0]
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    np.testing.assert_allclose(quaternion_to_matrix([np.multiply(q, scale)])[0], rotation, atol=1e-9)


def test_zero_quaternion_is_rejected_naming_its_row():
    with pytest.raises(ValueError, match=r"rows \[1\] have zero length.*\(0, 0, 0, 1\)"):
        quaternion_to_matrix([[0, 0, 0, 1], [0, 0, 0, 0]])


def test_batched_rotations_keep_the_batch_axis():
    assert quaternion_to_matrix(np.tile([0, 0, 0, 1], (5, 1))).shape == (5, 3, 3)
    assert yaw_to_matrix(np.zeros(5)).shape == (5, 3, 3)
    assert quaternion_to_matrix(np.zeros((0, 4))).shape == (0, 3, 3)


# --- 3D box corners ----------------------------------------------------------------------------------------


def upstream_corners(center, size):
    """The released RegionBLIP's corners, transcribed from scannet_reference_datasets.py L158-175 (f6992e0)."""
    l, w, h = (np.array([[v]]) for v in size)
    corners = np.zeros([1, 8, 3])
    corners[..., :, 0] = np.concatenate((l / 2, l / 2, -l / 2, -l / 2, l / 2, l / 2, -l / 2, -l / 2), -1)
    corners[..., :, 1] = np.concatenate((h / 2, h / 2, h / 2, h / 2, -h / 2, -h / 2, -h / 2, -h / 2), -1)
    corners[..., :, 2] = np.concatenate((w / 2, -w / 2, -w / 2, w / 2, w / 2, -w / 2, -w / 2, w / 2), -1)
    return corners + np.array(center)[None, None]


def test_axis_aligned_box_corners_are_the_releases_eight_in_order():
    corners = box_corners(center=[[1.0, 2.0, 3.0]], size=[[2.0, 4.0, 6.0]], rotation=[np.eye(3)])
    expected = [  # x +- l/2, y +- h/2 (the z extent), z +- w/2 (the y extent)
        [2, 5, 5],  # (+, +, +)
        [2, 5, 1],  # (+, +, -)
        [0, 5, 1],  # (-, +, -)
        [0, 5, 5],  # (-, +, +)
        [2, -1, 5],  # (+, -, +)
        [2, -1, 1],  # (+, -, -)
        [0, -1, 1],  # (-, -, -)
        [0, -1, 5],  # (-, -, +)
    ]
    assert corners.dtype == np.float32 and corners.shape == (1, 8, 3)
    np.testing.assert_array_equal(corners[0], expected)
    np.testing.assert_array_equal(corners, upstream_corners([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]))


def test_quarter_yaw_turns_the_corners_about_the_centre():
    # 4 m long in x, 2 m wide, 2 m tall (equal y and z extents: the eight are the geometric corners), yawed 90
    # degrees about its centre at (10, 0, 1): the box's +x side now faces +y.
    corners = box_corners([[10.0, 0.0, 1.0]], [[4.0, 2.0, 2.0]], yaw_to_matrix([math.pi / 2]))
    expected = [
        [9, 2, 2],
        [9, 2, 0],
        [9, -2, 0],
        [9, -2, 2],
        [11, 2, 2],
        [11, 2, 0],
        [11, -2, 0],
        [11, -2, 2],
    ]
    np.testing.assert_allclose(corners[0], expected, atol=1e-6)


def test_convention_problem_names_what_to_do():
    assert corner_convention_problem(BOX_CORNER_CONVENTION, "x") is None
    assert "does not record" in corner_convention_problem(None, "the bundle b")
    message = corner_convention_problem("xyz-product", "the bundle b")
    assert message.startswith("the bundle b reads 3-D box corners in the 'xyz-product' convention")
    assert "retrain" in message and "re-export" in message


def test_box_corners_rejects_mismatched_batches():
    with pytest.raises(ValueError, match="hold 2, 1 and 1 boxes"):
        box_corners(np.zeros((2, 3)), np.ones((1, 3)), np.eye(3)[None])


def test_box_corners_rejects_a_flat_center():
    with pytest.raises(ValueError, match=r"center has shape \(3,\), expected \(R, 3\)"):
        box_corners([0.0, 0.0, 0.0], [[1.0, 1.0, 1.0]], [np.eye(3)])


# --- image boxes -------------------------------------------------------------------------------------------


def test_clip_keeps_boxes_inside_the_image_edges():
    clipped = clip_boxes_xyxy([[-10.0, 5.0, 700.0, 500.0], [10.0, 20.0, 30.0, 40.0]], width=640, height=480)
    assert clipped.dtype == np.float32
    np.testing.assert_array_equal(clipped, [[0, 5, 640, 480], [10, 20, 30, 40]])


def test_normalize_divides_by_the_image_size():
    boxes = [[0.0, 0.0, 640.0, 480.0], [160.0, 120.0, 320.0, 240.0]]
    np.testing.assert_array_equal(normalize_boxes_xyxy(boxes, 640, 480), [[0, 0, 1, 1], [0.25, 0.25, 0.5, 0.5]])


def test_normalize_clips_boxes_that_leave_the_image_to_the_unit_square():
    np.testing.assert_array_equal(normalize_boxes_xyxy([[-64.0, 240.0, 960.0, 960.0]], 640, 480), [[0, 0.5, 1, 1]])


def test_an_empty_image_size_is_rejected():
    with pytest.raises(ValueError, match="image size 0x480 is empty"):
        clip_boxes_xyxy([[0.0, 0.0, 1.0, 1.0]], 0, 480)


def test_usable_boxes_report_no_problems():
    assert image_box_problems([[0.0, 0.0, 1.0, 1.0], [-5.0, -5.0, 700.0, 500.0]], 640, 480) == {}


def test_degenerate_boxes_are_reported_by_row_with_a_reason():
    boxes = [
        [10.0, 10.0, 50.0, 50.0],  # fine
        [700.0, 10.0, 800.0, 50.0],  # right of the image
        [50.0, 10.0, 10.0, 50.0],  # x2 < x1
        [10.0, 10.0, 10.0, 50.0],  # zero width
        [float("nan"), 10.0, 20.0, 50.0],
    ]
    problems = image_box_problems(boxes, 640, 480)
    assert sorted(problems) == [1, 2, 3, 4]
    assert "covers 0 x 40 pixels of the 640x480 image" in problems[1]
    assert "negative size (-40 x 40)" in problems[2]
    assert "covers 0 x 40 pixels" in problems[3]
    assert "not finite" in problems[4]
