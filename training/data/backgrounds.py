"""Backgrounds of synthetic images, by kind (data.variations.BACKGROUND_KINDS).

The colour rule: no background colour comes closer to an object colour than the two closest object colours are to
each other (MIN_COLOUR_DISTANCE, RGB Euclidean, before pixel noise). A gradient or texture obeys it along the whole
segment between its two colours, since resizing blends them. So a shape is never the colour of the ground it stands
on, while backgrounds still range over black, white, greys, every hue and mixtures.
"""

from __future__ import annotations

import colorsys
from itertools import combinations

import numpy as np

from .vocabulary import COLOURS

_OBJECT_RGB = np.array(list(COLOURS.values()), dtype=np.float64)
MIN_COLOUR_DISTANCE = min(float(np.linalg.norm(a - b)) for a, b in combinations(_OBJECT_RGB, 2))
COLOUR_TRIES = 200
SEGMENT_STEPS = 9  # points checked along a gradient's or texture's colour segment


def colour_distance(rgb) -> float:
    """RGB distance from `rgb` to the nearest object colour."""
    return float(np.linalg.norm(_OBJECT_RGB - np.asarray(rgb, dtype=np.float64), axis=1).min())


def segment_is_clear(a, b) -> bool:
    """Whether every blend of colours a and b keeps MIN_COLOUR_DISTANCE from every object colour."""
    return all(colour_distance(a + t * (b - a)) >= MIN_COLOUR_DISTANCE for t in np.linspace(0, 1, SEGMENT_STEPS))


def _grey(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """A grey of this brightness range, slightly tinted, that obeys the colour rule (every grey here does)."""
    for _ in range(COLOUR_TRIES):
        rgb = rng.uniform(low, high) + rng.uniform(-6, 6, size=3)
        if colour_distance(rgb) >= MIN_COLOUR_DISTANCE:
            return rgb
    raise RuntimeError(f"no grey in {low}..{high} obeys the colour rule")


def _saturated(rng: np.random.Generator) -> np.ndarray:
    """A vivid colour of any hue that obeys the colour rule."""
    for _ in range(COLOUR_TRIES):
        rgb = 255 * np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.35, 1.0)))
        if colour_distance(rgb) >= MIN_COLOUR_DISTANCE:
            return rgb
    raise RuntimeError("no saturated background colour obeys the colour rule: the object colours cover every hue")


def _any_colour(rng: np.random.Generator) -> np.ndarray:
    return _grey(rng, 0, 255) if rng.random() < 0.5 else _saturated(rng)


def _colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two colours whose blends all obey the colour rule (a gradient's ends, a texture's two tones)."""
    for _ in range(COLOUR_TRIES):
        a, b = _any_colour(rng), _any_colour(rng)
        if segment_is_clear(a, b):
            return a, b
    return a, a


def _gradient(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    a, b = _colour_pair(rng)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    ramp = np.cos(angle) * xx / width + np.sin(angle) * yy / height
    ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-9)
    return a + ramp[..., None] * (b - a)


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Stripes, a checkerboard or soft blotches in two tones."""
    a, b = _colour_pair(rng)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    period = rng.uniform(4, 16)
    kind = rng.integers(3)
    if kind == 0:
        angle = rng.uniform(0, np.pi)
        mix = (np.floor((np.cos(angle) * xx + np.sin(angle) * yy) / period) % 2).astype(np.float64)
    elif kind == 1:
        mix = ((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(np.float64)
    else:
        coarse = rng.random((height // 8 + 2, width // 8 + 2))
        mix = np.kron(coarse, np.ones((8, 8)))[:height, :width]
    return a + mix[..., None] * (b - a)


def paint(kind: str, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float64 background of this kind, pixel noise included (clipped and rounded by the caller)."""
    if kind == "light":  # the clean world's, draw for draw
        canvas = np.broadcast_to(rng.uniform(200, 235) + rng.uniform(-8, 8, size=3), (height, width, 3)).copy()
        if rng.random() < 0.5:
            canvas += rng.normal(0.0, 4.0, size=canvas.shape)
        return canvas
    flat = {"white": (240, 256), "black": (0, 25), "dark_grey": (40, 90), "grey": (0, 256)}
    if kind in flat:
        base = np.broadcast_to(_grey(rng, *flat[kind]), (height, width, 3))
    elif kind == "saturated":
        base = np.broadcast_to(_saturated(rng), (height, width, 3))
    elif kind == "gradient":
        base = _gradient(rng, height, width)
    elif kind == "texture":
        base = _texture(rng, height, width)
    else:
        raise ValueError(f"unknown background kind {kind!r}")
    sigma = rng.uniform(0.0, 10.0) if rng.random() < 0.5 else 0.0
    return base + rng.normal(0.0, sigma, size=base.shape) if sigma else base.copy()
