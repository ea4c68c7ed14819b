"""Synthetic image scenes: 1-5 non-overlapping coloured shapes on a light background.

A scene is sampled as a layout (shape, size, colour, position) first and rasterised with numpy
second, so captions can be listed without drawing (`SyntheticImageDataset.captions`). Whole-image
captions name the objects left to right: 'a large red circle and a small blue square'. Region
captions name one object: 'a small green triangle'.

Shape centres sit on a GRID_CELLS x GRID_CELLS grid of cell centres. The default ViT (96 px, patch 12) has the
same 8 x 8 grid, so every object lies the same way across its patches: a ViT trained from scratch recognises
shapes far sooner that way (docs/experiments.md). A pretrained ViT (real BLIP-2) needs no such help; the grid only
makes the synthetic world learnable within the CPU training budget.

A variation (data.variations) changes what the clean world holds fixed: the background, free placement off the grid,
partial overlap, loose or tight region boxes and frames of other sizes and aspects. "clean", the default, draws
exactly the scenes it always drew.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from contract.modalities import IMAGE, IMAGE_REGION

from .backgrounds import paint
from .samples import ImageSample
from .splits import sample_rng
from .variations import BOX_JITTER, CLEAN, FRAME_ASPECT, FRAME_SCALE, Variation, chance, get_variation
from .vocabulary import COLOURS, IMAGE_SHAPES, SIZES, join_phrases, object_phrase

# Half-extent of a shape as a fraction of the image side; the ranges do not overlap, so size
# words stay unambiguous.
RADIUS_FRACTION = {"small": (0.065, 0.085), "large": (0.13, 0.16)}
MARGIN_PX = 2
PLACEMENT_TRIES = 100
GRID_CELLS = 8  # centres at (k + 0.5) / GRID_CELLS of the side: the default ViT's patch centres
# With overlap allowed, two shapes' bounding squares may intersect by this fraction of the smaller one's half-side
# (at most 30 % of its width), so no shape hides another's centre.
OVERLAP_FRACTION = 0.6


@dataclass(frozen=True)
class ShapeSpec:
    shape: str
    size: str
    colour: str
    cx: float
    cy: float
    radius: float
    depth: int = 0  # drawing order: a shape of higher depth occludes one it overlaps

    def phrase(self) -> str:
        return object_phrase(self.shape, self.size, self.colour)


def sample_layout(rng: np.random.Generator, image_size: int, max_objects: int = 5, *, off_grid: bool = False,
                  overlap: bool = False, frame: tuple[int, int] | None = None) -> list[ShapeSpec]:
    """1..max_objects shapes, centred on grid cell centres (or anywhere with off_grid), whose bounding squares (plus
    a margin) do not intersect (or only by OVERLAP_FRACTION, with overlap). An object that finds no free place after
    PLACEMENT_TRIES is left out, so crowded scenes hold fewer. frame: (height, width) of a frame that is not
    image_size square; radii then scale with its geometric mean side."""
    placed: list[ShapeSpec] = []
    height, width = frame or (image_size, image_size)
    side = float(np.sqrt(height * width)) if frame else image_size
    centres = [(np.arange(GRID_CELLS) + 0.5) * (extent / GRID_CELLS) for extent in (width, height)]
    for _ in range(int(rng.integers(1, max_objects + 1))):
        size = SIZES[rng.integers(len(SIZES))]
        shape = IMAGE_SHAPES[rng.integers(len(IMAGE_SHAPES))]
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        radius = rng.uniform(*RADIUS_FRACTION[size]) * side
        low, high = radius + MARGIN_PX, np.array([width, height]) - radius - MARGIN_PX
        free = [c[(c >= low) & (c <= h)] for c, h in zip(centres, high)]
        for _ in range(PLACEMENT_TRIES):
            if off_grid:
                cx, cy = rng.uniform(low, high)
            elif frame is None:
                cx, cy = free[0][rng.integers(len(free[0]), size=2)]  # the draws of rng.choice(free, 2)
            else:
                cx, cy = (f[rng.integers(len(f))] for f in free)
            if all(_apart(cx, cy, radius, other, overlap) for other in placed):
                placed.append(ShapeSpec(shape, size, colour, float(cx), float(cy), float(radius), len(placed)))
                break
    return sorted(placed, key=lambda s: (s.cx, s.cy))  # left to right; top to bottom within a grid column


def _apart(cx: float, cy: float, radius: float, other: ShapeSpec, overlap: bool = False) -> bool:
    gap = radius + other.radius + 2 * MARGIN_PX
    if overlap:
        gap = radius + other.radius - OVERLAP_FRACTION * min(radius, other.radius)
    return abs(cx - other.cx) >= gap or abs(cy - other.cy) >= gap


def _height_width(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))


def shape_window(spec: ShapeSpec, image_size: int | tuple[int, int]) -> tuple[slice, slice]:
    """Rows and columns of the pixels whose centres can lie in the shape's bounding square (image_size: the side,
    or (height, width))."""
    low = [max(int(np.floor(c - spec.radius - 0.5)), 0) for c in (spec.cy, spec.cx)]
    high = [min(int(np.ceil(c + spec.radius + 0.5)) + 1, extent)
            for c, extent in zip((spec.cy, spec.cx), _height_width(image_size))]
    return slice(low[0], high[0]), slice(low[1], high[1])


def shape_mask(spec: ShapeSpec, image_size: int | tuple[int, int],
               window: tuple[slice, slice] | None = None) -> np.ndarray:
    """Bool mask of one shape, all inside its bounding square of half-side `radius`: over the whole (H, W) image, or
    over `window` (rows, columns) of it."""
    height, width = _height_width(image_size)
    rows, columns = window or (slice(0, height), slice(0, width))
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


def render(layout: list[ShapeSpec], rng: np.random.Generator, image_size: int | tuple[int, int],
           background: str = "light") -> tuple[np.ndarray, np.ndarray]:
    """Draw the layout on a background of this kind (data.backgrounds, whose colour rule keeps it apart from every
    shape colour): image (H, W, 3) uint8 and the shapes' full pixel boxes (K, 4) xyxy (x2, y2 exclusive)."""
    height, width = _height_width(image_size)
    image = np.clip(np.rint(paint(background, rng, height, width)), 0, 255).astype(np.uint8)
    boxes = np.zeros((len(layout), 4), dtype=np.float32)
    for k in sorted(range(len(layout)), key=lambda k: layout[k].depth):  # back to front
        spec = layout[k]
        rows, columns = window = shape_window(spec, (height, width))
        mask = shape_mask(spec, (height, width), window)  # the shape's own pixels only: 4-10x faster than the image's
        image[rows, columns][mask] = COLOURS[spec.colour]
        ys, xs = np.nonzero(mask)
        boxes[k] = (xs.min() + columns.start, ys.min() + rows.start, xs.max() + 1 + columns.start,
                    ys.max() + 1 + rows.start)
    return image, boxes


