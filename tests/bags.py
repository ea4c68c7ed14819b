"""Writing and reading small rosbag2 MCAP files in tests: ROS messages serialized by rclpy, schemas as
tools/recording.py writes them, read back with mcap's reader."""

from pathlib import Path

from mcap.reader import make_reader
from mcap.writer import Writer
from rclpy.serialization import deserialize_message, serialize_message
from regionblip_msgs.msg import RegionDescriptionArray

from regionblip_ros.sync import stamp_to_ns
from tools.recording import message_definition, type_name


def write_bag(path: Path, messages: list[tuple[str, int, object]]) -> Path:
    """A rosbag2 MCAP of (topic, log time ns, ROS message), in the given order."""
    with open(path, "wb") as file:
        writer = Writer(file)
        writer.start(profile="ros2", library="tests")
        channels = {}
        for sequence, (topic, log_time, msg) in enumerate(messages):
            if topic not in channels:
                name = type_name(type(msg))
                schema = writer.register_schema(name, "ros2msg", message_definition(name).encode())
                channels[topic] = writer.register_channel(topic, "cdr", schema)
            writer.add_message(channels[topic], log_time=log_time, data=serialize_message(msg),
                               publish_time=log_time, sequence=sequence)
        writer.finish()
    return path


def copy_bag(source: Path, path: Path, rename: dict[str, str], keep=lambda topic: True) -> Path:
    """`source` with its topics renamed (and only those `keep` accepts), messages as recorded."""
    with open(source, "rb") as file, open(path, "wb") as out:
        reader, writer = make_reader(file), Writer(out)
        writer.start(profile="ros2", library="tests")
        schemas, channels = {}, {}
        for schema, channel, message in reader.iter_messages(log_time_order=True):
            if not keep(channel.topic):
                continue
            if schema.id not in schemas:
                schemas[schema.id] = writer.register_schema(schema.name, schema.encoding, schema.data)
            if channel.id not in channels:
                channels[channel.id] = writer.register_channel(rename.get(channel.topic, channel.topic), "cdr",
                                                               schemas[schema.id])
            writer.add_message(channels[channel.id], log_time=message.log_time, data=message.data,
                               publish_time=message.publish_time, sequence=message.sequence)
        writer.finish()
    return path


def descriptions_in(path: Path, topic: str = "/descriptions") -> dict[tuple[int, str], str]:
    """(stamp ns, region id) -> text of every description array recorded on `topic`."""
    texts = {}
    with open(path, "rb") as file:
        for _, _, message in make_reader(file).iter_messages(topics=[topic]):
            array = deserialize_message(message.data, RegionDescriptionArray)
            texts.update({(stamp_to_ns(array.header.stamp), d.id): d.text for d in array.descriptions})
    return texts
