"""A picture drawn by hand with PIL, not by the synthetic generator, for the README's first run: a 256 x 160 frame (not
the model's square), a dark diagonal gradient (not the light grey of training's clean world), shapes placed by eye off
the patch grid, two of them overlapping.

    python -m tools.hand_drawn draw --out docs/first_run/hand_drawn.png       # writes the picture, prints --box args
    python -m runtime.cli --bundle bundles/default --image docs/first_run/hand_drawn.png $(cat ...boxes) > described.txt
    python -m tools.hand_drawn annotate --image docs/first_run/hand_drawn.png --described described.txt \\
        --out docs/first_run/hand_drawn_annotated.png

The boxes are the shapes' own extents as drawn here (what a perfect detector would give).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from contract.cli import OneLineParser
from regionblip_ros.drawing import annotate

WIDTH, HEIGHT = 256, 160
# (what it is, outline points or ellipse box, RGB), back to front: the circle is drawn over the square's corner
SHAPES = [
    ("a large blue square", ("rectangle", (150, 22, 200, 72)), (40, 80, 215)),
    ("a large yellow circle", ("ellipse", (184, 58, 240, 114)), (230, 200, 30)),
    ("a small red triangle", ("polygon", [(43, 97), (29, 126), (57, 126)]), (215, 40, 40)),
    ("a large green diamond", ("polygon", [(97, 36), (126, 65), (97, 94), (68, 65)]), (40, 160, 60)),
    ("a small orange cross", ("cross", (98, 112, 128, 142)), (240, 130, 20)),
    ("a small purple circle", ("ellipse", (20, 20, 48, 48)), (130, 50, 180)),
]


def _gradient() -> np.ndarray:
    """Dark slate at the top left to a dusky teal at the bottom right."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    t = (xx / WIDTH + yy / HEIGHT)[..., None] / 2
    return (np.array([28, 32, 48]) * (1 - t) + np.array([40, 96, 104]) * t).astype(np.uint8)


def draw_picture() -> tuple[np.ndarray, list[tuple[str, tuple[int, int, int, int]]]]:
    """The picture and, per shape, what it is and its box (x1, y1, x2, y2; x2, y2 exclusive)."""
    canvas = Image.fromarray(_gradient())
    pen = ImageDraw.Draw(canvas)
    boxes = []
    for truth, (kind, where), colour in SHAPES:
        if kind == "rectangle":
            pen.rectangle(where, fill=colour)
        elif kind == "ellipse":
            pen.ellipse(where, fill=colour)
        elif kind == "polygon":
            pen.polygon(where, fill=colour)
        else:  # a cross: two bars a third of its width thick
            x1, y1, x2, y2 = where
            arm = (x2 - x1) // 6
            pen.rectangle((x1, (y1 + y2) // 2 - arm, x2, (y1 + y2) // 2 + arm), fill=colour)
            pen.rectangle(((x1 + x2) // 2 - arm, y1, (x1 + x2) // 2 + arm, y2), fill=colour)
        shape = Image.new("1", (WIDTH, HEIGHT))  # the shape alone, for its extent
        outline = ImageDraw.Draw(shape)
        if kind == "polygon":
            outline.polygon(where, fill=1)
        elif kind == "ellipse":
            outline.ellipse(where, fill=1)
        else:
            outline.rectangle(where, fill=1)
        ys, xs = np.nonzero(np.asarray(shape))
        boxes.append((truth, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)))
    return np.asarray(canvas), boxes


LINE = re.compile(r"^box (\d+) \[([-\d.,e]+)\]: (.*?)(?: \(score [-\d.]+, \d+ ms\))?$")


def parse_described(text: str) -> tuple[list[list[float]], list[str]]:
    """runtime.cli's lines 'box i [x1,y1,x2,y2]: text (score s, t ms)' -> boxes and texts."""
    boxes, texts = [], []
    for line in text.splitlines():
        match = LINE.match(line.strip())
        if match:
            boxes.append([float(v) for v in match.group(2).split(",")])
            texts.append(match.group(3))
    if not boxes:
        raise ValueError("no 'box i [x1,y1,x2,y2]: text' lines in the described file: give runtime.cli's output")
    return boxes, texts


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m tools.hand_drawn", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("draw", "annotate"))
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--image", type=Path, help="annotate: the picture runtime.cli described")
    parser.add_argument("--described", type=Path, help="annotate: runtime.cli's output for it")
    args = parser.parse_args(argv)
    try:
        if args.action == "draw":
            picture, boxes = draw_picture()
            Image.fromarray(picture).save(args.out)
            for truth, box in boxes:
                print(f"--box {','.join(map(str, box))}  # {truth}", file=sys.stderr)
            print(" ".join(f"--box {','.join(map(str, box))}" for _, box in boxes))
            return 0
        if args.image is None or args.described is None:
            raise ValueError("annotate needs --image and --described (runtime.cli's output)")
        boxes, texts = parse_described(args.described.read_text())
        picture = np.asarray(Image.open(args.image).convert("RGB"))
        scale = 3  # drawn larger, so that the captions read
        big = np.asarray(Image.fromarray(picture).resize((WIDTH * scale, HEIGHT * scale), Image.NEAREST))
        Image.fromarray(annotate(big, np.array(boxes) * scale, texts)).save(args.out)
        return 0
    except (ValueError, OSError) as error:
        print(f"tools.hand_drawn: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
