"""Tiny benchmark files in the exact upstream formats, for tests and for a sample of the benchmark table:
RefCOCO (COCO instances.json + refs as JSON + images), ScanRefer (ScanRefer_filtered_val.json + ScanNet
*_aligned_vert.npy / *_aligned_bbox.npy) and Cap3D ('uid,caption' lines + ULIP {uid}/{uid}_8192.npz).

    python tests/benchmark_fixtures.py DIR     # writes them and prints the training.evaluate options

Each set has a region described several times, and two regions that share an image or scene, so that grouping
by region (training.benchmarks) is visible in the counts: 3 regions and 6 references in every benchmark.
"""
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

# RefCOCO test: image 9 holds two boxes (3 and 2 descriptions), image 10 one; one train ref must stay out.
REFCOCO_IMAGES = [{"id": 9, "file_name": "COCO_train2014_000000000009.jpg", "width": 200, "height": 100},
                  {"id": 10, "file_name": "COCO_train2014_000000000010.jpg", "width": 120, "height": 90}]
REFCOCO_ANNOTATIONS = [{"id": 101, "image_id": 9, "bbox": [10.7, 20.2, 60.5, 50.0], "category_id": 1},
                       {"id": 102, "image_id": 9, "bbox": [100.0, 10.0, 80.0, 70.0], "category_id": 1},
                       {"id": 103, "image_id": 10, "bbox": [5.0, 5.0, 50.0, 40.0], "category_id": 2}]
REFCOCO_REFS = [
    {"ref_id": 1, "ann_id": 101, "image_id": 9, "split": "test", "category_id": 1,
     "sentences": [{"sent": "man on the left", "sent_id": 1}, {"sent": "left guy in red", "sent_id": 2},
                   {"sent": "the man in a red shirt", "sent_id": 3}]},
    {"ref_id": 2, "ann_id": 102, "image_id": 9, "split": "test", "category_id": 1,
     "sentences": [{"sent": "woman on the right", "sent_id": 4}, {"sent": "right lady", "sent_id": 5}]},
    {"ref_id": 3, "ann_id": 103, "image_id": 10, "split": "test", "category_id": 2,
     "sentences": [{"sent": "small brown dog", "sent_id": 6}]},
    {"ref_id": 4, "ann_id": 103, "image_id": 10, "split": "train", "category_id": 2,
     "sentences": [{"sent": "a dog in the training split", "sent_id": 7}]},
]
REFCOCO_KEYS = ["9_box_10_20_60_50", "9_box_100_10_80_70", "10_box_5_5_50_40"]

# ScanRefer val: object 3 of scene0000_00 twice, its object 7 once and object 3 of another scene once.
SCANREFER_BOXES = [[1.0, 2.0, 0.5, 0.4, 0.6, 1.0, 5, 3], [0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 2, 7]]
SCANREFER = [
    {"scene_id": "scene0000_00", "object_id": "3", "object_name": "chair", "ann_id": "0",
     "description": "This is a brown chair. It is next to the table."},
    {"scene_id": "scene0000_00", "object_id": "7", "object_name": "table", "ann_id": "0",
     "description": "A square table in the middle of the room."},
    {"scene_id": "scene0000_00", "object_id": "3", "object_name": "chair", "ann_id": "1",
     "description": "The chair is brown and faces the table."},
    {"scene_id": "scene0001_00", "object_id": "3", "object_name": "chair", "ann_id": "0",
     "description": "A black office chair by the desk."},
    {"scene_id": "scene0001_00", "object_id": "3", "object_name": "chair", "ann_id": "1",
     "description": "The office chair is black."},
    {"scene_id": "scene0001_00", "object_id": "3", "object_name": "chair", "ann_id": "2",
     "description": "It is a black chair with wheels."},
]
SCANREFER_KEYS = ["scene0000_00_3", "scene0000_00_7", "scene0001_00_3"]

# Cap3D test: Cap3D has one caption per uid; a repeated uid gathers its lines as one object's references.
CAP3D_LINES = ['abc123,"A wooden Chair, with four legs."', "def456,a red sports car",
               "abc123,a brown wooden chair", "0f9e8d,a white ceramic mug with a handle",
               "def456,a small red car", "def456,a red toy car"]
CAP3D_KEYS = ["abc123", "def456", "0f9e8d"]


def _image(path: Path, width: int, height: int, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def write_refcoco(root: Path) -> dict[str, Path]:
    (root / "train2014").mkdir(parents=True, exist_ok=True)
    for seed, image in enumerate(REFCOCO_IMAGES):
        _image(root / "train2014" / image["file_name"], image["width"], image["height"], seed)
    (root / "instances.json").write_text(json.dumps({"images": REFCOCO_IMAGES, "annotations": REFCOCO_ANNOTATIONS,
                                                     "categories": [{"id": 1, "name": "person"},
                                                                    {"id": 2, "name": "dog"}]}))
    (root / "refs.json").write_text(json.dumps(REFCOCO_REFS))
    return {"instances_json": root / "instances.json", "refs_json": root / "refs.json",
            "image_dir": root / "train2014"}


def write_scanrefer(root: Path) -> dict[str, Path]:
    scannet = root / "scannet_data"
    scannet.mkdir(parents=True, exist_ok=True)
    for seed, scene_id in enumerate(("scene0000_00", "scene0001_00")):
        rng = np.random.default_rng(seed)
        vertices = np.column_stack([rng.uniform(-3, 3, size=(500, 3)), rng.integers(0, 255, size=(500, 3))])
        np.save(scannet / f"{scene_id}_aligned_vert.npy", vertices.astype(np.float32))
        np.save(scannet / f"{scene_id}_aligned_bbox.npy", np.array(SCANREFER_BOXES, dtype=np.float32))
    (root / "ScanRefer_filtered_val.json").write_text(json.dumps(SCANREFER))
    return {"scanrefer_json": root / "ScanRefer_filtered_val.json", "scannet_dir": scannet}


def write_cap3d(root: Path) -> dict[str, Path]:
    clouds = root / "objaverse_pc_parallel"
    for seed, uid in enumerate(CAP3D_KEYS):
        (clouds / uid).mkdir(parents=True, exist_ok=True)
        np.savez(clouds / uid / f"{uid}_8192.npz",
                 arr_0=np.random.default_rng(seed).normal(size=(8192, 3)).astype(np.float32))
    (root / "Cap3D_automated_Objaverse_test.txt").write_text("\n".join(CAP3D_LINES) + "\n")
    return {"captions_file": root / "Cap3D_automated_Objaverse_test.txt", "points_dir": clouds}


def write_all(root: Path) -> dict[str, Path]:
    """Every benchmark's files under root, by training.benchmarks.OPTIONS key."""
    return {**write_refcoco(root / "refcoco"), **write_scanrefer(root / "scanrefer"), **write_cap3d(root / "cap3d")}


def cli_options(files: dict[str, Path]) -> list[str]:
    from training.benchmarks import OPTIONS

    return [item for key, path in files.items() for item in (OPTIONS[key], str(path))]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/benchmark_fixtures.py DIR")
    print(" ".join(cli_options(write_all(Path(sys.argv[1])))))
