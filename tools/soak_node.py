"""python -m tools.soak_node [--minutes 5] [--bundle bundles/default] [--config config/describe.yaml]  ->  JSON lines

A soak run of the region_describer as it is deployed: python -m regionblip_ros.bringup on the region_describer
section of --config (its bundle set to --bundle) in a subprocess, fed for --minutes by the simulated sensors and
detector of tools/sim_sensors.py on the demo's held-out synthetic scenes, the camera at 30 Hz (image + regions_2d)
and the LiDAR at 10 Hz (points + regions_3d). Once a minute (and for a last, partial one) a JSON line on stdout:
  rss_mb, rss_growth_mb   the node process's VmRSS (/proc/<pid>/status), and its growth since minute 1
  frames_sent             frames published in the minute, per sensor
  descriptions_received   description arrays received in the minute that answer a region array, per sensor
  latency_ms              p50 / p90 / p99 of those: region array published -> its descriptions received
  drops, bad_inputs       what the node last reported on /diagnostics, counted since it started: jobs its worker
                          replaced by a newer one before they ran (it keeps the newest per sensor), skipped inputs
then a summary line over the whole run. A leak shows as rss_growth_mb climbing minute after minute; a node that
cannot keep up, as drops and a latency that climbs. Progress goes to stderr, so stdout is only the JSON lines.
A tool to run by hand, not a test: it imports training/ for the scenes (tools.synthetic_scenes.SyntheticScenes).
"""

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter
from regionblip_msgs.msg import RegionDescriptionArray

from regionblip_ros.bringup import nodes_in
from regionblip_ros.describer_node import CAMERA, LIDAR, NODE_NAME as DESCRIBER, OUTPUT_QOS
from regionblip_ros.executor import NodeExecutor
from regionblip_ros.sync import stamp_to_ns
from tools.demo import drain, log_tail, stop_process, wait_for_describer
from tools.latency import percentiles_ms
from tools.synthetic_scenes import SyntheticScenes
from tools.sim_sensors import Detection, SimulatedSensors

PROG = "python -m tools.soak_node"
ROOT = Path(__file__).resolve().parents[1]
SENSORS = (CAMERA, LIDAR)
RATES_HZ = {CAMERA: 30.0, LIDAR: 10.0}
REPORT_EVERY_S = 60.0
UNANSWERED_AFTER_S = 30.0  # a region array unanswered this long was dropped by the node: stop holding it


class SoakMonitor(Node):
    """Times each region array the simulated detector publishes until the description array that answers it."""

    def __init__(self, **node_options):
        super().__init__("soak_monitor", **node_options)
        self._lock = threading.Lock()
        # stamp -> (sensor, time published). The two sensors' ticks never share a stamp: they run one at a time,
        # in one callback group of SimulatedSensors.
        self._waiting: dict[int, tuple[str, float]] = {}
        self.published = dict.fromkeys(SENSORS, 0)
        self.received = dict.fromkeys(SENSORS, 0)
        self.regions_described = dict.fromkeys(SENSORS, 0)
        self.unmatched = 0  # description arrays about no region array of this run
        self.latencies_ms: list[float] = []
        self.node_status: dict[str, str] = {}
        self.create_subscription(RegionDescriptionArray, "descriptions", self.on_descriptions, OUTPUT_QOS)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, OUTPUT_QOS)

    def add_detection(self, detection: Detection) -> None:
        with self._lock:
            self._waiting[detection.stamp_ns] = (detection.sensor, detection.published)
            self.published[detection.sensor] += 1

    def answered(self) -> tuple[int, int]:
        """(region arrays answered, region arrays published) so far: what tools.demo.drain waits on."""
        with self._lock:
            return sum(self.received.values()), sum(self.published.values())

    def on_descriptions(self, msg: RegionDescriptionArray) -> None:
        received = time.monotonic()
        with self._lock:
            sensor, published = self._waiting.pop(stamp_to_ns(msg.header.stamp), (None, None))
            if sensor is None:
                self.unmatched += 1
                return
            self.received[sensor] += 1
            self.regions_described[sensor] += len(msg.descriptions)
            self.latencies_ms.append((received - published) * 1e3)

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(DESCRIBER):
                with self._lock:
                    self.node_status = {kv.key: kv.value for kv in status.values}

    def reading(self) -> dict:
        """The counts so far. Region arrays unanswered for UNANSWERED_AFTER_S are forgotten, so that the ones
        the node drops do not pile up here over a long soak."""
        oldest = time.monotonic() - UNANSWERED_AFTER_S
        with self._lock:
            for stamp, (_, published) in list(self._waiting.items()):
                if published < oldest:
                    del self._waiting[stamp]
            counts = {"received": dict(self.received), "regions_described": dict(self.regions_described),
                      "unmatched": self.unmatched, "latencies": len(self.latencies_ms)}
            status = dict(self.node_status)
        drops = {sensor: int(status[f"{sensor} jobs dropped"]) for sensor in SENSORS
                 if f"{sensor} jobs dropped" in status}
        bad_inputs = {key.removeprefix("bad input: "): int(value) for key, value in status.items()
                      if key.startswith("bad input: ")}
        return counts | {"drops": drops, "bad_inputs": bad_inputs}


