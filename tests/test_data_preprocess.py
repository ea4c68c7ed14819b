"""Preprocessing: images exactly as HF's BLIP-2 processor; point clouds as the released datasets; batching."""

import numpy as np
import pytest
import torch

from training.data.boxes import box_corners
from training.data.batching import collate_images, collate_points
from contract.preprocessing import normalize_unit_sphere
from contract.preprocessing import pixel_values as preprocess_image
from training.data.point_preprocess import augment_object, augment_scene, sample_points
from training.data.samples import DataError, ImageSample, PointSample
from training.data.synthetic_images import SyntheticImageDataset


def test_image_preprocessing_equals_hf_blip_image_processor_bit_for_bit():
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    image = np.random.default_rng(0).integers(0, 256, size=(75, 130, 3), dtype=np.uint8)
    expected = BlipImageProcessorPil(size={"height": 224, "width": 224})(image, return_tensors="np")["pixel_values"][0]
    ours = preprocess_image(image, 224)
    assert ours.dtype == np.float32 and ours.shape == (3, 224, 224)
    assert np.array_equal(ours, expected)


def test_white_pixel_normalises_to_clip_values():
    white = np.full((8, 8, 3), 255, dtype=np.uint8)
    np.testing.assert_allclose(preprocess_image(white, 4)[:, 0, 0], [1.9303361, 2.0748837, 2.1458969], rtol=1e-6)


def test_image_region_batch_has_pixel_values_and_boxes():
    samples = [SyntheticImageDataset("image_region")[i] for i in range(3)]
    batch = collate_images(samples, image_size=64)
    assert batch["pixel_values"].shape == (3, 3, 64, 64) and batch["pixel_values"].dtype == torch.float32
    assert batch["boxes"].shape == (3, 4) and batch["modality"] == "image_region"
    assert batch["captions"] == [s.caption for s in samples]


def test_mixed_modalities_are_not_batched_together():
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="a batch holds one modality"):
        collate_images([ImageSample(image, "a"), ImageSample(image, "b", np.array([0, 0, 1, 1]))], 4)


def test_sample_types_reject_wrong_layouts():
    with pytest.raises(DataError, match=r"\(H, W, 3\) uint8"):
        ImageSample(np.zeros((3, 4, 4), dtype=np.uint8), "x")
    with pytest.raises(DataError, match=r"\(N, 3\)"):
        PointSample(np.zeros((10, 6)), "x")


def test_unit_sphere_normalisation_centres_and_scales():
    points = np.array([[2.0, 0, 0], [4.0, 0, 0], [3.0, 1.0, 0]])
    out = normalize_unit_sphere(points)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1).max(), 1.0)


def test_sampling_returns_exact_count_with_replacement_when_short():
    rng = np.random.default_rng(0)
    few = np.arange(15, dtype=np.float32).reshape(5, 3)
    out = sample_points(few, 12, rng)
    assert out.shape == (12, 3)
    assert {tuple(p) for p in out} <= {tuple(p) for p in few}
    many = np.arange(300, dtype=np.float32).reshape(100, 3)
    assert len({tuple(p) for p in sample_points(many, 40, rng)}) == 40  # no repeats when enough points


def test_object_augmentation_keeps_point_count_and_stays_bounded():
    points = normalize_unit_sphere(np.random.default_rng(1).normal(size=(2048, 3)))
    out = augment_object(points, np.random.default_rng(2))
    assert out.shape == (2048, 3) and out.dtype == np.float32
    assert np.linalg.norm(out, axis=1).max() <= 1.25 + 0.1 * np.sqrt(3) + 1e-5


def test_scene_augmentation_moves_the_box_with_the_points():
    center, size = np.array([1.0, 2.0, 0.5]), np.array([0.4, 0.6, 1.0])
    rng = np.random.default_rng(3)
    inside = center + rng.uniform(-0.5, 0.5, size=(200, 3)) * size
    for seed in range(8):
        points, moved_center, moved_size = augment_scene(inside, center, size, np.random.default_rng(seed))
        lo, hi = moved_center - moved_size / 2, moved_center + moved_size / 2  # the axis-aligned box around it
        assert ((points >= lo - 1e-5) & (points <= hi + 1e-5)).all()
        assert moved_center[2] == center[2] and moved_size[2] == size[2]  # z is never changed
        assert (moved_size[:2] >= size[:2] - 1e-9).all()  # the enclosing box of a rotated one is never smaller


def test_augmented_box_corners_keep_the_canonical_order():
    # After any flip or rotation the first corner is still the box's (+x, +y, +z) one and the seventh its
    # (-x, -y, -z) one, as the release builds them after augmenting: flipping the corners would swap slots.
    center, size = np.array([1.0, 2.0, 0.5]), np.array([0.4, 0.6, 1.0])
    for seed in range(8):
        _, moved_center, moved_size = augment_scene(np.zeros((4, 3)), center, size, np.random.default_rng(seed))
        corners = box_corners(moved_center, moved_size)
        np.testing.assert_allclose(corners[0], moved_center + moved_size[[0, 2, 1]] / 2, atol=1e-6)
        np.testing.assert_allclose(corners[6], moved_center - moved_size[[0, 2, 1]] / 2, atol=1e-6)


def test_point_region_batch_has_points_and_corners():
    samples = [PointSample(np.zeros((32, 3)), "a", box_corners([0, 0, 0], [1, 1, 1])) for _ in range(2)]
    batch = collate_points(samples)
    assert batch["points"].shape == (2, 32, 3) and batch["corners"].shape == (2, 8, 3)


def test_point_batch_with_unequal_counts_is_refused():
    with pytest.raises(ValueError, match="resample with sample_points"):
        collate_points([PointSample(np.zeros((32, 3)), "a"), PointSample(np.zeros((16, 3)), "b")])
