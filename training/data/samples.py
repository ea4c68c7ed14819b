"""The sample types every reader and generator yields, and the error they raise on bad data.

A sample holds one caption and what it describes, in the units the model consumes after
preprocessing (see contract/preprocessing.py and `point_preprocess`):

- `ImageSample`: an RGB image (H, W, 3) uint8 at its native size and, for a region, its box as
  normalised xyxy in [0, 1]. Whole image -> modality "image"; with a box -> "image_region".
- `PointSample`: a cloud (N, 3) float32 in metres (or unit-sphere units for object datasets) and,
  for a region, the 8 corners (8, 3) of its oriented box (`boxes.box_corners` gives the order).
  Without corners -> "pointcloud"; with corners -> "pointcloud_region".

`attributes` carries ground truth beyond the caption: for synthetic data the size/colour/shape
words that `training.metrics` scores by exact match; for real data where the sample came from
(file, entry id) so that a bad prediction can be traced back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from contract.modalities import IMAGE, IMAGE_REGION, POINTCLOUD, POINTCLOUD_REGION



class DataError(ValueError):
    """Input data is missing, malformed or unusable; the message names the file and entry."""


@dataclass
class ImageSample:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    caption: str
    box_xyxy: np.ndarray | None = None  # (4,) float32, normalised to [0, 1] by width and height
    attributes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image.dtype != np.uint8 or self.image.ndim != 3 or self.image.shape[2] != 3:
            raise DataError(
                f"ImageSample.image must be (H, W, 3) uint8 RGB, got {self.image.shape} {self.image.dtype}: "
                "convert with np.asarray(PIL.Image.open(path).convert('RGB'))"
            )
        if self.box_xyxy is not None:
            self.box_xyxy = np.asarray(self.box_xyxy, dtype=np.float32)
            if self.box_xyxy.shape != (4,):
                raise DataError(f"ImageSample.box_xyxy must have shape (4,), got {self.box_xyxy.shape}")

    @property
    def modality(self) -> str:
        return IMAGE if self.box_xyxy is None else IMAGE_REGION


@dataclass
class PointSample:
    points: np.ndarray  # (N, 3) float32
    caption: str
    corners: np.ndarray | None = None  # (8, 3) float32, order of boxes.box_corners
    attributes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float32)
        if self.points.ndim != 2 or self.points.shape[1] != 3:
            raise DataError(f"PointSample.points must be (N, 3) xyz, got {self.points.shape}: drop extra columns first")
        if self.corners is not None:
            self.corners = np.asarray(self.corners, dtype=np.float32)
            if self.corners.shape != (8, 3):
                raise DataError(f"PointSample.corners must be (8, 3), got {self.corners.shape}")

    @property
    def modality(self) -> str:
        return POINTCLOUD if self.corners is None else POINTCLOUD_REGION
