"""Camera geometry for camera–LiDAR fusion: a pinhole camera, the LiDAR→camera transform, and 3-D boxes
projected to 2-D pixel boxes. Numpy only: no node or graph needed.

Conventions:
- The camera frame is the optical frame of ROS (REP 103): z forward along the optical axis, x right, y down.
- Intrinsics are a CameraInfo's K (3x3) or P (3x4), row-major, with pixel centres at integer coordinates, as
  ROS and OpenCV write them. Boxes come out in this project's pixel convention (contract/boxes.py): continuous
  pixel edges, the image spans [0, W] x [0, H], so a projected coordinate is shifted by half a pixel.
- Distortion is ignored: the pinhole K (or P) is used as it is. Give rectified images (image_proc's
  image_rect with its P), or accept that boxes are off by the lens distortion, which grows towards the
  image corners.
- The LiDAR→camera transform maps a point in the LiDAR frame into the camera optical frame:
  p_camera = R p_lidar + t. As 7 values (x, y, z, qx, qy, qz, qw) it is t and R's quaternion: the LiDAR frame's
  origin and orientation expressed in the camera optical frame, which is what tf2's
  lookup_transform(camera_frame, lidar_frame, stamp) returns.

A box is projected through its 8 true vertices (box_vertices), not the model's corner convention (contract/boxes.py
swaps the y and z extents, as the released RegionBLIP does): the part of the box in front of the near plane is
cut out by intersecting its 12 edges with that plane, and the projection of what is left is bounded by a 2-D box.
"""

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from contract.boxes import BOX_CORNER_SIGNS, clip_boxes_xyxy, image_box_problems, quaternion_to_matrix

# Points nearer than this to the camera (along its optical axis) are cut off: a lens sees nothing that close,
# and a box reaching behind the camera would otherwise project to infinity.
NEAR_M = 0.1

# Vertex pairs of a box's 12 edges: the rows of BOX_CORNER_SIGNS that differ in exactly one sign.
BOX_EDGES = tuple((a, b) for a, b in combinations(range(len(BOX_CORNER_SIGNS)), 2)
                  if np.count_nonzero(BOX_CORNER_SIGNS[a] != BOX_CORNER_SIGNS[b]) == 1)
_PIXEL_EDGE_OFFSET = 0.5  # a ROS/OpenCV pixel coordinate (centres at integers) + 0.5 = this project's (edges)


@dataclass(frozen=True)
class PinholeCamera:
    """matrix (3, 4) projects camera-frame points: (u w, v w, w) = matrix @ (x, y, z, 1), u, v in ROS pixels."""

    matrix: np.ndarray
    width: int
    height: int


def pinhole_camera(matrix, width, height) -> PinholeCamera:
    """A camera from K (9 values or 3x3) or P (12 values or 3x4) and the image size; ValueError if unusable."""
    values = np.asarray(matrix, dtype=np.float64).ravel()
    if values.size not in (9, 12):
        raise ValueError(f"camera matrix has {values.size} values: give K as 9 (3x3, row-major) or P as 12 "
                         "(3x4), as sensor_msgs/CameraInfo has them")
    if not np.isfinite(values).all():
        raise ValueError(f"camera matrix {values.tolist()} holds a NaN or inf: publish a calibrated CameraInfo")
    projection = values.reshape(3, -1)
    if projection.shape[1] == 3:
        projection = np.hstack([projection, np.zeros((3, 1))])
    fx, fy = projection[0, 0], projection[1, 1]
    if not (fx > 0 and fy > 0):
        raise ValueError(f"camera matrix has fx = {fx:g}, fy = {fy:g}: both must be positive (a K of zeros means "
                         "the camera is uncalibrated: calibrate it, e.g. with camera_calibration)")
    if not np.array_equal(projection[2], [0.0, 0.0, 1.0, 0.0]):
        raise ValueError(f"camera matrix's last row is {projection[2].tolist()}: a pinhole camera's is 0 0 1 "
                         "(and 0 in P), as CameraInfo defines K and P")
    if not (float(width).is_integer() and float(height).is_integer() and width > 0 and height > 0):
        raise ValueError(f"camera image size is {width}x{height}: width and height must be positive whole pixels")
    return PinholeCamera(projection, int(width), int(height))