def rss_mb(pid: int) -> float:
    """The resident set size (VmRSS) of process `pid`, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line: is {pid} a zombie?")



def difference(now: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: value - before.get(key, 0) for key, value in now.items()}


def report_marks(total_s: float) -> list[float]:
    """Seconds after the start at which a minute line is due: every minute, and at the end for a partial one."""
    return [min(REPORT_EVERY_S * k, total_s) for k in range(1, math.ceil(total_s / REPORT_EVERY_S) + 1)]


def soak(args, bringup: subprocess.Popen, log_path: Path, sim: SimulatedSensors, monitor: SoakMonitor) -> int:
    if not wait_for_describer(sim, monitor, bringup):
        print(f"{PROG}: the region_describer did not come up; its log ends:\n{log_tail(log_path)}", file=sys.stderr)
        return 1
    print(f"soak: describer up (pid {bringup.pid}); camera {RATES_HZ[CAMERA]:g} Hz, LiDAR {RATES_HZ[LIDAR]:g} Hz "
          f"for {args.minutes:g} min", file=sys.stderr, flush=True)
    sim.start()
    started = time.monotonic()
    rss_minute_1, frames_before, before = None, dict.fromkeys(SENSORS, 0), monitor.reading()
    for minute, mark in enumerate(report_marks(args.minutes * 60), start=1):
        while time.monotonic() < started + mark and bringup.poll() is None:
            time.sleep(0.2)
        if bringup.poll() is not None:
            print(f"{PROG}: the region_describer stopped (exit status {bringup.returncode}) in minute {minute}; "
                  f"its log ends:\n{log_tail(log_path)}", file=sys.stderr)
            return 1
        rss, frames, now = rss_mb(bringup.pid), dict(sim.frames), monitor.reading()
        rss_minute_1 = rss if rss_minute_1 is None else rss_minute_1
        print(json.dumps({
            "minute": minute, "elapsed_s": round(time.monotonic() - started, 1), "rss_mb": round(rss, 1),
            "rss_growth_mb": round(rss - rss_minute_1, 1), "frames_sent": difference(frames, frames_before),
            "descriptions_received": difference(now["received"], before["received"]),
            "latency_ms": percentiles_ms(monitor.latencies_ms[before["latencies"]:now["latencies"]]),
            "drops": now["drops"], "bad_inputs": now["bad_inputs"]}), flush=True)
        frames_before, before = frames, now
    rss_end = rss_mb(bringup.pid)
    sim.stop()
    drain(monitor)
    final = monitor.reading()
    print(json.dumps({
        "summary": True, "minutes": args.minutes, "bundle": str(args.bundle), "config": str(args.config),
        "rates_hz": RATES_HZ, "rss_mb": {"minute_1": round(rss_minute_1, 1), "end": round(rss_end, 1),
                                         "growth": round(rss_end - rss_minute_1, 1)},
        "frames_sent": dict(sim.frames), "region_arrays_sent": dict(monitor.published),
        "descriptions_received": final["received"], "regions_described": final["regions_described"],
        "unanswered": difference(monitor.published, final["received"]),
        "latency_ms": percentiles_ms(monitor.latencies_ms), "drops": final["drops"],
        "bad_inputs": final["bad_inputs"], "unmatched_description_arrays": final["unmatched"]}), flush=True)
    return 0


def run(args) -> int:
    section = yaml.safe_load(args.config.read_text())[DESCRIBER]["ros__parameters"]
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    with tempfile.TemporaryDirectory(prefix="regionblip-soak-") as directory:
        params, log_path = Path(directory) / "describe.yaml", Path(directory) / "bringup.log"
        params.write_text(yaml.safe_dump({DESCRIBER: {"ros__parameters": {**section,
                                                                         "bundle": str(args.bundle.resolve())}}}))
        with open(log_path, "w") as log:
            bringup = subprocess.Popen([sys.executable, "-m", "regionblip_ros.bringup", "--params", str(params)],
                                       stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        context = Context()
        rclpy.init(args=[PROG], context=context)
        monitor = SoakMonitor(context=context)
        sim = SimulatedSensors(SyntheticScenes(), on_detection=monitor.add_detection, context=context,
                               parameter_overrides=[Parameter(f"{sensor}_rate_hz", value=rate)
                                                    for sensor, rate in RATES_HZ.items()])
        executor = NodeExecutor(num_threads=4, context=context)
        for node in (monitor, sim):
            executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, name="executor", daemon=True)
        spinner.start()
        # SIGTERM (timeout, a CI runner) unwinds like Ctrl-C, through the finally below, so the node stops too.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
        try:
            return soak(args, bringup, log_path, sim, monitor)
        except KeyboardInterrupt:
            return 130
        finally:
            sim.stop()
            stop_process(bringup)
            executor.shutdown()
            spinner.join()
            for node in (monitor, sim):
                node.destroy_node()
            context.try_shutdown()


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{PROG}: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _OneLineParser(prog=PROG, description=__doc__.split("\n\n")[1].splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="how long the sensors run (default 5; 0.5 for "
                        "a smoke run)")
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "default",
                        help="exported bundle the node describes with (default bundles/default)")
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "describe.yaml",
                        help="parameter file whose region_describer section the node runs on (default "
                             "config/describe.yaml; config/demo.yaml works too)")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.minutes) and args.minutes > 0):
        parser.error(f"--minutes {args.minutes:g}: give a positive number of minutes")
    if not (args.bundle / "manifest.json").is_file():
        parser.error(f"{args.bundle} is not a bundle (no manifest.json): export one with python -m export.onnx "
                     "--ckpt models/default --out bundles/default, or pass --bundle DIR")
    try:
        nodes = nodes_in(args.config)
    except ValueError as error:
        parser.error(str(error))
    if ("/", DESCRIBER) not in nodes:
        parser.error(f"parameters file '{args.config}' has no top-level {DESCRIBER} section for the node to run on")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
