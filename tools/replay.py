"""Replay a recorded drive through the region_describer and summarize what it answered.

    python -m tools.replay BAG.mcap --out OUT.mcap [--summary OUT.json] [--csv OUT.csv] [--rate max|recorded|FACTOR]
                           [--remap /old:=/new ...] [--params config/describe.yaml] [--bundle DIR]

Starts the region_describer in this process from --params as python -m regionblip_ros.bringup reads them
(--bundle overrides its bundle), publishes the bag's camera, LiDAR and region messages as recorded (raw CDR,
never decoded) on the topics the node reads, after the --remap rules (tools/replay_bag.py), records what the
node answers (descriptions and /diagnostics) into OUT.mcap with tools/recording.py, and writes the summary
(tools/replay_summary.py): per-modality counts, latency, accuracy where the bag holds the ground truth
(/ground_truth, as tools/demo.py records it) and agreement with the descriptions the bag recorded live.

--rate max (the default): as fast as the node answers. Each frame waits until the node has buffered it and
each region array until its descriptions arrive (or the node counted it unmatched), so nothing is lost to pace.
--rate recorded (or a factor, 2 = twice as fast): at the recorded times. Sensor topics are best effort and the
node's worker keeps only the newest job per sensor, so a busy node loses frames and jobs as it would live; the
summary counts them.

Stamps stay as recorded: they lie in the past of the node's clock, which its max_stamp_ahead check allows.
A bag with /clock (rosgraph_msgs/Clock) has it played too, and the node runs with use_sim_time. Replay on a
ROS_DOMAIN_ID of its own: a live node on the same domain would answer the replayed messages too.

Exit status: 0 done; 2 a bad argument or bag (one line on stderr); 1 the node did not start or an output could
not be written (one line); 130 interrupted (the summary of what was played so far is still written).
"""

import json
import sys
import threading
import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.parameter import Parameter
from rclpy.serialization import deserialize_message
from regionblip_msgs.msg import RegionDescriptionArray
from tqdm import tqdm

from contract.cli import OneLineParser
from contract.modalities import IMAGE_REGION, POINTCLOUD_REGION
from regionblip_ros.bringup import nodes_in
from regionblip_ros.describer_node import (
    CALLBACK_ERROR, CAMERA, EMPTY_REGIONS, EXECUTOR_THREADS, LIDAR, OUTPUT_QOS, RegionDescriber,
)
from regionblip_ros.executor import NodeExecutor
from regionblip_ros.sync import stamp_to_ns
from tools.latency import percentiles_ms
from tools.recording import McapRecorder, type_name
from tools.replay_bag import (
    CLOCK_TOPIC, CLOCK_TYPE, FRAME_MODALITY, REGION_MODALITY, messages, parse_remap, plan_replay, read_channels,
    read_descriptions, read_truths,
)
from tools.replay_summary import Tally, accuracy, agreement, modality_counts, summary_table, write_csv

PROG = "python -m tools.replay"
ROOT = Path(__file__).resolve().parents[1]
SENSOR_MODALITY = {CAMERA: IMAGE_REGION, LIDAR: POINTCLOUD_REGION}  # the node's worker counts drops per sensor
READY_TIMEOUT_S = 15.0    # discovery: the player's topics matched with the node's
RECEIVE_TIMEOUT_S = 5.0   # --rate max: a frame the node has not buffered by then was lost on the way
ANSWER_TIMEOUT_S = 120.0  # --rate max: one region array's descriptions
DRAIN_TIMEOUT_S = 60.0    # after the last message: the answers still in flight


def rate(text: str) -> float | None:
    """--rate as a speed factor: recorded is 1, max is None (paced by the node's answers)."""
    if text == "max":
        return None
    if text == "recorded":
        return 1.0
    try:
        factor = float(text)
    except ValueError:
        factor = float("nan")
    if not factor > 0 or factor == float("inf"):
        raise ValueError(f"--rate {text!r}: give max, recorded or a positive speed factor such as 2")
    return factor


