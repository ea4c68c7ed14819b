"""Captioning benchmarks on RegionBLIP's own protocol: one description per region or object, scored against all of
its human descriptions (COCOEvalCap's metrics, training.metrics), decoded as the release evaluates
(contract.generation.RELEASE_EVALUATION). training.evaluate is the command line; this module is the protocol.

    --data refcoco:test     --instances-json instances.json --refs-json refs.json --image-dir train2014
    --data region_json:test --region-json Refcoco_test.json --image-root images      (the release's own test file)
    --data scanrefer:val    --scanrefer-json ScanRefer_filtered_val.json --scannet-dir scannet_data
    --data cap3d:test       --captions-file Cap3D_automated_Objaverse_test.txt --points-dir objaverse_pc_parallel

The release prepares references with tools/prepare_regionblip_eval_{refercoco,referscannet,objaverse}.py: one COCO
"image" per region, keyed
- RefCOCO and region JSON: f"{image_id}_box_{int(x)}_{int(y)}_{int(w)}_{int(h)}" (a region JSON entry without
  image_id uses its image's file name, as the release's dataset does),
- ScanRefer: f"{scene_id}_{object_id}",
- Cap3D: the object's uid,
and every description with that key, uncleaned as the annotation file has it, is one of its references (PTB
tokenisation follows). The release's eval datasets keep the first annotation of each key, or its task keeps the
first prediction of each, so the model describes each region once, from its first annotation. COCOEvalCap scores
only the keys that have a prediction: a region our readers skip (missing image, unknown object, corrupt cloud) is
left out here too, and counted under "skipped".
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from .data.cap3d import Cap3DDataset
from .data.problems import ProblemLog
from .data.refcoco import read_refcoco
from .data.region_captions import RegionCaptionDataset, load_region_json
from .data.samples import DataError
from .data.scanrefer import ScanReferDataset
from .metrics import caption_metrics, unavailable_metrics
from .trainer_config import REAL_SOURCES

SPLITS = {"refcoco": ("train", "val", "test", "testA", "testB"), "region_json": ("train", "val", "test"),
          "scanrefer": ("train", "val"), "cap3d": ("train", "test")}
# The command-line option for each reader file, named as trainer_config.REAL_SOURCES names the file ("path" alone
# would not say which).
OPTIONS = {key: "--" + key.replace("_", "-") for source in SPLITS for key in REAL_SOURCES[source][1]}
OPTIONS["path"] = "--region-json"
TITLES = {"refcoco": "I-region captioning (RefCOCO {split})",
          "region_json": "I-region captioning (region JSON {split})",
          "cap3d": "PCD captioning (Objaverse {split})", "scanrefer": "P-region captioning (ReferScannet {split})"}
# RegionBLIP's README, first table: RegionBLIP-OPT-2.7B pre-trained with RefCOCO train, CIDEr x 100.
PUBLISHED_MODEL = "RegionBLIP-OPT-2.7B"
PUBLISHED_CIDER = {("refcoco", "test"): 63.5, ("cap3d", "test"): 112.7, ("scanrefer", "val"): 57.0}
TABLE_METRICS = (("CIDEr", "CIDEr"), ("Bleu_4", "BLEU-4"), ("METEOR", "METEOR"), ("ROUGE_L", "ROUGE-L"),
                 ("SPICE", "SPICE"))


@dataclass(frozen=True)
class Benchmark:
    source: str  # a key of SPLITS
    split: str  # refcoco: the refs' split(s) to read, '+'-joined; otherwise the split the given file holds

    @property
    def name(self) -> str:
        return f"{self.source}:{self.split}"

    @property
    def modality(self) -> str:
        return REAL_SOURCES[self.source][0]

    @property
    def title(self) -> str:
        return TITLES[self.source].format(split=self.split)


@dataclass
class Region:
    key: str  # the release's COCO image id of the region
    index: int  # dataset index of the sample the model describes: the key's first annotation
    references: list[str]


def is_benchmark_spec(spec: str) -> bool:
    return spec.partition(":")[0] != "synthetic"


def parse_benchmarks(spec: str) -> list[Benchmark]:
    """'refcoco:test,scanrefer:val' -> [Benchmark('refcoco', 'test'), Benchmark('scanrefer', 'val')]."""
    benchmarks = []
    for part in spec.split(","):
        source, _, split = part.strip().partition(":")
        if source == "synthetic":
            raise ValueError(f"--data {spec!r}: synthetic data is evaluated on its own run: "
                             "--data synthetic:<modality>,...")
        if source not in SPLITS:
            raise ValueError(f"--data {spec!r}: unknown source {source!r}; write synthetic:<modality>,... or "
                             f"benchmarks SOURCE:SPLIT,... with sources {list(SPLITS)}, e.g. refcoco:test,"
                             "scanrefer:val,cap3d:test")
        bad = [s for s in split.split("+") if s not in SPLITS[source]]
        if bad or (source != "refcoco" and "+" in split):
            joined = " (join several with '+')" if source == "refcoco" else ""
            raise ValueError(f"--data {spec!r}: {source} split must be one of {list(SPLITS[source])}{joined}, "
                             f"got {split!r}")
        if any(b.source == source for b in benchmarks):
            raise ValueError(f"--data {spec!r} names {source} twice: its files are given once per run"
                             + ("; join refcoco splits with '+', e.g. refcoco:testA+testB" if source == "refcoco"
                                else ""))
        benchmarks.append(Benchmark(source, split))
    return benchmarks


def check_files(benchmarks: list[Benchmark], given: dict[str, Path | None]) -> dict[str, dict[str, Path]]:
    """Each benchmark's reader files from the options, checked before any model is loaded."""
    needed = {key for b in benchmarks for key in REAL_SOURCES[b.source][1]}
    unused = sorted(OPTIONS[key] for key, value in given.items() if value is not None and key not in needed)
    if unused:
        raise ValueError(f"{', '.join(unused)} given but --data names no benchmark that reads it: drop it or add "
                         "its benchmark to --data")
    files = {}
    for benchmark in benchmarks:
        files[benchmark.source] = {}
        for key in REAL_SOURCES[benchmark.source][1]:
            path, option, directory = given.get(key), OPTIONS[key], key.endswith(("_dir", "_root"))
            if path is None:
                raise ValueError(f"{benchmark.name} needs {option}: give the "
                                 f"{'directory' if directory else 'file'} (see python -m training.evaluate --help)")
            if not (path.is_dir() if directory else path.is_file()):
                raise ValueError(f"{option} {path} is not {'a directory' if directory else 'a file'}: "
                                 "check the path")
            files[benchmark.source][key] = Path(path)
    return files


