"""ScanRefer descriptions of ScanNet objects (modality "pointcloud_region").

Inputs, as ScanRefer preprocesses them:
- `ScanRefer_filtered_{train,val}.json`: a list of {scene_id, object_id, object_name, ann_id,
  description, ...} (object_id is a string or int),
- `{scannet_dir}/{scene_id}_aligned_vert.npy`: (N, 3+) vertices, xyz first, metres,
- `{scannet_dir}/{scene_id}_aligned_bbox.npy`: (K, 8) rows cx, cy, cz, dx, dy, dz, label, object_id,
  both loaded with allow_pickle=False.
A sample is `num_points` vertices (with replacement when the scene has fewer), raw metres, and the
8 corners of the object's axis-aligned box (boxes.box_corners order). Descriptions stay raw, as
released. augment=True adds ScanRefer's flips and +-5 deg z rotation to the points and the box. An
object id missing from its scene's boxes is reported and skipped (the released loader crashes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .array_files import load_xyz
from .boxes import box_corners
from .point_preprocess import augment_scene, sample_points
from .problems import ProblemLog
from .samples import DataError, PointSample


class ScanReferDataset:
    def __init__(self, scanrefer_json: str | Path, scannet_dir: str | Path, num_points: int = 40_000,
                 augment: bool = False, seed: int = 0):
        self.json_path, self.scannet_dir = Path(scanrefer_json), Path(scannet_dir)
        self.num_points, self.augment, self.seed, self.epoch = num_points, augment, seed, 0
        problems = ProblemLog(f"scanrefer {self.json_path.name}")
        try:
            entries = json.loads(self.json_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise DataError(f"cannot read ScanRefer JSON {self.json_path}: {error}") from error
        if not isinstance(entries, list):
            raise DataError(f"{self.json_path} must be a JSON list of ScanRefer entries")
        scenes: dict[str, dict[int, np.ndarray] | DataError] = {}
        self.items: list[tuple[dict, np.ndarray]] = []
        for i, entry in enumerate(entries):
            where = f"[{i}] scene_id={entry.get('scene_id')} object_id={entry.get('object_id')}"
            try:
                scene_id, object_id = str(entry["scene_id"]), int(entry["object_id"])
                if not str(entry["description"]).strip():
                    raise DataError("empty description")
                if scene_id not in scenes:
                    scenes[scene_id] = self._scene_boxes(scene_id)
                boxes = scenes[scene_id]
                if isinstance(boxes, DataError):
                    raise boxes
                if object_id not in boxes:
                    raise DataError(f"object {object_id} is not among the boxes of {scene_id}_aligned_bbox.npy")
            except DataError as error:
                problems.report(self.json_path, where, str(error))
                continue
            except (KeyError, ValueError, TypeError) as error:
                problems.report(self.json_path, where, f"malformed entry ({error!r})")
                continue
            self.items.append((entry, boxes[object_id]))
        self.problems = problems.problems
        problems.require_some(len(self.items), "object descriptions")

    def _scene_boxes(self, scene_id: str) -> dict[int, np.ndarray] | DataError:
        """Boxes of a scene by object id, after checking its vertex file's header; an error is cached too."""
        try:
            load_xyz(self._vertex_path(scene_id), mmap=True)
            boxes = load_xyz(self.scannet_dir / f"{scene_id}_aligned_bbox.npy")
            if boxes.shape[1] != 8:
                raise DataError(f"{scene_id}_aligned_bbox.npy has {boxes.shape[1]} columns, expected 8 "
                                "(cx, cy, cz, dx, dy, dz, label, object_id)")
        except DataError as error:
            return error
        return {int(row[7]): row[:6].astype(np.float64) for row in boxes}

    def _vertex_path(self, scene_id: str) -> Path:
        return self.scannet_dir / f"{scene_id}_aligned_vert.npy"

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> PointSample:
        entry, box = self.items[index]
        path = self._vertex_path(entry["scene_id"])
        try:
            vertices = load_xyz(path)[:, :3]
        except DataError as error:
            raise DataError(f"{error} (ScanRefer entry {index} in {self.json_path}); re-run ScanNet preprocessing") from None
        rng = np.random.default_rng([self.seed, self.epoch if self.augment else 0, index])
        points = sample_points(vertices, self.num_points, rng)
        center, size = box[:3], box[3:6]
        if self.augment:
            points, center, size = augment_scene(points, center, size, rng)
        corners = box_corners(center, size)  # built after augmenting, so the corners keep their canonical order
        attributes = {"source": "scanrefer", "scene_id": entry["scene_id"], "object_id": int(entry["object_id"]),
                      "object_name": entry.get("object_name"), "ann_id": entry.get("ann_id")}
        return PointSample(points, str(entry["description"]), corners, attributes)
