"""The BLIP-2 vision model at another image size, its position embeddings interpolated once into the weights.

transformers' Blip2VisionEmbeddings.interpolate_pos_encoding resizes the patch-grid position embeddings on every
call with interpolate_pos_encoding=True (bicubic, align_corners=False, the class token's own embedding kept).
Doing the same arithmetic once gives a model whose plain forward at the new size equals that call, and whose
exported graph holds the resized table instead of a Resize (the release evaluates at 364 px with 224 px weights).
"""
import copy

import torch
from torch import nn
from transformers import Blip2VisionModel

from training.modeling_regionblip import RegionBLIP


def check_image_size(image_size: int, patch_size: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise ValueError(f"image size must be a whole number of pixels, got {image_size!r}")
    if image_size < patch_size:
        raise ValueError(f"image size {image_size!r} is smaller than the vision model's patch size {patch_size}: "
                         f"choose a whole multiple of {patch_size}, at least {patch_size}")
    if image_size % patch_size:
        lower = image_size // patch_size * patch_size
        raise ValueError(f"image size {image_size} is not a multiple of the vision model's patch size {patch_size}: "
                         f"choose one that is, such as {lower} or {lower + patch_size}")


def interpolate_position_embedding(position_embedding: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, 1 + P, D) class + patch position embeddings -> (1, 1 + grid², D), as interpolate_pos_encoding does."""
    class_pos_embed, patch_pos_embed = position_embedding[:, :1], position_embedding[:, 1:]  # (1, 1, D), (1, P, D)
    dim = position_embedding.shape[-1]
    side = int(patch_pos_embed.shape[1] ** 0.5)  # transformers' torch_int(num_positions**0.5)
    patch_pos_embed = patch_pos_embed.reshape(1, side, side, dim).permute(0, 3, 1, 2)  # (1, D, side, side)
    patch_pos_embed = nn.functional.interpolate(patch_pos_embed, size=(grid, grid), mode="bicubic",
                                                align_corners=False)  # (1, D, grid, grid)
    return torch.cat([class_pos_embed, patch_pos_embed.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)


def _resize_in_place(vision_model: Blip2VisionModel, image_size: int) -> Blip2VisionModel:
    embeddings = vision_model.embeddings
    check_image_size(image_size, embeddings.patch_size)
    old = embeddings.position_embedding
    with torch.no_grad():
        # At the trained size transformers returns the table as it is: no bicubic round trip.
        table = (old.detach().clone() if image_size == embeddings.image_size
                 else interpolate_position_embedding(old, image_size // embeddings.patch_size))
    embeddings.position_embedding = nn.Parameter(table, requires_grad=old.requires_grad)
    embeddings.image_size = vision_model.config.image_size = image_size  # the config object the layers share
    embeddings.num_patches = (image_size // embeddings.patch_size) ** 2
    embeddings.num_positions = embeddings.num_patches + 1
    return vision_model


def resize_vision_model(vision_model: Blip2VisionModel, image_size: int) -> Blip2VisionModel:
    """A copy of `vision_model` that takes `image_size` px images: its plain forward equals the original's forward
    with interpolate_pos_encoding=True at that size. The caller's model is left as it was; the copy has its own
    weights and config. ValueError for a size that is not a whole multiple of the patch size."""
    check_image_size(image_size, vision_model.embeddings.patch_size)  # before copying a ViT-g for nothing
    return _resize_in_place(copy.deepcopy(vision_model), image_size)


def set_image_size(model: RegionBLIP, image_size: int) -> None:
    """In place: RegionBLIP's vision model resized as resize_vision_model does (without a second copy of the ViT),
    and its config's vision image_size set, so that config.image_size, config.patch_grid, the input checks and
    the graphs built from the model all follow."""
    _resize_in_place(model.vision_model, image_size)
    model.config.vision["image_size"] = image_size
