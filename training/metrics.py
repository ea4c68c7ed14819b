"""Caption metrics (pycocoevalcap, as RegionBLIP reports them) and attribute exact match (synthetic data).

`caption_metrics` follows COCOEvalCap: PTB-tokenise predictions and references with Stanford's
tokenizer (java), then BLEU-1..4, ROUGE-L, CIDEr, and METEOR/SPICE where they can run (METEOR needs
java; SPICE needs java and the Stanford CoreNLP jar that pycocoevalcap otherwise downloads).
Without java the PTB step falls back to a regex tokenizer (logged), so scores are close to, not
identical with, official ones. Keys match COCOEvalCap's ('Bleu_4', 'ROUGE_L', 'CIDEr', ...);
'agg_metrics' is CIDEr + BLEU-4, RegionBLIP's model-selection score.

`attribute_exact_match` parses generated text for size/colour/shape words (data.vocabulary) and
compares with a synthetic sample's ground-truth attributes.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Hashable

import numpy as np

from contract.modalities import IMAGE, IMAGE_REGION, POINTCLOUD, POINTCLOUD_REGION

from .data.vocabulary import parse_objects

logger = logging.getLogger("training.metrics")

ATTRIBUTE_KEYS = {
    IMAGE: ("size", "colour", "shape"),
    IMAGE_REGION: ("size", "colour", "shape"),
    POINTCLOUD: ("shape",),  # objects are unit-sphere normalised: their size cannot be seen
    POINTCLOUD_REGION: ("size", "shape"),
}


def java_available() -> bool:
    return shutil.which("java") is not None


def spice_available() -> bool:
    import pycocoevalcap.spice as spice

    return java_available() and (Path(spice.__file__).parent / "lib" / "stanford-corenlp-3.6.0.jar").is_file()


def tokenizer_name() -> str:
    return "PTB (Stanford, java)" if java_available() else "regex (java not found: scores are not official)"


def unavailable_metrics() -> dict[str, str]:
    """Why each metric that `caption_metrics` would skip here cannot run: reported, never faked."""
    reasons = {}
    if not java_available():
        reasons["METEOR"] = "not run: METEOR needs java on PATH (apt-get install default-jre-headless)"
    if not spice_available():
        reasons["SPICE"] = ("not run: pycocoevalcap's SPICE needs java and Stanford CoreNLP 3.6.0 "
                            "(spice/lib/stanford-corenlp-3.6.0*.jar), which it would download on first use; "
                            "they are not installed here")
    return reasons


def _simple_tokenize(captions: dict[Hashable, list[dict]]) -> dict[Hashable, list[str]]:
    return {k: [" ".join(re.findall(r"[a-z0-9]+(?:'[a-z]+)?", c["caption"].lower())) for c in v]
            for k, v in captions.items()}


def tokenize(captions: dict[Hashable, list[dict]]) -> dict[Hashable, list[str]]:
    """{id: [{'caption': str}]} -> {id: [tokenised str]}, PTB (java) or the regex fallback."""
    if java_available():
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        return PTBTokenizer().tokenize(captions)
    logger.warning("java not found: tokenising with a regex instead of Stanford PTB; scores are not official")
    return _simple_tokenize(captions)


def caption_metrics(predictions: dict[Hashable, str], references: dict[Hashable, list[str]],
                    meteor: bool | None = None, spice: bool | None = None) -> dict[str, float]:
    """Corpus scores of one prediction per id against its references (ids must match).
    meteor/spice: None = compute where the tools can run, True = require them, False = skip."""
    if set(predictions) != set(references):
        missing = sorted(map(str, set(references) ^ set(predictions)))[:5]
        raise ValueError(f"predictions and references must have the same ids; differing ids include {missing}")
    if not predictions:
        raise ValueError("no predictions to score")
    if any(not refs for refs in references.values()):
        raise ValueError("every id needs at least one reference caption")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts = tokenize({k: [{"caption": r} for r in refs] for k, refs in references.items()})
    res = tokenize({k: [{"caption": p}] for k, p in predictions.items()})
    scores: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores.update({f"Bleu_{n + 1}": float(b) for n, b in enumerate(bleu)})
    scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    if _wanted(meteor, java_available(), "METEOR needs java on PATH"):
        from pycocoevalcap.meteor.meteor import Meteor

        scores["METEOR"] = float(Meteor().compute_score(gts, res)[0])
    if _wanted(spice, spice_available(), "SPICE needs java and pycocoevalcap/spice/lib/stanford-corenlp-3.6.0.jar"):
        from pycocoevalcap.spice.spice import Spice

        scores["SPICE"] = float(Spice().compute_score(gts, res)[0])
    scores["agg_metrics"] = scores["CIDEr"] + scores["Bleu_4"]
    return scores


def _wanted(requested: bool | None, available: bool, requirement: str) -> bool:
    if requested and not available:
        raise RuntimeError(f"{requirement}: install it or pass False to skip this metric")
    return available if requested is None else requested


def _target_objects(attributes: dict, modality: str) -> list[dict]:
    keys = ATTRIBUTE_KEYS[modality]
    objects = attributes["objects"] if modality == IMAGE else [attributes]
    return [{k: obj[k] for k in keys} for obj in objects]


def _multiset(objects: list[dict], keys: tuple[str, ...]) -> Counter:
    return Counter(tuple(obj[k] for k in keys) for obj in objects)


def attribute_exact_match(predictions: list[str], attributes: list[dict], modality: str) -> dict[str, float]:
    """Fraction of predictions whose parsed attributes equal the ground truth.

    Regions and objects: the first object named in the prediction is compared field by field
    ('<modality>/size', '/colour', '/shape') and as a whole ('<modality>/exact_match').
    Whole images: exact match means the same multiset of (size, colour, shape) objects,
    '<modality>/object_count' that the number of named objects is right."""
    if modality not in ATTRIBUTE_KEYS:
        raise ValueError(f"unknown modality {modality!r}: use one of {tuple(ATTRIBUTE_KEYS)}")
    if len(predictions) != len(attributes):
        raise ValueError(f"{len(predictions)} predictions for {len(attributes)} samples: pass one per sample")
    keys = ATTRIBUTE_KEYS[modality]
    hits: dict[str, list[bool]] = {"exact_match": []}
    for text, truth in zip(predictions, attributes):
        targets = _target_objects(truth, modality)
        parsed = [{k: obj.get(k) for k in keys} for obj in parse_objects(text)]
        if modality == IMAGE:
            hits["exact_match"].append(_multiset(parsed, keys) == _multiset(targets, keys))
            hits.setdefault("object_count", []).append(len(parsed) == len(targets))
            continue
        first = parsed[0] if parsed else {k: None for k in keys}
        hits["exact_match"].append(first == targets[0])
        for k in keys:
            hits.setdefault(k, []).append(first[k] == targets[0][k])
    return {f"{modality}/{name}": float(np.mean(values)) for name, values in hits.items()}
