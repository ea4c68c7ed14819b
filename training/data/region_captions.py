"""Image-region caption data: RegionBLIP's region JSON and the dataset every 2-D region reader feeds.

RegionBLIP's format (Refcoco_train.json; its converter was never released) is a JSON list of
    {"image": "<path relative to image_root>", "bbox": [x, y, w, h] (pixels), "caption": str | [str],
     "image_id": optional}
A list of captions becomes one sample per caption. Readers turn their files into RegionRecords;
RegionCaptionDataset checks every record once (image present, box inside the image) and yields
ImageSamples with the box clamped, int-cast and normalised (boxes.normalize_box_xywh).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .boxes import normalize_box_xywh
from .caption_text import blip_caption
from .problems import ProblemLog
from .samples import DataError, ImageSample


@dataclass(frozen=True)
class RegionRecord:
    image_path: Path
    bbox_xywh: tuple[float, float, float, float]
    caption: str
    file: str  # annotation file and entry, for error messages
    entry: str
    image_size: tuple[int, int] | None = None  # (width, height) when the annotation states it
    extra: dict = field(default_factory=dict, compare=False)


class RegionCaptionDataset:
    """ImageSamples (modality image_region) from validated RegionRecords; bad records are skipped
    with a warning naming file and entry, and no valid record at all raises DataError."""

    def __init__(self, records: list[RegionRecord], problems: ProblemLog, clean_captions: bool = True):
        self.name = problems.dataset
        self.items: list[tuple[RegionRecord, np.ndarray]] = []
        sizes: dict[Path, tuple[int, int]] = {}
        for record in records:
            try:
                size = record.image_size or sizes.get(record.image_path) or _image_size(record.image_path)
                sizes[record.image_path] = size
                if not record.image_path.is_file():
                    raise DataError(f"image {record.image_path} does not exist")
                box = normalize_box_xywh(record.bbox_xywh, *size)
            except (DataError, ValueError, OSError) as error:
                problems.report(record.file, record.entry, str(error))
                continue
            caption = blip_caption(record.caption) if clean_captions else record.caption
            self.items.append((RegionRecord(record.image_path, record.bbox_xywh, caption, record.file,
                                            record.entry, size, record.extra), box))
        self.problems = problems.problems
        problems.require_some(len(self.items), "image regions")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> ImageSample:
        record, box = self.items[index]
        try:
            with Image.open(record.image_path) as image:
                pixels = np.asarray(image.convert("RGB"))
        except OSError as error:
            raise DataError(f"{self.name}: cannot decode image {record.image_path} ({record.file} entry "
                            f"{record.entry}): {error}; replace the file or drop the entry") from error
        attributes = {"source": self.name, "file": record.file, "entry": record.entry,
                      "image_path": str(record.image_path), **record.extra}
        return ImageSample(pixels, record.caption, box, attributes)


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:  # reads the header only
            return image.size
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except OSError as error:
        raise DataError(f"image {path} is not a readable image ({error})") from None


def read_region_json(path: str | Path, image_root: str | Path, problems: ProblemLog) -> list[RegionRecord]:
    """RegionRecords from a RegionBLIP region JSON list (module docstring); malformed entries go to `problems`."""
    path, image_root = Path(path), Path(image_root)
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"cannot read region JSON {path}: {error}") from error
    if not isinstance(entries, list):
        raise DataError(f"{path} must hold a JSON list of {{image, bbox, caption}} objects, got {type(entries).__name__}")
    records = []
    for i, entry in enumerate(entries):
        try:
            captions = entry["caption"] if isinstance(entry["caption"], list) else [entry["caption"]]
            bbox = tuple(float(v) for v in entry["bbox"])
            if len(bbox) != 4:
                raise ValueError(f"bbox must be [x, y, w, h], got {len(bbox)} values")
            image = image_root / entry["image"]
        except (KeyError, TypeError, ValueError) as error:
            problems.report(path, f"[{i}]", f"malformed entry ({error!r}): needs image, bbox [x, y, w, h], caption")
            continue
        extra = {"image_id": entry.get("image_id")}
        records += [RegionRecord(image, bbox, str(c), str(path), f"[{i}]", None, extra) for c in captions]
    return records


def load_region_json(path: str | Path, image_root: str | Path, clean_captions: bool = True) -> RegionCaptionDataset:
    """Dataset of a RegionBLIP region JSON list (e.g. Refcoco_train.json) with images under image_root."""
    problems = ProblemLog(f"region-json {Path(path).name}")
    records = read_region_json(path, image_root, problems)
    return RegionCaptionDataset(records, problems, clean_captions)
