"""ScanRefer reader on fixture files in the real format: ScanRefer JSON + ScanNet *_aligned_vert.npy / *_aligned_bbox.npy."""

import json

import numpy as np
import pytest

from training.data.samples import DataError
from training.data.scanrefer import ScanReferDataset

BOX = [1.0, 2.0, 0.5, 0.4, 0.6, 1.0, 5, 3]  # cx, cy, cz, dx, dy, dz, label, object_id


def _scene(directory, scene_id, n=500):
    rng = np.random.default_rng(0)
    vertices = np.column_stack([rng.uniform(-3, 3, size=(n, 3)), rng.integers(0, 255, size=(n, 3))]).astype(np.float32)
    np.save(directory / f"{scene_id}_aligned_vert.npy", vertices)
    np.save(directory / f"{scene_id}_aligned_bbox.npy", np.array([BOX, [0, 0, 0, 1, 1, 1, 2, 7]], dtype=np.float32))
    return vertices


def _fixture(tmp_path, entries):
    (tmp_path / "scannet").mkdir()
    _scene(tmp_path / "scannet", "scene0000_00")
    (tmp_path / "scanrefer.json").write_text(json.dumps(entries))
    return tmp_path / "scanrefer.json", tmp_path / "scannet"


ENTRY = {"scene_id": "scene0000_00", "object_id": "3", "object_name": "chair", "ann_id": "0",
         "description": "This is a brown chair. It is next to the table."}


def test_scanrefer_sample_has_raw_description_sampled_points_and_box_corners(tmp_path):
    path, scannet = _fixture(tmp_path, [ENTRY])
    sample = ScanReferDataset(path, scannet, num_points=2000)[0]
    assert sample.caption == "This is a brown chair. It is next to the table."
    assert sample.points.shape == (2000, 3) and sample.points.dtype == np.float32  # 500 drawn with replacement
    assert sample.modality == "pointcloud_region"
    # centre (1, 2, 0.5), size (0.4, 0.6, 1.0): the release's corners put the 1.0 height along y, the 0.6 along z
    np.testing.assert_allclose(sample.corners.min(axis=0), [0.8, 1.5, 0.2], atol=1e-6)
    np.testing.assert_allclose(sample.corners.max(axis=0), [1.2, 2.5, 0.8], atol=1e-6)
    assert sample.attributes["object_id"] == 3 and sample.attributes["object_name"] == "chair"


def test_scanrefer_eval_sampling_is_deterministic(tmp_path):
    path, scannet = _fixture(tmp_path, [ENTRY])
    assert np.array_equal(ScanReferDataset(path, scannet, num_points=100)[0].points,
                          ScanReferDataset(path, scannet, num_points=100)[0].points)


def test_scanrefer_augmentation_keeps_z_and_the_box_height(tmp_path):
    path, scannet = _fixture(tmp_path, [ENTRY])
    plain = ScanReferDataset(path, scannet, num_points=300, seed=1)[0]  # same draw of points
    augmented = ScanReferDataset(path, scannet, num_points=300, augment=True, seed=1)[0]
    np.testing.assert_allclose(np.sort(augmented.points[:, 2]), np.sort(plain.points[:, 2]), atol=1e-6)
    edge = augmented.corners[0] - augmented.corners[4]  # (+,+,+) - (+,-,+): the height, in the y slot
    np.testing.assert_allclose(edge, [0.0, 1.0, 0.0], atol=1e-5)


def test_missing_object_scene_and_corrupt_files_are_skipped_and_named(tmp_path):
    entries = [ENTRY, {**ENTRY, "object_id": "42"}, {**ENTRY, "scene_id": "scene0999_00"},
               {**ENTRY, "scene_id": "scene0001_00"}, {"scene_id": "scene0000_00"}]
    path, scannet = _fixture(tmp_path, entries)
    (scannet / "scene0001_00_aligned_vert.npy").write_bytes(b"\x93NUMPY broken")
    dataset = ScanReferDataset(path, scannet, num_points=10)
    assert len(dataset) == 1
    assert "entry [1] scene_id=scene0000_00 object_id=42: object 42 is not among the boxes" in dataset.problems[0]
    assert "entry [2] scene_id=scene0999_00" in dataset.problems[1] and "does not exist" in dataset.problems[1]
    assert "scene0001_00_aligned_vert.npy is not a readable numpy file" in dataset.problems[2]
    assert "entry [4]" in dataset.problems[3] and "malformed entry" in dataset.problems[3]


def test_scanrefer_with_nothing_valid_raises(tmp_path):
    path, scannet = _fixture(tmp_path, [{**ENTRY, "object_id": "42"}])
    with pytest.raises(DataError, match="no usable object descriptions remain after 1 problems"):
        ScanReferDataset(path, scannet)