def load(benchmark: Benchmark, files: dict[str, Path], object_num_points: int, scene_num_points: int):
    """(dataset, regions): the benchmark's reader without augmentation, its annotations grouped by region."""
    if benchmark.source == "refcoco":
        problems = ProblemLog(f"refcoco {benchmark.split}")
        records = [record for split in benchmark.split.split("+") for record in read_refcoco(
            files["instances_json"], files["refs_json"], files["image_dir"], split, problems)]
        if not records and not problems.problems:
            raise DataError(f"{files['refs_json']} has no refs of split {benchmark.split!r} (it has "
                            f"{_refs_splits(files['refs_json'])}); RefCOCO and RefCOCO+ refs split test into testA and "
                            "testB: write refcoco:testA+testB")
        dataset = RegionCaptionDataset(records, problems, clean_captions=False)
        return dataset, _group((_box_key(r), i, r.caption) for i, (r, _) in enumerate(dataset.items))
    if benchmark.source == "region_json":
        dataset = load_region_json(files["path"], files["image_root"], clean_captions=False)
        return dataset, _group((_box_key(r), i, r.caption) for i, (r, _) in enumerate(dataset.items))
    if benchmark.source == "scanrefer":
        dataset = ScanReferDataset(files["scanrefer_json"], files["scannet_dir"], num_points=scene_num_points)
        return dataset, _group((f"{e['scene_id']}_{int(e['object_id'])}", i, str(e["description"]))
                               for i, (e, _) in enumerate(dataset.items))
    dataset = Cap3DDataset(files["captions_file"], files["points_dir"], num_points=object_num_points)
    first = {}
    for i, (uid, _, _) in enumerate(dataset.items):
        first.setdefault(uid, i)
    raw = _raw_cap3d_captions(files["captions_file"])
    return dataset, _group((uid, i, caption) for uid, i in first.items() for caption in raw[uid])


