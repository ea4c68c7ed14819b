"""The runtime turns a caller's arrays into the graphs' inputs (contract/preprocessing.py, as training does)."""
import numpy as np
import pytest

from runtime import preprocess


def test_image_preprocessing_matches_transformers_blip_processor():
    transformers = pytest.importorskip("transformers")
    processor = transformers.BlipImageProcessor(size={"height": 48, "width": 48})
    image = np.random.default_rng(1).integers(0, 256, size=(60, 40, 3), dtype=np.uint8)
    expected = processor(images=image, return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(preprocess.preprocess_image(image, 48), expected, atol=1e-6)


def test_point_sampling_is_deterministic_and_fills_small_clouds():
    points = np.arange(30, dtype=np.float32).reshape(10, 3)
    first, second = preprocess.sample_points(points, 4), preprocess.sample_points(points, 4)
    np.testing.assert_array_equal(first, second)
    assert preprocess.sample_points(points, 25).shape == (25, 3)


def test_non_finite_points_are_dropped_and_an_all_nan_cloud_is_rejected():
    points = np.array([[0, 0, 0], [np.nan, 1, 1], [1, np.inf, 0], [2, 2, 2]], dtype=np.float32)
    np.testing.assert_array_equal(preprocess.clean_points(points), [[0, 0, 0], [2, 2, 2]])
    with pytest.raises(ValueError, match="no finite points"):
        preprocess.clean_points(np.full((5, 3), np.nan))


def test_float64_points_beyond_float32_are_dropped_as_not_finite():
    points = np.array([[0, 0, 0], [1e39, 0, 0], [1, 1, 1]], dtype=np.float64)
    np.testing.assert_array_equal(preprocess.clean_points(points), [[0, 0, 0], [1, 1, 1]])
    assert preprocess.clean_points(points).dtype == np.float32


@pytest.mark.parametrize("image, problem", [
    (np.zeros((8, 8, 3), np.float32), "dtype float32"),
    (np.zeros((8, 8), np.uint8), r"shape \(8, 8\)"),
    (np.zeros((0, 8, 3), np.uint8), "empty"),
    ([[1, 2, 3]], "is a list"),
])
def test_bad_images_are_rejected_naming_the_problem(image, problem):
    with pytest.raises(ValueError, match=problem):
        preprocess.preprocess_image(image, 32)


def test_boxes_partly_outside_are_clipped_and_unusable_ones_reported_by_row():
    boxes, problems = preprocess.preprocess_boxes([[-10, 5, 50, 200]], (100, 40, 3))
    np.testing.assert_allclose(boxes, [[0, 0.05, 1, 1]])
    assert problems == {}
    boxes, problems = preprocess.preprocess_boxes([[0, 0, 5, 5], [9, 9, 3, 3], [np.nan] * 4], (100, 40, 3))
    assert sorted(problems) == [1, 2]
    assert "negative size" in problems[1] and "not finite" in problems[2]
    np.testing.assert_allclose(boxes[0], [0, 0, 0.125, 0.05])
    assert preprocess.preprocess_boxes(np.zeros((0, 4)), (10, 10, 3))[0].shape == (0, 4)


def test_boxes_below_the_minimum_size_are_reported():
    _, problems = preprocess.preprocess_boxes([[0, 0, 3, 30], [0, 0, 30, 30]], (100, 40, 3), min_size_px=4)
    assert list(problems) == [0] and "minimum region size 4 px" in problems[0]


def test_boxes_of_the_wrong_shape_raise():
    with pytest.raises(ValueError, match=r"\(R, 4\)"):
        preprocess.preprocess_boxes([[0, 0, 5]], (100, 40, 3))


def test_corners_accept_flat_boxes_and_reject_wrong_shapes():
    corners, problems = preprocess.check_corners(np.zeros((2, 24)))
    assert corners.shape == (2, 8, 3) and problems == {}
    with pytest.raises(ValueError, match=r"\(R, 8, 3\)"):
        preprocess.check_corners(np.zeros((2, 7, 3)))


def test_corners_beyond_float32_are_reported_by_row_not_for_the_whole_batch():
    corners = np.zeros((3, 8, 3))
    corners[1, 0, 0] = 1e300  # finite in float64, inf in float32
    corners[2, 3, 1] = np.nan
    out, problems = preprocess.check_corners(corners)
    assert sorted(problems) == [1, 2] and np.isfinite(out).all()
