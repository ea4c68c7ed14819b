"""A region_describer under test and a peer node that feeds it, spinning on a background executor.

The rig puts both nodes in a namespace of their own, so tests that run side by side never share a topic
(except /diagnostics, which the rig filters by the node's name), and waits until every topic is matched
before a test publishes anything.
"""

import threading
import time
import uuid

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from regionblip_msgs.msg import Region2D, Region2DArray, Region3D, Region3DArray, RegionDescriptionArray
from regionblip_msgs.srv import DescribeRegions
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from regionblip_ros.conversions import numpy_to_image, xyz_to_pointcloud2
from regionblip_ros.describer_node import RegionDescriber
from regionblip_ros.executor import NodeExecutor

TIMEOUT_S = 10.0
QOS = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)


def wait_for(predicate, timeout_s: float = TIMEOUT_S, poll_s: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(poll_s)
    return bool(predicate())


def header(sec: int, nanosec: int = 0, frame_id: str = "camera_optical") -> Header:
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = sec, nanosec
    return header


def camera_image(stamp: Header, width: int = 64, height: int = 48) -> Image:
    """A mid-grey rgb8 frame: annotations drawn on it stand out."""
    return numpy_to_image(np.full((height, width, 3), 128, np.uint8), "rgb8", header=stamp)


def boxes(*xywh, label: str = "thing") -> list[Region2D]:
    return [Region2D(id=f"det-{i}", x=float(x), y=float(y), width=float(w), height=float(h), label=label)
            for i, (x, y, w, h) in enumerate(xywh)]


def lidar_cloud(stamp: Header, points: int = 500) -> PointCloud2:
    xyz = np.random.default_rng(0).uniform(-5, 5, (points, 3)).astype(np.float32)
    return xyz_to_pointcloud2(xyz, header=stamp)


def cubes(*centres, label: str = "box") -> list[Region3D]:
    return [Region3D(id=f"obj-{i}", label=label, size=Vector3(x=1.0, y=1.0, z=1.0),
                     center=Pose(position=Point(x=float(x), y=float(y), z=float(z)), orientation=Quaternion(w=1.0)))
            for i, (x, y, z) in enumerate(centres)]


def subscribed_topics(node) -> set[str]:
    """The topics a node subscribes, by their last name (without the namespace)."""
    return {subscription.topic_name.rsplit("/", 1)[-1] for subscription in node.subscriptions}


class NodeRig:
    def __init__(self, context, describer, **parameters):
        self.namespace = "/t_" + uuid.uuid4().hex[:10]
        overrides = [Parameter(name, value=value) for name, value in parameters.items()]
        self.node = RegionDescriber(describer=describer, context=context, namespace=self.namespace,
                                    parameter_overrides=overrides)
        self.peer = rclpy.create_node("peer", context=context, namespace=self.namespace)
        self.image_pub = self.peer.create_publisher(Image, "image", QOS)
        self.regions_2d_pub = self.peer.create_publisher(Region2DArray, "regions_2d", QOS)
        self.points_pub = self.peer.create_publisher(PointCloud2, "points", QOS)
        self.regions_3d_pub = self.peer.create_publisher(Region3DArray, "regions_3d", QOS)
        self.descriptions, self.markers, self.annotated, self.diagnostics = [], [], [], []
        self.peer.create_subscription(RegionDescriptionArray, "descriptions", self.descriptions.append, QOS)
        self.peer.create_subscription(MarkerArray, "markers", self.markers.append, QOS)
        self.peer.create_subscription(Image, "annotated_image", self.annotated.append, QOS)
        self.peer.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, QOS)
        self.client = self.peer.create_client(DescribeRegions, "describe_regions")
        self.executor = NodeExecutor(num_threads=4, context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()
        publishers = [self.image_pub, self.regions_2d_pub, self.points_pub, self.regions_3d_pub]
        outputs = [self.node.descriptions_pub, self.node.markers_pub, self.node.annotated_pub]
        assert wait_for(lambda: all(p.get_subscription_count() for p in publishers + outputs)
                        and self.client.service_is_ready()), "the rig's topics never matched"

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        mine = [s for s in msg.status if s.name == self.node.get_fully_qualified_name()]
        self.diagnostics.extend(mine)

    def received(self, topic: str) -> int:
        return self.node.stats.counts().get(topic, 0)

    def publish_frame(self, publisher, topic: str, msg) -> None:
        """Publish a frame and wait until the node has buffered it, so regions sent next find it."""
        before = self.received(topic)
        publisher.publish(msg)
        assert wait_for(lambda: self.received(topic) > before), f"the node never received the {topic}"

    def send_image(self, image: Image, regions: list[Region2D], regions_header: Header | None = None) -> None:
        self.publish_frame(self.image_pub, "image", image)
        self.regions_2d_pub.publish(Region2DArray(header=regions_header or image.header, regions=regions))

    def send_cloud(self, cloud: PointCloud2, regions: list[Region3D]) -> None:
        self.publish_frame(self.points_pub, "points", cloud)
        self.regions_3d_pub.publish(Region3DArray(header=cloud.header, regions=regions))

    def next_descriptions(self, count: int = 1) -> RegionDescriptionArray:
        assert wait_for(lambda: len(self.descriptions) >= count), "no descriptions were published"
        return self.descriptions[count - 1]

    def call(self, request: DescribeRegions.Request, timeout_s: float = TIMEOUT_S):
        future = self.client.call_async(request)
        assert wait_for(future.done, timeout_s), "the service never answered"
        return future.result()

    def problems(self) -> dict[str, int]:
        return self.node.bad_inputs.counts()

    def close(self) -> None:
        self.executor.shutdown()
        self._spinner.join(TIMEOUT_S)
        self.node.destroy_node()
        self.peer.destroy_node()