def rigid_transform(values) -> np.ndarray:
    """The (4, 4) matrix of a transform given as x, y, z, qx, qy, qz, qw; ValueError if unusable.

    The quaternion need not be unit length (it is normalised) but must not be zero.
    """
    try:
        values = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"a transform is 7 numbers, x y z qx qy qz qw, not {values!r}") from None
    if values.size != 7:
        raise ValueError(f"a transform has 7 values, x y z qx qy qz qw, not {values.size}: e.g. "
                         "[0, 0, 0, 0, 0, 0, 1] for none")
    if not np.isfinite(values).all():
        raise ValueError(f"transform {values.tolist()} holds a NaN or inf")
    quaternion = values[3:]
    largest = np.abs(quaternion).max()
    if largest == 0:
        raise ValueError(f"transform {values.tolist()} has a zero quaternion: give a unit quaternion, "
                         "qw = 1 for no rotation")
    matrix = np.eye(4)
    matrix[:3, :3] = quaternion_to_matrix((quaternion / largest)[None])[0]  # scaled first: no overflow
    matrix[:3, 3] = values[:3]
    return matrix


def box_vertices(centers, rotations, sizes) -> np.ndarray:
    """The 8 true vertices (R, 8, 3) of oriented boxes, in BOX_CORNER_SIGNS order: centre + rotation @ (signs *
    size / 2), each size component along its own axis (unlike the model's corners, contract.boxes.box_corners)."""
    centers, rotations, sizes = (np.asarray(a, dtype=np.float64) for a in (centers, rotations, sizes))
    local = BOX_CORNER_SIGNS[None] * sizes[:, None, :] / 2.0  # (R, 8, 3)
    return np.einsum("rij,rkj->rki", rotations, local) + centers[:, None, :]


def _cut_at_near_plane(points: np.ndarray, near_m: float) -> np.ndarray:
    """The vertices of a box (8, 3, camera frame) cut by the plane z = near_m: those in front of it and the
    points where its edges cross it."""
    front = points[:, 2] > near_m
    crossings = []
    for a, b in BOX_EDGES:
        if front[a] != front[b]:
            t = (near_m - points[a, 2]) / (points[b, 2] - points[a, 2])
            crossings.append(points[a] + t * (points[b] - points[a]))
    return np.concatenate([points[front], np.reshape(crossings, (-1, 3))])


def project_points(camera: PinholeCamera, points) -> np.ndarray:
    """Pixel coordinates (N, 2) of camera-frame points (N, 3) in front of the camera, in this project's
    convention (pixel edges: the image spans [0, W] x [0, H])."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    homogeneous = np.hstack([points, np.ones((len(points), 1))]) @ camera.matrix.T  # (N, 3)
    return homogeneous[:, :2] / homogeneous[:, 2:] + _PIXEL_EDGE_OFFSET


def back_project(camera: PinholeCamera, pixels, depths) -> np.ndarray:
    """Camera-frame points (N, 3) at `depths` (N,) along the optical axis that project to `pixels` (N, 2, this
    project's convention): project_points' inverse."""
    pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 2) - _PIXEL_EDGE_OFFSET
    depths = np.asarray(depths, dtype=np.float64).reshape(-1, 1)
    scaled = np.hstack([pixels * depths, depths]) - camera.matrix[:, 3]  # (u z, v z, z) minus P's offset column
    return np.linalg.solve(camera.matrix[:, :3], scaled.T).T


def project_boxes(camera: PinholeCamera, lidar_to_camera: np.ndarray, vertices, *, min_region_px: float = 0.0,
                  near_m: float = NEAR_M) -> tuple[np.ndarray, dict[int, str]]:
    """Pixel boxes (R, 4) float32 xyxy, clipped to the image, of boxes given by their vertices (R, 8, 3) in the
    LiDAR frame, and {row: reason} for the boxes with no usable projection, whose rows are NaN: vertices not
    finite, the box wholly behind the near plane, its projection outside the image or, once clipped to the
    image, narrower or lower than min_region_px.
    """
    vertices = np.asarray(vertices, dtype=np.float64).reshape(-1, 8, 3)
    in_camera = vertices @ lidar_to_camera[:3, :3].T + lidar_to_camera[:3, 3]
    boxes = np.full((len(vertices), 4), np.nan, np.float32)
    problems: dict[int, str] = {}
    for row, points in enumerate(in_camera):
        if not np.isfinite(points).all():
            problems[row] = "its vertices are not all finite"
            continue
        if not (points[:, 2] > near_m).any():
            problems[row] = (f"it is behind the camera: no part of it is more than {near_m:g} m in front "
                             f"(its nearest vertex is at z = {points[:, 2].max():.2f} m in the camera frame)")
            continue
        pixels = project_points(camera, _cut_at_near_plane(points, near_m))
        box = np.concatenate([pixels.min(axis=0), pixels.max(axis=0)])[None]
        refused = image_box_problems(box, camera.width, camera.height, min_region_px)
        if refused:
            problems[row] = f"its projection {refused[0]}"
            continue
        boxes[row] = clip_boxes_xyxy(box, camera.width, camera.height)[0]
    return boxes, problems
