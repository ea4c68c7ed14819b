"""A 30 Hz camera burst for 20 s into a node whose describer takes 80 ms a frame: it drops, it does not queue.

The describer can do at most 12 of the 30 frames a second. The node must keep only the newest job: the last
frames are described about as fast as any other, latency does not creep up, each region array the node
received is described, dropped or unmatched, and memory stops growing once the frame buffer is full. The
burst runs once per module; each test checks one of these on its record.

The last frame is the one frame no newer frame replaces, so it waits out the job in flight when its regions
arrive: by design its latency is up to ~1.5x the median. Camera only: with LiDAR frames sharing the worker,
one of the two last jobs would also wait a whole job of the other sensor, ~1.8x the median by design, too
close to 2x to tell from a backlog on a shared machine.
The machine may be shared, so bounds are relative, and what transport loses when the process is starved
(the node cannot count what never reached it) is bounded, not assumed away.

The last tests run python -m tools.bench_node, which measures the node's latency against the bare runtime.
"""

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")

from rclpy.parameter import Parameter  # noqa: E402

from describer_double import DescriberDouble  # noqa: E402
from node_rig import TIMEOUT_S  # noqa: E402
from regionblip_ros.describer_node import EXECUTOR_THREADS, RegionDescriber  # noqa: E402
from regionblip_ros.executor import NodeExecutor  # noqa: E402

RATE_HZ = 30.0
BURST_S = 20.0
FRAMES = round(RATE_HZ * BURST_S)
DESCRIBE_S = 0.08      # per frame: the node can describe at most 1 / 0.08 = 12 of the 30 frames a second
FRAME_BUFFER = 30      # the node's default: one second of frames
RSS_SAMPLE_S = 0.5
LAST_FRAMES = 5
RSS_GROWTH_MB = 20.0   # over the second half; keeping every frame would grow by 30 x 230 kB = 7 MB a second
MAX_LOST = 0.2         # region arrays or images lost on the way while a loaded machine starves this process
                       # (7 % seen at load 5 on 2 cores); callbacks that waited for the describer would lose 60 %
FIRST_SEC = int(time.time())  # stamped now: the node drops frames stamped far ahead of its clock


@dataclass
class Burst:
    """What one burst sent and what came back."""

    stamps: list[int] = field(default_factory=list)                      # of the frames sent, in order
    published_at: dict[int, float] = field(default_factory=dict)         # stamp: image published
    described: list[tuple[int, float]] = field(default_factory=list)     # (stamp, descriptions received)
    rss_mb: list[tuple[float, float]] = field(default_factory=list)      # (seconds into the burst, VmRSS)
    received: int = 0                                                     # region arrays the node received
    dropped: int = 0
    unmatched: int = 0
    problems: dict[str, int] = field(default_factory=dict)
    describer_calls: int = 0

    def latencies_s(self) -> list[float]:
        """Image published -> its descriptions received, per described frame, in arrival order."""
        return [received - self.published_at[stamp] for stamp, received in self.described]


def rss_mb() -> float:
    """Resident memory of this process, which holds the node and the publisher both."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmRSS line: this test needs Linux")


class BurstRig:
    """The node spun as its entry point spins it, in this process; the camera and detector run in another
    (tests/burst_source.py), as on a robot, so the burst's publisher never competes with the node for the GIL."""

    def __init__(self, context, describer, **parameters):
        self.namespace = "/t_" + uuid.uuid4().hex[:10]
        self.node = RegionDescriber(describer=describer, context=context, namespace=self.namespace,
                                    parameter_overrides=[Parameter(k, value=v) for k, v in parameters.items()])
        self.executor = NodeExecutor(num_threads=EXECUTOR_THREADS, context=context)
        self.executor.add_node(self.node)
        self.spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self.spinner.start()

    def close(self) -> None:
        self.executor.shutdown()
        self.spinner.join(TIMEOUT_S)
        self.node.destroy_node()


def collect_lines(stream) -> tuple[list[str], threading.Thread]:
    """The lines of `stream`, appended by a thread as they arrive; all there once that thread has ended."""
    lines: list[str] = []

    def read() -> None:
        for line in stream:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return lines, reader


