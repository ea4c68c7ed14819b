"""Synthetic image scenes: 1-5 non-overlapping coloured shapes on a light background.

A scene is sampled as a layout (shape, size, colour, position) first and rasterised with numpy
second, so captions can be listed without drawing (`SyntheticImageDataset.captions`). Whole-image
captions name the objects left to right: 'a large red circle and a small blue square'. Region
captions name one object: 'a small green triangle'.

Shape centres sit on a GRID_CELLS x GRID_CELLS grid of cell centres. The default ViT (96 px, patch 12) has the
same 8 x 8 grid, so every object lies the same way across its patches: a ViT trained from scratch recognises
shapes far sooner that way (docs/experiments.md). A pretrained ViT (real BLIP-2) needs no such help; the grid only
makes the synthetic world learnable within the CPU training budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from contract.modalities import IMAGE, IMAGE_REGION

from .samples import ImageSample
from .splits import sample_rng
from .vocabulary import COLOURS, IMAGE_SHAPES, SIZES, join_phrases, object_phrase

# Half-extent of a shape as a fraction of the image side; the ranges do not overlap, so size
# words stay unambiguous.
RADIUS_FRACTION = {"small": (0.065, 0.085), "large": (0.13, 0.16)}
MARGIN_PX = 2
PLACEMENT_TRIES = 100
GRID_CELLS = 8  # centres at (k + 0.5) / GRID_CELLS of the side: the default ViT's patch centres


@dataclass(frozen=True)
class ShapeSpec:
    shape: str
    size: str
    colour: str
    cx: float
    cy: float
    radius: float

    def phrase(self) -> str:
        return object_phrase(self.shape, self.size, self.colour)


def sample_layout(rng: np.random.Generator, image_size: int, max_objects: int = 5) -> list[ShapeSpec]:
    """1..max_objects shapes centred on grid cell centres, whose bounding squares (plus a margin) do not
    intersect. An object that finds no free place after PLACEMENT_TRIES is left out, so crowded scenes hold
    fewer."""
    placed: list[ShapeSpec] = []
    centres = (np.arange(GRID_CELLS) + 0.5) * (image_size / GRID_CELLS)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        size = SIZES[rng.integers(len(SIZES))]
        shape = IMAGE_SHAPES[rng.integers(len(IMAGE_SHAPES))]
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        radius = rng.uniform(*RADIUS_FRACTION[size]) * image_size
        free = centres[(centres >= radius + MARGIN_PX) & (centres <= image_size - radius - MARGIN_PX)]
        for _ in range(PLACEMENT_TRIES):
            cx, cy = free[rng.integers(len(free), size=2)]  # the draws of rng.choice(free, 2), without its overhead
            if all(_apart(cx, cy, radius, other) for other in placed):
                placed.append(ShapeSpec(shape, size, colour, float(cx), float(cy), float(radius)))
                break
    return sorted(placed, key=lambda s: (s.cx, s.cy))  # left to right; top to bottom within a grid column


def _apart(cx: float, cy: float, radius: float, other: ShapeSpec) -> bool:
    gap = radius + other.radius + 2 * MARGIN_PX
    return abs(cx - other.cx) >= gap or abs(cy - other.cy) >= gap


def shape_window(spec: ShapeSpec, image_size: int) -> tuple[slice, slice]:
    """Rows and columns of the pixels whose centres can lie in the shape's bounding square."""
    low = [max(int(np.floor(c - spec.radius - 0.5)), 0) for c in (spec.cy, spec.cx)]
    high = [min(int(np.ceil(c + spec.radius + 0.5)) + 1, image_size) for c in (spec.cy, spec.cx)]
    return slice(low[0], high[0]), slice(low[1], high[1])