def _box_key(record) -> str:
    image_id = record.extra.get("image_id")
    image_id = Path(record.image_path).name if image_id is None else image_id
    return f"{image_id}_box_" + "_".join(str(int(v)) for v in record.bbox_xywh)


def _group(annotations) -> list[Region]:
    """(key, dataset index, caption) in file order -> one Region per key, at its first index."""
    regions: dict[str, Region] = {}
    for key, index, caption in annotations:
        regions.setdefault(key, Region(key, index, [])).references.append(caption)
    return list(regions.values())


def _raw_cap3d_captions(path: Path) -> dict[str, list[str]]:
    """uid -> its captions as the file has them (the reader cleans them for training); parsed as the reader does,
    so the uids agree, and the reader has already checked that the file reads."""
    captions: dict[str, list[str]] = {}
    for row in csv.reader(path.read_text(encoding="utf-8").splitlines()):
        if row and row[0].strip():
            captions.setdefault(row[0].strip(), []).append(",".join(row[1:]).strip())
    return captions


def _refs_splits(refs_json: Path) -> list[str]:
    return sorted({str(ref.get("split")) for ref in json.loads(refs_json.read_text()) if isinstance(ref, dict)})


def result(benchmark: Benchmark, files: dict[str, Path], dataset, regions: list[Region], predictions: list[str],
           examples: int = 5) -> dict:
    """Scores of one prediction per region against its grouped references, with what the run covered."""
    # pycocoevalcap's tokenizers drop empty strings unevenly; an empty prediction scores as a lone '.'
    scores = caption_metrics({r.key: p or "." for r, p in zip(regions, predictions)},
                             {r.key: r.references for r in regions})
    published = PUBLISHED_CIDER.get((benchmark.source, benchmark.split))
    return {
        "benchmark": benchmark.name, "title": benchmark.title, "modality": benchmark.modality,
        "files": {key: str(path) for key, path in files.items()},
        "regions": len(regions), "references": sum(len(r.references) for r in regions),
        "skipped": len(dataset.problems), "scores": scores, "absent": unavailable_metrics(),
        "published": None if published is None else {"model": PUBLISHED_MODEL, "CIDEr": published},
        "examples": [{"image_id": r.key, "prediction": p, "references": r.references}
                     for r, p in zip(regions[:examples], predictions)],
        # the release's result-file format, so tools/eval_coco_caption.py can check these scores too
        "predictions": [{"image_id": r.key, "caption": p} for r, p in zip(regions, predictions)],
    }


def table(results: dict) -> str:
    """The benchmarks laid out as RegionBLIP's README: scores x 100, the published figure beside ours."""
    generation = results["generation"]
    lines = [f"## {results['label']}"] if results.get("label") else []
    lines += [f"checkpoint {results['checkpoint']}; decoding: beam {generation['num_beams']}, "
              f"{generation['min_new_tokens']}-{generation['max_new_tokens']} new tokens; tokenizer "
              f"{results['tokenizer']}; scores x 100",
              "",
              "| Benchmark | Regions | References | " + " | ".join(h for _, h in TABLE_METRICS)
              + f" | {PUBLISHED_MODEL} CIDEr (published) |",
              "| --- |" + " ---: |" * (len(TABLE_METRICS) + 3)]
    absent = {}
    for r in results["benchmarks"]:
        cells = [f"{100 * r['scores'][k]:.1f}" if k in r["scores"] else "—" for k, _ in TABLE_METRICS]
        published = f"{r['published']['CIDEr']:.1f}" if r["published"] else "—"
        lines.append(f"| {r['title']} | {r['regions']} | {r['references']} | " + " | ".join(cells)
                     + f" | {published} |")
        absent.update(r["absent"])
    lines.append("")
    lines += [f"{metric} {reason}" for metric, reason in absent.items()]
    lines += [f"{r['benchmark']}: {r['skipped']} annotations skipped by the reader (logged above)"
              for r in results["benchmarks"] if r["skipped"]]
    lines.append(f"Published: {PUBLISHED_MODEL} on the full benchmark (RegionBLIP README); comparable only on the "
                 "full benchmark files with no annotation skipped.")
    return "\n".join(lines)
