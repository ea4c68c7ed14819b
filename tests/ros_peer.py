"""A second process for the cross-process transport test.

Subscribes to one RegionDescriptionArray on the topic given as argv[1] and prints it,
CDR-serialized and hex-encoded, on stdout; exits 1 if none arrives within argv[2] seconds.
"""
import sys
import time

import rclpy
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from rclpy.serialization import serialize_message

from regionblip_msgs.msg import RegionDescriptionArray


def main() -> int:
    topic, timeout_s = sys.argv[1], float(sys.argv[2])
    rclpy.init()
    node = rclpy.create_node("ros_peer")
    received = []
    qos = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                     durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(RegionDescriptionArray, topic, received.append, qos)
    deadline = time.monotonic() + timeout_s
    while not received and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    if received:
        print(serialize_message(received[0]).hex(), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0 if received else 1


if __name__ == "__main__":
    sys.exit(main())
