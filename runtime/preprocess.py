"""Inputs as the model was trained on them: numpy (+ PIL for the resize), no torch.

Images: bicubic resize to the model's square size with PIL, x/255, CLIP mean/std, channels first:
exactly HF's BLIP-2 image processor and training/data/image_preprocess.py (a test holds them equal).
Boxes: pixel xyxy clipped to the image, then normalised to [0, 1].
Point clouds: non-finite points dropped, a fixed-seed subset of the trained count (with replacement
when there are fewer), and for whole objects the unit-sphere normalisation of training.
"""
import numpy as np
from PIL import Image

from runtime.geometry import degenerate_boxes_xyxy, normalize_boxes_xyxy

CLIP_MEAN = np.array((0.48145466, 0.4578275, 0.40821073), dtype=np.float32)
CLIP_STD = np.array((0.26862954, 0.26130258, 0.27577711), dtype=np.float32)
SAMPLING_SEED = 0


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
    image = check_image(image)
    resized = np.asarray(Image.fromarray(image).resize((image_size, image_size), resample=Image.BICUBIC))
    scaled = (resized.astype(np.float64) * (1 / 255)).astype(np.float32)
    return np.ascontiguousarray(((scaled - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1))


def preprocess_boxes(boxes_xyxy_px, image_shape: tuple[int, ...]) -> np.ndarray:
    """Pixel boxes (R, 4) xyxy -> (R, 4) float32 normalised to [0, 1], clipped to the image.

    Boxes that cover no pixel of the image raise ValueError naming each one and why.
    """
    boxes = np.asarray(boxes_xyxy_px, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes have shape {boxes.shape}: pass (R, 4) pixel boxes x1, y1, x2, y2")
    height, width = image_shape[:2]
    problems = degenerate_boxes_xyxy(boxes, width, height)
    if problems:
        raise ValueError("; ".join(f"box {row}: {reason}" for row, reason in sorted(problems.items())))
    return normalize_boxes_xyxy(boxes, width, height)


def clean_points(points) -> np.ndarray:
    """(N, 3) float32 with non-finite rows dropped; ValueError if the shape is wrong or nothing is left."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points have shape {points.shape}: pass an (N, 3) array of x, y, z")
    finite = points[np.isfinite(points).all(axis=1)].astype(np.float32)
    if len(finite) == 0:
        raise ValueError(f"point cloud has no finite points (of {len(points)}): nothing to describe")
    return finite


def sample_points(points: np.ndarray, num_points: int) -> np.ndarray:
    """Exactly num_points rows: a fixed-seed subset, or a draw with replacement if there are fewer."""
    rng = np.random.default_rng(SAMPLING_SEED)
    index = rng.choice(len(points), num_points, replace=len(points) < num_points)
    return points[np.sort(index)]


def normalize_unit_sphere(points: np.ndarray) -> np.ndarray:
    """Centre on the mean and scale so that the farthest point is at distance 1 (as in training)."""
    centred = points - points.mean(axis=0)
    radius = np.linalg.norm(centred, axis=1).max()
    return (centred / radius if radius > 0 else centred).astype(np.float32)


def preprocess_scene(points, num_points: int) -> np.ndarray:
    """A scene for region description: finite points, num_points of them, metres unchanged."""
    return sample_points(clean_points(points), num_points)


def preprocess_object(points, num_points: int) -> np.ndarray:
    """A single object's cloud: finite points, num_points of them, on the unit sphere."""
    return normalize_unit_sphere(sample_points(clean_points(points), num_points))


def check_corners(corners) -> np.ndarray:
    """3D boxes as (R, 8, 3) float32 corners; ValueError naming the problem otherwise."""
    corners = np.asarray(corners, dtype=np.float32)
    if corners.size == 0:
        return np.zeros((0, 8, 3), np.float32)
    if corners.ndim == 2 and corners.shape[1] == 24:
        corners = corners.reshape(-1, 8, 3)
    if corners.ndim != 3 or corners.shape[1:] != (8, 3):
        raise ValueError(f"3D boxes have shape {corners.shape}: pass (R, 8, 3) corners "
                         "(runtime.geometry.box_corners builds them from centre, size and rotation)")
    bad = np.flatnonzero(~np.isfinite(corners).all(axis=(1, 2)))
    if bad.size:
        raise ValueError(f"3D boxes {bad.tolist()} have NaN or inf corners")
    return corners
