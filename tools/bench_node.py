"""python -m tools.bench_node [--bundle B | --preset tiny] [--frames N] [--regions R] [--rounds K]  ->  JSON

What ROS adds to the runtime's latency. The same camera frames and boxes go, each side in its own process, to
  ros      the region_describer node over the bundle (the real runtime) and a peer node in one process, on
           loopback DDS: the peer publishes an image, then its regions once the node holds the image (as a
           detector would, after the frame), and times image published -> descriptions received. It waits
           for each frame's descriptions before sending the next, so this is latency, not queueing.
  runtime  Describer.from_bundle(B).describe_image_regions(frame, boxes), timed per call.
Both decode greedily with the same max_new_tokens and the same ONNX Runtime threads (--threads; by default
the runtime's default, which is what the node uses), so they produce the same texts (`same_texts`). Each side
runs --rounds times, the two taking turns; `ratio` is ros / runtime for the median and the p95 of all rounds'
frames; the target is a median of at most 1.10. `node_inference_median_ms` is the describer call inside the
node: the rest of the ros latency is what ROS adds.

Without --bundle, a random model at --preset's sizes is exported to a temporary bundle first (tools.bench_runtime's
prepare, which imports training/ and export/: only then does this tool need them).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

PROG = "python -m tools.bench_node"
TARGET_RATIO = 1.10
WARMUP_FRAMES = 2     # untimed on both sides: first-call allocations, thread start-up, DDS discovery
FRAME_TIMEOUT_S = 60.0
MATCH_TIMEOUT_S = 10.0


def bench_frames(args) -> tuple[list[np.ndarray], np.ndarray]:
    """The frames both sides describe, warm-up frames first, and the boxes (x1, y1, x2, y2) described on each."""
    from tools.bench_runtime import frames_and_boxes

    frames, boxes = frames_and_boxes(WARMUP_FRAMES + args.frames, args.regions)
    return frames, boxes.astype(np.float32)


def percentiles_ms(milliseconds: list[float]) -> dict:
    median, p95 = np.percentile(milliseconds, [50, 95])
    return {"median_ms": float(median), "p95_ms": float(p95), "frames": len(milliseconds)}


def wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"{PROG}: waited {timeout_s:g} s for {what}")
        time.sleep(0.0002)


# ---- workers (one process each) -------------------------------------------------------------------------------

def run_runtime(args) -> dict:
    from runtime.describer import Describer

    describer = Describer.from_bundle(args.bundle, threads=args.threads)
    describer.configure(max_new_tokens=args.tokens, num_beams=1)
    frames, boxes = bench_frames(args)
    times, texts = [], []
    for index, frame in enumerate(frames):
        start = time.perf_counter()
        descriptions = describer.describe_image_regions(frame, boxes)
        elapsed = time.perf_counter() - start
        if index >= WARMUP_FRAMES:
            times.append(elapsed * 1e3)
            texts.append([d.text for d in descriptions])
    return {"latencies_ms": times, "texts": texts}


class LoopbackNode:
    """A region_describer over `bundle` and a peer node that feeds it, in this process, on loopback DDS.

    The node spins as its entry point spins it (a NodeExecutor of its own); the peer on another
    executor, as it would in another process.
    """

    def __init__(self, bundle: Path, tokens: int, regions: int, threads: int | None):
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # read when the context starts
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.parameter import Parameter
        from rclpy.qos import QoSProfile, QoSReliabilityPolicy
        from regionblip_msgs.msg import Region2DArray, RegionDescriptionArray

        from regionblip_ros.executor import NodeExecutor
        from sensor_msgs.msg import Image

        from regionblip_ros.describer_node import EXECUTOR_THREADS, RegionDescriber

        self.context = rclpy.context.Context()
        rclpy.init(context=self.context)
        namespace = "/bench_" + uuid.uuid4().hex[:8]
        describer = None  # the node builds its own from the bundle parameter, as when it is deployed
        if threads:  # the node has no threads parameter: hand it a describer built as it would build one
            from runtime.describer import Describer

            describer = Describer.from_bundle(bundle, threads=threads)
            describer.configure(max_new_tokens=tokens, num_beams=1)
        # The description cache off: every frame repeats the same regions, and this times describing them.
        parameters = {"bundle": str(bundle), "max_new_tokens": tokens, "num_beams": 1, "max_regions": max(32, regions),
                      "description_cache": False}
        self.node = RegionDescriber(describer=describer, context=self.context, namespace=namespace,
                                    parameter_overrides=[Parameter(k, value=v) for k, v in parameters.items()])
        self.peer = rclpy.create_node("bench_peer", context=self.context, namespace=namespace)
        qos = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
        self.image_pub = self.peer.create_publisher(Image, "image", qos)
        self.regions_pub = self.peer.create_publisher(Region2DArray, "regions_2d", qos)
        self._arrived, self._received = threading.Event(), []
        self.peer.create_subscription(RegionDescriptionArray, "descriptions", self._on_descriptions, qos)
        self.executors = [NodeExecutor(num_threads=EXECUTOR_THREADS, context=self.context),
                          SingleThreadedExecutor(context=self.context)]
        self.executors[0].add_node(self.node)
        self.executors[1].add_node(self.peer)
        self.spinners = [threading.Thread(target=executor.spin, daemon=True) for executor in self.executors]
        for spinner in self.spinners:
            spinner.start()
        wait(lambda: self.image_pub.get_subscription_count() and self.regions_pub.get_subscription_count()
             and self.node.descriptions_pub.get_subscription_count(), MATCH_TIMEOUT_S, "the bench topics to match")

    def _on_descriptions(self, msg) -> None:
        self._received.append((time.perf_counter(), msg))
        self._arrived.set()

    def describe(self, image, regions) -> tuple[float, object]:
        """Publish `image`, then its regions once the node holds it; (ms until the descriptions arrived, them)."""
        from regionblip_msgs.msg import Region2DArray

        images_before = self.node.stats.counts().get("image", 0)
        self._arrived.clear()
        start = time.perf_counter()
        self.image_pub.publish(image)
        wait(lambda: self.node.stats.counts().get("image", 0) > images_before, FRAME_TIMEOUT_S,
             "the node to receive an image")
        self.regions_pub.publish(Region2DArray(header=image.header, regions=regions))
        if not self._arrived.wait(FRAME_TIMEOUT_S):
            raise SystemExit(f"{PROG}: no descriptions within {FRAME_TIMEOUT_S:g} s of publishing a frame; the node "
                             f"reported {self.node.bad_inputs.counts() or 'no problems'}")
        done, descriptions = self._received[-1]
        if descriptions.header.stamp != image.header.stamp:
            raise SystemExit(f"{PROG}: the descriptions that arrived are of another frame")
        return (done - start) * 1e3, descriptions

    def close(self) -> None:
        for executor, spinner in zip(self.executors, self.spinners):
            executor.shutdown()
            spinner.join(MATCH_TIMEOUT_S)
        self.node.destroy_node()
        self.peer.destroy_node()
        self.context.try_shutdown()


def run_ros(args) -> dict:
    from regionblip_msgs.msg import Region2D

    from regionblip_ros.conversions import numpy_to_image

    frames, boxes = bench_frames(args)
    regions = [Region2D(id=f"r{i}", x=float(x1), y=float(y1), width=float(x2 - x1), height=float(y2 - y1))
               for i, (x1, y1, x2, y2) in enumerate(boxes)]
    loopback = LoopbackNode(args.bundle, args.tokens, args.regions, args.threads)
    times, inference_ms, texts = [], [], []
    try:
        for index, frame in enumerate(frames):
            image = numpy_to_image(frame, "rgb8")
            image.header.stamp, image.header.frame_id = loopback.peer.get_clock().now().to_msg(), "camera_optical"
            elapsed_ms, descriptions = loopback.describe(image, regions)
            if index >= WARMUP_FRAMES:
                times.append(elapsed_ms)
                inference_ms.append(descriptions.inference_ms)
                texts.append([d.text for d in descriptions.descriptions])
    finally:
        loopback.close()
    return {"latencies_ms": times, "inference_ms": inference_ms, "texts": texts}


# ---- parent ---------------------------------------------------------------------------------------------------

def run_worker(side: str, bundle: Path, args) -> dict:
    command = [sys.executable, "-m", "tools.bench_node", "--worker", side, "--bundle", str(bundle),
               "--frames", str(args.frames), "--regions", str(args.regions), "--tokens", str(args.tokens)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        raise SystemExit(f"{PROG}: the {side} worker failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(bundle: Path, args) -> dict:
    """Both sides, --rounds times each, taking turns (runtime first, then ros first, ...) so that a change
    in the machine's load over the run weighs on both alike; latencies are pooled over the rounds."""
    load_before = os.getloadavg()[0]
    pooled = {"runtime": {"latencies_ms": [], "texts": []}, "ros": {"latencies_ms": [], "inference_ms": [],
                                                                    "texts": []}}
    for round_ in range(args.rounds):
        for side in ("runtime", "ros") if round_ % 2 == 0 else ("ros", "runtime"):
            for key, values in run_worker(side, bundle.resolve(), args).items():
                pooled[side][key] += values
    ros = percentiles_ms(pooled["ros"]["latencies_ms"]) | {
        "node_inference_median_ms": float(np.median(pooled["ros"]["inference_ms"]))}
    runtime = percentiles_ms(pooled["runtime"]["latencies_ms"])
    ratio = {key: ros[f"{key}_ms"] / runtime[f"{key}_ms"] for key in ("median", "p95")}
    return {
        "ros": ros, "runtime": runtime, "ratio": ratio, "target_ratio": TARGET_RATIO,
        "within_target": ratio["median"] <= TARGET_RATIO,
        "same_texts": pooled["ros"]["texts"] == pooled["runtime"]["texts"],
        "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
    }


