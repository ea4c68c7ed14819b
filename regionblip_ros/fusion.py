"""Camera–LiDAR fusion in the region_describer: each described LiDAR region also gets the camera's description
of where it lands in the image.

For a LiDAR job the node hands over the camera frame buffered nearest the cloud's stamp (within sync_slop).
CameraFusion projects each described region's 3-D box into that image (regionblip_ros/projection.py: the
latest valid CameraInfo's pinhole K, distortion ignored, and the LiDAR→camera transform), describes all the
projected boxes in one describe_image_regions call and writes the camera's text, its score and the projected
box (region_2d) on the region's RegionDescription. A region with no usable projection keeps an empty
camera_text; every reason comes back as a Problem for the node to count and log, as regions do in frames.py.

The transform is the lidar_to_camera parameter, or else tf2's lookup of the camera frame from the LiDAR frame
at the cloud's stamp where tf2_ros imports. tf2 has no pip wheel, so that path (Tf2Transforms) is not exercised
by this project's tests; it is kept to the lookup alone.
"""

import time

import numpy as np
from regionblip_msgs.msg import Region2D, RegionDescriptionArray
from sensor_msgs.msg import CameraInfo, Image

from contract.boxes import quaternion_to_matrix
from regionblip_ros.conversions import image_to_numpy
from regionblip_ros.frames import DESCRIBER, IMAGE, Problem, prompt_options
from regionblip_ros.projection import PinholeCamera, box_vertices, pinhole_camera, project_boxes, rigid_transform

# Problem kinds (the node's bad-input counters).
CAMERA_INFO = "camera_info"            # a CameraInfo that cannot be used, or not of the image's size
FUSION_NO_IMAGE = "fusion_no_image"    # no camera frame within sync_slop of the cloud
FUSION_NO_CAMERA_INFO = "fusion_no_camera_info"  # no valid CameraInfo yet
FUSION_NO_TRANSFORM = "fusion_no_transform"      # tf2 has no LiDAR→camera transform for the cloud's stamp
PROJECTION = "projection"              # a region that does not land in the image (behind, outside, too small)


def camera_from_info(msg: CameraInfo) -> PinholeCamera:
    """The pinhole camera of a CameraInfo's K and size; ValueError, with what is wrong, if it cannot be used."""
    if msg.binning_x > 1 or msg.binning_y > 1 or msg.roi.width or msg.roi.height:
        raise ValueError(f"camera_info has binning {msg.binning_x}x{msg.binning_y} and roi {msg.roi.width}x"
                         f"{msg.roi.height}: not supported, publish the CameraInfo of the image as it is sent")
    return pinhole_camera(msg.k, msg.width, msg.height)


class Tf2Transforms:
    """LiDAR→camera transforms from tf2 (untested here: no tf2 wheel exists for pip-only ROS 2)."""

    def __init__(self, node):
        import tf2_ros
        self.buffer = tf2_ros.Buffer()
        self.listener = tf2_ros.TransformListener(self.buffer, node)

    def __call__(self, camera_frame: str, lidar_frame: str, stamp) -> np.ndarray:
        from rclpy.time import Time
        from tf2_ros import TransformException
        try:
            transform = self.buffer.lookup_transform(camera_frame, lidar_frame, Time.from_msg(stamp)).transform
        except TransformException as error:
            raise LookupError(str(error)) from error
        t, q = transform.translation, transform.rotation
        return rigid_transform([t.x, t.y, t.z, q.x, q.y, q.z, q.w])


def make_fusion(node, fuse_camera: bool, lidar_to_camera, min_region_px: float) -> "CameraFusion | None":
    """The node's CameraFusion, or None when fuse_camera is off or no transform can be had (lidar_to_camera
    empty and tf2_ros not importable: said once in the log). ValueError for a malformed lidar_to_camera, checked
    even with fusion off so that a typo is found at start."""
    try:
        matrix = rigid_transform(lidar_to_camera) if len(lidar_to_camera) else None
    except (TypeError, ValueError) as error:
        raise ValueError(f"parameter lidar_to_camera is {lidar_to_camera!r}: {error}") from error
    if not fuse_camera:
        return None
    if matrix is not None:
        return CameraFusion(lambda camera_frame, lidar_frame, stamp: matrix, min_region_px)
    try:
        return CameraFusion(Tf2Transforms(node), min_region_px)
    except ImportError:
        node.get_logger().warning("fuse_camera is on, but lidar_to_camera is empty and tf2_ros is not installed: "
                                  "LiDAR regions are not fused; set lidar_to_camera (x y z qx qy qz qw)")
        return None


