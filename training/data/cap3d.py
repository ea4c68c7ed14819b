"""Cap3D captions of Objaverse objects on ULIP's point clouds (modality "pointcloud").

Inputs: a captions file of `uid,caption` lines (Cap3D_automated_Objaverse_{train,test}.txt or
.csv; the caption may contain commas and may be quoted) and ULIP's clouds
`{points_dir}/{uid}/{uid}_8192.npz` (or flat `{points_dir}/{uid}_8192.npz`), key `arr_0`,
shape (8192, 3+), loaded with allow_pickle=False. Captions are cleaned with blip_caption. Points are
centred and scaled to the unit sphere; with augment=True the ULIP training transforms follow
(point_preprocess.augment_object). Random choices depend on (seed, epoch, index) only.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .array_files import load_xyz
from .caption_text import blip_caption
from contract.preprocessing import normalize_unit_sphere

from .point_preprocess import augment_object, sample_points
from .problems import ProblemLog
from .samples import DataError, PointSample


def find_cloud(points_dir: Path, uid: str) -> Path:
    nested = points_dir / uid / f"{uid}_8192.npz"
    return nested if nested.exists() else points_dir / f"{uid}_8192.npz"


class Cap3DDataset:
    def __init__(self, captions_file: str | Path, points_dir: str | Path, augment: bool = False,
                 num_points: int | None = None, seed: int = 0, verify: bool = True):
        """verify=True opens every cloud once now, so corrupt files are skipped up front instead of
        failing mid-epoch; with verify=False only existence is checked."""
        self.captions_file, self.points_dir = Path(captions_file), Path(points_dir)
        self.augment, self.num_points, self.seed, self.epoch = augment, num_points, seed, 0
        problems = ProblemLog(f"cap3d {self.captions_file.name}")
        self.items: list[tuple[str, str, Path]] = []
        for line_no, uid, caption in self._read_captions(problems):
            path = find_cloud(self.points_dir, uid)
            try:
                if verify:
                    load_xyz(path, key="arr_0")
                elif not path.exists():
                    raise DataError(f"{path} does not exist")
            except DataError as error:
                problems.report(self.captions_file, f"line {line_no} uid={uid}", str(error))
                continue
            self.items.append((uid, blip_caption(caption), path))
        self.problems = problems.problems
        problems.require_some(len(self.items), "point clouds")

    def _read_captions(self, problems: ProblemLog):
        try:
            lines = self.captions_file.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise DataError(f"cannot read Cap3D captions {self.captions_file}: {error}") from error
        for line_no, row in enumerate(csv.reader(lines), start=1):
            if not row:
                continue
            uid, caption = row[0].strip(), ",".join(row[1:]).strip()
            if not uid or not caption:
                problems.report(self.captions_file, f"line {line_no}", "expected 'uid,caption'")
                continue
            yield line_no, uid, caption

    def set_epoch(self, epoch: int) -> None:
        """Draw new augmentations each epoch (call from the training loop)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> PointSample:
        uid, caption, path = self.items[index]
        try:
            points = load_xyz(path, key="arr_0")[:, :3]
        except DataError as error:
            raise DataError(f"{error} (uid={uid} in {self.captions_file}); replace the file or drop the uid") from None
        rng = np.random.default_rng([self.seed, self.epoch if self.augment else 0, index])
        points = normalize_unit_sphere(points)
        if self.num_points is not None:
            points = sample_points(points, self.num_points, rng)
        if self.augment:
            points = augment_object(points, rng)
        return PointSample(points, caption, None, {"source": "cap3d", "uid": uid, "file": str(path)})