def run(args) -> dict:
    from tools.bench_runtime import FRAME_SIZE

    setup = {"bundle": str(args.bundle) if args.bundle else None, "preset": None if args.bundle else args.preset,
             "frames_timed_per_round": args.frames, "rounds": args.rounds, "regions_per_frame": args.regions,
             "max_new_tokens": args.tokens, "threads": args.threads or "runtime default",
             "frame_size_hw": list(FRAME_SIZE), "cpu_count": os.cpu_count()}
    if args.bundle:
        return setup | compare(args.bundle, args)
    from tools.bench_runtime import prepare

    with tempfile.TemporaryDirectory(prefix="regionblip-ros-bench-") as directory:
        start = time.perf_counter()
        prepare(args.preset, Path(directory))
        setup["prepare_s"] = time.perf_counter() - start
        return setup | compare(Path(directory) / "bundle", args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[1].splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--bundle", type=Path, help="exported bundle to describe with (python -m export.onnx)")
    source.add_argument("--preset", default="tiny", help="without --bundle: random model size to export (tiny, bench)")
    parser.add_argument("--frames", type=int, default=20, help="frames timed on each side, after 2 warm-up frames")
    parser.add_argument("--regions", type=int, default=8, help="regions per frame")
    parser.add_argument("--tokens", type=int, default=20, help="max_new_tokens on both sides (the node's default)")
    parser.add_argument("--rounds", type=int, default=3, help="times each side runs, taking turns")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads on both sides "
                        "(default: the runtime's, which the node uses; 1 is faster for small models on 2 cores)")
    parser.add_argument("--worker", choices=("ros", "runtime"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.frames, args.regions, args.tokens, args.rounds) < 1:
        print(f"{PROG}: --frames, --regions, --tokens and --rounds must be at least 1", file=sys.stderr)
        return 2
    if args.bundle and not (args.bundle / "manifest.json").is_file():
        print(f"{PROG}: {args.bundle} is not a bundle (no manifest.json): export one with python -m export.onnx",
              file=sys.stderr)
        return 2
    if args.worker == "ros":
        result = run_ros(args)
    elif args.worker == "runtime":
        result = run_runtime(args)
    else:
        result = run(args)
    print(json.dumps(result, indent=None if args.worker else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
