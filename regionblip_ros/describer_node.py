"""The region_describer node: camera images, LiDAR clouds and regions of interest in, descriptions out.

Frames are buffered by stamp; each region array is matched to its frame and handed, as a job, to a worker
thread that keeps only the newest job per sensor. Callbacks only buffer, match and hand over, so they never
wait for the model. The describe_regions service runs in its own callback group and takes turns with the
worker on the describer.

What is published: every region array that reaches the worker gets exactly one RegionDescriptionArray on
`descriptions`, with its frame's header, holding the regions that were described: possibly none, when the
frame could not be read, the describer refused it or failed, or every region was refused. Why each region was
left out is logged (throttled) and counted on /diagnostics. A region array that matches no buffered frame, or
whose job is replaced by a newer one of the same sensor before it runs, gets nothing, and is counted.

Description cache (description_cache.py, on unless description_cache is false): a region whose id was described
on an earlier frame, with the same prompt, within cache_ttl seconds and with a box of IoU >= cache_iou with the
one described, is published from the cache, marked `cached`, under the new frame's header; only the other
regions reach the describer, and a frame whose regions are all served never calls it. A region's `refresh` flag
forces a fresh description. The describe_regions service never uses the cache: on-demand answers are fresh.

No callback lets an error out: an unexpected one is counted (callback_error, service_error, worker_error) and
the node goes on. Shutdown cancels the job in progress between decode steps.
"""

import functools
import sys
import time
from dataclasses import dataclass

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.context import Context
from rclpy.node import Node
from rclpy.qos import (
    QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data,
)
from regionblip_msgs.msg import Region2DArray, Region3DArray, RegionDescriptionArray
from regionblip_msgs.srv import DescribeRegions
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from regionblip_ros.conversions import numpy_to_image
from regionblip_ros.description_cache import DescriptionCache
from regionblip_ros.detections import ROTATED_NOTE, subscribe_detections
from regionblip_ros.frames import SerializedDescriber, describe_camera_frame, describe_lidar_frame
from regionblip_ros.diagnostics import InputStats, diagnostic_status
from regionblip_ros.drawing import annotate
from regionblip_ros.fusion import make_fusion
from regionblip_ros.markers import description_markers
from regionblip_ros.node_parameters import PARAMETERS, SENSOR_RELIABILITY, check_parameters
from regionblip_ros.spinning import spin_until_signal
from regionblip_ros.sync import Added, FrameBuffer, stamp_to_ns
from regionblip_ros.throttle import ThrottledReporter
from regionblip_ros.worker import LatestJobWorker

NODE_NAME = "region_describer"
SENSOR_QOS = qos_profile_sensor_data  # what the sensor_* parameters default to (tests/test_node.py keeps them equal)
REGION_QOS = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
OUTPUT_QOS = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
DIAGNOSTICS_PERIOD_S = 1.0
EXECUTOR_THREADS = 4  # sensor callbacks, the service and spare: a busy service never holds up the sensors

CAMERA, LIDAR = "camera", "lidar"
FRAME_TOPIC = {CAMERA: "image", LIDAR: "points"}
EMPTY_REGIONS = "empty_regions"
STAMP_OUT_OF_ORDER = "stamp_out_of_order"
CLOCK_JUMP = "clock_jump"
LATE_FRAME = "late_frame"
STAMP_AHEAD = "stamp_ahead"
CALLBACK_ERROR = "callback_error"
WORKER_ERROR = "worker_error"
SERVICE_ERROR = "service_error"
STOP_TIMEOUT_S = 2.0  # how long shutdown waits for the cancelled job to reach its next decode step

def make_describer(bundle: str, backend: str, device: str, max_new_tokens: int, num_beams: int,
                   threads: int = 0):
    """The runtime's Describer over an exported bundle, set to generate as the parameters say."""
    try:
        from runtime import Describer  # imported here: ROS tooling must not need the runtime to load the node
    except ImportError as error:
        raise RuntimeError(f"cannot build a describer: runtime.Describer is not importable ({error}); "
                           "install the runtime or pass a describer to the node") from error
    describer = Describer.from_bundle(bundle, backend=backend, device=device, threads=threads or None)
    describer.configure(max_new_tokens=max_new_tokens, num_beams=num_beams)
    return describer


def _guarded(callback):
    """A node callback that counts and logs (throttled) an unexpected error instead of letting it out into the
    executor, which would stop every callback of the node."""
    @functools.wraps(callback)
    def guarded(self, *args):
        try:
            return callback(self, *args)
        except Exception as error:
            self.bad_inputs.report(CALLBACK_ERROR, f"{callback.__name__} failed and skipped its message: {error!r}")
    return guarded


