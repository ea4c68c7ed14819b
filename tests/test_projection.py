"""regionblip_ros/projection.py: pinhole projection of 3-D boxes against points computed by hand.

The camera of these tests: fx = fy = 100 px, principal point (49.5, 39.5) in ROS pixels (pixel centres at
integers), a 100 x 80 image, so the optical axis meets the image at (50, 40) in this project's pixel-edge
convention, and a camera-frame point (x, y, z) lands at (50 + 100 x / z, 40 + 100 y / z).
"""

import numpy as np
import pytest

from regionblip_ros.projection import (
    BOX_EDGES, back_project, box_vertices, pinhole_camera, project_boxes, project_points, rigid_transform,
)

K = [100.0, 0.0, 49.5, 0.0, 100.0, 39.5, 0.0, 0.0, 1.0]
IDENTITY = rigid_transform([0, 0, 0, 0, 0, 0, 1])
# A camera 0.5 m above a LiDAR (REP 103: x forward, y left, z up) looking along its x axis: camera x = -LiDAR y,
# camera y = -LiDAR z, camera z = LiDAR x, so p_camera = (-y, 0.5 - z, x).
FORWARD_CAMERA = [0.0, 0.5, 0.0, 0.5, -0.5, 0.5, 0.5]


@pytest.fixture
def camera():
    return pinhole_camera(K, 100, 80)


def axis_aligned(center, size) -> np.ndarray:
    return box_vertices([center], np.eye(3)[None], [size])


def test_a_point_on_the_optical_axis_lands_on_the_principal_point(camera):
    np.testing.assert_allclose(project_points(camera, [[0.0, 0.0, 2.0]]), [[50.0, 40.0]])
    np.testing.assert_allclose(project_points(camera, [[1.0, 0.5, 2.0]]), [[100.0, 65.0]])


def test_back_projection_inverts_projection(camera):
    points = np.array([[0.3, -0.2, 2.0], [-1.0, 0.7, 5.5]])
    np.testing.assert_allclose(back_project(camera, project_points(camera, points), points[:, 2]), points)


def test_a_box_has_12_edges_each_vertex_on_3():
    assert len(BOX_EDGES) == 12
    assert np.bincount(np.ravel(BOX_EDGES)).tolist() == [3] * 8


def test_box_vertices_are_the_true_corners_with_each_extent_on_its_own_axis():
    vertices = axis_aligned([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])[0]
    np.testing.assert_allclose(vertices.min(axis=0), [0.0, 0.0, 0.0])
    np.testing.assert_allclose(vertices.max(axis=0), [2.0, 4.0, 6.0])


def test_a_box_in_front_of_an_identity_camera_projects_to_its_hand_computed_bounds(camera):
    # vertices at x, y = +-1 and z = 3 or 5: the widest are the near ones, 100 / 3 px off the axis
    boxes, problems = project_boxes(camera, IDENTITY, axis_aligned([0.0, 0.0, 4.0], [2.0, 2.0, 2.0]))
    assert problems == {}
    np.testing.assert_allclose(boxes[0], [50 - 100 / 3, 40 - 100 / 3, 50 + 100 / 3, 40 + 100 / 3], rtol=1e-6)


