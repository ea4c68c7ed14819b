"""make demo: the embedded default model end to end, as a newcomer first meets the product.

    python -m tools.demo [--duration 20] [--checkpoint models/default] [--bundle DIR] [--out demo_out]

1. Export the checkpoint to an ONNX bundle (python -m export.onnx), unless the bundle already holds it: its
   manifest's source.model_sha256 is the sha256 of the checkpoint's model.safetensors.
2. Start the region_describer as a robot without ros2 launch would: python -m regionblip_ros.bringup --params.
3. Feed it a simulated camera, LiDAR and detector (tools/sim_sensors.py) on held-out synthetic scenes
   for --duration seconds, and print one line per described frame.
4. Write OUT/summary.json (frames, regions, attribute accuracy per modality against the scenes' ground truth,
   latency p50/p95, drops, what the description cache served), OUT/annotated_*.png and, where the mcap packages
   are installed, OUT/run.mcap (every topic, and the regions' ground truth on /ground_truth: python -m tools.replay
   scores a replay with it).

Latency is the consumer's view: from the detector publishing a region array to its descriptions arriving.
A demo tool, not a node: it imports training/ for the synthetic scenes and the scorer of training.metrics.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from PIL import Image as PILImage
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter
from regionblip_msgs.msg import Region2DArray, Region3DArray, RegionDescriptionArray
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from regionblip_ros.describer_node import CAMERA, LIDAR, NODE_NAME as DESCRIBER, OUTPUT_QOS, REGION_QOS, SENSOR_QOS
from regionblip_ros.drawing import annotate
from regionblip_ros.executor import NodeExecutor
from regionblip_ros.sync import stamp_to_ns
from contract.manifest import sha256
from runtime.bundle import BundleError, load_bundle
from runtime.threads import recorded_threads, tune_threads
from tools.bench_transport import cpu_seconds
from tools.demo_cache import cache_line, cache_summary
from tools.demo_prompts import prompt_line, prompt_summary
from tools.fused_text import fused_region, fused_suffix, fused_summary, fused_table_lines
from tools.ground_truth import GROUND_TRUTH_TOPIC, truth_message
from tools.recording import McapRecorder
from tools.shared_scene import LIDAR_TO_CAMERA, SharedScenes
from tools.sim_sensors import Detection, SimulatedSensors
from tools.synthetic_scenes import SyntheticScenes
from training.metrics import attribute_exact_match

PROG = "python -m tools.demo"
ROOT = Path(__file__).resolve().parents[1]
MODALITY = {CAMERA: "image_region", LIDAR: "pointcloud_region"}
SENSOR = {modality: sensor for sensor, modality in MODALITY.items()}
STARTUP_TIMEOUT_S = 60.0    # the describer loads its bundle before it subscribes
DRAIN_TIMEOUT_S = 10.0      # after the sensors stop: wait for the answers still in flight
ANNOTATED_PNGS, ANNOTATE_EVERY_S, ANNOTATE_SCALE = 4, 5.0, 4  # a few frames, drawn 4x so the text reads


# --- the bundle, exported once per checkpoint --------------------------------------------------------------

def cached_bundle(checkpoint: Path, bundle: Path) -> bool:
    """Whether `bundle` is whole and was exported, with the demo's modalities, from this checkpoint's weights, by an
    exporter whose llm graph takes text prompts (its region_prompt)."""
    try:
        loaded = load_bundle(bundle)
    except BundleError:
        return False
    manifest = loaded.manifest
    return (manifest.source.model_sha256 == sha256(checkpoint / "model.safetensors")
            and set(MODALITY.values()) <= set(manifest.modalities) and loaded.takes_prompts)


def export_bundle(checkpoint: Path, bundle: Path) -> None:
    subprocess.run([sys.executable, "-m", "export.onnx", "--ckpt", str(checkpoint), "--out", str(bundle),
                    "--modalities", ",".join(MODALITY.values())], check=True)


def prepare_bundle(checkpoint: Path, bundle: Path, export=None) -> bool:
    """Export `checkpoint` into `bundle` (with `export`, default export_bundle) unless it is already there;
    True when the cached bundle was reused."""
    if cached_bundle(checkpoint, bundle):
        return True
    (export or export_bundle)(checkpoint, bundle)
    return False


# --- listening to the describer ----------------------------------------------------------------------------

class DemoMonitor(Node):
    """Matches each description array to the detection it answers, scores it, prints it, draws a few."""

    def __init__(self, out: Path, **node_options):
        super().__init__("demo_monitor", **node_options)
        self.out = out
        self._lock = threading.Lock()
        self.detections: dict[tuple[str, int], Detection] = {}  # (sensor, stamp) -> the detection published
        self.unmatched = 0  # description arrays not about a frame of this demo's detections, skipped
        self.frames = {CAMERA: [], LIDAR: []}  # one record per described frame
        self.annotated: list[str] = []
        self._last_drawn = -np.inf
        self.node_status: dict[str, str] = {}
        self.create_subscription(RegionDescriptionArray, "descriptions", self.on_descriptions, OUTPUT_QOS)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, OUTPUT_QOS)
        self.truth_pub = self.create_publisher(String, GROUND_TRUTH_TOPIC, REGION_QOS)  # recorded for replays

    def add_detection(self, detection: Detection) -> None:
        with self._lock:
            self.detections[(detection.sensor, detection.stamp_ns)] = detection
        self.truth_pub.publish(truth_message(detection.stamp_ns, MODALITY[detection.sensor], detection.truths))

    def answered(self) -> tuple[int, int]:
        """(frames described, region arrays published) so far."""
        with self._lock:
            return sum(map(len, self.frames.values())), len(self.detections)

    def on_descriptions(self, msg: RegionDescriptionArray) -> None:
        received = time.monotonic()
        if not msg.descriptions:
            return
        # Matched by sensor and stamp (a tracked object keeps its region id over frames), and only counted when
        # every region is one the detector boxed on that frame: anything else (regions described on another
        # frame, another publisher's array) is not this demo's to score.
        with self._lock:
            detection = self.detections.get((SENSOR.get(msg.descriptions[0].modality), stamp_to_ns(msg.header.stamp)))
        if detection is None or any(item.id not in detection.truths for item in msg.descriptions):
            with self._lock:
                self.unmatched += 1
            return
        sensor = detection.sensor
        modality = MODALITY[sensor]
        regions = []
        for item in msg.descriptions:
            truth = detection.truths[item.id]
            correct = attribute_exact_match([item.text], [truth], modality)[f"{modality}/exact_match"] == 1.0
            regions.append({"id": item.id, "text": item.text, "truth": truth, "correct": correct,
                            "cached": item.cached, "prompt": item.region_2d.prompt if sensor == CAMERA else ""})
            if sensor == LIDAR and item.region_2d.width > 0:  # the describer fused it with the camera's view
                regions[-1]["fused"] = fused_region(item.text, item.camera_text, truth)
        record = {"index": detection.index, "stamp": stamp_to_ns(msg.header.stamp) * 1e-9,
                  "latency_ms": (received - detection.published) * 1e3, "inference_ms": msg.inference_ms,
                  "regions": regions}
        with self._lock:
            self.frames[sensor].append(record)
        print(frame_line(sensor, record), flush=True)
        drawing_due = len(self.annotated) < ANNOTATED_PNGS and received - self._last_drawn >= ANNOTATE_EVERY_S
        if sensor == CAMERA and drawing_due:
            self._last_drawn = received
            self._draw(detection.image, msg)

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(DESCRIBER):
                self.node_status = {kv.key: kv.value for kv in status.values}

    def _draw(self, image: np.ndarray, msg: RegionDescriptionArray) -> None:
        big = np.repeat(np.repeat(image, ANNOTATE_SCALE, axis=0), ANNOTATE_SCALE, axis=1)
        boxes = [(r.x, r.y, r.x + r.width, r.y + r.height) for r in (d.region_2d for d in msg.descriptions)]
        drawn = annotate(big, np.array(boxes) * ANNOTATE_SCALE, [d.text for d in msg.descriptions])
        path = self.out / f"annotated_{len(self.annotated):02d}.png"
        PILImage.fromarray(drawn).save(path)
        self.annotated.append(str(path))


def frame_line(sensor: str, record: dict) -> str:
    """One described frame: 'camera #0012  stamp 1763901234.300  18 ms  c0012-0 → "a red circle" ✓ ...', with
    '(cached)' after a description the node served from its cache."""
    regions = "   ".join(f'{r["id"]} ' + (f'[prompt "{r["prompt"]}"] ' if r.get("prompt") else "")
                          + f'→ "{r["text"]}" ' + ("✓" if r["correct"] else f'✗ ({r["truth"]["phrase"]})')
                          + (" (cached)" if r["cached"] else "") + fused_suffix(r.get("fused"))
                          for r in record["regions"])
    return (f'{sensor:<6} #{record["index"]:04d}  stamp {record["stamp"]:.3f}  {record["latency_ms"]:5.0f} ms   '
            f"{regions}")


# --- recording: every topic of the run into an MCAP file (tools/recording.py) ---------------

RECORDED = (("image", Image, SENSOR_QOS), ("camera_info", CameraInfo, SENSOR_QOS), ("points", PointCloud2, SENSOR_QOS),
            ("regions_2d", Region2DArray, REGION_QOS), ("regions_3d", Region3DArray, REGION_QOS),
            ("descriptions", RegionDescriptionArray, OUTPUT_QOS), ("markers", MarkerArray, OUTPUT_QOS),
            ("annotated_image", Image, OUTPUT_QOS), ("/diagnostics", DiagnosticArray, OUTPUT_QOS),
            (GROUND_TRUTH_TOPIC, String, REGION_QOS))  # what each region truly is (tools/ground_truth.py)

# --- the run -----------------------------------------------------------------------------------------------

def wait_for_describer(sim: SimulatedSensors, monitor: DemoMonitor, bringup: subprocess.Popen,
                       topics=("image", "regions_2d", "points", "regions_3d")) -> bool:
    """Until the describer subscribes to every sensor topic and publishes descriptions (False: it never did)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline and bringup.poll() is None:
        subscribed = all(any(info.node_name == DESCRIBER for info in sim.get_subscriptions_info_by_topic(topic))
                         for topic in topics)
        if subscribed and monitor.count_publishers("descriptions"):
            time.sleep(0.5)  # discovery done; let the endpoints match
            return True
        time.sleep(0.1)
    return False


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def log_tail(path: Path, lines: int = 15) -> str:
    return "".join(path.read_text().splitlines(keepends=True)[-lines:])


