"""Box conventions: 2-D boxes are clamped, int-cast and normalised; 3-D corners follow the release's order."""

import numpy as np
import pytest

from contract.boxes import BOX_CORNER_SIGNS
from training.data.boxes import box_corners, normalize_box_xywh


def test_corner_signs_are_in_the_releases_order():
    expected = [(1, 1, 1), (1, 1, -1), (-1, 1, -1), (-1, 1, 1), (1, -1, 1), (1, -1, -1), (-1, -1, -1), (-1, -1, 1)]
    assert BOX_CORNER_SIGNS.tolist() == [list(signs) for signs in expected]


def test_axis_aligned_corners_carry_the_height_along_y_and_the_width_along_z():
    corners = box_corners([1.0, 2.0, 0.5], [2.0, 4.0, 1.0])  # 2 long (x), 4 wide (y), 1 tall (z)
    assert corners.shape == (8, 3) and corners.dtype == np.float32
    np.testing.assert_allclose(corners.min(axis=0), [0.0, 1.5, -1.5])
    np.testing.assert_allclose(corners.max(axis=0), [2.0, 2.5, 2.5])
    np.testing.assert_allclose(corners[0], [2.0, 2.5, 2.5])  # (+,+,+)
    np.testing.assert_allclose(corners[1], [2.0, 2.5, -1.5])  # (+,+,-)
    np.testing.assert_allclose(corners[6], [0.0, 1.5, -1.5])  # (-,-,-)


def test_yaw_rotates_corners_counter_clockwise_about_z():
    corners = box_corners([0.0, 0.0, 0.0], [2.0, 1.0, 1.0], yaw=np.pi / 2)
    # local (+x, +y, +z) = (1, 0.5, 0.5) turns by +90 deg into (-0.5, 1, 0.5); (+x, -y, +z) into (0.5, 1, 0.5)
    np.testing.assert_allclose(corners[0], [-0.5, 1.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(corners[4], [0.5, 1.0, 0.5], atol=1e-6)


def test_yaw_keeps_the_box_centre_and_edge_lengths():
    corners = box_corners([3.0, -1.0, 0.4], [0.6, 0.3, 0.8], yaw=0.7)
    np.testing.assert_allclose(corners.mean(axis=0), [3.0, -1.0, 0.4], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(corners[0] - corners[3]), 0.6, atol=1e-6)  # the length, along x
    np.testing.assert_allclose(np.linalg.norm(corners[0] - corners[4]), 0.8, atol=1e-6)  # the height, in the y slot
    np.testing.assert_allclose(np.linalg.norm(corners[0] - corners[1]), 0.3, atol=1e-6)  # the width, in the z slot


def test_region_box_is_clamped_int_cast_and_normalised():
    box = normalize_box_xywh([-5.2, 10.7, 50.9, 300.0], width=200, height=100)
    # x1 clamps to 0, y1 10.7 -> 10, x2 45.7 -> 45, y2 clamps to 100
    np.testing.assert_allclose(box, [0.0, 0.1, 0.225, 1.0])
    assert box.dtype == np.float32


def test_box_outside_the_image_is_rejected_with_its_values():
    with pytest.raises(ValueError, match=r"box xywh=\[250.0, 10.0, 20.0, 20.0\] has no area inside the 200x100 image"):
        normalize_box_xywh([250.0, 10.0, 20.0, 20.0], width=200, height=100)