def run_burst(rig: BurstRig, describer: DescriberDouble) -> Burst:
    """Run the source process (FRAMES images at RATE_HZ, each one's regions with the next image, as a detector
    running at the camera's rate would), sample this process's memory meanwhile, then read both sides' records."""
    burst = Burst()
    source = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("burst_source.py")), rig.namespace, str(RATE_HZ),
         str(FRAMES), str(FIRST_SEC)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])})
    (lines, out_reader), (errors, err_reader) = collect_lines(source.stdout), collect_lines(source.stderr)
    sampled_from, idle = time.monotonic(), None
    while source.poll() is None:
        burst.rss_mb.append((time.monotonic() - sampled_from, rss_mb()))
        if idle is None and lines[:1] == ["published\n"]:
            # every frame is out: once the worker is idle every description is published; the source then drains
            idle = rig.node.worker.wait_idle(TIMEOUT_S)
            source.stdin.write("idle\n")
            source.stdin.close()
        time.sleep(RSS_SAMPLE_S)
    for reader in (out_reader, err_reader):
        reader.join(TIMEOUT_S)
    assert source.returncode == 0, f"the burst source failed: {''.join(errors)[-2000:]}"
    assert idle, f"the worker was still busy {TIMEOUT_S} s after the burst"
    record = json.loads(lines[-1])
    # Memory is judged over the burst itself, not the source's start-up and drain.
    burst_end = record["start"] + BURST_S
    burst.rss_mb = [(t - (record["start"] - sampled_from), mb) for t, mb in burst.rss_mb
                    if record["start"] - sampled_from <= t <= burst_end - sampled_from]
    burst.stamps = record["stamps"]
    burst.published_at = {stamp: at for stamp, at in record["published_at"]}
    burst.described = [tuple(d) for d in record["described"]]

    node = rig.node
    assert len(burst.described) == sum(node.worker.processed().values()), \
        "some descriptions the node published never arrived"
    burst.received = node.stats.counts().get("regions_2d", 0)
    burst.dropped = node.worker.dropped().get("camera", 0)
    burst.problems = node.bad_inputs.counts()
    burst.unmatched = burst.problems.get("unmatched_regions_2d", 0)
    burst.describer_calls = len(describer.calls)
    return burst


@pytest.fixture(scope="module")
def burst():
    context = rclpy.context.Context()
    rclpy.init(context=context)
    describer = DescriberDouble(delay_s=DESCRIBE_S)
    # The cache off: the burst repeats the same regions, which it would serve, and this is about the describer's queue.
    rig = BurstRig(context, describer, frame_buffer=FRAME_BUFFER, enable_lidar=False, description_cache=False)
    try:
        yield run_burst(rig, describer)
    finally:
        rig.close()
        context.try_shutdown()


def test_the_last_frames_are_described_within_twice_the_median_latency(burst):
    # The last LAST_FRAMES, not the single last one: a backlog slows every late frame, while one region array
    # that the reliable transport had to resend (seen: one 300 ms outlier in three runs) slows one frame only.
    latencies = burst.latencies_s()
    median, last = float(np.median(latencies)), float(np.median(latencies[-LAST_FRAMES:]))
    assert last < 2 * median, (
        f"the last {LAST_FRAMES} frames took {last * 1e3:.0f} ms (median), all frames {median * 1e3:.0f} ms: "
        f"frames queue up ({[round(t * 1e3) for t in latencies[-LAST_FRAMES:]]} ms)")


def test_latency_does_not_creep_up_during_the_burst(burst):
    latencies = burst.latencies_s()
    quarter = len(latencies) // 4
    first, last = np.median(latencies[:quarter]), np.median(latencies[-quarter:])
    assert last < 2 * first, (  # a queue 2.5x oversubscribed would be ~7x slower in the last quarter
        f"median latency {first * 1e3:.0f} ms in the first quarter, {last * 1e3:.0f} ms in the last")


