"""Synthetic point clouds: deterministic, split-disjoint, boxes that enclose their object, captions that match."""

import numpy as np
import pytest

from training.data.boxes import box_corners, yaw_rotation
from training.data.synthetic_points import SyntheticPointDataset
from training.data.vocabulary import POINT_SHAPES, parse_objects


def _local(points, attributes):
    """Points in the object's box frame."""
    return (points - np.array(attributes["center"])) @ yaw_rotation(attributes["yaw"])


def test_same_index_gives_the_same_cloud():
    a, b = SyntheticPointDataset("pointcloud_region")[4], SyntheticPointDataset("pointcloud_region")[4]
    assert np.array_equal(a.points, b.points) and np.array_equal(a.corners, b.corners) and a.caption == b.caption


def test_train_and_eval_splits_hold_different_clouds():
    train = SyntheticPointDataset("pointcloud", split="train", length=30, num_points=256)
    held_out = SyntheticPointDataset("pointcloud", split="eval", length=30, num_points=256)
    assert not {train[i].points.tobytes() for i in range(30)} & {held_out[i].points.tobytes() for i in range(30)}


def test_object_cloud_has_exact_point_count_and_no_corners():
    sample = SyntheticPointDataset("pointcloud", num_points=1000)[0]
    assert sample.points.shape == (1000, 3) and sample.points.dtype == np.float32
    assert sample.corners is None and sample.modality == "pointcloud"


def test_object_cloud_is_on_the_unit_sphere_and_captioned_by_shape():
    dataset = SyntheticPointDataset("pointcloud", length=20, num_points=512)
    shapes = set()
    for i in range(20):
        sample = dataset[i]
        shapes.add(sample.attributes["shape"])
        np.testing.assert_allclose(sample.points.mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(sample.points, axis=1).max(), 1.0, rtol=1e-5)
        assert sample.caption == f"a {sample.attributes['shape']}"
    assert len(shapes) >= 4 and shapes <= set(POINT_SHAPES)


def test_object_cloud_keeps_the_proportions_of_its_shape():
    dataset = SyntheticPointDataset("pointcloud", length=40, num_points=2048)
    sample = next(dataset[i] for i in range(40) if dataset[i].attributes["shape"] == "cone")
    local = sample.points @ yaw_rotation(sample.attributes["yaw"])
    extent = local.max(axis=0) - local.min(axis=0)
    assert extent[2] / extent[0] == pytest.approx(1.3, rel=0.1)  # cones are 1.3 times as tall as wide


def test_region_corners_enclose_the_described_object():
    sample = SyntheticPointDataset("pointcloud_region", num_points=4096)[2]
    a = sample.attributes
    local = _local(sample.points, a)
    inside = (np.abs(local) <= np.array(a["box_size"]) / 2 + 0.02).all(axis=1)
    above_ground = sample.points[:, 2] > 0.03
    assert (inside & above_ground).sum() > 50
    np.testing.assert_allclose(sample.corners.mean(axis=0), a["center"], atol=1e-5)
    np.testing.assert_allclose(a["center"][2] - a["box_size"][2] / 2, 0.0, atol=1e-5)  # standing on the ground
    np.testing.assert_array_equal(sample.corners, box_corners(a["center"], a["box_size"], a["yaw"]))


def test_scene_has_a_ground_plane_at_zero_height():
    sample = SyntheticPointDataset("pointcloud_region", num_points=2048)[0]
    assert (np.abs(sample.points[:, 2]) < 0.02).mean() > 0.3
    assert sample.points[:, :2].min() >= -2.1 and sample.points[:, :2].max() <= 2.1


def test_region_caption_names_object_and_relation_to_nearest_neighbour():
    dataset = SyntheticPointDataset("pointcloud_region", length=30, num_points=256)
    sample = next(dataset[i] for i in range(30) if "relation" in dataset[i].attributes)
    a = sample.attributes
    assert sample.caption == f"a {a['size']} {a['shape']} {a['relation']} a {a['other_size']} {a['other_shape']}"
    assert parse_objects(sample.caption)[0] == {"size": a["size"], "shape": a["shape"]}


def test_lone_object_region_caption_has_no_relation():
    dataset = SyntheticPointDataset("pointcloud_region", length=40, num_points=128)
    alone = [dataset[i] for i in range(40) if "relation" not in dataset[i].attributes]
    assert alone and all(s.caption == f"a {s.attributes['size']} {s.attributes['shape']}" for s in alone)
