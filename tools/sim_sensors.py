"""A simulated camera, LiDAR and object detector: sensor frames and the regions a detector finds on them.

The node publishes what a robot's drivers and detector would: `image` (sensor_msgs/Image, rgb8) and
`points` (sensor_msgs/PointCloud2) at sensor rates, and for every frame a `regions_2d` / `regions_3d` array
whose header is the frame's (stamp and frame id copied, as a detector does) with one region per object,
its box the true one plus a little detector noise. A scene stays in view for `scene_frames` frames of a sensor, and
the detector tracks its objects meanwhile: each keeps its region id, with fresh noise on its box every frame (what
the describer's description cache serves). The detector is pipelined one frame behind its sensor:
the regions of frame k go out with frame k + 1, so they never overtake the frame they refer to.
A scene that carries the camera's intrinsics also goes out as `camera_info` with its image. With `synchronized`,
one timer drives both sensors: the LiDAR scans with every n-th camera frame, with its stamp and scene index, so a
scene source whose two views show one world (tools/shared_scene.py) gives a cloud and an image of the same moment.

The scenes come from a SceneSource handed to the node (the demo's draws held-out synthetic scenes from
training/data); this module needs neither training nor a model. What each region truly is stays on this
side: the node hands a Detection record (ids, truths, publish time) to its `on_detection` callback for
scoring and never publishes it.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from regionblip_msgs.msg import Region2D, Region2DArray, Region3D, Region3DArray
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from regionblip_ros.conversions import numpy_to_image, xyz_to_pointcloud2
from regionblip_ros.describer_node import CAMERA, LIDAR, REGION_QOS, SENSOR_QOS
from regionblip_ros.sync import stamp_to_ns

NODE_NAME = "sim_sensors"

PARAMETERS = {  # name: (default, description); config/demo.yaml lists the same
    "camera_rate_hz": (10.0, "camera frames per second (0 = no camera)"),
    "lidar_rate_hz": (5.0, "LiDAR scans per second (0 = no LiDAR)"),
    "image_size": (96, "camera image side in pixels"),
    "num_points": (1024, "points per LiDAR scan"),
    "first_index": (0, "index of the first scene drawn from the scene source"),
    "scene_frames": (1, "frames of a sensor each scene stays in view, its objects keeping their region ids"),
    "box_jitter_px": (1.0, "detector noise: each 2D box edge moves by up to this many pixels"),
    "box_jitter_m": (0.02, "detector noise: each 3D box centre and extent moves by up to this many metres"),
    "seed": (0, "seed of the detector noise"),
    "camera_frame_id": ("camera_optical", "frame_id of the images"),
    "lidar_frame_id": ("lidar", "frame_id of the point clouds"),
    "region_label": ("object", "the label the detector gives every region"),
    "region_prompt": ("", "a text prompt the detector puts on the first region of every camera array (an object "
                          "keeps it while tracked); empty: none"),
    "synchronized": (False, "scan the LiDAR with every n-th camera frame (n = camera_rate_hz / lidar_rate_hz, a whole "
                            "number), stamped alike and of the same scene index, as a LiDAR-triggered camera does: "
                            "for scene sources whose camera and LiDAR show one world (tools/shared_scene.py)"),
}


@dataclass(frozen=True)
class CameraScene:
    image: np.ndarray        # (H, W, 3) uint8 RGB
    boxes_xyxy: np.ndarray   # (K, 4) pixel boxes of the objects
    truths: list[dict]       # (K) what each object is, for scoring
    camera_matrix: np.ndarray | None = None  # (3, 3) K in ROS pixels, published on camera_info; None: no camera_info


@dataclass(frozen=True)
class LidarScene:
    points: np.ndarray       # (N, 3) metres, in the LiDAR frame
    centers: np.ndarray      # (K, 3) box centres
    sizes: np.ndarray        # (K, 3) full box extents along the box's own axes
    yaws: np.ndarray         # (K,) box rotation about +z, radians
    truths: list[dict]


def tracked_scene(index: int, scene_frames: int) -> int:
    """The scene a sensor's frame `index` shows, counted from first_index. Each stays in view for scene_frames
    frames, and its objects' region ids are named after it, so the tracker keeps them while it does."""
    return index // scene_frames


class SceneSource(Protocol):
    def camera_scene(self, index: int, image_size: int) -> CameraScene: ...

    def lidar_scene(self, index: int, num_points: int) -> LidarScene: ...


