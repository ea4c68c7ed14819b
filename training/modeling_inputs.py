"""Checks of the model's input contract: each raises ValueError saying what was wrong and what is expected."""

import torch

from contract.modalities import BOX_DIMS, MODALITIES, POINTCLOUD_REGION, REGION_MODALITIES

from .config import RegionBLIPConfig


def check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}: expected one of {list(MODALITIES)}")


def check_pixel_values(pixel_values: torch.Tensor | None, config: RegionBLIPConfig) -> None:
    size = config.image_size
    if pixel_values is None:
        raise ValueError(f"image modalities need pixel_values (B, 3, {size}, {size})")
    if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (3, size, size):
        raise ValueError(
            f"pixel_values must be (B, 3, {size}, {size}), got {tuple(pixel_values.shape)}: resize to "
            f"config.image_size={size} and normalize with the CLIP mean/std"
        )
    if not pixel_values.is_floating_point():
        raise ValueError(f"pixel_values must be float (CLIP-normalized), got {pixel_values.dtype}")


def check_points(points: torch.Tensor | None, config: RegionBLIPConfig) -> None:
    needed = max(config.point_num_group, config.point_group_size)
    if points is None:
        raise ValueError("point modalities need points (B, N, 3)")
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be (B, N, 3) xyz, got {tuple(points.shape)}")
    if points.shape[1] < needed:
        raise ValueError(f"points has {points.shape[1]} points per cloud, need at least {needed} "
                         f"(point_num_group={config.point_num_group}, point_group_size={config.point_group_size})")
    if not points.is_floating_point() or not torch.isfinite(points).all():
        raise ValueError("points must be finite floats")


def check_boxes(modality: str, boxes: torch.Tensor | None) -> torch.Tensor | None:
    """Validate region boxes; returns them as (R, 4) normalized xyxy or (R, 24) flattened 3D corners."""
    if modality not in REGION_MODALITIES:
        if boxes is not None:
            raise ValueError(f"boxes were given for modality {modality!r}, which has no regions: "
                             f"use {modality}_region")
        return None
    if boxes is None:
        raise ValueError(f"modality {modality!r} needs boxes")
    if not boxes.is_floating_point() or not torch.isfinite(boxes).all():
        raise ValueError(f"boxes must be finite floats, got {boxes.dtype}")
    if modality == POINTCLOUD_REGION:
        if boxes.ndim == 3 and tuple(boxes.shape[1:]) == (8, 3):
            boxes = boxes.flatten(1)
        if boxes.ndim != 2 or boxes.shape[1] != BOX_DIMS[modality]:
            raise ValueError(f"3D boxes must be (R, 8, 3) corners or (R, 24), got {tuple(boxes.shape)}")
        return boxes
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"image boxes must be (R, 4) normalized xyxy, got {tuple(boxes.shape)}")
    if (boxes < 0).any() or (boxes > 1).any():
        raise ValueError("image boxes must be normalized to [0, 1]: divide x by the image width and y by its height")
    if (boxes[:, 2] <= boxes[:, 0]).any() or (boxes[:, 3] <= boxes[:, 1]).any():
        raise ValueError("image boxes must be xyxy with x2 > x1 and y2 > y1 (xywh boxes need x2 = x + w, y2 = y + h)")
    return boxes


def check_frame_index(frame_index: torch.Tensor | None, num_frames: int, num_regions: int) -> torch.Tensor | None:
    """Which frame each region belongs to; None means frames and regions pair up (or one frame for all regions)."""
    if frame_index is None:
        if num_frames not in (1, num_regions):
            raise ValueError(f"{num_frames} frames and {num_regions} regions: pass frame_index (R,) to say which "
                             "frame each region belongs to")
        return None
    if frame_index.shape != (num_regions,) or frame_index.dtype != torch.long:
        raise ValueError(f"frame_index must be a long tensor of shape ({num_regions},), got "
                         f"{frame_index.dtype} {tuple(frame_index.shape)}")
    if (frame_index < 0).any() or (frame_index >= num_frames).any():
        raise ValueError(f"frame_index values must be in [0, {num_frames})")
    return frame_index


def check_captions(input_ids: torch.Tensor, attention_mask: torch.Tensor, num_prompts: int) -> None:
    if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
        raise ValueError(f"input_ids and attention_mask must both be (B, T), got {tuple(input_ids.shape)} and "
                         f"{tuple(attention_mask.shape)}")
    if input_ids.shape[0] != num_prompts:
        raise ValueError(f"{input_ids.shape[0]} captions for {num_prompts} images/regions: give one caption each")

