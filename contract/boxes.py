"""Box conventions of every layer: 2-D image boxes, rotations, and the 8 corners of a 3-D box in their order.

2-D: pixel boxes are (x1, y1, x2, y2) on continuous pixel edges, so an image spans [0, W] x [0, H]; the model takes
them clipped and divided by the image size. A box the model cannot take is reported by `image_box_problems`, the
one check between a caller's boxes and the graphs.
3-D: an oriented box is centre, size (full extents along its own axes) and rotation. The model reads a box as
the 8 points that the released RegionBLIP builds (BOX_CORNER_CONVENTION): centre + rotation @ (signs * extents / 2)
with the signs in BOX_CORNER_SIGNS order and the extents in BOX_CORNER_EXTENT_AXES order, which puts the box's z
extent along y and its y extent along z, as the release's ScanRefer loader does. They are the box's geometric
corners only when its y and z extents are equal; a released point-region position embedding was trained on exactly
these 24 numbers, so every layer builds them here and nowhere else. A box whose corners are not all finite is
reported by `corner_problems`.

Numpy only, so that the runtime never needs ROS or torch. All functions are batched over a leading axis R.
"""

import numpy as np

# The corner convention of the released RegionBLIP (lavis/datasets/datasets/scannet_reference_datasets.py at
# f6992e0, L158-175): corner k is centre + signs[k] * (l, h, w) / 2 for sizes (l, w, h) along (x, y, z).
# Checkpoints and bundles record the convention they were trained under. Those written before this project followed
# the release (signs in itertools.product order, no swap) record none; a point-region model cannot be converted
# exactly from that order, so they are refused (training/config.py, runtime/bundle.py).
BOX_CORNER_CONVENTION = "regionblip"
BOX_CORNER_SIGNS = np.array(
    [
        [+1, +1, +1],
        [+1, +1, -1],
        [-1, +1, -1],
        [-1, +1, +1],
        [+1, -1, +1],
        [+1, -1, -1],
        [-1, -1, -1],
        [-1, -1, +1],
    ],
    dtype=np.float64,
)
BOX_CORNER_EXTENT_AXES = (0, 2, 1)  # the size component scaling each corner coordinate: l, h, w
# Corner pairs (a, b) whose difference lies along the box's own x, y and z axes: its length is the extent
# BOX_CORNER_EXTENT_AXES names for that axis (so the y pair measures the height, the z pair the y extent).
BOX_AXIS_CORNER_PAIRS = ((0, 3), (0, 4), (0, 1))


class CornerConventionError(ValueError):
    """A checkpoint trained under another 3-D corner convention than this version builds; the message says what
    to do."""


def corner_convention_problem(convention: str | None, what: str) -> str | None:
    """Why a checkpoint or bundle whose point-region boxes were built in `convention` (None: not recorded, which
    means the legacy order) cannot be used, or None when it matches this version's."""
    if convention == BOX_CORNER_CONVENTION:
        return None
    found = "does not record its box corner convention" if convention is None else \
        f"reads 3-D box corners in the {convention!r} convention"
    return (f"{what} {found}: its point-region box embedding was trained on corners in another order than this "
            f"version builds ({BOX_CORNER_CONVENTION!r}, the released RegionBLIP's), so its point-region "
            "descriptions would be wrong; retrain it (make train-default for the embedded default model) and "
            "re-export its bundle")


# Below this norm a quaternion carries no orientation, only noise.
MIN_QUATERNION_NORM = 1e-6


def _as_batch(name: str, array, trailing: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 1 + len(trailing) or array.shape[1:] != trailing:
        expected = ", ".join(["R", *map(str, trailing)])
        raise ValueError(f"{name} has shape {array.shape}, expected ({expected})")
    return array


def quaternion_to_matrix(quaternions) -> np.ndarray:
    """Rotation matrices (R, 3, 3) from quaternions (R, 4) in ROS order (x, y, z, w).

    Quaternions need not be unit length: each is normalised here. A quaternion of (near) zero length has no
    orientation and raises ValueError naming its row.
    """
    q = _as_batch("quaternions", quaternions, (4,))
    norm_sq = np.einsum("ri,ri->r", q, q)
    zero = np.flatnonzero(~(norm_sq >= MIN_QUATERNION_NORM**2))
    if zero.size:
        raise ValueError(
            f"quaternions at rows {zero.tolist()} have zero length (or are not finite): "
            "give a unit quaternion, (0, 0, 0, 1) for no rotation"
        )
    x, y, z, w = q.T
    s = 2.0 / norm_sq  # 2/|q|^2 instead of 2 normalises q inside the formula
    return np.stack(
        [
            np.stack([1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w)], axis=-1),
            np.stack([s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w)], axis=-1),
            np.stack([s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)], axis=-1),
        ],
        axis=-2,
    )


