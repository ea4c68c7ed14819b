"""Synthetic point clouds: single primitives (modality "pointcloud") and scenes of 1-5 primitives
on a ground plane with one of them boxed (modality "pointcloud_region").

Frame: metres, x right, y forward (away from the viewer), z up, ground at z = 0. Sensor effects:
Gaussian range noise, random dropout and one occluded hole, then resampling to exactly `num_points`.
Object clouds are then centred and scaled to the unit sphere, like Cap3D training data and the
runtime's object preprocessing; scale is gone, so object captions name the shape only.

Captions: object 'a cone'; region 'a small cube left of a large sphere' (size in metres is
observable in a scene; the relation is to the nearest other object, omitted when it is alone).

A variation (data.variations) moves the ground off z = 0, tilts the scene, adds clutter, stronger noise or a
sparser cloud; captions stay those of the clean scene, and a region's box corners move with its object. "clean",
the default, draws exactly the clouds it always drew.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract.modalities import POINTCLOUD, POINTCLOUD_REGION
from contract.preprocessing import normalize_unit_sphere

from .boxes import box_corners, yaw_rotation
from .point_preprocess import sample_points
from .samples import PointSample
from .splits import sample_rng
from .variations import (CLEAN, DENSITY_KEEP, GROUND_HEIGHT_M, NOISE_SIGMA_RANGE_M, TILT_DEG, Variation, chance,
                         get_variation)
from .vocabulary import POINT_SHAPES, SIZES, object_phrase

WIDTH_M = {"small": (0.3, 0.4), "large": (0.7, 0.9)}  # footprint side; ranges apart for unambiguous sizes
HEIGHT_RATIO = {"sphere": 1.0, "cube": 1.0, "cylinder": 1.3, "cone": 1.3, "pyramid": 1.0}
SCENE_HALF_EXTENT_M = 2.0
NOISE_SIGMA_M = 0.005
PLACEMENT_TRIES = 100
CLUTTER_BLOBS = (2, 6)  # small clusters that are no object: radius CLUTTER_RADIUS_M, far below a small object's
CLUTTER_RADIUS_M = (0.03, 0.1)
CLUTTER_FRACTION = (0.05, 0.15)  # of a cloud's points, blobs and stray points together


@dataclass(frozen=True)
class PrimitiveSpec:
    shape: str
    size: str
    width: float
    height: float
    x: float
    y: float
    yaw: float

    @property
    def center(self) -> np.ndarray:
        return np.array([self.x, self.y, self.height / 2])

    @property
    def box_size(self) -> np.ndarray:
        return np.array([self.width, self.width, self.height])

    def phrase(self) -> str:
        return object_phrase(self.shape, self.size)

    def attributes(self) -> dict:
        return {"shape": self.shape, "size": self.size, "center": self.center.tolist(),
                "box_size": self.box_size.tolist(), "yaw": self.yaw}


def sample_primitive(rng: np.random.Generator, x: float = 0.0, y: float = 0.0) -> PrimitiveSpec:
    shape = POINT_SHAPES[rng.integers(len(POINT_SHAPES))]
    size = SIZES[rng.integers(len(SIZES))]
    width = float(rng.uniform(*WIDTH_M[size]))
    return PrimitiveSpec(shape, size, width, width * HEIGHT_RATIO[shape], x, y, float(rng.uniform(-np.pi, np.pi)))


def surface_points(spec: PrimitiveSpec, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, 3) points on the visible surface (no bottom face), in the scene frame."""
    r, h = spec.width / 2, spec.height
    u = rng.random((count, 2))
    angle = 2 * np.pi * u[:, 0]
    if spec.shape == "sphere":
        v = rng.normal(size=(count, 3))
        local = r * v / np.linalg.norm(v, axis=1, keepdims=True) + [0, 0, r]
    elif spec.shape == "cylinder":
        on_top = rng.random(count) < r / (r + 2 * h)  # area of top cap vs side
        rho = np.where(on_top, r * np.sqrt(u[:, 1]), r)
        z = np.where(on_top, h, h * u[:, 1])
        local = np.stack([rho * np.cos(angle), rho * np.sin(angle), z], axis=1)
    elif spec.shape == "cone":
        t = np.sqrt(u[:, 1])  # lateral area grows linearly towards the base
        local = np.stack([r * t * np.cos(angle), r * t * np.sin(angle), h * (1 - t)], axis=1)
    elif spec.shape == "cube":
        local = rng.uniform(-r, r, size=(count, 3))
        face = rng.integers(5, size=count)  # 4 sides + top
        axis = np.where(face < 4, face // 2, 2)  # faces +x, -x, +y, -y, +z
        sign = np.where(face % 2 == 0, 1.0, -1.0)
        local[np.arange(count), axis] = sign * r
        local[:, 2] += r
    elif spec.shape == "pyramid":
        base = np.array([[r, r], [-r, r], [-r, -r], [r, -r]])
        k = rng.integers(4, size=count)
        a, b = base[k], base[(k + 1) % 4]
        s, t = u[:, 0], u[:, 1]
        flip = s + t > 1
        s, t = np.where(flip, 1 - s, s), np.where(flip, 1 - t, t)
        xy = a * (1 - s - t)[:, None] + b * s[:, None]  # third vertex is the apex at (0, 0)
        local = np.column_stack([xy, h * t])
    else:
        raise ValueError(f"unknown point shape {spec.shape!r}: use one of {POINT_SHAPES}")
    return local @ yaw_rotation(spec.yaw).T + [spec.x, spec.y, 0.0]


def sensor_effects(points: np.ndarray, num_points: int, rng: np.random.Generator,
                   noise_sigma: float = NOISE_SIGMA_M) -> np.ndarray:
    """Range noise, up to 10 % random dropout and one occluded hole, then exactly num_points."""
    points = points + rng.normal(0.0, noise_sigma, size=points.shape)
    keep = rng.random(len(points)) >= rng.uniform(0.0, 0.1)
    hole = points[rng.integers(len(points))]
    keep &= np.linalg.norm(points - hole, axis=1) > 0.1
    return sample_points(points[keep], num_points, rng)


def sample_scene(rng: np.random.Generator, max_objects: int = 5) -> list[PrimitiveSpec]:
    """1..max_objects primitives standing on the ground whose footprint circles do not touch."""
    placed: list[PrimitiveSpec] = []
    limit = SCENE_HALF_EXTENT_M - 0.5
    for _ in range(int(rng.integers(1, max_objects + 1))):
        spec = sample_primitive(rng)
        for _ in range(PLACEMENT_TRIES):
            x, y = rng.uniform(-limit, limit, size=2)
            if all(np.hypot(x - o.x, y - o.y) > (spec.width + o.width) / np.sqrt(2) + 0.1 for o in placed):
                placed.append(PrimitiveSpec(spec.shape, spec.size, spec.width, spec.height, float(x), float(y), spec.yaw))
                break
    return placed


def relation(target: PrimitiveSpec, other: PrimitiveSpec) -> str:
    """Where `target` is relative to `other`, by the larger horizontal offset."""
    dx, dy = target.x - other.x, target.y - other.y
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "in front of" if dy < 0 else "behind"


def region_caption(scene: list[PrimitiveSpec], index: int) -> tuple[str, dict]:
    target = scene[index]
    others = [o for k, o in enumerate(scene) if k != index]
    if not others:
        return target.phrase(), target.attributes()
    nearest = min(others, key=lambda o: np.hypot(o.x - target.x, o.y - target.y))
    rel = relation(target, nearest)
    extra = {"relation": rel, "other_shape": nearest.shape, "other_size": nearest.size}
    return f"{target.phrase()} {rel} {nearest.phrase()}", {**target.attributes(), **extra}


def render_scene(scene: list[PrimitiveSpec], num_points: int, rng: np.random.Generator,
                 observe: bool = True) -> np.ndarray:
    """40 % of the points on the ground, the rest shared by the objects in proportion to footprint; with observe,
    through sensor_effects (exactly num_points), else the surface points as drawn."""
    ground_count = int(0.4 * num_points)
    ground = np.column_stack([rng.uniform(-SCENE_HALF_EXTENT_M, SCENE_HALF_EXTENT_M, size=(ground_count, 2)),
                              np.zeros(ground_count)])
    under_object = np.zeros(ground_count, dtype=bool)
    for o in scene:  # a sensor never sees the ground beneath an object
        under_object |= np.hypot(ground[:, 0] - o.x, ground[:, 1] - o.y) < o.width / 2
    ground = ground[~under_object]
    weights = np.array([o.width * (o.width + o.height) for o in scene])
    counts = np.maximum(1, np.round(weights / weights.sum() * (num_points - ground_count))).astype(int)
    parts = [ground] + [surface_points(o, int(c), rng) for o, c in zip(scene, counts)]
    points = np.concatenate(parts)
    return sensor_effects(points, num_points, rng) if observe else points


def tilt_rotation(rng: np.random.Generator) -> np.ndarray:
    """(3, 3) rotation about x then y by up to TILT_DEG each: a sensor pitched and rolled against the ground."""
    a, b = np.radians(rng.uniform(-TILT_DEG, TILT_DEG, size=2))
    about_x = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    about_y = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    return about_y @ about_x


def clutter_points(rng: np.random.Generator, count: int, half_extent: float, keep_out: list[PrimitiveSpec],
                   height: float) -> np.ndarray:
    """(count, 3) points that belong to no object: a few small blobs on the ground and stray points in the air,
    all outside every object's footprint (plus 0.1 m)."""
    wanted = int(rng.integers(CLUTTER_BLOBS[0], CLUTTER_BLOBS[1] + 1))
    centres = []
    for _ in range(PLACEMENT_TRIES):  # a crowded scene may hold fewer blobs
        if len(centres) == wanted:
            break
        x, y = rng.uniform(-half_extent, half_extent, size=2)
        if all(np.hypot(x - o.x, y - o.y) > o.width + 0.1 for o in keep_out):
            centres.append((x, y, rng.uniform(*CLUTTER_RADIUS_M)))
    blobs = len(centres)
    owner = rng.integers(blobs + 1, size=count)  # the last "blob" is stray points in the air
    points = np.empty((count, 3))
    for k, (x, y, r) in enumerate(centres):
        mine = owner == k
        points[mine] = [x, y, r] + rng.normal(0.0, r / 2, size=(int(mine.sum()), 3))
    stray = owner == blobs
    points[stray] = np.column_stack([rng.uniform(-half_extent, half_extent, size=(int(stray.sum()), 2)),
                                     rng.uniform(0.0, height, size=int(stray.sum()))])
    return points


class SyntheticPointDataset:
    """Indexable, generated on the fly, deterministic per (split, modality, index).

    modality "pointcloud": one primitive on the unit sphere, corners None; attributes keep its metric size.
    modality "pointcloud_region": a scene on the ground plane and the corners of one object's box.
    """

    def __init__(self, modality: str = POINTCLOUD, split: str = "train", length: int = 10_000,
                 num_points: int = 2048, max_objects: int = 5, variation: str | Variation = "clean"):
        if modality not in (POINTCLOUD, POINTCLOUD_REGION):
            raise ValueError(f"SyntheticPointDataset makes 'pointcloud' or 'pointcloud_region' samples, not {modality!r}")
        self.modality, self.split, self.length = modality, split, length
        self.num_points, self.max_objects = num_points, max_objects
        self.variation = get_variation(variation) if isinstance(variation, str) else variation

    def __len__(self) -> int:
        return self.length

    def _layout(self, index: int):
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        rng = sample_rng(self.split, self.modality, index)
        if self.modality == POINTCLOUD:
            return rng, [sample_primitive(rng)], 0
        scene = sample_scene(rng, self.max_objects)
        return rng, scene, int(rng.integers(len(scene)))

    def caption(self, index: int) -> str:
        _, scene, region = self._layout(index)
        return object_phrase(scene[0].shape) if self.modality == POINTCLOUD else region_caption(scene, region)[0]

    def captions(self):
        """All captions of the split without sampling any point (the tokenizer's corpus)."""
        return (self.caption(i) for i in range(self.length))

    def _sensor(self, rng: np.random.Generator) -> dict:
        """What this cloud's variation draws (nothing for the clean world)."""
        v = self.variation
        effects = {"noise_sigma": NOISE_SIGMA_M, "keep": 1.0, "clutter": 0.0, "rotation": None, "ground_z": 0.0}
        if v == CLEAN:
            return effects
        if chance(rng, v.noise):
            effects["noise_sigma"] = float(rng.uniform(*NOISE_SIGMA_RANGE_M))
        if chance(rng, v.density):
            effects["keep"] = float(rng.uniform(*DENSITY_KEEP))
        if chance(rng, v.clutter):
            effects["clutter"] = float(rng.uniform(*CLUTTER_FRACTION))
        if chance(rng, v.tilt):
            effects["rotation"] = tilt_rotation(rng)
        if chance(rng, v.ground_height):
            effects["ground_z"] = float(rng.uniform(*GROUND_HEIGHT_M))
        return effects

    def _observe(self, points: np.ndarray, rng: np.random.Generator, effects: dict, keep_out: list[PrimitiveSpec],
                 half_extent: float, height: float) -> np.ndarray:
        """The variation's clutter, density, noise and sensor effects on a rendered cloud; exactly num_points."""
        if effects["clutter"]:
            count = int(effects["clutter"] * len(points))
            points = np.concatenate([points, clutter_points(rng, count, half_extent, keep_out, height)])
        if effects["keep"] < 1.0:
            points = points[rng.random(len(points)) < effects["keep"]]
        return sensor_effects(points, self.num_points, rng, effects["noise_sigma"])

    def _place(self, points: np.ndarray, effects: dict) -> np.ndarray:
        """Tilted about the origin, then the ground moved to its height."""
        if effects["rotation"] is not None:
            points = points @ effects["rotation"].T
        return points + [0.0, 0.0, effects["ground_z"]]

    def __getitem__(self, index: int) -> PointSample:
        rng, scene, region = self._layout(index)
        seed = {"split": self.split, "index": index}
        if self.modality == POINTCLOUD:
            spec = scene[0]
            surface = surface_points(spec, self.num_points, rng)
            if self.variation == CLEAN:
                points = sensor_effects(surface, self.num_points, rng)
            else:
                effects = self._sensor(rng)
                # a segmented object's clutter: what its segmentation let in from around it
                points = self._place(self._observe(surface, rng, effects, [spec], 2 * spec.width + 0.3, spec.height),
                                     effects)
            return PointSample(normalize_unit_sphere(points), object_phrase(spec.shape), None,
                               {**spec.attributes(), **seed})
        caption, attributes = region_caption(scene, region)
        target = scene[region]
        corners = box_corners(target.center, target.box_size, target.yaw)
        if self.variation == CLEAN:
            return PointSample(render_scene(scene, self.num_points, rng), caption, corners, {**attributes, **seed})
        effects = self._sensor(rng)
        clean = render_scene(scene, self.num_points, rng, observe=False)
        points = self._place(self._observe(clean, rng, effects, scene, SCENE_HALF_EXTENT_M, 1.5), effects)
        corners = self._place(corners, effects).astype(np.float32)
        return PointSample(points.astype(np.float32), caption, corners, {**attributes, **seed})