class CameraFusion:
    """The latest valid CameraInfo and the transform source; fuse() adds the camera's view to LiDAR regions.

    transforms(camera_frame, lidar_frame, stamp) gives the (4, 4) LiDAR→camera matrix or raises LookupError.
    """

    def __init__(self, transforms, min_region_px: float):
        self.transforms, self.min_region_px = transforms, min_region_px
        self._camera: PinholeCamera | None = None  # replaced whole by the callback, read by the worker

    def set_camera_info(self, msg: CameraInfo) -> list[Problem]:
        """Keep the camera of a valid CameraInfo; a malformed one pauses fusion until a valid one arrives."""
        try:
            self._camera = camera_from_info(msg)
        except ValueError as error:
            self._camera = None
            return [Problem(CAMERA_INFO, f"skipped a camera_info, LiDAR regions are not fused until a valid one "
                                         f"arrives: {error}")]
        return []

    def fuse(self, describer, descriptions: RegionDescriptionArray, image_msg: Image | None) -> list[Problem]:
        """Write camera_text, camera_score and region_2d on the descriptions whose box lands in the image."""
        items = descriptions.descriptions
        camera = self._camera
        if not items:
            return []
        if image_msg is None:
            return [Problem(FUSION_NO_IMAGE, "no image within sync_slop of the cloud: its regions are not fused "
                                             "(give the camera and LiDAR close stamps, or raise sync_slop)")]
        if camera is None:
            return [Problem(FUSION_NO_CAMERA_INFO, "no valid camera_info received yet: LiDAR regions are not "
                                                   "fused (publish sensor_msgs/CameraInfo on camera_info)")]
        try:
            lidar_to_camera = self.transforms(image_msg.header.frame_id, descriptions.header.frame_id,
                                              descriptions.header.stamp)
        except LookupError as error:
            return [Problem(FUSION_NO_TRANSFORM, f"no transform from {descriptions.header.frame_id!r} to "
                                                 f"{image_msg.header.frame_id!r}: regions not fused ({error})")]
        try:
            image = image_to_numpy(image_msg)
        except ValueError as error:
            return [Problem(IMAGE, f"skipped an image for fusion: {error}")]
        if image.shape[:2] != (camera.height, camera.width):
            return [Problem(CAMERA_INFO, (
                f"camera_info is for {camera.width}x{camera.height} images, the image is {image.shape[1]}x"
                f"{image.shape[0]}: publish the CameraInfo of the image topic; regions not fused"))]
        boxes, unusable = project_boxes(camera, lidar_to_camera, region_vertices([item.region_3d for item in items]),
                                        min_region_px=self.min_region_px)
        problems = [Problem(PROJECTION, f"LiDAR region '{items[row].id}' has no camera view: {reason}")
                    for row, reason in unusable.items()]
        rows = [row for row in range(len(items)) if row not in unusable]
        if not rows:
            return problems
        start = time.perf_counter()
        try:
            # a LiDAR region's prompt asks the camera too (e.g. its colour, which only the camera sees)
            described = describer.describe_image_regions(image, boxes[rows], min_region_px=self.min_region_px,
                                                         **prompt_options([items[row].region_3d for row in rows]))
        except ValueError as error:
            return problems + [Problem(DESCRIBER, f"the describer refused the image for fusion: {error}")]
        descriptions.inference_ms += (time.perf_counter() - start) * 1e3
        for row, description, (x1, y1, x2, y2) in zip(rows, described, boxes[rows].tolist()):
            item = items[row]
            if description.problem is not None:
                problems.append(Problem(PROJECTION, f"LiDAR region '{item.id}' has no camera view: "
                                                    f"{description.problem}"))
                continue
            item.camera_text, item.camera_score = description.text, float(description.score)
            item.region_2d = Region2D(id=item.id, x=x1, y=y1, width=x2 - x1, height=y2 - y1, label=item.label)
        return problems


def region_vertices(regions) -> np.ndarray:
    """The true vertices (R, 8, 3) of Region3D boxes (NaN where a box cannot be read; described regions can)."""
    vertices = np.full((len(regions), 8, 3), np.nan)
    for row, region in enumerate(regions):
        pose, size = region.center, region.size
        quaternion = np.array([pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w])
        largest = np.abs(quaternion).max()
        if not (np.isfinite(quaternion).all() and largest > 0):
            continue
        rotation = quaternion_to_matrix((quaternion / largest)[None])
        center = [[pose.position.x, pose.position.y, pose.position.z]]
        vertices[row] = box_vertices(center, rotation, [[size.x, size.y, size.z]])[0]
    return vertices