def yaw_to_matrix(yaw) -> np.ndarray:
    """Rotation matrices (R, 3, 3) about +z by yaw (R,) radians, counter-clockwise seen from above."""
    yaw = _as_batch("yaw", yaw, ())
    c, s = np.cos(yaw), np.sin(yaw)
    zero, one = np.zeros_like(yaw), np.ones_like(yaw)
    return np.stack(
        [
            np.stack([c, -s, zero], axis=-1),
            np.stack([s, c, zero], axis=-1),
            np.stack([zero, zero, one], axis=-1),
        ],
        axis=-2,
    )


def box_corners(center, size, rotation) -> np.ndarray:
    """The 8 corner points (R, 8, 3) float32 of oriented boxes in the released RegionBLIP's convention (above).

    center (R, 3) and size (R, 3, full extents) are in the parent frame's units; rotation (R, 3, 3) maps the
    box frame to the parent frame.
    """
    center = _as_batch("center", center, (3,))
    size = _as_batch("size", size, (3,))
    rotation = _as_batch("rotation", rotation, (3, 3))
    if not center.shape[0] == size.shape[0] == rotation.shape[0]:
        raise ValueError(
            f"center, size and rotation hold {center.shape[0]}, {size.shape[0]} and {rotation.shape[0]} "
            "boxes: give one row per box in each"
        )
    local = BOX_CORNER_SIGNS[None] * (size[:, None, list(BOX_CORNER_EXTENT_AXES)] / 2.0)  # (R, 8, 3)
    corners = np.einsum("rij,rkj->rki", rotation, local) + center[:, None, :]
    return corners.astype(np.float32)


def _check_image_size(width, height) -> None:
    if not (width > 0 and height > 0):
        raise ValueError(f"image size {width}x{height} is empty: width and height must be positive")


def clip_boxes_xyxy(boxes_px, width: int, height: int) -> np.ndarray:
    """Pixel boxes (R, 4) as (x1, y1, x2, y2) clipped to a width x height image, as float32.

    Coordinates are continuous pixel edges, so the image spans [0, width] x [0, height].
    """
    _check_image_size(width, height)
    boxes = _as_batch("boxes_px", boxes_px, (4,))
    upper = np.array([width, height, width, height], dtype=np.float64)
    return np.clip(boxes, 0.0, upper).astype(np.float32)


def normalize_boxes_xyxy(boxes_px, width: int, height: int) -> np.ndarray:
    """Pixel boxes (R, 4) xyxy clipped to the image and divided by its size: float32 in [0, 1]."""
    clipped = clip_boxes_xyxy(boxes_px, width, height).astype(np.float64)
    return (clipped / np.array([width, height, width, height], dtype=np.float64)).astype(np.float32)


def image_box_problems(boxes_px, width: int, height: int, min_size_px: float = 0.0) -> dict[int, str]:
    """Boxes the model cannot describe in a width x height image, as {row: reason}; empty when all are usable.

    A box is unusable when a coordinate is not finite (callers mark a box they could not read with NaN), when
    x2 < x1 or y2 < y1, when it has zero width or height once clipped to the image (it lies outside the image, or
    is a line or a point), or when its clipped width or height is below min_size_px.
    """
    boxes = _as_batch("boxes_px", boxes_px, (4,))
    clipped = clip_boxes_xyxy(boxes, width, height)
    problems: dict[int, str] = {}
    for row, (box, (cx1, cy1, cx2, cy2)) in enumerate(zip(boxes, clipped)):
        x1, y1, x2, y2 = box
        if not np.isfinite(box).all():
            problems[row] = f"box {box.tolist()} has a coordinate that is not finite"
        elif x2 < x1 or y2 < y1:
            problems[row] = (
                f"box {box.tolist()} has negative size ({x2 - x1:g} x {y2 - y1:g}): "
                "give (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2"
            )
        elif cx2 <= cx1 or cy2 <= cy1:
            problems[row] = (
                f"box {box.tolist()} covers {cx2 - cx1:g} x {cy2 - cy1:g} pixels of the {width}x{height} image: "
                "it lies outside the image or has zero width or height"
            )
        elif min(cx2 - cx1, cy2 - cy1) < min_size_px:
            problems[row] = (
                f"box {box.tolist()} covers {cx2 - cx1:g} x {cy2 - cy1:g} pixels inside the image, less than the "
                f"minimum region size {min_size_px:g} px (lower it to describe such boxes)"
            )
    return problems


def corner_problems(corners) -> dict[int, str]:
    """3-D boxes (R, 8, 3) whose corners the model cannot take, as {row: reason}: any corner not finite (callers
    mark a box they could not read with NaN; a size finite in float64 can overflow to inf in float32)."""
    corners = _as_batch("corners", corners, (8, 3))
    with np.errstate(over="ignore"):
        finite = np.isfinite(corners.astype(np.float32)).all(axis=(1, 2))
    return {int(row): "its corners are not all finite (a NaN or inf, or a value beyond float32's range)"
            for row in np.flatnonzero(~finite)}