@dataclass(frozen=True)
class Detection:
    """One region array the detector published: which frame, when, and the truth behind each region id."""

    sensor: str                # CAMERA or LIDAR
    index: int                 # frame number of this sensor, from 0
    stamp_ns: int
    published: float           # time.monotonic() right after the region array was published
    truths: dict[str, dict]    # region id -> truth
    image: np.ndarray | None   # the camera frame, for drawing; None for LiDAR


def synchronized_lidar_every(value: dict) -> int:
    """Every how many camera frames a synchronized LiDAR scans; ValueError unless the rates make a whole number."""
    camera, lidar = value["camera_rate_hz"], value["lidar_rate_hz"]
    every = camera / lidar if camera > 0 and lidar > 0 else 0.0
    if every < 1 or abs(every - round(every)) > 1e-9:
        raise ValueError(f"synchronized sensors need camera_rate_hz a whole multiple of lidar_rate_hz, both above 0: "
                         f"got {camera:g} and {lidar:g} Hz")
    return round(every)


def camera_info(matrix: np.ndarray, image_shape: tuple, header: Header) -> CameraInfo:
    """The CameraInfo of an undistorted pinhole camera with intrinsics `matrix` (K) for images of `image_shape`."""
    k = np.asarray(matrix, dtype=np.float64).reshape(3, 3)
    return CameraInfo(header=header, height=image_shape[0], width=image_shape[1], distortion_model="plumb_bob",
                      d=[0.0] * 5, k=k.ravel().tolist(), r=np.eye(3).ravel().tolist(),
                      p=np.hstack([k, np.zeros((3, 1))]).ravel().tolist())


