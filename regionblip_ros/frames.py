"""Describing the regions of one frame: read the frame, keep the usable regions, call the describer, build
the RegionDescriptionArray.

Used by the node's worker (topics) and by its describe_regions service alike. Nothing here raises for bad
input: every problem comes back as a Problem(kind, message) for the caller to count and log, and whatever
could still be described is.
"""

import threading
import time
from dataclasses import dataclass, field

import numpy as np
from regionblip_msgs.msg import Region2D, Region3D, RegionDescription, RegionDescriptionArray
from sensor_msgs.msg import Image, PointCloud2

from regionblip_ros.conversions import image_to_numpy, pointcloud2_to_xyz, region2d_to_xyxy, region3d_to_corners
from contract.boxes import clip_boxes_xyxy, image_box_problems

# Problem kinds, the keys of the node's bad-input counters.
IMAGE = "image"                      # an Image that cannot be read: encoding, step, truncated data, empty
POINTS = "points"                    # a PointCloud2 that cannot be read, or without one finite point
REGION_2D = "region_2d"              # a box that is degenerate, not finite or outside the image
SMALL_REGION_2D = "small_region_2d"  # a box narrower or lower than min_region_px once clipped
REGION_3D = "region_3d"              # a 3D box with NaN values, a zero quaternion or a negative size
TOO_MANY_REGIONS = "too_many_regions"
DESCRIBER = "describer"              # the describer refused the frame (ValueError)

IMAGE_REGION = "image_region"
POINTCLOUD_REGION = "pointcloud_region"


@dataclass(frozen=True)
class Problem:
    kind: str
    message: str


@dataclass
class FrameResult:
    """What describing one frame gave: descriptions is None when nothing could be described."""

    descriptions: RegionDescriptionArray | None = None
    problems: list[Problem] = field(default_factory=list)
    image: np.ndarray | None = None  # (H, W, 3) RGB of a camera frame, for drawing
    boxes: np.ndarray = field(default_factory=lambda: np.empty((0, 4), np.float32))  # described, clipped


class SerializedDescriber:
    """A describer whose calls take turns: the worker and the service share one model."""

    def __init__(self, describer):
        self._describer = describer
        self._lock = threading.Lock()
        self.backend = str(getattr(describer, "backend", "unknown"))

    def describe_image_regions(self, image, boxes):
        with self._lock:
            return self._describer.describe_image_regions(image, boxes)

    def describe_point_regions(self, points, corners):
        with self._lock:
            return self._describer.describe_point_regions(points, corners)


def _keep_at_most(regions, max_regions: int, modality: str, problems: list[Problem]) -> list:
    if len(regions) > max_regions:
        problems.append(Problem(TOO_MANY_REGIONS, (
            f"{len(regions)} {modality}s in one frame, max_regions is {max_regions}: described the first "
            f"{max_regions}, dropped {len(regions) - max_regions} (raise max_regions or filter upstream)")))
        return list(regions[:max_regions])
    return list(regions)


def _boxes_with_nan_for_invalid(regions: list[Region2D]) -> np.ndarray:
    try:
        return region2d_to_xyxy(regions)
    except ValueError:  # some region has a NaN or inf: find which, and let the degenerate check name it
        rows = []
        for region in regions:
            try:
                rows.append(region2d_to_xyxy([region])[0])
            except ValueError:
                rows.append(np.full(4, np.nan, np.float32))
        return np.array(rows, dtype=np.float32).reshape(-1, 4)


def _call(describe, inputs, boxes, count: int, problems: list[Problem]):
    """Descriptions and wall time (ms) of one describer call, or (None, ms) with a DESCRIBER problem."""
    start = time.perf_counter()
    try:
        described = list(describe(inputs, boxes))
    except ValueError as error:
        problems.append(Problem(DESCRIBER, f"the describer refused the frame: {error}"))
        return None, 0.0
    elapsed_ms = (time.perf_counter() - start) * 1e3
    if len(described) != count:
        problems.append(Problem(DESCRIBER, (
            f"the describer returned {len(described)} descriptions for {count} regions: "
            "check the runtime; this frame is skipped")))
        return None, elapsed_ms
    return described, elapsed_ms