def test_the_transform_maps_lidar_points_into_the_camera_optical_frame(camera):
    matrix = rigid_transform(FORWARD_CAMERA)
    np.testing.assert_allclose(matrix[:3, :3], [[0, -1, 0], [0, 0, -1], [1, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(matrix @ [4.0, 1.0, 0.5, 1.0], [-1.0, 0.0, 4.0, 1.0], atol=1e-12)
    # a 0.2 m cube 4 m ahead, 1 m to the left, its centre at the camera's height: camera x in [-1.1, -0.9],
    # y in [-0.1, 0.1], z in [3.9, 4.1]
    boxes, problems = project_boxes(camera, matrix, axis_aligned([4.0, 1.0, 0.5], [0.2, 0.2, 0.2]))
    assert problems == {}
    np.testing.assert_allclose(boxes[0], [50 - 110 / 3.9, 40 - 10 / 3.9, 50 - 90 / 4.1, 40 + 10 / 3.9], rtol=1e-6)


def test_a_box_wholly_behind_the_camera_has_no_projection(camera):
    boxes, problems = project_boxes(camera, IDENTITY, axis_aligned([0.0, 0.0, -3.0], [1.0, 1.0, 1.0]))
    assert np.isnan(boxes[0]).all()
    assert "behind the camera" in problems[0] and "z = -2.50 m" in problems[0]


def test_a_box_ending_at_the_near_plane_counts_as_behind(camera):
    _, problems = project_boxes(camera, IDENTITY, axis_aligned([0.0, 0.0, 0.5], [0.2, 0.2, 1.0]), near_m=1.0)
    assert "behind the camera" in problems[0]


def test_a_box_straddling_the_near_plane_is_cut_along_its_edges_before_projecting(camera):
    # x in [0.2, 0.4], y in [-0.1, 0.1], z in [0.5, 2.0], near plane at z = 1. Its vertices at z = 2 project to
    # u in [60, 70], v in [35, 45]; its edges along z cross the plane at (x, y, 1): u in [70, 90], v in [30, 50].
    # The vertices at z = 0.5, behind the plane, must not count (they would reach u = 130).
    boxes, problems = project_boxes(camera, IDENTITY, axis_aligned([0.3, 0.0, 1.25], [0.2, 0.2, 1.5]), near_m=1.0)
    assert problems == {}
    np.testing.assert_allclose(boxes[0], [60.0, 30.0, 90.0, 50.0], rtol=1e-6)


def test_a_projection_reaching_past_the_image_edge_is_clipped(camera):
    # x in [0.5, 1.5] at z = 2: u in [75, 125], clipped at the image's right edge
    boxes, _ = project_boxes(camera, IDENTITY, axis_aligned([1.0, 0.0, 2.0], [1.0, 0.2, 0.0]))
    np.testing.assert_allclose(boxes[0], [75.0, 35.0, 100.0, 45.0], rtol=1e-6)


def test_a_box_projecting_outside_the_image_has_no_projection(camera):
    boxes, problems = project_boxes(camera, IDENTITY, axis_aligned([10.0, 0.0, 2.0], [1.0, 1.0, 1.0]))
    assert np.isnan(boxes[0]).all() and "lies outside the image" in problems[0]


def test_a_projection_smaller_than_min_region_px_is_refused(camera):
    far = axis_aligned([0.0, 0.0, 50.0], [0.1, 0.1, 0.1])  # 0.2 px wide
    boxes, problems = project_boxes(camera, IDENTITY, far, min_region_px=4.0)
    assert np.isnan(boxes[0]).all() and "minimum region size 4 px" in problems[0]
    assert project_boxes(camera, IDENTITY, far)[1] == {}  # without a minimum it is kept


def test_only_the_unusable_rows_are_refused(camera):
    vertices = np.concatenate([axis_aligned([0.0, 0.0, -3.0], [1.0, 1.0, 1.0]),
                               axis_aligned([0.0, 0.0, 4.0], [2.0, 2.0, 2.0]),
                               np.full((1, 8, 3), np.nan)])
    boxes, problems = project_boxes(camera, IDENTITY, vertices)
    assert sorted(problems) == [0, 2] and "not all finite" in problems[2]
    assert np.isfinite(boxes[1]).all()


def test_p_with_a_stereo_baseline_shifts_the_projection():
    camera = pinhole_camera([100.0, 0.0, 49.5, -10.0, 0.0, 100.0, 39.5, 0.0, 0.0, 0.0, 1.0, 0.0], 100, 80)
    np.testing.assert_allclose(project_points(camera, [[0.0, 0.0, 2.0]]), [[45.0, 40.0]])  # (49.5 * 2 - 10) / 2


@pytest.mark.parametrize("k, size, message", [
    ([0.0, 0.0, 49.5, 0.0, 100.0, 39.5, 0.0, 0.0, 1.0], (100, 80), "fx = 0"),
    ([0.0] * 9, (100, 80), "uncalibrated"),
    ([np.nan, 0.0, 49.5, 0.0, 100.0, 39.5, 0.0, 0.0, 1.0], (100, 80), "NaN or inf"),
    (K[:8], (100, 80), "has 8 values"),
    ([100.0, 0.0, 49.5, 0.0, 100.0, 39.5, 0.0, 0.0, 2.0], (100, 80), "last row"),
    (K, (0, 80), "size is 0x80"),
    (K, (100.5, 80), "whole pixels"),
])
def test_malformed_intrinsics_are_refused_with_what_is_wrong(k, size, message):
    with pytest.raises(ValueError, match=message):
        pinhole_camera(k, *size)


@pytest.mark.parametrize("values, message", [
    ([0, 0, 0, 0, 0, 1], "7 values"),
    ([0, 0, np.inf, 0, 0, 0, 1], "NaN or inf"),
    ([0, 0, 0, 0, 0, 0, 0], "zero quaternion"),
    ("x y z", "7 numbers"),
])
def test_malformed_transforms_are_refused_with_what_is_wrong(values, message):
    with pytest.raises(ValueError, match=message):
        rigid_transform(values)


def test_a_transform_quaternion_is_normalised_even_when_huge():
    np.testing.assert_allclose(rigid_transform([1, 2, 3, 0, 0, 0, 2])[:3, :3], np.eye(3))
    np.testing.assert_allclose(rigid_transform([0, 0, 0, 0, 0, 1e300, 1e300])[:3, :3],
                               [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)  # 90 degrees about z
