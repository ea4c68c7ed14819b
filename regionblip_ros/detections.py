"""A detector's output (vision_msgs 4.x Detection2DArray / Detection3DArray) as the node's region arrays.

Most ROS 2 detectors publish vision_msgs detections (YOLO wrappers, Isaac ROS). Each detection becomes one region:

- id: the detection's id. A detection without one gets "<sec>.<nanosec>#<index>" (the array's stamp and the
  detection's index in it): the same for the same message, never the same for two frames, so nothing that keys
  on region ids (a description cache) takes two frames' id-less detections for one object.
- label: the class_id of its highest-scoring result (the first of equal scores; a NaN score ranks lowest);
  empty when it has no results.
- 2-D: bbox center and size_x, size_y (pixels) -> Region2D x, y (top-left), width, height. A rotated box
  (theta != 0) is given as its axis-aligned bounds, which hold all of it and some background besides; the
  result counts such boxes in `rotated` for the node to say so.
- 3-D: bbox center pose and size are copied into the Region3D; the node's box reader
  (conversions.region3d_to_corners) refuses a NaN or inf value, a zero quaternion or a negative size there.
- header: the array's (the frame's stamp and frame_id); the detections' own headers are not read.

A 2-D detection whose box is not finite, has a negative size or does not fit Region2D's float32 is left out
with a Problem saying which and why; the others still become regions. Fields are read by name only, so plain
objects with the same fields convert as messages do (tests/test_detections.py).
"""

import functools
import importlib
import math
from dataclasses import dataclass, field

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from regionblip_msgs.msg import Region2D, Region2DArray, Region3D, Region3DArray
from std_msgs.msg import Header

from regionblip_ros.frames import Problem

DETECTION_2D = "detection_2d"  # Problem kind: a Detection2D left out
FLOAT32_MAX = float(np.finfo(np.float32).max)
ROTATED_NOTE = ("a detections_2d box is rotated (bbox.center.theta != 0): regions are its axis-aligned bounds, "
                "which hold all of it and some background besides (logged once)")


@dataclass
class Converted:
    regions: Region2DArray | Region3DArray
    problems: list[Problem] = field(default_factory=list)  # detections left out, each with why
    rotated: int = 0  # 2-D boxes with theta != 0, given as their axis-aligned bounds


def _header(header) -> Header:
    return Header(stamp=Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec), frame_id=header.frame_id)


def region_id(detection, index: int, header) -> str:
    """The detection's id, or "<sec>.<nanosec>#<index>" when it has none (see the module docstring)."""
    return detection.id or f"{header.stamp.sec}.{header.stamp.nanosec:09d}#{index}"


def label(detection) -> str:
    """class_id of the highest-scoring result, the first of equals, a NaN score lowest; "" without results."""
    if not detection.results:
        return ""
    best = max(detection.results,
               key=lambda result: -math.inf if math.isnan(result.hypothesis.score) else result.hypothesis.score)
    return best.hypothesis.class_id


def axis_aligned_xywh(bbox) -> tuple[float, float, float, float]:
    """(x, y, width, height) of the axis-aligned bounds of a BoundingBox2D, rotated by center.theta or not."""
    width, height, theta = bbox.size_x, bbox.size_y, bbox.center.theta
    if theta:
        cos, sin = abs(math.cos(theta)), abs(math.sin(theta))
        width, height = cos * bbox.size_x + sin * bbox.size_y, sin * bbox.size_x + cos * bbox.size_y
    return bbox.center.position.x - width / 2, bbox.center.position.y - height / 2, width, height


def _unreadable_2d(bbox) -> str | None:
    """Why a BoundingBox2D cannot become a Region2D, or None when it can."""
    given = {"center.position.x": bbox.center.position.x, "center.position.y": bbox.center.position.y,
             "center.theta": bbox.center.theta, "size_x": bbox.size_x, "size_y": bbox.size_y}
    for name, value in given.items():
        if not math.isfinite(value):
            return f"bbox {name} is {value}"
    if bbox.size_x < 0 or bbox.size_y < 0:
        return f"bbox size is negative (size_x {bbox.size_x:g}, size_y {bbox.size_y:g}): sizes are 0 or more"
    xywh = axis_aligned_xywh(bbox)
    if not all(abs(value) <= FLOAT32_MAX for value in xywh):
        return f"bbox x, y, width, height {tuple(f'{v:g}' for v in xywh)} do not fit float32 (Region2D)"
    return None


def detections_to_regions_2d(msg) -> Converted:
    """Region2DArray of a Detection2DArray; each detection with a box that cannot be read becomes a Problem."""
    header = _header(msg.header)
    converted = Converted(Region2DArray(header=header))
    for index, detection in enumerate(msg.detections):
        identity = region_id(detection, index, header)
        reason = _unreadable_2d(detection.bbox)
        if reason is not None:
            converted.problems.append(Problem(DETECTION_2D, f"skipped Detection2D '{identity}': {reason}"))
            continue
        x, y, width, height = axis_aligned_xywh(detection.bbox)
        converted.rotated += bool(detection.bbox.center.theta)
        converted.regions.regions.append(Region2D(id=identity, x=x, y=y, width=width, height=height,
                                                  label=label(detection)))
    return converted


def detections_to_regions_3d(msg) -> Converted:
    """Region3DArray of a Detection3DArray: one region per detection, its box pose and size copied."""
    header = _header(msg.header)
    converted = Converted(Region3DArray(header=header))
    for index, detection in enumerate(msg.detections):
        pose, size = detection.bbox.center, detection.bbox.size
        center = Pose(position=Point(x=float(pose.position.x), y=float(pose.position.y), z=float(pose.position.z)),
                      orientation=Quaternion(x=float(pose.orientation.x), y=float(pose.orientation.y),
                                             z=float(pose.orientation.z), w=float(pose.orientation.w)))
        converted.regions.regions.append(Region3D(
            id=region_id(detection, index, header), label=label(detection), center=center,
            size=Vector3(x=float(size.x), y=float(size.y), z=float(size.z))))
    return converted


def subscribe_detections(node, on_detections, qos, callback_group, *, camera: bool, lidar: bool) -> bool:
    """Subscribe detections_2d (if camera) and detections_3d (if lidar) where vision_msgs imports, each calling
    on_detections(topic, convert, msg); where it does not, say once, at info, that detection inputs are off.
    True when vision_msgs imported."""
    try:
        vision_msgs = importlib.import_module("vision_msgs.msg")
    except ImportError as error:
        node.get_logger().info(f"detection inputs (detections_2d, detections_3d) are off: vision_msgs is not "
                               f"importable ({error}); install ros-$ROS_DISTRO-vision-msgs to take a detector's "
                               "Detection2DArray / Detection3DArray")
        return False
    if camera:
        node.create_subscription(vision_msgs.Detection2DArray, "detections_2d",
                                 functools.partial(on_detections, "detections_2d", detections_to_regions_2d),
                                 qos, callback_group=callback_group)
    if lidar:
        node.create_subscription(vision_msgs.Detection3DArray, "detections_3d",
                                 functools.partial(on_detections, "detections_3d", detections_to_regions_3d),
                                 qos, callback_group=callback_group)
    return True
