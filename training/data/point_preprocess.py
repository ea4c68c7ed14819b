"""Point-cloud preprocessing and augmentation, as in the released RegionBLIP datasets.

Cap3D/Objaverse objects (pointcloud_caption_datasets.py, ULIP's transforms): centre and scale to
the unit sphere; in training, random point dropout (up to 87.5 %), scale 0.8-1.25, shift +-0.1,
small rotation perturbation (sigma 0.06, clip 0.18) and a random full rotation about y.
ScanRefer scenes (scannet_reference_datasets.py): sample N points (with replacement when the scene
has fewer), no normalisation; in training flip X and Y with p = 0.5 and rotate about z by +-5 deg.
Scene augmentations move the box with the points and, as the release does, keep it axis-aligned (after the rotation
it is the box enclosing the rotated one); the caller then builds its corners, so they keep the canonical order
(contract/boxes.py) that a flip of the corners themselves would permute.
"""

from __future__ import annotations

import numpy as np

from .samples import DataError


def sample_points(points: np.ndarray, num_points: int, rng: np.random.Generator) -> np.ndarray:
    """Exactly num_points rows: a random subset, or a draw with replacement if there are fewer."""
    if len(points) == 0:
        raise DataError("cannot sample from an empty point cloud: the file holds no points")
    index = rng.choice(len(points), num_points, replace=len(points) < num_points)
    return points[index].astype(np.float32)


def _rotation_xyz(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def augment_object(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """ULIP's training transforms in their order: dropout, scale, shift, perturb, rotate about y."""
    points = points.astype(np.float64).copy()
    dropped = rng.random(len(points)) <= rng.random() * 0.875
    points[dropped] = points[0]  # dropped points collapse onto the first, keeping N fixed
    points *= rng.uniform(0.8, 1.25)
    points += rng.uniform(-0.1, 0.1, size=3)
    perturb = np.clip(0.06 * rng.normal(size=3), -0.18, 0.18)
    points = points @ _rotation_xyz(perturb).T
    angle = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(angle), np.sin(angle)
    points = points @ np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]).T
    return points.astype(np.float32)


def augment_scene(points: np.ndarray, center: np.ndarray, size: np.ndarray,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ScanRefer's training transforms applied to the points and to one axis-aligned box (centre, size): the
    transformed points and the box's new centre and size, axis-aligned (ScannetDatasetConfig.rotate_aligned_boxes)."""
    transform = np.eye(3)
    if rng.random() < 0.5:  # flip left-right (x)
        transform = np.diag([-1.0, 1.0, 1.0]) @ transform
    if rng.random() < 0.5:  # flip front-back (y)
        transform = np.diag([1.0, -1.0, 1.0]) @ transform
    angle = rng.uniform(-np.pi / 36, np.pi / 36)
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    transform = rotation @ transform
    center = transform @ np.asarray(center, dtype=np.float64)
    half = np.asarray(size, dtype=np.float64) / 2.0
    footprint = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]]) * half  # flips leave it unchanged
    extent = np.abs(footprint @ rotation.T).max(axis=0)[:2] * 2.0
    size = np.array([extent[0], extent[1], 2.0 * half[2]])
    return (points @ transform.T).astype(np.float32), center, size
