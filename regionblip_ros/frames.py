"""One frame's regions into a RegionDescriptionArray: read the frame and its regions, have the describer
describe them, build the message of the described ones.

Used by the node's worker (topics) and by its describe_regions service alike. Whether a box can be described
is decided once, by the runtime (Describer.describe_image_regions / describe_point_regions): every region goes to
it, and a region it refuses comes back with its reason. Nothing here raises for bad input: every problem comes
back as a Problem(kind, message) for the caller to count and log, and whatever could still be described is.

Given a DescriptionCache (the node's worker gives its own; the describe_regions service none, so on-demand
answers are always fresh), a region the cache may serve is published with its cached text and score, marked
`cached`, under the new frame's header; only the others go to the describer, which is not called at all when
none is left, and what it describes is stored. The message keeps the regions' input order, and its inference_ms
is the describer's time for the fresh regions (0 when every region came from the cache).
"""

import threading
import time
from dataclasses import dataclass, field

import numpy as np
from regionblip_msgs.msg import Region2D, Region3D, RegionDescription, RegionDescriptionArray
from sensor_msgs.msg import Image, PointCloud2

from contract.boxes import clip_boxes_xyxy
from contract.modalities import IMAGE_REGION, POINTCLOUD_REGION
from regionblip_ros.conversions import image_to_numpy, pointcloud2_to_xyz, region2d_to_xyxy, region3d_to_corners
from regionblip_ros.description_cache import HIT, DescriptionCache
from regionblip_ros.sync import stamp_to_ns

# Problem kinds, the keys of the node's bad-input counters.
IMAGE = "image"                      # an Image that cannot be read: encoding, step, truncated data, empty
POINTS = "points"                    # a PointCloud2 that cannot be read, or without one finite point
REGION_2D = "region_2d"              # a box not finite, of negative size, outside the image or under min_region_px
REGION_3D = "region_3d"              # a 3D box with NaN values, a zero quaternion, a negative size, or
                                     # corners beyond float32
TOO_MANY_REGIONS = "too_many_regions"
DESCRIBER = "describer"              # the describer refused the frame (ValueError)


@dataclass(frozen=True)
class Problem:
    kind: str
    message: str


@dataclass
class FrameResult:
    """What describing one frame gave: always a message with the frame's header, holding the regions that were
    described, possibly none. `failed` says that none could be, because of the frame itself (unreadable, or
    the describer refused it); `problems` say why each left-out region was."""

    descriptions: RegionDescriptionArray
    problems: list[Problem] = field(default_factory=list)
    failed: bool = False
    image: np.ndarray | None = None  # (H, W, 3) RGB of a camera frame, for drawing
    boxes: np.ndarray = field(default_factory=lambda: np.empty((0, 4), np.float32))  # described, clipped


class SerializedDescriber:
    """A describer whose calls take turns: the worker and the service share one model."""

    def __init__(self, describer):
        self._describer = describer
        self._lock = threading.Lock()
        self.backend = str(getattr(describer, "backend", "unknown"))

    def describe_image_regions(self, image, boxes_xyxy_px, min_region_px: float = 0.0, **prompts):
        with self._lock:
            return self._describer.describe_image_regions(image, boxes_xyxy_px, min_region_px=min_region_px,
                                                          **prompts)

    def describe_point_regions(self, points, corners, **prompts):
        with self._lock:
            return self._describer.describe_point_regions(points, corners, **prompts)

    def cancel(self) -> None:
        """Cancel the call in progress and all later ones; not under the lock, which that call holds."""
        self._describer.cancel()


def _keep_at_most(regions, max_regions: int, modality: str, problems: list[Problem]) -> list:
    if len(regions) > max_regions:
        problems.append(Problem(TOO_MANY_REGIONS, (
            f"{len(regions)} {modality}s in one frame, max_regions is {max_regions}: described the first "
            f"{max_regions}, dropped {len(regions) - max_regions} (raise max_regions or filter upstream)")))
        return list(regions[:max_regions])
    return list(regions)


def _call(describe, count: int, problems: list[Problem], *args, **kwargs):
    """Descriptions and wall time (ms) of one describer call, or (None, ms) with a DESCRIBER problem."""
    start = time.perf_counter()
    try:
        described = list(describe(*args, **kwargs))
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


def prompt_options(regions) -> dict:
    """The describer's prompts argument: each region's text prompt (Region2D.prompt / Region3D.prompt, "" for none),
    given only when a region has one, so that describers without prompts serve regions without them."""
    prompts = [region.prompt for region in regions]
    return {"prompts": prompts} if any(prompts) else {}


@dataclass(frozen=True)
class Published:
    """One region of the message: its row in the (kept) input and what it says."""

    row: int
    text: str
    score: float
    cached: bool