def drain(monitor: DemoMonitor) -> None:
    """Wait for the descriptions still in flight: until every region array is answered or none was for 1 s."""
    deadline, last = time.monotonic() + DRAIN_TIMEOUT_S, (-1, -1)
    while time.monotonic() < deadline and monitor.answered() != last:
        last = monitor.answered()
        if last[0] >= last[1]:
            return
        time.sleep(1.0)


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None}
    p50, p95 = np.percentile(values, [50, 95])
    return {"p50": round(float(p50), 1), "p95": round(float(p95), 1)}


def summarize(monitor: DemoMonitor, sim: SimulatedSensors, published: dict[str, int]) -> dict:
    modalities, latencies = {}, []
    for sensor, modality in MODALITY.items():
        frames = monitor.frames[sensor]
        regions = [region for frame in frames for region in frame["regions"]]
        captions = [region for region in regions if not region.get("prompt")]  # prompted ones: summary["prompted"]
        scores = attribute_exact_match([r["text"] for r in captions], [r["truth"] for r in captions], modality) \
            if captions else {}
        latencies += [frame["latency_ms"] for frame in frames]
        modalities[modality] = {
            "frames_published": sim.frames[sensor], "frames_described": len(frames),
            "frames_dropped": published[sensor] - len(frames), "regions_described": len(regions),
            "accuracy": {key.split("/")[1]: round(value, 4) for key, value in scores.items()},
            "latency_ms": percentiles([frame["latency_ms"] for frame in frames]),
            "inference_ms": percentiles([frame["inference_ms"] for frame in frames]),
            "cache": cache_summary(frames),
        }
    return {
        "frames": sum(m["frames_described"] for m in modalities.values()),
        "regions": sum(m["regions_described"] for m in modalities.values()),
        "drops": sum(m["frames_dropped"] for m in modalities.values()),
        "accuracy": {modality: m["accuracy"].get("exact_match") for modality, m in modalities.items()},
        "latency_ms": percentiles(latencies),
        "cache": cache_summary(monitor.frames[CAMERA] + monitor.frames[LIDAR]),
        "unmatched_description_arrays": monitor.unmatched,
        "modalities": modalities,
        "describer_diagnostics": monitor.node_status,
        "fused": fused_summary([region for frame in monitor.frames[LIDAR] for region in frame["regions"]]),
        "prompted": prompt_summary([region for frame in monitor.frames[CAMERA] for region in frame["regions"]]),
    }


