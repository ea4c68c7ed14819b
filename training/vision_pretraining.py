"""Stage kind "vision": pre-training the ViT that BLIP-2 then freezes.

BLIP-2 starts from a pretrained image encoder (EVA-CLIP ViT-g) and never trains it. No pretrained ViT exists for the
synthetic world, so a recipe may make one first: a linear head on every patch token names the object whose box
centre lies in that patch (its shape, or none; its colour and size), one cross-entropy per attribute. The head is a
training tool only. It lives in the stage's checkpoints (heads.safetensors, for resuming) and is dropped after the
stage; what the next stages get is the ViT. What this bought the default model is in docs/experiments.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .data.vocabulary import COLOURS, IMAGE_SHAPES, SIZES

MODALITY = "image_patches"  # the task modality of a vision stage
ATTRIBUTES = {"shape": tuple(IMAGE_SHAPES), "colour": tuple(COLOURS), "size": tuple(SIZES)}
NO_OBJECT = 0  # shape class of a patch that holds no object's centre; shapes are 1..len(IMAGE_SHAPES)
IGNORE = -100  # colour and size of such a patch, and every attribute of a patch that holds two centres
BACKGROUND_WEIGHT = 0.2  # most patches hold no centre: weighted down so that naming the shape is not drowned out


class PatchAttributeHead(nn.Module):
    """Per patch token: shape logits (no object + each shape), colour logits and size logits."""

    def __init__(self, width: int):
        super().__init__()
        self.classes = [len(ATTRIBUTES["shape"]) + 1, len(ATTRIBUTES["colour"]), len(ATTRIBUTES["size"])]
        self.linear = nn.Linear(width, sum(self.classes))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, P, W) patch tokens -> (shape (B, P, S + 1), colour (B, P, C), size (B, P, Z)) logits."""
        return self.linear(tokens).split(self.classes, dim=-1)


def patch_targets(objects: list[list[dict]], image_sizes: list[int | tuple[int, int]], grid: int) -> torch.Tensor:
    """(B, 3, grid * grid) long: shape, colour and size class of the object whose box centre lies in each patch.
    `objects[b]`: image b's objects as the synthetic generator lists them ('shape', 'colour', 'size', 'box_xyxy_px'
    in the pixels of the drawn image, whose side, or (height, width), is `image_sizes[b]`; the ViT sees any frame
    resized to its square, so patches split each axis into `grid` equal parts)."""
    targets = torch.full((len(objects), 3, grid * grid), IGNORE, dtype=torch.long)
    targets[:, 0] = NO_OBJECT
    for b, (image_objects, size) in enumerate(zip(objects, image_sizes)):
        height, width = (size, size) if isinstance(size, int) else size
        seen = set()
        for item in image_objects:
            x1, y1, x2, y2 = item["box_xyxy_px"]
            column = min(int((x1 + x2) / 2 / width * grid), grid - 1)
            row = min(int((y1 + y2) / 2 / height * grid), grid - 1)
            patch = row * grid + column
            if patch in seen:  # two centres in one patch: neither can be the patch's answer
                targets[b, :, patch] = IGNORE
                continue
            seen.add(patch)
            targets[b, :, patch] = torch.tensor([ATTRIBUTES["shape"].index(item["shape"]) + 1,
                                                 ATTRIBUTES["colour"].index(item["colour"]),
                                                 ATTRIBUTES["size"].index(item["size"])])
    return targets


def patch_attribute_loss(vision_model: nn.Module, head: PatchAttributeHead, pixel_values: torch.Tensor,
                         targets: torch.Tensor) -> torch.Tensor:
    """Sum of the three attributes' cross-entropies over the patch tokens (the CLS token is not a patch)."""
    tokens = vision_model(pixel_values=pixel_values).last_hidden_state[:, 1:]  # (B, P, W)
    shape, colour, size = head(tokens)
    weight = torch.ones(shape.shape[-1], device=shape.device)
    weight[NO_OBJECT] = BACKGROUND_WEIGHT
    loss = F.cross_entropy(shape.flatten(0, 1), targets[:, 0].flatten(), weight=weight, ignore_index=IGNORE)
    for logits, target in ((colour, targets[:, 1]), (size, targets[:, 2])):
        if (target != IGNORE).any():  # a batch of empty patches has no colour to name (and a NaN mean)
            loss = loss + F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=IGNORE)
    return loss