def parse_args(argv: list[str] | None):
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("bag", type=Path, help="rosbag2 MCAP file, e.g. demo_out/run.mcap")
    parser.add_argument("--out", type=Path, required=True, help="MCAP file for the node's descriptions and "
                        "/diagnostics (replaced if present)")
    parser.add_argument("--summary", type=Path, help="JSON summary (default: --out with .json)")
    parser.add_argument("--csv", type=Path, help="also a CSV summary, one row per modality")
    parser.add_argument("--rate", default="max", help="max (default): as fast as the node answers; recorded: at "
                        "the recorded times; or a factor of the recorded speed, e.g. 2")
    parser.add_argument("--remap", action="append", default=[], metavar="/FROM:=/TO",
                        help="play the bag's topic FROM on TO (repeatable), e.g. /camera/image_raw:=/image")
    parser.add_argument("--params", type=Path, default=ROOT / "config" / "describe.yaml",
                        help="the node's parameter YAML (default config/describe.yaml)")
    parser.add_argument("--bundle", type=Path, help="bundle directory, in place of the parameter file's")
    args = parser.parse_args(argv)
    args.factor = rate(args.rate)
    args.summary = args.summary or args.out.with_suffix(".json")
    for option, path in (("--out", args.out), ("--summary", args.summary), ("--csv", args.csv)):
        if path is None:
            continue
        if path.is_dir():
            raise ValueError(f"{option} {path} is a directory: give a file to write")
        if not path.resolve().parent.is_dir():
            raise ValueError(f"{option} {path}: directory {path.resolve().parent} does not exist; create it first")
        if path.resolve() == args.bag.resolve():
            raise ValueError(f"{option} {path} is the bag itself: give another file, the bag is only read")
    args.remaps = dict(parse_remap(rule) for rule in args.remap)
    return args


def wait_for(predicate, timeout_s: float, poll_s: float = 0.002) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


def unanswerable(node: RegionDescriber) -> int:
    """Region arrays the node turned down without an answer so far (no matching frame, no regions, an error)."""
    return sum(count for kind, count in node.bad_inputs.counts().items()
               if kind.startswith("unmatched_") or kind in (EMPTY_REGIONS, CALLBACK_ERROR))


class Player:
    """Publishes the played channels' raw messages on the node's topics and tallies what goes out."""

    def __init__(self, node: RegionDescriber, player, plan, tally: Tally, factor: float | None):
        self.node, self.tally, self.factor = node, tally, factor
        inputs = {sub.topic_name: sub for sub in node.subscriptions}  # /clock too, under use_sim_time
        self.publishers = {topic: player.create_publisher(inputs[topic].msg_type, topic, inputs[topic].qos_profile)
                           for topic in {channel.played_as for channel in plan.played}}
        self.classes = {type_name(sub.msg_type): sub.msg_type for sub in node.subscriptions}
        self.published: dict[str, int] = {}
        self.unreceived: dict[str, int] = {}  # --rate max: frames (and /clock ticks) the node never received

    def play(self, channel, data: bytes) -> None:
        publisher = self.publishers[channel.played_as]
        self.published[channel.topic] = self.published.get(channel.topic, 0) + 1
        if channel.type_name in REGION_MODALITY:
            msg = deserialize_message(data, self.classes[channel.type_name])
            turned_down, processed = unanswerable(self.node), self.processed()
            sent = self.tally.send(REGION_MODALITY[channel.type_name], stamp_to_ns(msg.header.stamp),
                                   [region.id for region in msg.regions], time.monotonic())
            publisher.publish(data)
            if self.factor is None and msg.regions:  # until answered, turned down, or answered unrecognisably
                wait_for(lambda: sent.answered.is_set() or unanswerable(self.node) > turned_down
                         or processed < self.processed() <= self.tally.answered(), ANSWER_TIMEOUT_S)
        elif channel.type_name == CLOCK_TYPE:
            publisher.publish(data)
            if self.factor is None:
                tick = stamp_to_ns(deserialize_message(data, self.classes[CLOCK_TYPE]).clock)
                self._received(channel, lambda: self.node.get_clock().now().nanoseconds == tick)
        else:  # a frame, or what the node reads beside frames (camera_info, for fusion)
            before = sum(self.node.stats.counts().values())
            publisher.publish(data)
            if channel.type_name in FRAME_MODALITY:
                self.tally.frame(FRAME_MODALITY[channel.type_name])
            if self.factor is None:
                self._received(channel, lambda: sum(self.node.stats.counts().values()) > before)

    def processed(self) -> int:
        return sum(self.node.worker.processed().values())

    def _received(self, channel, predicate) -> None:
        if not wait_for(predicate, RECEIVE_TIMEOUT_S):
            self.unreceived[channel.topic] = self.unreceived.get(channel.topic, 0) + 1


