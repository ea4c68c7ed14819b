"""PaFE's feature side: what the region queries see besides the whole frame. Both are options beyond the
released code, which adds a box embedding to the region queries only; their measurements are in docs/experiments.md.

Image regions (config.region_feature_mask): the image-region path also adds one learned vector to the
ViT features, weighted by the fraction of each patch cell the box covers (the CLS token: 0). The frozen
Q-Former's keys then carry "inside the box" as one direction that the region queries learn to attend to.
Plain tensor ops, so the ONNX Q-Former graph computes it from the boxes it gets.

Point regions (config.point_region_crop = K): the K scene points nearest the box, measured in box-normalised
distance (so the points inside come first, then a rim around it), centred on the box and scaled by half its
largest extent, are encoded by Point-BERT as the region's own cloud; its tokens are appended to the scene's.
A small object holds one or two of the scene's Point-BERT groups, too few to tell its shape, so marking the scene's
groups inside the box (as for images) does not do.
"""

import torch

from contract.boxes import BOX_AXIS_CORNER_PAIRS, BOX_CORNER_EXTENT_AXES


def patch_box_overlap(boxes: torch.Tensor, grid: int) -> torch.Tensor:
    """(R, 4) normalised xyxy -> (R, 1 + grid * grid): per ViT token (CLS first, then patches row-major), the
    fraction of its patch cell inside the box."""
    edges = torch.arange(grid + 1, dtype=boxes.dtype, device=boxes.device) / grid
    low, high = edges[:-1], edges[1:]
    x1, y1, x2, y2 = (boxes[:, k, None] for k in range(4))  # (R, 1) each
    cover_x = (torch.minimum(x2, high) - torch.maximum(x1, low)).clamp(min=0) * grid  # (R, grid)
    cover_y = (torch.minimum(y2, high) - torch.maximum(y1, low)).clamp(min=0) * grid  # (R, grid)
    patches = (cover_y[:, :, None] * cover_x[:, None, :]).flatten(1)  # (R, grid * grid)
    return torch.cat([torch.zeros_like(patches[:, :1]), patches], dim=1)


def mark_box(features: torch.Tensor, boxes: torch.Tensor, embedding: torch.Tensor, grid: int) -> torch.Tensor:
    """(R, 1 + grid * grid, W) ViT features of each region's frame, plus the box's patch overlap x (W,) embedding."""
    return features + patch_box_overlap(boxes, grid)[..., None] * embedding


def crop_box_points(points: torch.Tensor, corners: torch.Tensor, count: int) -> torch.Tensor:
    """(R, N, 3) each region's scene and (R, 24) its box corners (contract/boxes.py convention) -> (R, count, 3):
    the `count` points nearest the box in box-normalised Chebyshev distance (inside first), centred on the box
    and divided by half its largest extent."""
    corners = corners.reshape(-1, 8, 3)
    centre = corners.mean(dim=1)  # (R, 3)
    first, second = zip(*BOX_AXIS_CORNER_PAIRS)
    edges = corners[:, list(first)] - corners[:, list(second)]  # (R, 3, 3): along the box's x, y, z axes
    length = edges.norm(dim=-1).clamp(min=1e-6)  # (R, 3)
    axes = edges / length[..., None]  # unit axes
    extent = length[:, list(BOX_CORNER_EXTENT_AXES)]  # (R, 3): the box's own x, y, z extents (y/z swapped back)
    offset = points - centre[:, None]  # (R, N, 3)
    local = torch.einsum("rnc,rac->rna", offset, axes) / (extent[:, None] / 2)  # inside: |.| <= 1
    nearest = local.abs().amax(dim=-1).topk(count, dim=1, largest=False).indices  # (R, count)
    crop = torch.gather(offset, 1, nearest[..., None].expand(-1, -1, 3))
    return crop / (extent.amax(dim=-1)[:, None, None] / 2)
