"""The burst test's camera and detector, in a process of their own as on a robot.

python tests/burst_source.py NAMESPACE RATE_HZ FRAMES FIRST_SEC: waits until the node's image, regions_2d and
descriptions topics are matched, publishes FRAMES images at RATE_HZ with each one's regions sent with the next
image, prints "published" and waits for a line on stdin (the test sends it once the node's worker is idle, so
every description has been published), keeps listening until no description has arrived for QUIET_S, and prints
JSON: the stamps sent, when each image was published and when each frame's descriptions arrived
(time.monotonic(), which is system-wide). Without the handshake a starved node could still be describing when a
quiet spell ended the listening (2 of 221 descriptions missed once in CI).
"""
import json
import sys
import threading
import time

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from regionblip_msgs.msg import Region2DArray, RegionDescriptionArray
from sensor_msgs.msg import Image

from node_rig import QOS, boxes, header, wait_for
from regionblip_ros.conversions import numpy_to_image
from regionblip_ros.sync import stamp_to_ns

QUIET_S = 1.5
MAX_DRAIN_S = 15.0


def main() -> int:
    namespace, rate_hz, frames, first_sec = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rclpy.init()
    node = rclpy.create_node("burst_source", namespace=namespace)
    image_pub = node.create_publisher(Image, "image", QOS)
    regions_pub = node.create_publisher(Region2DArray, "regions_2d", QOS)
    described: list[tuple[int, float]] = []
    node.create_subscription(RegionDescriptionArray, "descriptions",
                             lambda msg: described.append((stamp_to_ns(msg.header.stamp), time.monotonic())), QOS)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    if not wait_for(lambda: image_pub.get_subscription_count() and regions_pub.get_subscription_count()
                    and node.count_publishers(f"{namespace}/descriptions"), timeout_s=20.0):
        print("burst_source: the node's topics never matched", file=sys.stderr)
        return 1

    image = numpy_to_image(np.full((240, 320, 3), 128, np.uint8), "rgb8")
    regions = boxes((10, 10, 60, 40), (100, 80, 50, 90), (200, 20, 80, 80))
    stamps, published_at, previous = [], {}, None
    start = time.monotonic()
    for k in range(frames + 1):
        delay = start + k / rate_hz - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if k < frames:
            image.header = header(first_sec + k // 30, k % 30 * 33_333_333)
            stamps.append(stamp_to_ns(image.header.stamp))
            published_at[stamps[-1]] = time.monotonic()
            image_pub.publish(image)
        if previous is not None:
            regions_pub.publish(Region2DArray(header=previous, regions=regions))
        previous = image.header

    print("published", flush=True)
    sys.stdin.readline()  # the node's worker is idle (or the test is gone: EOF)
    drain_end = time.monotonic() + MAX_DRAIN_S
    while time.monotonic() < drain_end:
        last = described[-1][1] if described else start
        if time.monotonic() - last > QUIET_S:
            break
        time.sleep(0.05)
    print(json.dumps({"start": start, "stamps": stamps, "published_at": list(published_at.items()),
                      "described": described}))
    executor.shutdown()
    spinner.join(5.0)  # rcl must not be shut down under a thread still waiting in it
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
