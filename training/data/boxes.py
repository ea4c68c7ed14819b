"""Boxes as training data gives them: 2-D annotations in pixel xywh, 3-D boxes as centre, size and yaw.

2-D: the model takes xyxy normalised by the image size. As the released RegionBLIP dataset does, the box is
clamped to the image and cast to int *before* normalising (this loses sub-pixel precision on purpose, for parity).
3-D: one box's corners in the order every layer uses (contract/boxes.py).
"""

from __future__ import annotations

import numpy as np

from contract import boxes


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
    return boxes.yaw_to_matrix([yaw])[0]


def box_corners(center, size, yaw: float = 0.0) -> np.ndarray:
    """Corners (8, 3) float32 of one box of centre (3,), size (3,) and yaw about +z (contract/boxes.py order)."""
    center = np.asarray(center, dtype=np.float64).reshape(1, 3)
    size = np.asarray(size, dtype=np.float64).reshape(1, 3)
    return boxes.box_corners(center, size, boxes.yaw_to_matrix([yaw]))[0]