def play_bag(args, plan, player: Player) -> dict:
    """Play every message of the plan at the chosen pace; how many, over how long, and whether interrupted."""
    played, start, first, last = 0, time.monotonic(), None, None
    progress = tqdm(total=plan.messages, unit="msg", desc="replay", file=sys.stderr, mininterval=0.5)
    interrupted = False
    try:
        for channel, log_time, data in messages(args.bag, plan.played):
            first, last = log_time if first is None else first, log_time
            if args.factor is not None:
                delay = start + (log_time - first) * 1e-9 / args.factor - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            player.play(channel, bytes(data))
            played += 1
            progress.update()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
    return {"messages_played": played, "recorded_s": round((last - first) * 1e-9, 3) if played else 0.0,
            "played_s": round(time.monotonic() - start, 3), "interrupted": interrupted}


def drain(node: RegionDescriber, tally: Tally, recorder: McapRecorder) -> None:
    """Until every job the node ran has been answered here and recorded (or DRAIN_TIMEOUT_S)."""
    topic = node.descriptions_pub.topic_name

    def done() -> bool:
        processed = sum(node.worker.processed().values())
        return tally.answered() >= processed and recorder.counts.get(topic, 0) >= processed

    wait_for(lambda: node.worker.wait_idle(0.1) and done(), DRAIN_TIMEOUT_S, poll_s=0.1)


def node_counts(node: RegionDescriber) -> dict[str, dict[str, int]]:
    """modality -> frames and region arrays the node received (it counts each input under its own topic name)."""
    received, counts = node.stats.counts(), {}
    for sub in node.subscriptions:
        name = type_name(sub.msg_type)
        kind = "frames" if name in FRAME_MODALITY else "region_arrays" if name in REGION_MODALITY else None
        if kind:
            modality = FRAME_MODALITY.get(name) or REGION_MODALITY[name]
            counts.setdefault(modality, {})[kind] = received.get(sub.topic_name.rsplit("/", 1)[-1], 0)
    return counts


