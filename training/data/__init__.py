"""Data for RegionBLIP training: sample types, synthetic scenes, real-dataset readers, preprocessing.

Every source yields `ImageSample` or `PointSample` (samples.py); `batching.collate_images` /
`collate_points` turn a single-modality list of them into the model's tensors. Images are preprocessed by
contract/preprocessing.py, the function the runtime calls too.
"""

from .boxes import box_corners, normalize_box_xywh
from .cap3d import Cap3DDataset
from .batching import collate_images, collate_points
from .refcoco import load_refcoco
from .region_captions import load_region_json
from .samples import DataError, ImageSample, PointSample
from .scanrefer import ScanReferDataset
from .synthetic_images import SyntheticImageDataset
from .synthetic_points import SyntheticPointDataset

__all__ = [
    "Cap3DDataset", "DataError", "ImageSample", "PointSample", "ScanReferDataset",
    "SyntheticImageDataset", "SyntheticPointDataset", "box_corners", "collate_images", "collate_points",
    "load_refcoco", "load_region_json", "normalize_box_xywh",
]
