"""python -m tools.bench_transport [--configs default,profile] [--sizes 640x480,1280x720,1920x1080] [--frames 300]
                                  [--rate 30] [--apply-to both] [--with-node]  ->  JSON

How many camera frames cross DDS on this machine, per transport configuration and frame size.
For each (config, size) a camera process publishes --frames rgb8 Images at --rate Hz (sensor data QoS, as camera
drivers and tools/sim_sensors do) and a subscriber process takes them with the node's sensor QoS (the defaults
of its sensor_reliability and sensor_depth parameters). Both processes start with the config's environment, or
only one of them (--apply-to). Reported per pair: frames sent and received, the delivered fraction, latency
p50/p99 (header stamp to the subscriber's callback; one machine, one clock) and the rate the camera achieved.
The bench re-sends nothing: a frame that did not arrive is lost (with reliable QoS on both sides, DDS's own
repairs are part of what is measured).

--with-node also runs the real region_describer (python -m regionblip_ros.bringup --params config/describe.yaml,
bundle bundles/default) as the subscriber at the largest size, with the first config's environment: the camera
process publishes each frame's regions_2d one frame later (as tools/sim_sensors' detector does) and times the
descriptions that come back, from the frame's stamp and from its regions.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from regionblip_ros.sync import stamp_to_ns

PROG = "python -m tools.bench_transport"
ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "config" / "fastdds.xml"
# Each config is the environment both processes start with, on top of this one minus FASTDDS_VARIABLES.
CONFIGS = {
    "default": {},
    "large_data": {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"},
    "shm": {"FASTDDS_BUILTIN_TRANSPORTS": "SHM"},
    "profile": {"FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE)},
}
SHIPPED = "profile"
FASTDDS_VARIABLES = ("FASTDDS_BUILTIN_TRANSPORTS", "FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE",
                     "RMW_FASTRTPS_USE_QOS_FROM_XML", "RMW_FASTRTPS_PUBLICATION_MODE")
TARGET_DELIVERED = 0.99
MATCH_TIMEOUT_S = 20.0
NODE_START_TIMEOUT_S = 90.0  # the describer loads its bundle before it subscribes
DRAIN_S = 1.0                # after the last frame: what is still in flight may land
NODE_DRAIN_S = 5.0           # ... and the node may finish the frame it is describing
REGIONS_PER_FRAME = 4
CAMERA_DEPTH = 5             # rclpy's sensor data QoS: keep_last 5


def say(line: str) -> None:
    print(line, flush=True)


def expect(word: str) -> None:
    line = sys.stdin.readline().strip()
    if line != word:
        raise SystemExit(f"{PROG} worker: expected '{word}' from the bench, got '{line}'")


def wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"{PROG}: waited {timeout_s:g} s for {what}")
        time.sleep(0.01)


def clocks() -> tuple[float, float]:
    """(wall clock, this process's CPU time over all its threads), in seconds."""
    return time.monotonic(), time.process_time()


def cpu_percent(begin: tuple[float, float], end: tuple[float, float]) -> float:
    """CPU used between two clocks() readings, in % of one core."""
    return 100.0 * (end[1] - begin[1]) / max(end[0] - begin[0], 1e-9)


def percentile_ms(values_ms: list[float], q: float) -> float | None:
    return float(np.percentile(values_ms, q)) if values_ms else None


# ---- workers (one process each) -------------------------------------------------------------------------------

class Spinning:
    """rclpy initialised, one node, spun by a thread of its own: the main thread talks to the bench."""

    def __init__(self, name: str):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        rclpy.init()
        self.node = rclpy.create_node(name)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self.spinner.start()

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.spinner.join(MATCH_TIMEOUT_S)
        self.node.destroy_node()
        rclpy.try_shutdown()


def run_subscriber(args) -> dict:
    """Take frames with the node's sensor QoS; on 'stop', report (stamp, receipt) of each, in ns."""
    from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile
    from sensor_msgs.msg import Image

    from regionblip_ros.describer_node import SENSOR_RELIABILITY

    ros = Spinning("bench_subscriber")
    qos = QoSProfile(depth=args.sensor_depth, history=QoSHistoryPolicy.KEEP_LAST,
                     reliability=SENSOR_RELIABILITY[args.sensor_reliability], durability=QoSDurabilityPolicy.VOLATILE)
    received, last = [], []  # last: clocks() at the last frame, so that the drain does not dilute the CPU figure

    def on_image(msg) -> None:
        received.append((stamp_to_ns(msg.header.stamp), time.time_ns()))
        last[:] = clocks()

    subscription = ros.node.create_subscription(Image, args.topic, on_image, qos)
    wait(lambda: subscription.get_publisher_count() >= 1, MATCH_TIMEOUT_S, "the camera to match")
    say("matched")
    begin = clocks()
    expect("stop")
    ros.close()
    return {"received": received, "cpu_percent": cpu_percent(begin, last) if last else 0.0}


def run_camera(args) -> dict:
    """Publish --frames images at --rate after 'go' (and, with --with-node, their regions; time descriptions).
    Stays up until 'stop': shared-memory samples live in the writer's segment until the readers have them."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile
    from regionblip_msgs.msg import Region2D, Region2DArray, RegionDescriptionArray
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from regionblip_ros.conversions import numpy_to_image
    from regionblip_ros.describer_node import OUTPUT_QOS, REGION_QOS, SENSOR_RELIABILITY

    ros = Spinning("bench_camera")
    qos = QoSProfile(depth=CAMERA_DEPTH, history=QoSHistoryPolicy.KEEP_LAST,
                     reliability=SENSOR_RELIABILITY[args.camera_reliability], durability=QoSDurabilityPolicy.VOLATILE)
    image_pub = ros.node.create_publisher(Image, args.topic, qos)
    pixels = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), np.uint8)
    image = numpy_to_image(pixels, "rgb8")
    image.header.frame_id = "camera_optical"
    described, diagnostics = [], []
    if args.with_node:
        regions_pub = ros.node.create_publisher(Region2DArray, "regions_2d", REGION_QOS)
        descriptions = ros.node.create_subscription(
            RegionDescriptionArray, "descriptions",
            lambda msg: described.append((stamp_to_ns(msg.header.stamp), time.time_ns(), len(msg.descriptions))),
            OUTPUT_QOS)
        ros.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, OUTPUT_QOS)
        side = min(args.width, args.height) // 4
        regions = [Region2D(id=f"r{k}", x=float(k * side), y=float(k * side // 2), width=float(side),
                            height=float(side), label="object") for k in range(REGIONS_PER_FRAME)]
        wait(lambda: image_pub.get_subscription_count() and regions_pub.get_subscription_count()
             and descriptions.get_publisher_count(), NODE_START_TIMEOUT_S, "the region_describer to match")
    else:
        wait(lambda: image_pub.get_subscription_count() >= 1, MATCH_TIMEOUT_S, "the subscriber to match")
    say("matched")
    expect("go")
    published, call_ms, regions_sent, pending = [], [], [], None
    begin = clocks()
    start, period = time.monotonic(), 1.0 / args.rate
    for index in range(args.frames):
        delay = start + index * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        image.header.stamp = ros.node.get_clock().now().to_msg()
        before = time.perf_counter()
        image_pub.publish(image)
        call_ms.append((time.perf_counter() - before) * 1e3)
        published.append(time.monotonic())
        if args.with_node:  # the detector runs one frame behind, so regions never overtake their frame
            if pending is not None:
                regions_sent.append((stamp_to_ns(pending.header.stamp), time.time_ns()))
                regions_pub.publish(pending)
            header = Header(stamp=image.header.stamp, frame_id=image.header.frame_id)  # image.header changes
            pending = Region2DArray(header=header, regions=regions)
    if pending is not None:
        regions_sent.append((stamp_to_ns(pending.header.stamp), time.time_ns()))
        regions_pub.publish(pending)
    cpu = cpu_percent(begin, clocks())
    say("published")
    expect("stop")
    report = {"sent": len(published), "publish_rate_hz": (len(published) - 1) / (published[-1] - published[0])
              if len(published) > 1 else None, "publish_call_ms_p50": percentile_ms(call_ms, 50),
              "cpu_percent": cpu}
    if args.with_node:
        report |= {"described": described, "regions_sent": regions_sent, "node_diagnostics": {
            kv.key: kv.value for kv in diagnostics[-1].status[0].values} if diagnostics else {}}
    ros.close()
    return report


# ---- parent ---------------------------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_env(config: str, applied: bool) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in FASTDDS_VARIABLES}
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["ROS_DOMAIN_ID"] = os.environ.get("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    env["PYTHONUNBUFFERED"] = "1"
    return env | (CONFIGS[config] if applied else {})


def tail(log) -> str:
    log.seek(0)
    return log.read()[-3000:].decode(errors="replace")


class Worker:
    """A worker process of this tool, driven line by line over its stdin/stdout (its stderr kept in a file, so
    that Fast DDS's log can never fill a pipe and stall it)."""

    def __init__(self, command: list[str], env: dict, what: str):
        self.what, self.log = what, tempfile.TemporaryFile()
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, text=True, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.log)

    def expect(self, word: str) -> None:
        line = self.process.stdout.readline().strip()
        if line != word:
            self.fail(f"said '{line}' where '{word}' was expected")

    def tell(self, word: str) -> None:
        self.process.stdin.write(word + "\n")
        self.process.stdin.flush()

    def report(self) -> dict:
        line = self.process.stdout.readline()
        if self.process.wait(MATCH_TIMEOUT_S) != 0 or not line.strip():
            self.fail("ended without a report")
        return json.loads(line)

    def fail(self, what: str):
        self.process.kill()
        raise SystemExit(f"{PROG}: the {self.what} {what}:\n{tail(self.log)}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def worker_command(role: str, args, width: int, height: int, topic: str) -> list[str]:
    return [sys.executable, "-m", "tools.bench_transport", "--worker", role, "--topic", topic,
            "--width", str(width), "--height", str(height), "--frames", str(args.frames), "--rate", str(args.rate),
            "--sensor-reliability", args.sensor_reliability, "--sensor-depth", str(args.sensor_depth),
            "--camera-reliability", args.camera_reliability]


def bench_pair(config: str, width: int, height: int, args) -> dict:
    topic = "bench_image_" + uuid.uuid4().hex[:8]
    subscriber = Worker(worker_command("subscriber", args, width, height, topic),
                        child_env(config, args.apply_to in ("both", "subscriber")), "subscriber")
    camera = Worker(worker_command("camera", args, width, height, topic),
                    child_env(config, args.apply_to in ("both", "publisher")), "camera")
    try:
        camera.expect("matched")
        subscriber.expect("matched")
        camera.tell("go")
        camera.expect("published")
        time.sleep(DRAIN_S)
        subscriber.tell("stop")
        taken = subscriber.report()
        camera.tell("stop")
        sent = camera.report()
    finally:
        subscriber.kill()
        camera.kill()
    latencies_ms = [(receipt - stamp) / 1e6 for stamp, receipt in taken["received"]]
    frames = len({stamp for stamp, _ in taken["received"]})
    return {"config": config, "size": f"{width}x{height}", "bytes_per_frame": width * height * 3,
            "sent": sent["sent"], "received": frames, "delivered": frames / sent["sent"],
            "latency_p50_ms": percentile_ms(latencies_ms, 50), "latency_p99_ms": percentile_ms(latencies_ms, 99),
            "publish_rate_hz": sent["publish_rate_hz"], "publish_call_ms_p50": sent["publish_call_ms_p50"],
            "camera_cpu_percent": sent["cpu_percent"], "subscriber_cpu_percent": taken["cpu_percent"]}


def bench_node(config: str, width: int, height: int, args) -> dict:
    """The real region_describer as the subscriber: how many frames it describes, how fast, how late."""
    bundle = ROOT / "bundles" / "default"
    if not (bundle / "manifest.json").is_file():
        raise SystemExit(f"{PROG}: --with-node needs {bundle}: build it with make demo")
    env, node_log = child_env(config, True), tempfile.TemporaryFile()
    node = subprocess.Popen([sys.executable, "-m", "regionblip_ros.bringup", "--params", str(args.params)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=node_log)
    camera = Worker(worker_command("camera", args, width, height, "image") + ["--with-node"], env, "camera")
    try:
        try:
            camera.expect("matched")
        except SystemExit as failure:
            raise SystemExit(f"{failure}\nthe region_describer (bringup) said:\n{tail(node_log)}") from None
        start, cpu_before = time.monotonic(), cpu_seconds(node.pid)
        camera.tell("go")
        camera.expect("published")
        node_cpu_percent = 100 * (cpu_seconds(node.pid) - cpu_before) / (time.monotonic() - start)
        time.sleep(NODE_DRAIN_S)
        camera.tell("stop")
        report = camera.report()
    finally:
        camera.kill()
        node.send_signal(signal.SIGINT)
        try:
            node.wait(MATCH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            node.kill()
    described = report["described"]
    latencies_ms = [(receipt - stamp) / 1e6 for stamp, receipt, _ in described]
    regions_sent = dict(report["regions_sent"])
    from_regions_ms = [(receipt - regions_sent[stamp]) / 1e6 for stamp, receipt, _ in described]
    receipts = sorted(receipt for _, receipt, _ in described)
    return {"config": config, "size": f"{width}x{height}", "params": str(args.params), "sent": report["sent"],
            "publish_rate_hz": report["publish_rate_hz"], "frames_described": len(described),
            "regions_described": sum(count for _, _, count in described),
            "descriptions_rate_hz": (len(receipts) - 1) / ((receipts[-1] - receipts[0]) / 1e9)
            if len(receipts) > 1 else None,
            "latency_from_stamp_p50_ms": percentile_ms(latencies_ms, 50),
            "latency_from_stamp_p99_ms": percentile_ms(latencies_ms, 99),
            "latency_from_regions_p50_ms": percentile_ms(from_regions_ms, 50),
            "latency_from_regions_p99_ms": percentile_ms(from_regions_ms, 99),
            "node_cpu_percent": node_cpu_percent, "node_diagnostics_last": report["node_diagnostics"]}


def run(args) -> dict:
    sizes = [tuple(int(side) for side in size.split("x")) for size in args.sizes]
    setup = {"frames_per_size": args.frames, "rate_hz": args.rate, "encoding": "rgb8", "apply_to": args.apply_to,
             "camera_qos": f"{args.camera_reliability}, keep_last {CAMERA_DEPTH}",
             "subscriber_qos": f"{args.sensor_reliability}, keep_last {args.sensor_depth}",
             "configs": {name: CONFIGS[name] for name in args.configs}, "shipped": SHIPPED,
             "ROS_AUTOMATIC_DISCOVERY_RANGE": child_env("default", False)["ROS_AUTOMATIC_DISCOVERY_RANGE"],
             "cpu_count": os.cpu_count(), "load_average_1m_before": os.getloadavg()[0]}
    results = []
    for config in args.configs:
        for width, height in sizes:
            result = bench_pair(config, width, height, args)
            results.append(result)
            print(f"{PROG}: {config} {result['size']}: {result['received']}/{result['sent']} frames, "
                  f"p50 {result['latency_p50_ms'] or float('nan'):.1f} ms, published at "
                  f"{result['publish_rate_hz']:.1f} Hz", file=sys.stderr, flush=True)
    report = setup | {"results": results}
    largest = max(sizes, key=lambda size: size[0] * size[1])
    report["target"] = {"size": "x".join(map(str, largest)), "delivered_at_least": TARGET_DELIVERED,
                        "met_by": [r["config"] for r in results if r["size"] == "x".join(map(str, largest))
                                   and r["delivered"] >= TARGET_DELIVERED]}
    if args.with_node:
        report["node"] = bench_node(args.configs[0], *largest, args)
        print(f"{PROG}: region_describer at {report['node']['size']}: {report['node']['frames_described']} of "
              f"{report['node']['sent']} frames described", file=sys.stderr, flush=True)
    return report | {"load_average_1m_after": os.getloadavg()[0]}


def size_list(text: str) -> list[str]:
    sizes = [size.strip() for size in text.split(",") if size.strip()]
    for size in sizes:
        width, _, height = size.partition("x")
        if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
            raise argparse.ArgumentTypeError(f"'{size}' is not a frame size: write WIDTHxHEIGHT, e.g. 1920x1080")
    return sizes


def config_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in CONFIGS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown config {', '.join(unknown) or '(none)'}: use some of "
                                         f"{', '.join(CONFIGS)}")
    return names


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[1].splitlines()[0])
    parser.add_argument("--configs", type=config_list, default=["default", SHIPPED],
                        help=f"transport configs to compare, of {', '.join(CONFIGS)} (default: default,{SHIPPED})")
    parser.add_argument("--sizes", type=size_list, default=["640x480", "1280x720", "1920x1080"],
                        help="frame sizes WIDTHxHEIGHT, comma-separated")
    parser.add_argument("--frames", type=int, default=300, help="frames published per (config, size)")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate in Hz")
    parser.add_argument("--apply-to", choices=("both", "publisher", "subscriber"), default="both",
                        help="which process starts with the config's environment (the other gets the default)")
    parser.add_argument("--camera-reliability", choices=("best_effort", "reliable"), default="best_effort",
                        help="the camera's QoS reliability (default: sensor data QoS, as most drivers publish)")
    parser.add_argument("--sensor-reliability", choices=("best_effort", "reliable"), default="best_effort",
                        help="the subscriber's QoS reliability (the node's sensor_reliability default)")
    parser.add_argument("--sensor-depth", type=int, default=5, help="the subscriber's QoS depth (the node's "
                        "sensor_depth default)")
    parser.add_argument("--with-node", action="store_true", help="also run the region_describer as the subscriber "
                        "at the largest size, with the first config")
    parser.add_argument("--params", type=Path, default=ROOT / "config" / "describe.yaml",
                        help="--with-node: the bringup parameter file")
    parser.add_argument("--worker", choices=("camera", "subscriber"), help=argparse.SUPPRESS)
    parser.add_argument("--topic", default="image", help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--height", type=int, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.frames < 2 or args.rate <= 0 or args.sensor_depth < 1:
        print(f"{PROG}: --frames must be at least 2, --rate more than 0 and --sensor-depth at least 1",
              file=sys.stderr)
        return 2
    if args.worker == "camera":
        result = run_camera(args)
    elif args.worker == "subscriber":
        result = run_subscriber(args)
    else:
        result = run(args)
    print(json.dumps(result, indent=None if args.worker else 2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