def _describe(describe, frame, header, regions, boxes: np.ndarray, unreadable: dict[int, str], modality: str,
              kind: str, cache: DescriptionCache | None, problems: list[Problem],
              **options) -> tuple[list[Published] | None, float]:
    """The regions to publish, in input order, and the describer's wall time (ms): those the cache serves, then
    the rest described by `describe(frame, boxes, **options)` and stored. None when the describer refused the
    frame. Each region left out becomes a `kind` problem with its reason (the conversion's, for a region that
    could not be read, else the runtime's)."""
    stamp = stamp_to_ns(header.stamp)
    published, fresh = [], []
    for row, region in enumerate(regions):
        entry, outcome = (None, None) if cache is None or row in unreadable else cache.lookup(
            (modality, header.frame_id, region.id), boxes[row], region.prompt, stamp, region.refresh)
        if outcome == HIT:
            published.append(Published(row, entry.text, entry.score, cached=True))
        else:
            fresh.append(row)
    inference_ms = 0.0
    if fresh:
        described, inference_ms = _call(describe, len(fresh), problems, frame, boxes[fresh], **options,
                                        **prompt_options([regions[row] for row in fresh]))
        if described is None:
            return None, inference_ms
        for row, description in zip(fresh, described):
            region, reason = regions[row], unreadable.get(row, description.problem)
            if reason is not None:
                problems.append(Problem(kind, f"skipped {type(region).__name__} '{region.id}': {reason}"))
                continue
            published.append(Published(row, description.text, float(description.score), cached=False))
            if cache is not None:
                cache.store((modality, header.frame_id, region.id), boxes[row], region.prompt, stamp,
                            description.text, description.score)
    return sorted(published, key=lambda item: item.row), inference_ms


def _message(header, regions, published: list[Published], modality: str,
             inference_ms: float) -> RegionDescriptionArray:
    out = RegionDescriptionArray(header=header, inference_ms=float(inference_ms))
    for item in published:
        region = regions[item.row]
        description = RegionDescription(id=region.id, text=item.text, score=item.score, label=region.label,
                                        modality=modality, cached=item.cached)
        if modality == IMAGE_REGION:
            description.region_2d = region
        else:
            description.region_3d = region
        out.descriptions.append(description)
    return out


def describe_camera_frame(describer, image_msg: Image, regions: list[Region2D], *, max_regions: int,
                          min_region_px: float, cache: DescriptionCache | None = None) -> FrameResult:
    """Describe the 2D regions of one image, serving what `cache` may; the result carries the image's header."""
    result = FrameResult(RegionDescriptionArray(header=image_msg.header))
    try:
        result.image = image_to_numpy(image_msg)
    except ValueError as error:
        result.problems.append(Problem(IMAGE, f"skipped an image: {error}"))
        result.failed = True
        return result
    regions = _keep_at_most(regions, max_regions, IMAGE_REGION, result.problems)
    boxes, unreadable = region2d_to_xyxy(regions)
    published, inference_ms = _describe(describer.describe_image_regions, result.image, image_msg.header, regions,
                                        boxes, unreadable, IMAGE_REGION, REGION_2D, cache, result.problems,
                                        min_region_px=min_region_px)
    if published is None:
        result.failed = True
        return result
    height, width = result.image.shape[:2]
    rows = [item.row for item in published]
    result.boxes = clip_boxes_xyxy(boxes[rows].reshape(-1, 4), width, height)  # for drawing only
    result.descriptions = _message(image_msg.header, regions, published, IMAGE_REGION, inference_ms)
    return result


def describe_lidar_frame(describer, cloud_msg: PointCloud2, regions: list[Region3D], *, max_regions: int,
                         cache: DescriptionCache | None = None) -> FrameResult:
    """Describe the 3D regions of one point cloud, serving what `cache` may; the result carries the cloud's
    header."""
    result = FrameResult(RegionDescriptionArray(header=cloud_msg.header))
    try:
        points = pointcloud2_to_xyz(cloud_msg)
    except ValueError as error:
        result.problems.append(Problem(POINTS, f"skipped a point cloud: {error}"))
        result.failed = True
        return result
    if len(points) == 0:
        result.problems.append(Problem(POINTS, (
            f"skipped a point cloud: none of its {cloud_msg.width * cloud_msg.height} points is finite "
            "(all NaN or inf, or the cloud is empty)")))
        result.failed = True
        return result
    regions = _keep_at_most(regions, max_regions, POINTCLOUD_REGION, result.problems)
    corners, unreadable = region3d_to_corners(regions)
    published, inference_ms = _describe(describer.describe_point_regions, points, cloud_msg.header, regions,
                                        corners, unreadable, POINTCLOUD_REGION, REGION_3D, cache, result.problems)
    if published is None:
        result.failed = True
        return result
    result.descriptions = _message(cloud_msg.header, regions, published, POINTCLOUD_REGION, inference_ms)
    return result