def shape_mask(spec: ShapeSpec, image_size: int, window: tuple[slice, slice] | None = None) -> np.ndarray:
    """Bool mask of one shape, all inside its bounding square of half-side `radius`: over the whole (S, S) image, or
    over `window` (rows, columns) of it."""
    rows, columns = window or (slice(0, image_size), slice(0, image_size))
    yy, xx = np.mgrid[rows, columns].astype(np.float64) + 0.5
    dx, dy, r = xx - spec.cx, yy - spec.cy, spec.radius
    if spec.shape == "circle":
        return dx**2 + dy**2 <= r**2
    if spec.shape == "square":
        return (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    if spec.shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    if spec.shape == "triangle":  # apex up, base at the bottom of the square
        return (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    if spec.shape == "cross":
        arm = r / 3
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    raise ValueError(f"unknown image shape {spec.shape!r}: use one of {IMAGE_SHAPES}")


def render(layout: list[ShapeSpec], rng: np.random.Generator, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw the layout: image (S, S, 3) uint8 and the tight pixel boxes (K, 4) xyxy (x2, y2 exclusive)."""
    # Near-grey so that no background can be mistaken for a shape colour.
    background = rng.uniform(200, 235) + rng.uniform(-8, 8, size=3)
    canvas = np.broadcast_to(background, (image_size, image_size, 3)).copy()
    if rng.random() < 0.5:  # light texture
        canvas += rng.normal(0.0, 4.0, size=canvas.shape)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    boxes = np.zeros((len(layout), 4), dtype=np.float32)
    for k, spec in enumerate(layout):
        rows, columns = window = shape_window(spec, image_size)
        mask = shape_mask(spec, image_size, window)  # the shape's own pixels only: 4-10x faster than the image's
        image[rows, columns][mask] = COLOURS[spec.colour]
        ys, xs = np.nonzero(mask)
        boxes[k] = (xs.min() + columns.start, ys.min() + rows.start, xs.max() + 1 + columns.start,
                    ys.max() + 1 + rows.start)
    return image, boxes


def _object_attributes(spec: ShapeSpec, box_px: np.ndarray) -> dict:
    return {"shape": spec.shape, "size": spec.size, "colour": spec.colour, "box_xyxy_px": box_px.tolist()}


class SyntheticImageDataset:
    """Indexable, generated on the fly: item i of a split is the same on every call and machine.

    modality "image": whole scene, attributes {'objects': [per-object attributes, left to right]}.
    modality "image_region": one object of the scene, its normalised box, attributes of that object.
    """

    def __init__(self, modality: str = IMAGE, split: str = "train", length: int = 10_000,
                 image_size: int = 112, max_objects: int = 5):
        if modality not in (IMAGE, IMAGE_REGION):
            raise ValueError(f"SyntheticImageDataset makes 'image' or 'image_region' samples, not {modality!r}")
        self.modality, self.split, self.length = modality, split, length
        self.image_size, self.max_objects = image_size, max_objects

    def __len__(self) -> int:
        return self.length

    def _layout(self, index: int) -> tuple[np.random.Generator, list[ShapeSpec], int | None]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        rng = sample_rng(self.split, self.modality, index)
        layout = sample_layout(rng, self.image_size, self.max_objects)
        region = int(rng.integers(len(layout))) if self.modality == IMAGE_REGION else None
        return rng, layout, region

    def caption(self, index: int) -> str:
        _, layout, region = self._layout(index)
        if region is not None:
            return layout[region].phrase()
        return join_phrases([s.phrase() for s in layout])

    def captions(self) -> Iterator[str]:
        """All captions of the split without drawing any image (the tokenizer's corpus)."""
        return (self.caption(i) for i in range(self.length))

    def __getitem__(self, index: int) -> ImageSample:
        rng, layout, region = self._layout(index)
        image, boxes = render(layout, rng, self.image_size)
        seed = {"split": self.split, "index": index}
        if region is None:
            objects = [_object_attributes(s, b) for s, b in zip(layout, boxes)]
            caption = join_phrases([s.phrase() for s in layout])
            return ImageSample(image, caption, None, {"objects": objects, **seed})
        spec, box = layout[region], boxes[region]
        return ImageSample(image, spec.phrase(), box / self.image_size, {**_object_attributes(spec, box), **seed})
