"""Named variations of the synthetic world: what real pictures and clouds vary that the clean world holds fixed.

The clean world (variation "clean", the generators' default) pins every shape to a patch centre, paints every
background light grey, never lets shapes touch, hands regions their exact boxes and draws square frames; its clouds
stand on a level ground at z = 0 with light noise. A model trained only on it collapses just outside it
(docs/experiments.md). Each named variation below changes one thing, so an evaluation per variation shows where a
model breaks (`python -m training.evaluate --variations`); "varied" mixes them all, for training and for the varied
held-out set.

A field is the probability that a scene gets that change (0: never, 1: always). The generators draw a coin only for
a probability strictly between 0 and 1, so "clean" draws exactly the random numbers it always drew and its scenes
stay bit-identical to the ones the existing tests and the demo were written against.

Images:
  backgrounds   kinds a scene's background is drawn from, uniformly (training/data/backgrounds.py)
  off_grid      shape centres anywhere in the frame instead of on the 8 x 8 patch-centre grid
  overlap       shapes may overlap partially; the one drawn later occludes (each keeps its full, amodal box)
  box_jitter    a region's box is loose or tight, as a detector's: each side moved by up to BOX_JITTER of its width
                or height (size words stay unambiguous: the radius ranges are more than 30 % apart)
  frame         a frame of another size and aspect (FRAME_SCALE, FRAME_ASPECT); shapes keep their proportions in it
Resize policy (contract/preprocessing.py, as BLIP-2's processor): every frame is resized to the model's square input
with no crop and no letterbox, so a wide frame's shapes reach the ViT squeezed; boxes are normalised by the frame's own
width and height and so follow. Shape radii scale with the frame's geometric mean side, which keeps each shape's area
fraction, the cue for its size word, the same in every aspect.

Point clouds:
  ground_height the ground (and everything on it) at z in GROUND_HEIGHT_M instead of 0 (a sensor's mount height)
  tilt          the whole scene (objects: the object) turned by up to TILT_DEG about x and y (a pitched sensor)
  clutter       small blobs and stray points that are no object (CLUTTER_*)
  noise         range noise of NOISE_SIGMA_RANGE_M instead of data.synthetic_points.NOISE_SIGMA_M
  density       only DENSITY_KEEP of the points survive before resampling to the model's count (a far or sparse
                sensor: points repeat)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from contract.modalities import IMAGE, IMAGE_REGION, POINTCLOUD, POINTCLOUD_REGION

BACKGROUND_KINDS = ("light", "white", "black", "dark_grey", "grey", "saturated", "gradient", "texture")
BOX_JITTER = 0.15
FRAME_SCALE = (0.75, 1.5)  # geometric mean side / the requested image size
FRAME_ASPECT = (9 / 16, 16 / 9)  # width / height
GROUND_HEIGHT_M = (-1.8, 1.0)
TILT_DEG = 10.0
NOISE_SIGMA_RANGE_M = (0.01, 0.03)
DENSITY_KEEP = (0.1, 0.4)


@dataclass(frozen=True)
class Variation:
    backgrounds: tuple[str, ...] = ("light",)
    off_grid: float = 0.0
    overlap: float = 0.0
    box_jitter: float = 0.0
    frame: float = 0.0
    ground_height: float = 0.0
    tilt: float = 0.0
    clutter: float = 0.0
    noise: float = 0.0
    density: float = 0.0

    def __post_init__(self):
        unknown = [b for b in self.backgrounds if b not in BACKGROUND_KINDS]
        if not self.backgrounds or unknown:
            raise ValueError(f"backgrounds {self.backgrounds}: choose from {BACKGROUND_KINDS}")
        for field in dataclasses.fields(self)[1:]:
            if not 0.0 <= getattr(self, field.name) <= 1.0:
                raise ValueError(f"{field.name} is a probability: give 0..1, not {getattr(self, field.name)}")

    def changes(self, modality: str) -> bool:
        """Whether samples of this modality differ from the clean world's (box jitter touches image regions only)."""
        if modality == IMAGE_REGION:
            return self.changes(IMAGE) or self.box_jitter > 0
        if modality == IMAGE:
            return self.backgrounds != ("light",) or any((self.off_grid, self.overlap, self.frame))
        if modality == POINTCLOUD:  # an object cloud is moved onto the unit sphere: the ground's height is gone
            return any((self.tilt, self.clutter, self.noise, self.density))
        if modality == POINTCLOUD_REGION:
            return any((self.ground_height, self.tilt, self.clutter, self.noise, self.density))
        return False


# One changed thing each, then the mixture. Image variations leave clouds clean and point variations leave images
# clean, so an evaluation reports each one only on the modalities it changes.
VARIATIONS = {
    "clean": Variation(),
    **{kind: Variation(backgrounds=(kind,)) for kind in BACKGROUND_KINDS if kind != "light"},
    "off_grid": Variation(off_grid=1.0),
    "overlap": Variation(off_grid=1.0, overlap=1.0),  # overlap needs free placement: grid cells are 12 px apart
    "loose_tight_boxes": Variation(box_jitter=1.0),
    "frame_size": Variation(frame=1.0),
    "ground_height": Variation(ground_height=1.0),
    "tilt": Variation(tilt=1.0),
    "clutter": Variation(clutter=1.0),
    "sensor_noise": Variation(noise=1.0),
    "density": Variation(density=1.0),
    "varied": Variation(backgrounds=BACKGROUND_KINDS, off_grid=0.75, overlap=0.5, box_jitter=0.5, frame=0.5,
                        ground_height=0.5, tilt=0.5, clutter=0.5, noise=0.5, density=0.5),
}
CLEAN = VARIATIONS["clean"]


def get_variation(name: str) -> Variation:
    if name not in VARIATIONS:
        raise ValueError(f"unknown variation {name!r}: use one of {', '.join(VARIATIONS)}")
    return VARIATIONS[name]


def chance(rng: np.random.Generator, probability: float) -> bool:
    """A coin with this probability; 0 and 1 draw nothing from rng (what keeps the clean world's draws)."""
    if probability <= 0.0:
        return False
    if probability >= 1.0:
        return True
    return bool(rng.random() < probability)
