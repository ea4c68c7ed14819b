"""Image preprocessing, exactly as HF's BLIP-2 image processor (BlipImageProcessor, PIL backend):
bicubic resize to a square with PIL, rescale by 1/255 in float64 then cast to float32, normalise
with the OpenAI CLIP mean/std in float32, channels first. Plain numpy + PIL so the runtime can
import and reproduce it bit for bit. No augmentation, as in the released region datasets.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resize_bicubic(image: np.ndarray, image_size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (S, S, 3) uint8, PIL bicubic (what HF does for BLIP-2)."""
    return np.asarray(Image.fromarray(image).resize((image_size, image_size), resample=Image.BICUBIC))


def normalize_clip(image: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8 -> (3, S, S) float32 CLIP-normalised."""
    scaled = (image.astype(np.float64) * (1 / 255)).astype(np.float32)
    normalised = (scaled - np.array(CLIP_MEAN, dtype=np.float32)) / np.array(CLIP_STD, dtype=np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def preprocess_image(image: np.ndarray, image_size: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> pixel values (3, S, S) float32 for the vision model."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    return normalize_clip(resize_bicubic(image, image_size))
