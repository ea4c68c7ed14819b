"""Our messages cross DDS intact: nested Region2D/Region3D inside a RegionDescriptionArray."""
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402

from geometry_msgs.msg import Point, Pose, Quaternion, Vector3  # noqa: E402
from regionblip_msgs.msg import (  # noqa: E402
    Region2D,
    Region3D,
    RegionDescription,
    RegionDescriptionArray,
)

QOS = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                 durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
TIMEOUT_S = 20.0


def make_descriptions() -> RegionDescriptionArray:
    msg = RegionDescriptionArray()
    msg.header.stamp.sec = 1_700_000_123
    msg.header.stamp.nanosec = 456_789_012
    msg.header.frame_id = "camera_optical"
    msg.inference_ms = 12.5
    camera = RegionDescription(
        id="det-7", text="a small red circle left of a cube", score=-0.25, label="ball",
        modality="image_region",
        region_2d=Region2D(id="det-7", x=10.5, y=20.25, width=64.0, height=32.0,
                           label="ball", prompt="what colour is it?"),
    )
    lidar = RegionDescription(
        id="obj-3", text="a large cone — beside the wall", score=-1.5, label="cone",
        modality="pointcloud_region",
        region_3d=Region3D(
            id="obj-3",
            center=Pose(position=Point(x=1.0, y=-2.0, z=0.5),
                        orientation=Quaternion(x=0.0, y=0.0, z=0.38268343, w=0.92387953)),
            size=Vector3(x=0.4, y=0.4, z=1.2), label="cone", prompt="",
        ),
    )
    msg.descriptions = [camera, lidar]
    return msg


def unique_topic() -> str:
    return "descriptions_" + uuid.uuid4().hex[:12]


def wait_for(predicate, spin, timeout_s: float = TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        spin()
    return predicate()


def test_message_arrives_intact_between_two_nodes_in_one_process(ros_context):
    topic, sent, received = unique_topic(), make_descriptions(), []
    talker = rclpy.create_node("talker", context=ros_context)
    listener = rclpy.create_node("listener", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(talker)
    executor.add_node(listener)
    publisher = talker.create_publisher(RegionDescriptionArray, topic, QOS)
    listener.create_subscription(RegionDescriptionArray, topic, received.append, QOS)
    spin = lambda: executor.spin_once(timeout_sec=0.05)  # noqa: E731

    assert wait_for(lambda: publisher.get_subscription_count() == 1, spin), "subscription never matched"
    publisher.publish(sent)
    assert wait_for(lambda: received, spin), "message never arrived"

    assert received[0] == sent
    assert received[0].descriptions[1].region_3d.center.orientation.z == pytest.approx(0.38268343)
    assert received[0].descriptions[1].text == "a large cone — beside the wall"
    executor.shutdown()


def test_message_arrives_intact_in_another_process(ros_context):
    topic, sent = unique_topic(), make_descriptions()
    talker = rclpy.create_node("talker", context=ros_context)
    publisher = talker.create_publisher(RegionDescriptionArray, topic, QOS)
    peer = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("ros_peer.py")), topic, str(TIMEOUT_S)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        matched = wait_for(lambda: publisher.get_subscription_count() == 1,
                           lambda: time.sleep(0.05))
        assert matched, "the other process's subscription never matched"
        publisher.publish(sent)
        out, err = peer.communicate(timeout=TIMEOUT_S + 10)
    finally:
        peer.kill()
    assert peer.returncode == 0, f"peer received nothing: {err}"
    assert deserialize_message(bytes.fromhex(out.strip()), RegionDescriptionArray) == sent