def jitter_box(box: np.ndarray, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A detector's box for this tight one: each side moved in or out by up to BOX_JITTER of the box's width or
    height, clipped to the frame."""
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * BOX_JITTER, (y2 - y1) * BOX_JITTER
    moved = box + rng.uniform(-1, 1, size=4) * np.array([dx, dy, dx, dy]) * np.array([-1, -1, 1, 1])
    return np.clip(moved, 0, [width, height, width, height]).astype(np.float32)


def sample_frame(rng: np.random.Generator, image_size: int) -> tuple[int, int]:
    """(height, width) of a frame of another size and aspect (data.variations.FRAME_SCALE, FRAME_ASPECT)."""
    side = image_size * rng.uniform(*FRAME_SCALE)
    aspect = np.exp(rng.uniform(*np.log(FRAME_ASPECT)))
    return int(round(side / np.sqrt(aspect))), int(round(side * np.sqrt(aspect)))


def _object_attributes(spec: ShapeSpec, box_px: np.ndarray) -> dict:
    return {"shape": spec.shape, "size": spec.size, "colour": spec.colour, "box_xyxy_px": box_px.tolist()}


class SyntheticImageDataset:
    """Indexable, generated on the fly: item i of a split is the same on every call and machine.

    modality "image": whole scene, attributes {'objects': [per-object attributes, left to right]}.
    modality "image_region": one object of the scene, its normalised box, attributes of that object.
    """

    def __init__(self, modality: str = IMAGE, split: str = "train", length: int = 10_000,
                 image_size: int = 112, max_objects: int = 5, variation: str | Variation = "clean"):
        if modality not in (IMAGE, IMAGE_REGION):
            raise ValueError(f"SyntheticImageDataset makes 'image' or 'image_region' samples, not {modality!r}")
        self.modality, self.split, self.length = modality, split, length
        self.image_size, self.max_objects = image_size, max_objects
        self.variation = get_variation(variation) if isinstance(variation, str) else variation

    def __len__(self) -> int:
        return self.length

    def _layout(self, index: int) -> tuple[np.random.Generator, list[ShapeSpec], int | None, dict]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        rng = sample_rng(self.split, self.modality, index)
        scene = self._scene(rng)
        layout = sample_layout(rng, self.image_size, self.max_objects, off_grid=scene["off_grid"],
                               overlap=scene["overlap"], frame=scene["frame"])
        region = int(rng.integers(len(layout))) if self.modality == IMAGE_REGION else None
        return rng, layout, region, scene

    def _scene(self, rng: np.random.Generator) -> dict:
        """What this scene's variation draws: background kind, placement and frame (nothing for the clean world)."""
        v = self.variation
        if v == CLEAN:
            return {"background": "light", "off_grid": False, "overlap": False, "frame": None}
        backgrounds = v.backgrounds
        off_grid = chance(rng, v.off_grid)
        return {"background": backgrounds[int(rng.integers(len(backgrounds)))] if len(backgrounds) > 1
                else backgrounds[0],
                "off_grid": off_grid, "overlap": off_grid and chance(rng, v.overlap),
                "frame": sample_frame(rng, self.image_size) if chance(rng, v.frame) else None}

    def caption(self, index: int) -> str:
        _, layout, region, _ = self._layout(index)
        if region is not None:
            return layout[region].phrase()
        return join_phrases([s.phrase() for s in layout])

    def captions(self) -> Iterator[str]:
        """All captions of the split without drawing any image (the tokenizer's corpus)."""
        return (self.caption(i) for i in range(self.length))

    def __getitem__(self, index: int) -> ImageSample:
        rng, layout, region, scene = self._layout(index)
        height, width = scene["frame"] or (self.image_size, self.image_size)
        image, boxes = render(layout, rng, (height, width), scene["background"])
        seed = {"split": self.split, "index": index}
        if self.variation != CLEAN:
            seed["background"] = scene["background"]
        if region is None:
            objects = [_object_attributes(s, b) for s, b in zip(layout, boxes)]
            caption = join_phrases([s.phrase() for s in layout])
            return ImageSample(image, caption, None, {"objects": objects, **seed})
        spec, box = layout[region], boxes[region]
        attributes = {**_object_attributes(spec, box), **seed}
        if chance(rng, self.variation.box_jitter):
            box = jitter_box(box, rng, height, width)
            attributes["given_box_xyxy_px"] = box.tolist()
        return ImageSample(image, spec.phrase(), box / np.array([width, height, width, height], dtype=np.float32),
                           attributes)