@dataclass(frozen=True)
class Job:
    frame: Image | PointCloud2
    regions: list
    received: float  # time.monotonic() when the region array arrived: latency is measured from here
    camera_frame: Image | None = None  # for a LiDAR job, the image nearest its cloud (fuse_camera)


class RegionDescriber(Node):
    """Describes regions of camera and LiDAR frames; see the module docstring and DESIGN.md, 'ROS 2'."""

    def __init__(self, *, describer=None, **node_options):
        super().__init__(NODE_NAME, **node_options)
        try:
            value = self._declare_parameters()
            self.fusion = make_fusion(self, value["fuse_camera"], value["lidar_to_camera"], value["min_region_px"])
            if describer is None:
                describer = make_describer(value["bundle"], value["backend"], value["device"],
                                           value["max_new_tokens"], value["num_beams"], value["threads"])
        except Exception:
            super().destroy_node()  # leave no half-built node in the graph
            raise
        self.max_regions, self.min_region_px = value["max_regions"], value["min_region_px"]
        self.sync_slop_ns = round(value["sync_slop"] * 1e9)
        self.max_stamp_ahead_ns = round(value["max_stamp_ahead"] * 1e9)
        self.describer = SerializedDescriber(describer)
        self.cache = (DescriptionCache(value["cache_iou"], value["cache_ttl"], value["cache_size"])
                      if value["description_cache"] else None)
        self.bad_inputs = ThrottledReporter(self.get_logger().warning)
        self.stats = InputStats()
        jump_ns = round(value["clock_jump"] * 1e9)
        self._frames = {sensor: FrameBuffer(value["frame_buffer"], jump_ns) for sensor in (CAMERA, LIDAR)}
        self._last_stamp_ns: dict[str, int] = {}
        self._reported_problems = 0

        self.descriptions_pub = self.create_publisher(RegionDescriptionArray, "descriptions", OUTPUT_QOS)
        self.markers_pub = None
        if value["publish_markers"]:
            self.markers_pub = self.create_publisher(MarkerArray, "markers", OUTPUT_QOS)
        self.annotated_pub = None
        if value["publish_annotated"]:
            self.annotated_pub = self.create_publisher(Image, "annotated_image", OUTPUT_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", OUTPUT_QOS)

        sensor_qos = QoSProfile(depth=value["sensor_depth"], history=QoSHistoryPolicy.KEEP_LAST,
                                reliability=SENSOR_RELIABILITY[value["sensor_reliability"]],
                                durability=QoSDurabilityPolicy.VOLATILE)
        sensors = MutuallyExclusiveCallbackGroup()
        if value["enable_camera"] or self.fusion:
            self.create_subscription(Image, "image", self.on_image, sensor_qos, callback_group=sensors)
        if self.fusion:
            self.create_subscription(CameraInfo, "camera_info", self.on_camera_info, sensor_qos,
                                     callback_group=sensors)
        if value["enable_camera"]:
            self.create_subscription(Region2DArray, "regions_2d", self.on_regions_2d, REGION_QOS,
                                     callback_group=sensors)
        if value["enable_lidar"]:
            self.create_subscription(PointCloud2, "points", self.on_points, sensor_qos, callback_group=sensors)
            self.create_subscription(Region3DArray, "regions_3d", self.on_regions_3d, REGION_QOS,
                                     callback_group=sensors)
        if value["enable_detections"]:
            subscribe_detections(self, self.on_detections, REGION_QOS, sensors, camera=value["enable_camera"],
                                 lidar=value["enable_lidar"])
        self.create_service(DescribeRegions, "describe_regions", self.on_describe_regions,
                            callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(DIAGNOSTICS_PERIOD_S, self.publish_diagnostics, callback_group=sensors)
        self.worker = LatestJobWorker(self._process, self._on_worker_error)
        self.get_logger().info(f"describing with backend {self.describer.backend}; camera "
                               f"{'on' if value['enable_camera'] else 'off'}, lidar "
                               f"{'on' if value['enable_lidar'] else 'off'}")

    def _declare_parameters(self) -> dict:
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(  # an empty list has no element type yet
                description=description, read_only=True, dynamic_typing=isinstance(default, list)))
        value = {name: self.get_parameter(name).value for name in PARAMETERS}
        check_parameters(value)
        return value

    # --- callbacks: buffer, match, hand over; never wait -------------------------------------------------

    @_guarded
    def on_image(self, msg: Image) -> None:
        self._buffer(CAMERA, "image", msg)

    @_guarded
    def on_points(self, msg: PointCloud2) -> None:
        self._buffer(LIDAR, "points", msg)

    @_guarded
    def on_camera_info(self, msg: CameraInfo) -> None:
        self.stats.received("camera_info")
        self._report(self.fusion.set_camera_info(msg))

    @_guarded
    def on_regions_2d(self, msg: Region2DArray) -> None:
        self._match(CAMERA, "regions_2d", msg)

    @_guarded
    def on_regions_3d(self, msg: Region3DArray) -> None:
        self._match(LIDAR, "regions_3d", msg)

    @_guarded
    def on_detections(self, topic: str, convert, msg) -> None:
        """A detector's array (vision_msgs; regionblip_ros/detections.py), matched as the regions it converts to."""
        if not msg.detections:  # the detector saw nothing in this frame: normal, not a bad input
            self.stats.received(topic)
            return
        converted = convert(msg)
        self._report(converted.problems)
        if converted.rotated:
            self.get_logger().info(ROTATED_NOTE, once=True)
        self._match(CAMERA if isinstance(converted.regions, Region2DArray) else LIDAR, topic, converted.regions)

    def on_describe_regions(self, request, response):
        """Describe the request's image regions and/or cloud regions now, in this (service) thread."""
        try:
            return self._describe_request(request, response)
        except Exception as error:  # any failure must answer the call, not take down the executor
            message = f"describing the request failed: {error!r}"
            self.bad_inputs.report(SERVICE_ERROR, message)
            response.success, response.message = False, message
            return response

    def _describe_request(self, request, response):
        parts = []
        if request.image.width or request.regions_2d:
            parts.append(describe_camera_frame(self.describer, request.image, list(request.regions_2d),
                                               max_regions=self.max_regions, min_region_px=self.min_region_px))
        if request.cloud.width or request.regions_3d:
            parts.append(describe_lidar_frame(self.describer, request.cloud, list(request.regions_3d),
                                              max_regions=self.max_regions))
        if not parts:
            response.success = False
            response.message = ("nothing to describe: fill image + regions_2d and/or cloud + regions_3d "
                                "(an image or cloud of width 0 is skipped)")
            return response
        problems = [problem for part in parts for problem in part.problems]
        self._report(problems)
        response.descriptions.header = parts[0].descriptions.header
        response.descriptions.inference_ms = sum(part.descriptions.inference_ms for part in parts)
        for part in parts:
            response.descriptions.descriptions.extend(part.descriptions.descriptions)
        response.success = not any(part.failed for part in parts)
        response.message = "; ".join(problem.message for problem in problems)
        return response

    @_guarded
    def publish_diagnostics(self) -> None:
        problems = self.bad_inputs.counts()
        new_problems = sum(problems.values()) - self._reported_problems
        self._reported_problems += new_problems
        dropped = {CAMERA: 0, LIDAR: 0, **self.worker.dropped()}
        status = diagnostic_status(self.get_fully_qualified_name(), self.describer.backend, self.stats.rates_hz(),
                                   dropped, problems, new_problems, self.stats.latency_percentiles_ms(),
                                   None if self.cache is None else self.cache.counts())
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)

    def stop_work(self) -> None:
        """Cancel the job in progress (at its next decode step), drop pending ones and end the worker; the
        describe_regions service answers success=false from then on. Call before the executor shuts down."""
        self.describer.cancel()
        self.worker.stop(STOP_TIMEOUT_S)

    def destroy_node(self) -> None:
        self.stop_work()
        super().destroy_node()

    # --- helpers of the callbacks ------------------------------------------------------------------------

    def _stamp_ns(self, topic: str, msg) -> int:
        stamp = stamp_to_ns(msg.header.stamp)
        previous = self._last_stamp_ns.get(topic)
        if previous is not None and stamp < previous:
            self.bad_inputs.report(STAMP_OUT_OF_ORDER, (
                f"{topic} stamp {stamp * 1e-9:.3f} s is older than the one before ({previous * 1e-9:.3f} s): "
                "still matched by stamp; a frame more than clock_jump s older than the newest restarts the frame "
                "buffer"))
        self._last_stamp_ns[topic] = stamp
        return stamp

    def _buffer(self, sensor: str, topic: str, msg) -> None:
        self.stats.received(topic)
        stamp = self._stamp_ns(topic, msg)
        now = self.get_clock().now().nanoseconds
        if self.max_stamp_ahead_ns and now > 0 and stamp > now + self.max_stamp_ahead_ns:
            self.bad_inputs.report(STAMP_AHEAD, (
                f"dropped a {topic} frame stamped {(stamp - now) * 1e-9:.1f} s ahead of this node's clock "
                f"(max_stamp_ahead {self.max_stamp_ahead_ns * 1e-9:g} s): fix the publisher's clock, or set "
                "use_sim_time the same on both sides"))
            return
        frames = self._frames[sensor]
        newest = frames.newest
        added = frames.add(stamp, msg)
        if added is Added.RESET:
            self.bad_inputs.report(CLOCK_JUMP, (
                f"{topic} stamp {stamp * 1e-9:.3f} s is {(newest - stamp) * 1e-9:.1f} s before the newest buffered "
                f"frame ({newest * 1e-9:.3f} s), more than clock_jump: taken for a clock jump back (a bag loop, a "
                f"simulator restart); the {topic} buffer restarted from this frame"))
        elif added is Added.TOO_OLD:
            self.bad_inputs.report(LATE_FRAME, (
                f"dropped a {topic} frame stamped {stamp * 1e-9:.3f} s: older than all {len(frames)} buffered "
                "frames; raise frame_buffer if its regions come this late"))

    def _match(self, sensor: str, topic: str, msg) -> None:
        received = time.monotonic()
        self.stats.received(topic)
        stamp = self._stamp_ns(topic, msg)
        if not msg.regions:
            self.bad_inputs.report(EMPTY_REGIONS, f"skipped a {topic} array with no regions: nothing to describe")
            return
        frames = self._frames[sensor]
        frame = frames.match(stamp, self.sync_slop_ns)
        if frame is None:
            held = (f"{frames.stamps[0] * 1e-9:.3f} to {frames.stamps[-1] * 1e-9:.3f} s" if len(frames)
                    else "none")
            self.bad_inputs.report(f"unmatched_{topic}", (
                f"no {FRAME_TOPIC[sensor]} within sync_slop {self.sync_slop_ns * 1e-9:g} s of the {topic} stamp "
                f"{stamp * 1e-9:.3f} s (buffered: {held}): give region arrays the header of the frame they "
                "were computed on, or raise sync_slop / frame_buffer"))
            return
        camera_frame = self._frames[CAMERA].match(stamp, self.sync_slop_ns) if sensor == LIDAR and self.fusion else None
        self.worker.submit(sensor, Job(frame, list(msg.regions), received, camera_frame))

    # --- the worker thread -------------------------------------------------------------------------------

    def _process(self, sensor: str, job: Job) -> None:
        if sensor == CAMERA:
            result = describe_camera_frame(self.describer, job.frame, job.regions, max_regions=self.max_regions,
                                           min_region_px=self.min_region_px, cache=self.cache)
        else:
            result = describe_lidar_frame(self.describer, job.frame, job.regions, max_regions=self.max_regions,
                                          cache=self.cache)
            if self.fusion is not None and not result.failed:
                result.problems += self.fusion.fuse(self.describer, result.descriptions, job.camera_frame)
        self._report(result.problems)
        self.descriptions_pub.publish(result.descriptions)
        if result.failed:
            return
        self.stats.latency((time.monotonic() - job.received) * 1e3)
        if self.markers_pub is not None and sensor == LIDAR:
            self.markers_pub.publish(description_markers(result.descriptions))
        if self.annotated_pub is not None and sensor == CAMERA and self.annotated_pub.get_subscription_count():
            captions = [f"{d.label}: {d.text}" if d.label else d.text for d in result.descriptions.descriptions]
            drawn = annotate(result.image, result.boxes, captions)
            self.annotated_pub.publish(numpy_to_image(drawn, "rgb8", header=result.descriptions.header))

    def _on_worker_error(self, sensor: str, job: Job, error: Exception) -> None:
        if self.worker.stopping:
            return  # the job was cancelled by stop_work: shutting down, nothing to report
        self.bad_inputs.report(WORKER_ERROR, f"describing a {sensor} frame failed, skipped it: {error!r}")
        self.descriptions_pub.publish(RegionDescriptionArray(header=job.frame.header))

    def _report(self, problems) -> None:
        for problem in problems:
            self.bad_inputs.report(problem.kind, problem.message)


def main(args: list[str] | None = None) -> int:
    """Run one region_describer until SIGINT/SIGTERM (ros2 run regionblip_ros region_describer)."""
    context = Context()
    rclpy.init(args=args, context=context)
    try:
        node = RegionDescriber(context=context)
    except Exception as error:  # bad parameters or an unloadable bundle: say which, do not spin
        print(f"{NODE_NAME}: {error}", file=sys.stderr)
        context.try_shutdown()
        return 1
    return spin_until_signal([node], context, num_threads=EXECUTOR_THREADS, before_shutdown=node.stop_work)


if __name__ == "__main__":
    sys.exit(main())
