"""Cap3D reader on fixture files in the real format: 'uid,caption' lines and {uid}/{uid}_8192.npz with arr_0."""

import numpy as np
import pytest

from training.data.cap3d import Cap3DDataset
from training.data.samples import DataError


def _cloud(path, n=8192, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    points = np.random.default_rng(seed).normal(size=(n, 6)).astype(np.float32) * 3 + 5
    np.savez(path, arr_0=points)
    return points


def _fixture(tmp_path, lines):
    (tmp_path / "captions.txt").write_text("\n".join(lines) + "\n")
    return tmp_path / "captions.txt", tmp_path / "clouds"


def test_cap3d_sample_is_unit_sphere_points_with_cleaned_caption(tmp_path):
    captions, clouds = _fixture(tmp_path, ['abc123,"A wooden Chair, with four legs."'])
    _cloud(clouds / "abc123" / "abc123_8192.npz")
    sample = Cap3DDataset(captions, clouds)[0]
    assert sample.caption == "a wooden chair, with four legs"
    assert sample.points.shape == (8192, 3) and sample.points.dtype == np.float32 and sample.corners is None
    np.testing.assert_allclose(sample.points.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(sample.points, axis=1).max(), 1.0, rtol=1e-6)
    assert sample.attributes["uid"] == "abc123"


def test_cap3d_finds_flat_layout_and_subsamples(tmp_path):
    captions, clouds = _fixture(tmp_path, ["u1,a red car"])
    _cloud(clouds / "u1_8192.npz")
    assert Cap3DDataset(captions, clouds, num_points=1024)[0].points.shape == (1024, 3)


def test_cap3d_augmentation_is_deterministic_per_epoch_and_changes_between_epochs(tmp_path):
    captions, clouds = _fixture(tmp_path, ["u1,a red car"])
    _cloud(clouds / "u1_8192.npz")
    dataset = Cap3DDataset(captions, clouds, augment=True, seed=3)
    first, again = dataset[0].points, dataset[0].points
    dataset.set_epoch(1)
    assert np.array_equal(first, again) and not np.array_equal(first, dataset[0].points)


def test_corrupt_and_missing_clouds_are_skipped_and_named(tmp_path):
    captions, clouds = _fixture(tmp_path, ["good,a chair", "broken,a table", "absent,a lamp", "no caption here"])
    _cloud(clouds / "good" / "good_8192.npz")
    (clouds / "broken").mkdir()
    (clouds / "broken" / "broken_8192.npz").write_bytes(b"PK\x03\x04 not really a zip")
    dataset = Cap3DDataset(captions, clouds)
    assert len(dataset) == 1 and dataset[0].attributes["uid"] == "good"
    assert "line 2 uid=broken" in dataset.problems[0] and "broken_8192.npz is not a readable numpy file" in dataset.problems[0]
    assert "line 3 uid=absent" in dataset.problems[1] and "absent_8192.npz does not exist" in dataset.problems[1]
    assert "line 4: expected 'uid,caption'" in dataset.problems[2]


def test_npz_holding_objects_is_rejected_not_unpickled(tmp_path):
    captions, clouds = _fixture(tmp_path, ["obj,a chair"])
    clouds.mkdir()
    np.savez(clouds / "obj_8192.npz", arr_0=np.array([{"x": 1}], dtype=object))
    with pytest.raises(DataError, match=r"(?s)no usable point clouds.*obj_8192.npz is not a readable numpy file"):
        Cap3DDataset(captions, clouds)


def test_cloud_corrupted_after_indexing_fails_with_uid_and_file(tmp_path):
    captions, clouds = _fixture(tmp_path, ["u1,a red car"])
    _cloud(clouds / "u1_8192.npz")
    dataset = Cap3DDataset(captions, clouds)
    (clouds / "u1_8192.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"u1_8192.npz is not a readable numpy file.*uid=u1"):
        dataset[0]
