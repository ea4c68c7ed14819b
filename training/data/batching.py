"""Batches for the model: a list of samples of one modality -> the tensors the model consumes.

image / image_region:           pixel_values (B, 3, S, S) float32 CLIP-normalised, boxes (B, 4) normalised xyxy
pointcloud / pointcloud_region: points (B, N, 3) float32, corners (B, 8, 3) float32
Every batch also carries 'modality' and 'captions' (the raw caption strings; the trainer tokenizes).
"""

from __future__ import annotations

import numpy as np
import torch

from contract.modalities import IMAGE_REGION, POINTCLOUD_REGION
from contract.preprocessing import pixel_values

from .samples import ImageSample, PointSample


def _single_modality(samples) -> str:
    modalities = {s.modality for s in samples}
    if len(modalities) != 1:
        raise ValueError(f"a batch holds one modality, got {sorted(modalities)}: batch each modality separately")
    return modalities.pop()


def collate_images(samples: list[ImageSample], image_size: int) -> dict:
    """Batch of one image modality -> {'pixel_values': (B, 3, S, S), 'boxes': (B, 4) or absent, 'captions'}."""
    batch = {"modality": _single_modality(samples), "captions": [s.caption for s in samples],
             "pixel_values": torch.from_numpy(np.stack([pixel_values(s.image, image_size) for s in samples]))}
    if batch["modality"] == IMAGE_REGION:
        batch["boxes"] = torch.from_numpy(np.stack([s.box_xyxy for s in samples]))
    return batch


def collate_points(samples: list[PointSample]) -> dict:
    """Batch of one point modality -> {'points': (B, N, 3), 'corners': (B, 8, 3) or absent, 'captions'}."""
    modality = _single_modality(samples)
    sizes = {len(s.points) for s in samples}
    if len(sizes) != 1:
        raise ValueError(f"point counts differ within the batch {sorted(sizes)}: resample with sample_points first")
    batch = {"modality": modality, "captions": [s.caption for s in samples],
             "points": torch.from_numpy(np.stack([s.points for s in samples]))}
    if batch["modality"] == POINTCLOUD_REGION:
        batch["corners"] = torch.from_numpy(np.stack([s.corners for s in samples]))
    return batch
