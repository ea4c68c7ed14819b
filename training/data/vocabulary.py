"""The attribute words of the synthetic scenes: how objects are named in captions and read back.

Generators describe objects with `object_phrase` / `scene_caption`; `training.metrics` parses
generated text back with `parse_objects` and compares to the ground-truth attributes. Keeping
both directions here means a caption can never use a word the scorer does not know.
"""

from __future__ import annotations

import re

SIZES = ("small", "large")

# RGB chosen to stay distinct from each other and from the light backgrounds.
COLOURS = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (230, 200, 30),
    "purple": (130, 50, 180),
    "orange": (240, 130, 20),
    "cyan": (30, 185, 200),
}

IMAGE_SHAPES = ("circle", "square", "triangle", "diamond", "cross")
POINT_SHAPES = ("sphere", "cube", "cylinder", "cone", "pyramid")

# Relation of the described object to its nearest neighbour, seen from above (x right, y forward).
RELATIONS = ("left of", "right of", "in front of", "behind")

_SHAPE_WORDS = frozenset(IMAGE_SHAPES + POINT_SHAPES)
_WORD = re.compile(r"[a-z]+")


def object_phrase(shape: str, size: str | None = None, colour: str | None = None) -> str:
    """'a large red circle' (images), 'a large cube' (point regions: no colour), 'a cube' (unit-sphere objects)."""
    return " ".join(["a"] + [w for w in (size, colour) if w] + [shape])


def join_phrases(phrases: list[str]) -> str:
    """['a', 'b', 'c'] -> 'a, b and c'."""
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def parse_objects(text: str) -> list[dict[str, str]]:
    """Objects named in `text`, in order: each shape word closes one object with the size and
    colour words seen since the previous shape. 'a small red circle left of a cube' ->
    [{'size': 'small', 'colour': 'red', 'shape': 'circle'}, {'shape': 'cube'}]."""
    objects, pending = [], {}
    for word in _WORD.findall(text.lower()):
        if word in SIZES:
            pending["size"] = word
        elif word in COLOURS:
            pending["colour"] = word
        elif word in _SHAPE_WORDS:
            objects.append({**pending, "shape": word})
            pending = {}
    return objects
