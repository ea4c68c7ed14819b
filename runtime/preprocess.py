"""A caller's arrays as the graphs take them: numpy (+ PIL for the resize), no torch.

Images: contract/preprocessing.py, the same function training uses.
Boxes: the one check between a caller and the graphs (contract/boxes.py); a box that cannot be described is
reported by row and the others go on.
Point clouds: non-finite points dropped, a fixed-seed subset of the trained count (with replacement
when there are fewer), and for whole objects the unit-sphere normalisation of training.
"""
import numpy as np

from contract.boxes import corner_problems, image_box_problems, normalize_boxes_xyxy
from contract.preprocessing import normalize_unit_sphere, pixel_values

SAMPLING_SEED = 0  # the same subset of a large cloud every call: a description does not flicker between calls


def check_image(image) -> np.ndarray:
    """The image as an (H, W, 3) uint8 array, or ValueError saying what it is instead."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image is a {type(image).__name__}: pass an (H, W, 3) uint8 RGB numpy array")
    if image.dtype != np.uint8:
        raise ValueError(f"image has dtype {image.dtype}: pass uint8 RGB (0-255), e.g. image.astype(np.uint8)")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image has shape {image.shape}: pass (H, W, 3) RGB")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty ({image.shape[1]}x{image.shape[0]} pixels)")
    return image


def preprocess_image(image: np.ndarray, image_size: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, S, S) float32 pixel values for the vision encoder."""
    return pixel_values(check_image(image), image_size)


def preprocess_boxes(boxes_xyxy_px, image_shape: tuple[int, ...],
                     min_size_px: float = 0.0) -> tuple[np.ndarray, dict[int, str]]:
    """Pixel boxes (R, 4) xyxy -> ((R, 4) float32 normalised to [0, 1] and clipped to the image, {row: problem}).

    A row with a problem (NaN marks a box the caller could not read) is not to be described; its values are 0.
    A wrong shape raises ValueError: then no row can be told from another.
    """
    boxes = np.asarray(boxes_xyxy_px, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes have shape {boxes.shape}: pass (R, 4) pixel boxes x1, y1, x2, y2")
    height, width = image_shape[:2]
    problems = image_box_problems(boxes, width, height, min_size_px)
    return normalize_boxes_xyxy(np.nan_to_num(boxes, posinf=0.0, neginf=0.0), width, height), problems


def clean_points(points) -> np.ndarray:
    """(N, 3) float32 with the rows that are not finite in float32 dropped; ValueError if the shape is wrong or
    nothing is left."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points have shape {points.shape}: pass an (N, 3) array of x, y, z")
    with np.errstate(over="ignore", invalid="ignore"):
        points = points.astype(np.float32)  # first: a float64 beyond float32's range becomes inf, and is dropped
    finite = points[np.isfinite(points).all(axis=1)]
    if len(finite) == 0:
        raise ValueError(f"point cloud has no finite points (of {len(points)}): nothing to describe")
    return finite


def sample_points(points: np.ndarray, num_points: int) -> np.ndarray:
    """Exactly num_points rows: a fixed-seed subset, or a draw with replacement if there are fewer."""
    rng = np.random.default_rng(SAMPLING_SEED)
    index = rng.choice(len(points), num_points, replace=len(points) < num_points)
    return points[np.sort(index)]


def preprocess_scene(points, num_points: int) -> np.ndarray:
    """A scene for region description: finite points, num_points of them, metres unchanged."""
    return sample_points(clean_points(points), num_points)


def preprocess_object(points, num_points: int) -> np.ndarray:
    """A single object's cloud: finite points, num_points of them, on the unit sphere."""
    return normalize_unit_sphere(sample_points(clean_points(points), num_points))


def check_corners(corners) -> tuple[np.ndarray, dict[int, str]]:
    """3D boxes -> ((R, 8, 3) float32 corners, {row: problem}); a row with a problem is not to be described.

    A wrong shape raises ValueError: then no row can be told from another.
    """
    corners = np.asarray(corners, dtype=np.float64)
    if corners.size == 0:
        return np.zeros((0, 8, 3), np.float32), {}
    if corners.ndim == 2 and corners.shape[1] == 24:
        corners = corners.reshape(-1, 8, 3)
    if corners.ndim != 3 or corners.shape[1:] != (8, 3):
        raise ValueError(f"3D boxes have shape {corners.shape}: pass (R, 8, 3) corners "
                         "(contract.boxes.box_corners builds them from centre, size and rotation)")
    problems = corner_problems(corners)
    with np.errstate(over="ignore", invalid="ignore"):
        corners = corners.astype(np.float32)
    corners[list(problems)] = 0.0
    return corners, problems
