"""The runtime feeds the model exactly what training fed it."""
import numpy as np
import pytest

from runtime import preprocess
from training.data import image_preprocess, point_preprocess


def test_image_preprocessing_is_bit_identical_to_training():
    image = np.random.default_rng(0).integers(0, 256, size=(77, 131, 3), dtype=np.uint8)
    np.testing.assert_array_equal(preprocess.preprocess_image(image, 64),
                                  image_preprocess.preprocess_image(image, 64))


def test_image_preprocessing_matches_transformers_blip_processor():
    transformers = pytest.importorskip("transformers")
    processor = transformers.BlipImageProcessor(size={"height": 48, "width": 48})
    image = np.random.default_rng(1).integers(0, 256, size=(60, 40, 3), dtype=np.uint8)
    expected = processor(images=image, return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(preprocess.preprocess_image(image, 48), expected, atol=1e-6)


def test_object_normalisation_equals_training():
    points = np.random.default_rng(2).normal(size=(500, 3)).astype(np.float32) * 3 + 5
    np.testing.assert_array_equal(preprocess.normalize_unit_sphere(points),
                                  point_preprocess.normalize_unit_sphere(points))


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


@pytest.mark.parametrize("image, problem", [
    (np.zeros((8, 8, 3), np.float32), "dtype float32"),
    (np.zeros((8, 8), np.uint8), r"shape \(8, 8\)"),
    (np.zeros((0, 8, 3), np.uint8), "empty"),
    ([[1, 2, 3]], "is a list"),
])
def test_bad_images_are_rejected_naming_the_problem(image, problem):
    with pytest.raises(ValueError, match=problem):
        preprocess.preprocess_image(image, 32)


def test_boxes_partly_outside_are_clipped_and_degenerate_ones_rejected_with_the_reason():
    np.testing.assert_allclose(preprocess.preprocess_boxes([[-10, 5, 50, 200]], (100, 40, 3)),
                               [[0, 0.05, 1, 1]])
    with pytest.raises(ValueError, match="box 1: .*negative size"):
        preprocess.preprocess_boxes([[0, 0, 5, 5], [9, 9, 3, 3]], (100, 40, 3))
    assert preprocess.preprocess_boxes(np.zeros((0, 4)), (10, 10, 3)).shape == (0, 4)


def test_corners_accept_flat_boxes_and_reject_wrong_shapes():
    assert preprocess.check_corners(np.zeros((2, 24))).shape == (2, 8, 3)
    with pytest.raises(ValueError, match=r"\(R, 8, 3\)"):
        preprocess.check_corners(np.zeros((2, 7, 3)))
