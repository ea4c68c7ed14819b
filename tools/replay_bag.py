"""The bag side of python -m tools.replay: which channels of a rosbag2 MCAP are played on which topics, read
with the mcap library (raw CDR, never decoded here except the few small messages the summary needs).

A channel is played when its topic, after the --remap rules, is one the node subscribes to, with the type the
node reads there (/clock too, which the node reads under use_sim_time). The bag's recorded descriptions (the
live run's answers) and its ground truth (tools/ground_truth.py) are read for the summary; every other channel
is skipped and counted.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mcap.exceptions import McapError
from mcap.reader import make_reader
from rclpy.serialization import deserialize_message
from regionblip_msgs.msg import Region2DArray, Region3DArray, RegionDescriptionArray
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import String

from contract.modalities import IMAGE_REGION, POINTCLOUD_REGION
from regionblip_ros.sync import stamp_to_ns
from tools.ground_truth import GROUND_TRUTH_TOPIC, parse_truths
from tools.recording import type_name

CLOCK_TOPIC, CLOCK_TYPE = "/clock", "rosgraph_msgs/msg/Clock"
REGION_MODALITY = {type_name(Region2DArray): IMAGE_REGION, type_name(Region3DArray): POINTCLOUD_REGION}
FRAME_MODALITY = {type_name(Image): IMAGE_REGION, type_name(PointCloud2): POINTCLOUD_REGION}


@dataclass(frozen=True)
class Channel:
    topic: str       # as recorded
    played_as: str   # after the remap rules
    type_name: str   # e.g. sensor_msgs/msg/Image
    messages: int


@dataclass(frozen=True)
class Plan:
    played: list[Channel]           # what the node reads
    truth: Channel | None           # the ground truth, scored against
    reference: Channel | None       # the descriptions recorded live, compared with
    skipped: list[Channel]

    @property
    def messages(self) -> int:
        return sum(channel.messages for channel in self.played)


def parse_remap(rule: str) -> tuple[str, str]:
    """'/old:=/new' as (old, new); ValueError saying how to write it."""
    old, separator, new = rule.partition(":=")
    if not separator or not old.startswith("/") or not new.startswith("/") or len(old) < 2 or len(new) < 2:
        raise ValueError(f"--remap {rule!r} is not FROM:=TO with two absolute topics: write e.g. "
                         "--remap /camera/image_raw:=/image")
    return old, new


def read_channels(bag: Path, remaps: dict[str, str]) -> list[Channel]:
    """The bag's ROS 2 channels with their message counts and remapped topics; ValueError when the file is not a
    readable rosbag2 MCAP or a remap names a topic the bag does not hold."""
    if not bag.exists():
        raise ValueError(f"bag {bag} does not exist: give a rosbag2 .mcap file (python -m tools.demo records "
                         "demo_out/run.mcap)")
    if bag.is_dir():
        raise ValueError(f"bag {bag} is a directory: give the .mcap file inside it")
    try:
        with open(bag, "rb") as file:
            summary = make_reader(file).get_summary()
    except (McapError, OSError, ValueError, EOFError) as error:
        raise ValueError(f"bag {bag} cannot be read as MCAP ({type(error).__name__}: {error}): give a rosbag2 "
                         "bag written with the mcap storage plugin (ros2 bag record -s mcap)") from error
    if summary is None or summary.statistics is None:
        raise ValueError(f"bag {bag} has no MCAP summary (the recording was cut off?): recover it with "
                         "'mcap recover' and replay the recovered file")
    channels = []
    for channel_id, channel in sorted(summary.channels.items()):
        schema = summary.schemas.get(channel.schema_id)
        if channel.message_encoding != "cdr" or schema is None or schema.encoding != "ros2msg":
            raise ValueError(f"bag {bag}: topic {channel.topic} is {channel.message_encoding} with a "
                             f"{schema.encoding if schema else 'missing'} schema, not ROS 2 (cdr, ros2msg): give a "
                             "rosbag2 bag")
        channels.append(Channel(channel.topic, remaps.get(channel.topic, channel.topic), schema.name,
                                summary.statistics.channel_message_counts.get(channel_id, 0)))
    unknown = sorted(set(remaps) - {channel.topic for channel in channels})
    if unknown:
        raise ValueError(f"--remap names {', '.join(unknown)}, which bag {bag} does not hold: its topics are "
                         f"{', '.join(channel.topic for channel in channels)}")
    return channels


def plan_replay(channels: list[Channel], inputs: dict[str, type], descriptions_topic: str) -> Plan:
    """Sort the channels into played, truth, reference and skipped. `inputs` is the node's subscribed topic ->
    message class. ValueError when a channel lands on an input with another type, or no region array is played."""
    played, skipped, truth, reference = [], [], None, None
    for channel in channels:
        expected = inputs.get(channel.played_as)
        if expected is not None and channel.type_name != type_name(expected):
            raise ValueError(f"bag topic {channel.topic} ({channel.type_name}) is played on {channel.played_as}, "
                             f"where the node reads {type_name(expected)}: remap it elsewhere or leave it out")
        if expected is not None:
            played.append(channel)
        elif channel.played_as == GROUND_TRUTH_TOPIC and channel.type_name == type_name(String):
            truth = channel
        elif channel.played_as == descriptions_topic and channel.type_name == type_name(RegionDescriptionArray):
            reference = channel
        else:
            skipped.append(channel)
    if not any(channel.type_name in REGION_MODALITY and channel.messages for channel in played):
        raise ValueError(f"the bag has no region arrays on the topics the node reads ({', '.join(sorted(inputs))}): "
                         "remap the bag's Region2DArray / Region3DArray topics onto them, e.g. "
                         "--remap /detector/regions:=/regions_2d")
    return Plan(played, truth, reference, skipped)


def messages(bag: Path, channels: list[Channel]) -> Iterator[tuple[Channel, int, bytes]]:
    """(channel, log time in ns, raw CDR) of `channels`' messages, in log-time order."""
    by_topic = {channel.topic: channel for channel in channels}
    with open(bag, "rb") as file:
        for _, channel, message in make_reader(file).iter_messages(topics=list(by_topic), log_time_order=True):
            yield by_topic[channel.topic], message.log_time, message.data


def read_truths(bag: Path, channel: Channel | None) -> dict[tuple[int, str], tuple[str, dict]]:
    """(stamp_ns, region id) -> (modality, truth) from the ground-truth channel; empty without one."""
    truths = {}
    for _, _, data in messages(bag, [channel] if channel else []):
        modality, regions = parse_truths(deserialize_message(data, String).data)
        truths.update({key: (modality, truth) for key, truth in regions.items()})
    return truths


def read_descriptions(bag: Path, channel: Channel | None) -> dict[tuple[int, str], str]:
    """(stamp_ns, region id) -> text of the descriptions recorded in the bag; empty without them."""
    texts = {}
    for _, _, data in messages(bag, [channel] if channel else []):
        array = deserialize_message(data, RegionDescriptionArray)
        stamp = stamp_to_ns(array.header.stamp)
        texts.update({(stamp, item.id): item.text for item in array.descriptions})
    return texts
