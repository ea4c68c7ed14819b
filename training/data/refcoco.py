"""RefCOCO / RefCOCO+ / RefCOCOg referring expressions as image-region captions.

Inputs, as distributed by lichengunc/refer:
- `instances.json`: COCO instances ({images: [{id, file_name, width, height}],
  annotations: [{id, image_id, bbox [x, y, w, h]}]}),
- the refs: upstream ships `refs(unc).p` / `refs(umd).p`, a *pickle*, which we never load (unpickling
  runs arbitrary code). Convert it once, on a machine you trust, to a JSON list with the same fields:
      python -c "import json,pickle; json.dump(pickle.load(open('refs(unc).p','rb')), open('refs.json','w'))"
  Each ref: {ref_id, ann_id, image_id, split, sentences: [{sent, ...}]}.
- the COCO train2014 images under `image_dir` (file_name from instances.json).

One sample per (ref, sentence); captions are cleaned like LAVIS (caption_text.blip_caption).
"""

from __future__ import annotations

import json
from pathlib import Path

from .problems import ProblemLog
from .region_captions import RegionCaptionDataset, RegionRecord
from .samples import DataError


def _read_json(path: Path, what: str):
    if path.suffix in (".p", ".pkl", ".pickle"):
        raise DataError(f"{path} is a pickle; this reader never unpickles. Convert it to JSON once "
                        "(see training/data/refcoco.py) and pass the .json file")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {what} {path}: {error}") from error


def read_refcoco(instances_json: str | Path, refs_json: str | Path, image_dir: str | Path,
                 split: str, problems: ProblemLog) -> list[RegionRecord]:
    instances_json, refs_json, image_dir = Path(instances_json), Path(refs_json), Path(image_dir)
    instances = _read_json(instances_json, "COCO instances")
    refs = _read_json(refs_json, "refs")
    if not isinstance(refs, list):
        raise DataError(f"{refs_json} must be a JSON list of refs, got {type(refs).__name__}")
    try:
        images = {img["id"]: img for img in instances["images"]}
        annotations = {ann["id"]: ann for ann in instances["annotations"]}
    except (KeyError, TypeError) as error:
        raise DataError(f"{instances_json} is not a COCO instances file (missing {error}): "
                        "pass instances.json from the refcoco/refcoco+/refcocog folder") from error
    records = []
    for ref in refs:
        if ref.get("split") != split:
            continue
        entry = f"ref_id={ref.get('ref_id')}"
        ann = annotations.get(ref.get("ann_id"))
        image = images.get(ref.get("image_id"))
        if ann is None or image is None:
            missing = "ann_id" if ann is None else "image_id"
            problems.report(refs_json, entry, f"{missing}={ref.get(missing)} is not in {instances_json.name}")
            continue
        sentences = [s.get("sent", "") for s in ref.get("sentences", []) if s.get("sent", "").strip()]
        if not sentences:
            problems.report(refs_json, entry, "no sentences")
        extra = {"ref_id": ref["ref_id"], "ann_id": ann["id"], "image_id": image["id"]}
        records += [RegionRecord(image_dir / image["file_name"], tuple(ann["bbox"]), sent, str(refs_json),
                                 f"{entry} sentence {k}", (image["width"], image["height"]), extra)
                    for k, sent in enumerate(sentences)]
    return records


def load_refcoco(instances_json: str | Path, refs_json: str | Path, image_dir: str | Path,
                 split: str = "train", name: str = "refcoco") -> RegionCaptionDataset:
    """Image-region dataset of one split ('train', 'val', 'test', 'testA', 'testB')."""
    problems = ProblemLog(f"{name} {split}")
    return RegionCaptionDataset(read_refcoco(instances_json, refs_json, image_dir, split, problems), problems)