def test_frames_are_described_newest_first_and_the_last_one_sent_is_described(burst):
    described = [burst.stamps.index(stamp) for stamp, _ in burst.described]
    assert described == sorted(described)  # never an older frame after a newer one
    never_queued = burst.unmatched + FRAMES - burst.received  # the last frames may be among these
    assert described[-1] >= FRAMES - 1 - never_queued


def test_stale_frames_are_dropped_and_every_region_array_received_is_accounted_for(burst):
    assert burst.dropped > FRAMES / 3  # it can describe at most 40 % of them
    assert len(burst.described) + burst.dropped + burst.unmatched == burst.received
    assert FRAMES - burst.received <= MAX_LOST * FRAMES, f"{FRAMES - burst.received} region arrays lost"
    assert burst.unmatched <= MAX_LOST * FRAMES, f"{burst.unmatched} region arrays found no image"
    assert set(burst.problems) <= {"unmatched_regions_2d"}, burst.problems


def test_the_describer_is_kept_busy_while_frames_wait(burst):
    capacity = BURST_S / DESCRIBE_S  # calls that fit in the burst back to back
    assert burst.describer_calls == len(burst.described)
    assert burst.describer_calls > 0.5 * capacity, f"{burst.describer_calls} calls of a possible {capacity:.0f}"


def test_memory_stops_growing_once_the_frame_buffer_is_full(burst):
    second_half = [mb for t, mb in burst.rss_mb if t >= BURST_S / 2]
    assert len(second_half) >= 10, f"RSS was sampled {len(second_half)} times in the second half"
    # Levels, not single samples: a leak grows steadily, the allocator only steps up and down.
    middle, end = np.median(second_half[:5]), np.median(second_half[-5:])
    assert end - middle < RSS_GROWTH_MB, (
        f"RSS grew from {middle:.0f} MB to {end:.0f} MB over the last {BURST_S / 2:g} s: "
        f"{[round(mb) for _, mb in burst.rss_mb]}")


# ---- python -m tools.bench_node: what ROS adds to the runtime's latency ----------------------------------------

BENCH_KEYS = {"bundle", "preset", "frames_timed_per_round", "rounds", "regions_per_frame", "max_new_tokens",
              "threads", "frame_size_hw", "cpu_count", "ros", "runtime", "ratio", "target_ratio", "within_target",
              "same_texts", "load_average_1m"}


def run_bench(capsys, *argv: str) -> dict:
    from tools import bench_node

    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (make setup installs it)")
    assert bench_node.main([*argv, "--frames", "2", "--regions", "2", "--tokens", "3", "--rounds", "1"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_bench_reports_ros_latency_against_the_bare_runtime_on_the_same_frames(capsys, tiny_bundle):
    result = run_bench(capsys, "--bundle", str(tiny_bundle))

    assert set(result) == BENCH_KEYS
    assert (result["bundle"], result["preset"], result["regions_per_frame"]) == (str(tiny_bundle), None, 2)
    ros, runtime = result["ros"], result["runtime"]
    assert ros["frames"] == runtime["frames"] == 2
    assert ros["p95_ms"] >= ros["median_ms"] >= ros["node_inference_median_ms"] > 0  # inference is part of it
    assert runtime["p95_ms"] >= runtime["median_ms"] > 0
    assert result["ratio"]["median"] == pytest.approx(ros["median_ms"] / runtime["median_ms"])
    assert result["within_target"] == (result["ratio"]["median"] <= result["target_ratio"] == 1.10)
    assert result["same_texts"] is True  # both sides did the same work


@pytest.mark.slow  # ~10 s of export the tiny_bundle fixture already covers; keeps this file near 30 s in CI
def test_the_bench_exports_a_random_model_of_the_preset_when_given_no_bundle(capsys):
    result = run_bench(capsys, "--preset", "tiny")

    assert set(result) == BENCH_KEYS | {"prepare_s"}
    assert (result["bundle"], result["preset"]) == (None, "tiny")
    assert result["same_texts"] is True


def test_the_bench_refuses_a_directory_that_is_not_a_bundle(capsys, tmp_path):
    from tools import bench_node

    assert bench_node.main(["--bundle", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"python -m tools.bench_node: {tmp_path} is not a bundle (no manifest.json): "
        "export one with python -m export.onnx")
