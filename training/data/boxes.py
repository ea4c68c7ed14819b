"""Box conventions shared by training and runtime: 2-D region boxes and 3-D oriented box corners.

2-D: annotations give xywh in pixels; the model takes xyxy normalised by the image size. As the
released RegionBLIP dataset does, the box is clamped to the image and cast to int *before*
normalising (this loses sub-pixel precision on purpose, for parity).

3-D: an oriented box is centre (3), size (3) = extents along its own x, y, z, and yaw (radians,
about +z). Its 8 corners are the box-frame points size/2 * signs with signs, in this order,
    (-,-,-), (-,-,+), (-,+,-), (-,+,+), (+,-,-), (+,-,+), (+,+,-), (+,+,+)   for (x, y, z),
rotated by yaw and translated by the centre. The runtime builds corners with the same rule.
(The released ScanRefer loader swaps the y and z extents; we do not, so its weights do not apply.)
"""

from __future__ import annotations

import itertools

import numpy as np

CORNER_SIGNS = np.array(list(itertools.product((-1.0, 1.0), repeat=3)), dtype=np.float32)  # (8, 3)


def clamp_box_xywh(bbox_xywh, width: int, height: int) -> np.ndarray:
    """Pixel xywh -> integer pixel xyxy clamped to the image; zero area means the box is outside it."""
    x, y, w, h = (float(v) for v in bbox_xywh)
    x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    return np.array([int(x1), int(y1), int(x2), int(y2)], dtype=np.int64)


def normalize_box_xywh(bbox_xywh, width: int, height: int) -> np.ndarray:
    """Pixel xywh -> normalised xyxy (4,) float32: clamp, int-cast, divide by width/height."""
    x1, y1, x2, y2 = clamp_box_xywh(bbox_xywh, width, height)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(
            f"box xywh={list(bbox_xywh)} has no area inside the {width}x{height} image: fix or drop the annotation"
        )
    return np.array([x1 / width, y1 / height, x2 / width, y2 / height], dtype=np.float32)


def yaw_rotation(yaw: float) -> np.ndarray:
    """(3, 3) rotation about +z by `yaw` radians."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def box_corners(center, size, yaw: float = 0.0) -> np.ndarray:
    """Corners (8, 3) float32 of the oriented box, in the order of CORNER_SIGNS (module docstring)."""
    center = np.asarray(center, dtype=np.float64).reshape(3)
    size = np.asarray(size, dtype=np.float64).reshape(3)
    local = CORNER_SIGNS.astype(np.float64) * (size / 2.0)
    return (local @ yaw_rotation(yaw).T + center).astype(np.float32)
