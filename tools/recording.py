"""Recording ROS 2 topics into an MCAP file as `ros2 bag record -s mcap` writes them (raw CDR, ros2msg
schemas), for Foxglove or any MCAP reader. Needs the optional `mcap` package."""
import os
import re
import sys
import threading
import time
from pathlib import Path

from rclpy.node import Node

PRIMITIVES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
              "uint32", "int64", "uint64", "string", "wstring"}


def _msg_file(package: str, name: str) -> Path:
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    for prefix in prefixes:
        path = Path(prefix) / "share" / package / "msg" / f"{name}.msg"
        if path.is_file():
            return path
    raise FileNotFoundError(f"no {package}/msg/{name}.msg under {prefixes}: source the ROS 2 install that has it")


def _nested_types(package: str, text: str) -> list[str]:
    types = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 2:
            continue
        base = re.sub(r"(\[.*\]|<=\d+)$", "", words[0]).split("<=")[0]
        if base not in PRIMITIVES:
            parts = base.split("/")
            types.append(f"{parts[0]}/{parts[-1]}" if len(parts) > 1 else f"{package}/{base}")
    return types


def type_name(msg_type) -> str:
    """A message class's ROS 2 type name as bags store it: sensor_msgs.msg.Image -> 'sensor_msgs/msg/Image'."""
    return f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"


def message_definition(type_name: str) -> str:
    """The ros2msg schema of e.g. 'sensor_msgs/msg/Image' as rosbag2 writes it: its .msg text, then each nested
    type's under a line of '=' and 'MSG: package/Name'."""
    package, _, name = type_name.split("/")
    text = _msg_file(package, name).read_text()
    parts, queue, seen = [text], _nested_types(package, text), set()
    while queue:
        nested = queue.pop(0)
        if nested in seen:
            continue
        seen.add(nested)
        nested_text = _msg_file(*nested.split("/")).read_text()
        parts.append("=" * 80 + f"\nMSG: {nested}\n{nested_text}")
        queue += _nested_types(nested.split("/")[0], nested_text)
    return "\n".join(parts)


class McapRecorder:
    """The run's topics into an MCAP file as `ros2 bag record -s mcap` writes them: raw CDR, ros2msg schemas."""

    def __init__(self, node: Node, path: Path, topics):
        from mcap.writer import Writer  # optional: the demo runs without it

        self.path, self.messages = path, 0
        self.counts: dict[str, int] = {}  # messages written per topic
        self._lock = threading.Lock()
        self._file = open(path, "wb")
        self._writer = Writer(self._file)
        self._writer.start(profile="ros2", library="regionblip_ros")
        for topic, msg_type, qos in topics:
            name = type_name(msg_type)
            schema = self._writer.register_schema(name, "ros2msg", message_definition(name).encode())
            resolved = node.resolve_topic_name(topic)
            channel = self._writer.register_channel(resolved, "cdr", schema)
            node.create_subscription(msg_type, topic, lambda data, c=channel, t=resolved: self._write(c, t, data), qos,
                                     raw=True)

    def _write(self, channel: int, topic: str, data: bytes) -> None:
        now = time.time_ns()
        with self._lock:
            if self._writer is not None:
                self._writer.add_message(channel, log_time=now, data=data, publish_time=now, sequence=self.messages)
                self.messages += 1
                self.counts[topic] = self.counts.get(topic, 0) + 1

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.finish()
                self._file.close()
                self._writer = None