class SimulatedSensors(Node):
    """Publishes image + regions_2d and points + regions_3d once start() is called; see the module docstring."""

    def __init__(self, scenes: SceneSource, *, on_detection: Callable[[Detection], None] = lambda d: None,
                 **node_options):
        super().__init__(NODE_NAME, **node_options)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description, read_only=True))
        self.value = {name: self.get_parameter(name).value for name in PARAMETERS}
        for name in ("camera_rate_hz", "lidar_rate_hz", "box_jitter_px", "box_jitter_m", "first_index"):
            if self.value[name] < 0:
                raise ValueError(f"parameter {name} is {self.value[name]}: it must be 0 or more")
        if self.value["scene_frames"] < 1:
            raise ValueError(f"parameter scene_frames is {self.value['scene_frames']}: it must be at least 1")
        self._lidar_every = synchronized_lidar_every(self.value) if self.value["synchronized"] else 0
        self.scenes, self.on_detection = scenes, on_detection
        self._rng = np.random.default_rng(self.value["seed"])
        self._lock = threading.Lock()  # frame counters and pending detections, shared with stop()
        self._timers = []
        self._pending: dict[str, tuple] = {}
        self.frames = {CAMERA: 0, LIDAR: 0}

        self.image_pub = self.create_publisher(Image, "image", SENSOR_QOS)
        self.regions_2d_pub = self.create_publisher(Region2DArray, "regions_2d", REGION_QOS)
        self.points_pub = self.create_publisher(PointCloud2, "points", SENSOR_QOS)
        self.camera_info_pub = self.create_publisher(CameraInfo, "camera_info", SENSOR_QOS)
        self.regions_3d_pub = self.create_publisher(Region3DArray, "regions_3d", REGION_QOS)

    def start(self) -> None:
        """Start publishing at the configured rates."""
        group = MutuallyExclusiveCallbackGroup()
        if self.value["synchronized"]:
            self._timers.append(self.create_timer(1.0 / self.value["camera_rate_hz"], self.synchronized_tick,
                                                  callback_group=group))
            return
        for sensor, tick in ((CAMERA, self.camera_tick), (LIDAR, self.lidar_tick)):
            rate = self.value[f"{sensor}_rate_hz"]
            if rate > 0:
                self._timers.append(self.create_timer(1.0 / rate, tick, callback_group=group))

    def stop(self) -> None:
        """Stop the sensors and publish the detections still held back for the last frames."""
        for timer in self._timers:
            timer.cancel()
        with self._lock:
            for sensor in list(self._pending):
                self._release(sensor)

    # --- one frame of each sensor ------------------------------------------------------------------------

    def camera_tick(self, stamp=None) -> None:
        with self._lock:
            index = self.frames[CAMERA]
            track = tracked_scene(index, self.value["scene_frames"])
            scene = self.scenes.camera_scene(self.value["first_index"] + track, self.value["image_size"])
            header = self._header(self.value["camera_frame_id"], stamp)
            self.image_pub.publish(numpy_to_image(scene.image, "rgb8", header=header))
            if scene.camera_matrix is not None:
                self.camera_info_pub.publish(camera_info(scene.camera_matrix, scene.image.shape, header))
            regions = self._regions_2d(track, scene)
            self._release(CAMERA)
            self._pending[CAMERA] = (Region2DArray(header=header, regions=regions), index, scene.truths, scene.image)
            self.frames[CAMERA] += 1

    def lidar_tick(self, stamp=None, scene_index: int | None = None) -> None:
        with self._lock:
            index = self.frames[LIDAR]
            track = tracked_scene(index, self.value["scene_frames"]) if scene_index is None else scene_index
            scene = self.scenes.lidar_scene(self.value["first_index"] + track, self.value["num_points"])
            header = self._header(self.value["lidar_frame_id"], stamp)
            self.points_pub.publish(xyz_to_pointcloud2(scene.points, header=header))
            regions = self._regions_3d(track, scene)
            self._release(LIDAR)
            self._pending[LIDAR] = (Region3DArray(header=header, regions=regions), index, scene.truths, None)
            self.frames[LIDAR] += 1

    def synchronized_tick(self) -> None:
        """A camera frame, and with every n-th one a LiDAR scan of the same scene index with the same stamp."""
        stamp, index = self.get_clock().now().to_msg(), self.frames[CAMERA]
        self.camera_tick(stamp)
        if index % self._lidar_every == 0:
            self.lidar_tick(stamp, tracked_scene(index, self.value["scene_frames"]))

    # --- helpers -----------------------------------------------------------------------------------------

    def _header(self, frame_id: str, stamp=None) -> Header:
        return Header(stamp=self.get_clock().now().to_msg() if stamp is None else stamp, frame_id=frame_id)

    def _release(self, sensor: str) -> None:
        """Publish the detection held back for `sensor`'s previous frame, if any (caller holds the lock)."""
        pending = self._pending.pop(sensor, None)
        if pending is None:
            return
        array, index, truths, image = pending
        ids = [region.id for region in array.regions]
        # Handed over before it is published, so that an answer can never arrive ahead of its record.
        self.on_detection(Detection(sensor, index, stamp_to_ns(array.header.stamp), time.monotonic(),
                                    dict(zip(ids, truths)), image))
        (self.regions_2d_pub if sensor == CAMERA else self.regions_3d_pub).publish(array)

    def _regions_2d(self, track: int, scene: CameraScene) -> list[Region2D]:
        height, width = scene.image.shape[:2]
        jitter = self.value["box_jitter_px"]
        boxes = np.asarray(scene.boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        boxes = boxes + self._rng.uniform(-jitter, jitter, boxes.shape)
        boxes = np.clip(boxes, 0, [width, height, width, height])
        return [Region2D(id=f"c{track:04d}-{k}", x=float(x1), y=float(y1), width=float(max(x2 - x1, 1.0)),
                         height=float(max(y2 - y1, 1.0)), label=self.value["region_label"],
                         prompt=self.value["region_prompt"] if k == 0 else "")
                for k, (x1, y1, x2, y2) in enumerate(boxes)]

    def _regions_3d(self, track: int, scene: LidarScene) -> list[Region3D]:
        jitter = self.value["box_jitter_m"]
        centers = scene.centers + self._rng.uniform(-jitter, jitter, scene.centers.shape)
        sizes = np.maximum(scene.sizes + self._rng.uniform(-jitter, jitter, scene.sizes.shape), 0.01)
        regions = []
        for k, (center, size, yaw) in enumerate(zip(centers, sizes, scene.yaws)):
            pose = Pose(position=Point(x=float(center[0]), y=float(center[1]), z=float(center[2])),
                        orientation=Quaternion(z=float(np.sin(yaw / 2)), w=float(np.cos(yaw / 2))))
            regions.append(Region3D(id=f"l{track:04d}-{k}", center=pose,
                                    size=Vector3(x=float(size[0]), y=float(size[1]), z=float(size[2])),
                                    label=self.value["region_label"]))
        return regions