def summary_table(summary: dict) -> str:
    lines = [f"{'modality':<18} {'frames':>6} {'described':>9} {'dropped':>7} {'regions':>7} {'exact':>6} "
             f"{'size':>6} {'colour':>6} {'shape':>6}   latency p50 / p95"]
    for modality, m in summary["modalities"].items():
        acc = {k: "-" if m["accuracy"].get(k) is None else f'{m["accuracy"][k]:.3f}'
               for k in ("exact_match", "size", "colour", "shape")}
        lat = m["latency_ms"]
        latency = "-" if lat["p50"] is None else f'{lat["p50"]:.0f} / {lat["p95"]:.0f} ms'
        lines.append(f"{modality:<18} {m['frames_published']:>6} {m['frames_described']:>9} {m['frames_dropped']:>7} "
                     f"{m['regions_described']:>7} {acc['exact_match']:>6} {acc['size']:>6} {acc['colour']:>6} "
                     f"{acc['shape']:>6}   {latency}")
    return "\n".join(lines + fused_table_lines(summary["fused"]))


def run(args) -> int:
    started = time.monotonic()
    checkpoint, out = args.checkpoint, args.out
    if not (checkpoint / "model.safetensors").is_file():
        print(f"{PROG}: {checkpoint} holds no model.safetensors: train the default model with "
              "'make train-default', or pass --checkpoint DIR", file=sys.stderr)
        return 2
    bundle = args.bundle or ROOT / "bundles" / checkpoint.resolve().name
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("annotated_*.png"), out / "run.mcap"]:
        stale.unlink(missing_ok=True)
    print(f"demo: checkpoint {checkpoint}, bundle {bundle}", flush=True)
    try:
        reused = prepare_bundle(checkpoint, bundle)
    except subprocess.CalledProcessError as error:
        print(f"{PROG}: exporting {checkpoint} failed (exit status {error.returncode}, see above)", file=sys.stderr)
        return 1
    print(f"demo: {'reused the bundle (same model sha256)' if reused else 'exported the bundle'} "
          f"[{time.monotonic() - started:.1f} s]", flush=True)
    threads = recorded_threads(bundle)
    if threads is None:  # the node's threads: 0 takes the count measured here
        record = tune_threads(bundle)
        threads = record["threads"]
        timings = ", ".join(f"{count} thread(s) {ms:.0f} ms" for count, ms in record["ms"].items())
        print(f"demo: measured a 4-region call at {timings}: the describer runs {threads}", flush=True)

    config = yaml.safe_load(args.config.read_text())
    params = out / "describe.yaml"
    fusion = {"fuse_camera": True, "lidar_to_camera": list(LIDAR_TO_CAMERA)} if args.scenes == "shared" else {}
    params.write_text(yaml.safe_dump({DESCRIBER: {"ros__parameters": {
        **config.get(DESCRIBER, {}).get("ros__parameters", {}), "bundle": str(bundle), **fusion}}}))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    log_path = out / "bringup.log"
    with open(log_path, "w") as log:
        bringup = subprocess.Popen([sys.executable, "-m", "regionblip_ros.bringup", "--params", str(params)],
                                   stdout=log, stderr=subprocess.STDOUT)
    context = Context()
    rclpy.init(args=[PROG, "--ros-args", "--params-file", str(args.config)], context=context)
    executor = NodeExecutor(num_threads=4, context=context)
    monitor = DemoMonitor(out, context=context)
    scenes, synchronized = (SharedScenes(), True) if args.scenes == "shared" else (SyntheticScenes(), False)
    sim = SimulatedSensors(scenes, on_detection=monitor.add_detection, context=context,
                           parameter_overrides=[Parameter("synchronized", value=synchronized)])
    recorder = None
    try:
        recorder = McapRecorder(monitor, out / "run.mcap", RECORDED)
    except ImportError:
        print("demo: mcap is not installed: no recording (pip install mcap mcap-ros2-support)", flush=True)
    for node in (monitor, sim):
        executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, name="executor", daemon=True)
    spinner.start()
    interrupted, node_cpu_s = False, None
    try:
        if not wait_for_describer(sim, monitor, bringup, ("image", "regions_2d", "points", "regions_3d")
                                  + (("camera_info",) if fusion else ())):
            print(f"{PROG}: the region_describer did not come up; its log ({log_path}) ends:\n{log_tail(log_path)}",
                  file=sys.stderr)
            return 1
        ready = time.monotonic()
        print(f"demo: describer up [{ready - started:.1f} s]; camera {sim.value['camera_rate_hz']:g} Hz, LiDAR "
              f"{sim.value['lidar_rate_hz']:g} Hz for {args.duration:g} s", flush=True)
        cpu_at_start = cpu_seconds(bringup.pid)
        sim.start()
        while time.monotonic() - ready < args.duration and bringup.poll() is None:
            time.sleep(0.1)
        sim.stop()
        if bringup.poll() is not None:
            print(f"{PROG}: the region_describer stopped (exit status {bringup.returncode}); its log ({log_path}) "
                  f"ends:\n{log_tail(log_path)}", file=sys.stderr)
            return 1
        drain(monitor)
        node_cpu_s = round(cpu_seconds(bringup.pid) - cpu_at_start, 2)
    except KeyboardInterrupt:
        interrupted = True
        sim.stop()
    finally:
        stop_process(bringup)
        if recorder is not None:
            recorder.close()
        executor.shutdown()
        spinner.join()
        for node in (monitor, sim):
            node.destroy_node()
        context.try_shutdown()
    published = {sensor: sum(1 for s, _ in monitor.detections if s == sensor) for sensor in MODALITY}
    summary = {"checkpoint": str(checkpoint), "checkpoint_sha256": sha256(checkpoint / "model.safetensors"),
               "bundle": str(bundle), "bundle_reused": reused, "duration_s": args.duration, "interrupted": interrupted,
               "scenes": args.scenes,
               "onnxruntime_threads": threads,
               "rates_hz": {CAMERA: sim.value["camera_rate_hz"], LIDAR: sim.value["lidar_rate_hz"]},
               **summarize(monitor, sim, published), "node_cpu_s": node_cpu_s, "annotated": monitor.annotated,
               "recording": None if recorder is None else str(recorder.path),
               "recorded_messages": None if recorder is None else recorder.messages,
               "wall_s": round(time.monotonic() - started, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n" + summary_table(summary))
    print("\n" + cache_line(summary))
    print(prompt_line(summary["prompted"]))
    print(f"\ndemo: {summary['frames']} frames, {summary['regions']} regions described, {summary['drops']} frames "
          f"dropped, in {summary['wall_s']} s. Wrote {out / 'summary.json'}, {len(monitor.annotated)} annotated "
          f"PNGs{'' if recorder is None else f', {recorder.path} ({recorder.messages} messages)'}.")
    return 130 if interrupted else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of sensor data (default 20)")
    parser.add_argument("--checkpoint", type=Path, default=Path("models/default"),
                        help="checkpoint directory (default models/default)")
    parser.add_argument("--bundle", type=Path, help="bundle directory, reused while it holds this checkpoint "
                        "(default bundles/<checkpoint directory name>)")
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output directory (default demo_out)")
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "demo.yaml",
                        help="node parameters of the describer and the simulated sensors (default config/demo.yaml)")
    parser.add_argument("--scenes", choices=("shared", "separate"), default="shared",
                        help="shared (default): camera and LiDAR see one 3-D world and LiDAR regions are fused with "
                        "the camera (tools/shared_scene.py); separate: the camera sees its own 2-D scenes, no fusion")
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error(f"--duration {args.duration:g}: give a positive number of seconds")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
