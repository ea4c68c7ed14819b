"""The four modalities: what each one takes, and what the model and the bundle keep per modality.

`image` is plain BLIP-2 (no LoRA adapter); the other three each have their own LoRA adapter, named after the
modality, in the Q-Former and the LLM. Region modalities take one box per region: normalised xyxy for images,
the 8 corners of a 3-D box (contract/boxes.py order, 24 values) for point clouds.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Modality:
    name: str
    region: bool  # one description per box, not per frame
    points: bool  # encoded by Point-BERT, not the ViT
    box_dims: int  # values per box fed to PaFE and predicted by the box head; 0 without boxes

    @property
    def adapter(self) -> str | None:
        """The LoRA adapter this modality runs with; None is the plain BLIP-2 weights."""
        return None if self.name == "image" else self.name


TABLE = (
    Modality("image", region=False, points=False, box_dims=0),
    Modality("image_region", region=True, points=False, box_dims=4),
    Modality("pointcloud", region=False, points=True, box_dims=0),
    Modality("pointcloud_region", region=True, points=True, box_dims=24),
)
BY_NAME = {m.name: m for m in TABLE}

MODALITIES = tuple(m.name for m in TABLE)
REGION_MODALITIES = tuple(m.name for m in TABLE if m.region)
POINT_MODALITIES = tuple(m.name for m in TABLE if m.points)
ADAPTER_MODALITIES = tuple(m.name for m in TABLE if m.adapter is not None)
BOX_DIMS = {m.name: m.box_dims for m in TABLE if m.region}
IMAGE, IMAGE_REGION, POINTCLOUD, POINTCLOUD_REGION = MODALITIES