def _message(header, regions, described, modality: str, inference_ms: float) -> RegionDescriptionArray:
    out = RegionDescriptionArray(header=header, inference_ms=float(inference_ms))
    for region, description in zip(regions, described):
        item = RegionDescription(id=region.id, text=description.text, score=float(description.score),
                                 label=region.label, modality=modality)
        if modality == IMAGE_REGION:
            item.region_2d = region
        else:
            item.region_3d = region
        out.descriptions.append(item)
    return out


def describe_camera_frame(describer, image_msg: Image, regions: list[Region2D], *, max_regions: int,
                          min_region_px: float) -> FrameResult:
    """Describe the 2D regions of one image; the result carries the image's header."""
    result = FrameResult()
    try:
        result.image = image_to_numpy(image_msg)
    except ValueError as error:
        result.problems.append(Problem(IMAGE, f"skipped an image: {error}"))
        return result
    height, width = result.image.shape[:2]
    regions = _keep_at_most(regions, max_regions, IMAGE_REGION, result.problems)
    boxes = _boxes_with_nan_for_invalid(regions)
    degenerate = image_box_problems(boxes, width, height)
    clipped = clip_boxes_xyxy(np.nan_to_num(boxes), width, height)
    keep = []
    for row, region in enumerate(regions):
        x1, y1, x2, y2 = clipped[row]
        if row in degenerate:
            result.problems.append(Problem(REGION_2D, f"skipped Region2D '{region.id}': {degenerate[row]}"))
        elif min(x2 - x1, y2 - y1) < min_region_px:
            result.problems.append(Problem(SMALL_REGION_2D, (
                f"skipped Region2D '{region.id}': {x2 - x1:g} x {y2 - y1:g} pixels inside the image is smaller "
                f"than min_region_px {min_region_px:g} (lower min_region_px to describe it)")))
        else:
            keep.append(row)
    kept_regions, kept_boxes = [regions[row] for row in keep], clipped[keep].reshape(-1, 4)
    described, inference_ms = ([], 0.0) if not keep else _call(
        describer.describe_image_regions, result.image, kept_boxes, len(keep), result.problems)
    if described is not None:
        result.boxes = kept_boxes
        result.descriptions = _message(image_msg.header, kept_regions, described, IMAGE_REGION, inference_ms)
    return result


def describe_lidar_frame(describer, cloud_msg: PointCloud2, regions: list[Region3D], *,
                         max_regions: int) -> FrameResult:
    """Describe the 3D regions of one point cloud; the result carries the cloud's header."""
    result = FrameResult()
    try:
        points = pointcloud2_to_xyz(cloud_msg)
    except ValueError as error:
        result.problems.append(Problem(POINTS, f"skipped a point cloud: {error}"))
        return result
    if len(points) == 0:
        result.problems.append(Problem(POINTS, (
            f"skipped a point cloud: none of its {cloud_msg.width * cloud_msg.height} points is finite "
            "(all NaN or inf, or the cloud is empty)")))
        return result
    regions = _keep_at_most(regions, max_regions, POINTCLOUD_REGION, result.problems)
    kept_regions, corners = [], []
    for region in regions:
        try:
            corners.append(region3d_to_corners([region])[0])
            kept_regions.append(region)
        except ValueError as error:
            result.problems.append(Problem(REGION_3D, f"skipped {error}"))
    corners = np.array(corners, dtype=np.float32).reshape(-1, 8, 3)
    described, inference_ms = ([], 0.0) if not kept_regions else _call(
        describer.describe_point_regions, points, corners, len(kept_regions), result.problems)
    if described is not None:
        result.descriptions = _message(cloud_msg.header, kept_regions, described, POINTCLOUD_REGION,
                                       inference_ms)
    return result
