"""Inputs as the model sees them, in training and at inference alike: images and point clouds.

Images exactly as HF's BLIP-2 image processor (BlipImageProcessor, PIL backend): bicubic resize to a square with
PIL, rescale by 1/255 in float64 then cast to float32, normalise with the OpenAI CLIP mean/std in float32,
channels first. Whole-object point clouds are centred on their mean and scaled into the unit sphere.
"""
import numpy as np
from PIL import Image

CLIP_MEAN = np.array((0.48145466, 0.4578275, 0.40821073), dtype=np.float32)
CLIP_STD = np.array((0.26862954, 0.26130258, 0.27577711), dtype=np.float32)


def resize_bicubic(image: np.ndarray, image_size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (S, S, 3) uint8, PIL bicubic (what HF does for BLIP-2)."""
    return np.asarray(Image.fromarray(image).resize((image_size, image_size), resample=Image.BICUBIC))


def normalize_clip(image: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8 -> (3, S, S) float32 CLIP-normalised."""
    scaled = (image.astype(np.float64) * (1 / 255)).astype(np.float32)
    return np.ascontiguousarray(((scaled - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1))


def pixel_values(image: np.ndarray, image_size: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, S, S) float32 pixel values for the vision encoder."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        found = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {found}")
    return normalize_clip(resize_bicubic(image, image_size))


def normalize_unit_sphere(points: np.ndarray) -> np.ndarray:
    """Centre on the mean and scale so that the farthest point is at distance 1. Computed in float64, so that
    coordinates near float32's limit do not overflow on the way."""
    points = np.asarray(points, dtype=np.float64)
    centred = points - points.mean(axis=0)
    radius = np.linalg.norm(centred, axis=1).max()
    return (centred / radius if radius > 0 else centred).astype(np.float32)
