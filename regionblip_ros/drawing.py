"""Region boxes and their descriptions drawn on a camera frame, for the annotated_image topic."""

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Distinct, saturated colours that read on both light and dark scenes; region i gets COLOURS[i % 6].
COLOURS = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180))
FONT_SIZE_PX = 12


def annotate(image_rgb: np.ndarray, boxes_xyxy: np.ndarray, captions: Sequence[str]) -> np.ndarray:
    """A copy of an (H, W, 3) uint8 RGB image with each box outlined and its caption on a filled band.

    The caption sits above the box, or inside its top edge when the box touches the top of the image.
    """
    if len(boxes_xyxy) != len(captions):
        raise ValueError(f"{len(boxes_xyxy)} boxes but {len(captions)} captions: give one caption per box")
    canvas = Image.fromarray(np.ascontiguousarray(image_rgb, dtype=np.uint8), mode="RGB")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=FONT_SIZE_PX)
    for index, ((x1, y1, x2, y2), caption) in enumerate(zip(np.asarray(boxes_xyxy, dtype=float), captions)):
        colour = COLOURS[index % len(COLOURS)]
        draw.rectangle((x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)), outline=colour, width=2)
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
        text_w, text_h = right - left, bottom + 2
        text_y = y1 - text_h if y1 >= text_h else y1
        draw.rectangle((x1, text_y, x1 + text_w + 3, text_y + text_h), fill=colour)
        draw.text((x1 + 2, text_y), caption, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)