def replay(args, describer=None) -> int:
    started = time.monotonic()
    channels = read_channels(args.bag, args.remaps)
    specs = nodes_in(args.params)
    if len(specs) != 1:
        raise ValueError(f"parameters file '{args.params}' configures {len(specs)} nodes: a replay runs one "
                         "region_describer; keep one section")
    sim_time = any((c.played_as, c.type_name) == (CLOCK_TOPIC, CLOCK_TYPE) for c in channels)
    context = Context()
    rclpy.init(args=[PROG, "--ros-args", "--params-file", str(args.params)], context=context)
    overrides = [Parameter("use_sim_time", value=True)] if sim_time else []
    overrides += [Parameter("bundle", value=str(args.bundle))] if args.bundle else []
    try:
        node = RegionDescriber(describer=describer, context=context, namespace=specs[0][0],
                               parameter_overrides=overrides)
    except Exception as error:  # bad parameters or an unloadable bundle
        context.try_shutdown()
        raise RuntimeError(f"the region_describer did not start: {error}") from error
    player_node = rclpy.create_node("replay", context=context, namespace=specs[0][0])
    executor = NodeExecutor(num_threads=EXECUTOR_THREADS + 1, context=context)
    spinner = None
    recorder = None
    try:
        plan = plan_replay(channels, {s.topic_name: s.msg_type for s in node.subscriptions},
                           node.descriptions_pub.topic_name)
        truths, live = read_truths(args.bag, plan.truth), read_descriptions(args.bag, plan.reference)
        tally = Tally(node.sync_slop_ns)
        player_node.create_subscription(RegionDescriptionArray, node.descriptions_pub.topic_name,
                                        lambda msg: tally.answer(msg, time.monotonic()), OUTPUT_QOS)
        recorder = McapRecorder(player_node, args.out, [(node.descriptions_pub.topic_name, RegionDescriptionArray,
                                                         OUTPUT_QOS), ("/diagnostics", DiagnosticArray, OUTPUT_QOS)])
        player = Player(node, player_node, plan, tally, args.factor)
        for ros_node in (node, player_node):
            executor.add_node(ros_node)
        spinner = threading.Thread(target=executor.spin, name="executor", daemon=True)
        spinner.start()
        if not wait_for(lambda: all(p.get_subscription_count() for p in player.publishers.values())
                        and node.descriptions_pub.get_subscription_count() >= 2, READY_TIMEOUT_S, poll_s=0.05):
            raise RuntimeError(f"the replay's publishers never matched the node's subscriptions in "
                               f"{READY_TIMEOUT_S:g} s: check ROS_AUTOMATIC_DISCOVERY_RANGE and the DDS setup")
        time.sleep(0.3)  # discovery is done one way; let the endpoints settle both ways
        playback = play_bag(args, plan, player)
        if not playback["interrupted"]:
            drain(node, tally, recorder)
        received, dropped, problems = node_counts(node), node.worker.dropped(), node.bad_inputs.counts()
    finally:
        node.stop_work()
        executor.shutdown()
        if spinner is not None:
            spinner.join()
        if recorder is not None:
            recorder.close()
        node.destroy_node()
        player_node.destroy_node()
        context.try_shutdown()

    scores = accuracy(tally.by_region, truths)
    modalities = modality_counts(tally, received, {SENSOR_MODALITY[s]: n for s, n in dropped.items()}, scores)
    summary = {
        "bag": str(args.bag), "out": str(args.out), "rate": args.rate, "params": str(args.params),
        "bundle": str(args.bundle) if args.bundle else None, "use_sim_time": sim_time, **playback,
        "not_received_by_node": player.unreceived,
        "topics": {"played": {c.topic: {"as": c.played_as, "type": c.type_name,
                                        "published": player.published.get(c.topic, 0)} for c in plan.played},
                   "skipped": {c.topic: c.messages for c in plan.skipped},
                   "ground_truth": plan.truth and plan.truth.topic,
                   "live_descriptions": plan.reference and plan.reference.topic},
        "modalities": modalities,
        "latency_ms": percentiles_ms([answer[1] for answer in tally.answers]),
        "accuracy": {modality: scores[modality]["exact_match"] for modality in scores},
        "live_agreement": agreement(tally.texts, live),
        "unmatched_description_arrays": tally.unmatched,
        "node": {"received": node.stats.counts(), "jobs_dropped": dropped, "bad_inputs": problems},
        "recorded_messages": recorder.messages, "wall_s": round(time.monotonic() - started, 1),
    }
    args.summary.write_text(json.dumps(summary, indent=2) + "\n")
    if args.csv:
        write_csv(args.csv, modalities)
    print(summary_table(summary))
    print(f"replay: {playback['messages_played']} messages in {summary['wall_s']} s; wrote {args.out} "
          f"({recorder.messages} messages), {args.summary}{'' if args.csv is None else f', {args.csv}'}")
    return 130 if playback["interrupted"] else 0


def main(argv: list[str] | None = None, *, describer=None) -> int:
    """The command line; `describer` replaces the one the node would load from its bundle (tests pass a double)."""
    try:
        return replay(parse_args(argv), describer)
    except ValueError as error:
        print(f"{PROG}: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as error:  # the node did not start, or an output could not be written
        print(f"{PROG}: {' '.join(str(error).split())}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
