"""Loss curves from metrics.jsonl as a PNG, drawn with PIL (no plotting dependency): one smoothed line per task,
log-scaled loss over optimizer steps, and a thin one per term of a task whose loss sums several (LM, box, ITC, ITG)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34)]
LOSS_PARTS = ("lm_loss", "box_loss", "itc_loss", "itg_loss")  # as training.trainer logs them
SIZE, MARGIN = (800, 480), (70, 30, 20, 50)  # left, top, right, bottom


def read_losses(metrics_path: Path) -> dict[str, list[tuple[int, float]]]:
    """Curves named `stage/task` (the total) and `stage/task part` (each term, where the total has several)."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for line in metrics_path.read_text().splitlines():
        record = json.loads(line)
        if "loss" in record and "task" in record:
            name = f"{record['stage']}/{record['task']}"
            curves.setdefault(name, []).append((record["step"], record["loss"]))
            parts = {part: record[part] for part in LOSS_PARTS if record.get(part) is not None}
            for part, value in parts.items() if len(parts) > 1 else ():
                curves.setdefault(f"{name} {part.removesuffix('_loss')}", []).append((record["step"], value))
    return curves


def _smooth(values: list[float], factor: float = 0.9) -> list[float]:
    out, running = [], values[0]
    for v in values:
        running = factor * running + (1 - factor) * v
        out.append(running)
    return out


def plot_losses(metrics_path: Path, png_path: Path) -> None:
    curves = read_losses(metrics_path)
    image = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = MARGIN[0], MARGIN[1], SIZE[0] - MARGIN[2], SIZE[1] - MARGIN[3]
    draw.rectangle([left, top, right, bottom], outline="black")
    points = [(s, l) for c in curves.values() for s, l in c if l > 0]
    if not points:
        image.save(png_path)
        return
    max_step = max(s for s, _ in points) or 1
    low, high = math.log10(min(l for _, l in points)), math.log10(max(l for _, l in points))
    high = high if high > low else low + 1

    def xy(step: float, loss: float) -> tuple[float, float]:
        y = (math.log10(max(loss, 1e-12)) - low) / (high - low)
        return left + (right - left) * step / max_step, bottom - (bottom - top) * y

    for exponent in range(math.floor(low), math.ceil(high) + 1):
        for mantissa in (1, 2, 5):
            value = mantissa * 10.0 ** exponent
            if low <= math.log10(value) <= high:
                y = xy(0, value)[1]
                draw.line([left, y, right, y], fill=(225, 225, 225))
                draw.text((5, y - 6), f"{value:g}", fill="black")
    for k in range(5):
        step = max_step * k / 4
        draw.text((xy(step, 1)[0] - 10, bottom + 8), f"{step:.0f}", fill="black")
    draw.text(((left + right) // 2 - 30, bottom + 28), "optimizer step", fill="black")
    for k, (name, curve) in enumerate(sorted(curves.items())):
        colour = COLOURS[k % len(COLOURS)]
        smoothed = _smooth([l for _, l in curve])
        draw.line([xy(s, l) for (s, _), l in zip(curve, smoothed)], fill=colour, width=1 if " " in name else 2)
        draw.text((left + 10, top + 8 + 14 * k), f"{name} (loss, smoothed)", fill=colour)
    image.save(png_path)
