"""python -m tools.replay: a short drive recorded live through the node, replayed through a fresh node, gives
the same descriptions; the summary counts, scores and paces what it played; topics remap; /clock drives sim time."""

import csv
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")

from rclpy.context import Context  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from regionblip_msgs.msg import Region2D, Region2DArray, RegionDescriptionArray  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from std_msgs.msg import Header, String  # noqa: E402

from regionblip_ros.conversions import numpy_to_image  # noqa: E402
from regionblip_ros.describer_node import OUTPUT_QOS, REGION_QOS, RegionDescriber  # noqa: E402
from regionblip_ros.executor import NodeExecutor  # noqa: E402
from tests.bags import copy_bag, descriptions_in, write_bag  # noqa: E402
from tests.describer_double import DescriberDouble  # noqa: E402
from tests.node_rig import wait_for  # noqa: E402
from tools import replay  # noqa: E402
from tools.demo import MODALITY, RECORDED  # noqa: E402
from tools.synthetic_scenes import SyntheticScenes  # noqa: E402
from tools.ground_truth import GROUND_TRUTH_TOPIC, truth_message  # noqa: E402
from tools.recording import McapRecorder  # noqa: E402
from tools.sim_sensors import SimulatedSensors  # noqa: E402
from training.metrics import attribute_exact_match  # noqa: E402

FRAMES = 3          # per sensor
IMAGE_SIZE = 96     # the simulated camera's default


class LiveRun:
    """A short drive through a live node: the bag, what the node answered, and the regions' truths."""

    def __init__(self, bag: Path, descriptions: list[RegionDescriptionArray], truths: dict):
        self.bag, self.truths = bag, truths
        self.texts = {(d.header.stamp.sec * 1_000_000_000 + d.header.stamp.nanosec, item.id): item.text
                      for d in descriptions for item in d.descriptions}


@pytest.fixture(scope="module")
def live_run(tiny_bundle, tmp_path_factory) -> LiveRun:
    """The demo's pieces, in one process: simulated sensors ticked by hand (one frame per sensor, then waiting
    for the answers, so the worker drops nothing), the tiny bundle's node, and the demo's recorder and truths."""
    bag = tmp_path_factory.mktemp("live") / "live.mcap"
    context = Context()
    rclpy.init(context=context)
    describer = RegionDescriber(context=context, parameter_overrides=[Parameter("bundle", value=str(tiny_bundle))])
    monitor = rclpy.create_node("monitor", context=context)
    truth_pub = monitor.create_publisher(String, GROUND_TRUTH_TOPIC, REGION_QOS)
    truths, live = {}, []

    def on_detection(detection) -> None:
        modality = MODALITY[detection.sensor]
        truths.update({(detection.stamp_ns, i): (modality, t) for i, t in detection.truths.items()})
        truth_pub.publish(truth_message(detection.stamp_ns, modality, detection.truths))

    sim = SimulatedSensors(SyntheticScenes(), on_detection=on_detection, context=context)
    monitor.create_subscription(RegionDescriptionArray, "descriptions", live.append, OUTPUT_QOS)
    recorder = McapRecorder(monitor, bag, RECORDED)
    executor = NodeExecutor(num_threads=5, context=context)
    for node in (describer, monitor, sim):
        executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        inputs = (sim.image_pub, sim.points_pub, sim.regions_2d_pub, sim.regions_3d_pub)
        outputs = (describer.descriptions_pub, truth_pub)  # to the monitor and the recorder, or just the recorder
        assert wait_for(lambda: all(p.get_subscription_count() == 2 for p in inputs)  # the node and the recorder
                        and all(p.get_subscription_count() for p in outputs))
        for frame in range(FRAMES):
            sim.camera_tick()
            sim.lidar_tick()  # each tick also releases the sensor's previous regions
            assert wait_for(lambda: len(live) == 2 * frame, timeout_s=30), f"{len(live)} answers after tick {frame}"
        sim.stop()
        assert wait_for(lambda: len(live) == 2 * FRAMES, timeout_s=30)
        time.sleep(0.5)  # the recorder's copy of the last answers
    finally:
        executor.shutdown()
        spinner.join()
        recorder.close()
        for node in (describer, monitor, sim):
            node.destroy_node()
        context.try_shutdown()
    assert describer.worker.dropped() == {}
    return LiveRun(bag, live, truths)


def run_replay(bag: Path, out: Path, *argv, describer=None) -> dict:
    assert replay.main([str(bag), "--out", str(out), *argv], describer=describer) == 0
    return json.loads(out.with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def replayed(live_run, tiny_bundle, tmp_path_factory):
    """The live bag replayed at max speed through a fresh node on the same bundle: (summary, out MCAP, CSV)."""
    out = tmp_path_factory.mktemp("replay") / "replay.mcap"
    summary = run_replay(live_run.bag, out, "--bundle", str(tiny_bundle), "--csv", str(out.with_suffix(".csv")))
    return summary, out, out.with_suffix(".csv")


def test_a_replay_reproduces_the_live_descriptions(live_run, replayed):
    _, out, _ = replayed
    assert len(live_run.texts) >= 2 * FRAMES  # every simulated frame has at least one object
    assert descriptions_in(out) == live_run.texts


def test_the_summary_counts_every_array_and_region_of_each_modality(live_run, replayed):
    summary, _, _ = replayed
    for modality in ("image_region", "pointcloud_region"):
        counts = summary["modalities"][modality]
        regions = sum(1 for m, _ in live_run.truths.values() if m == modality)
        assert counts["frames_published"] == counts["frames_received_by_node"] == FRAMES
        assert counts["region_arrays_published"] == counts["description_arrays"] == FRAMES
        assert counts["regions_published"] == counts["regions_described"] == regions
        assert counts["region_arrays_unanswered"] == counts["jobs_dropped_by_node"] == 0
        assert 0 < counts["latency_ms"]["p50"] <= counts["latency_ms"]["p90"] <= counts["latency_ms"]["p99"]
    assert summary["live_agreement"] == {"compared": len(live_run.texts), "same_text": len(live_run.texts),
                                         "only_live": 0, "only_replayed": 0, "differing": []}
    assert summary["topics"]["ground_truth"] == GROUND_TRUTH_TOPIC
    # camera_info is recorded for fusion, which this node does not do (fuse_camera off): not one of its inputs
    assert set(summary["topics"]["skipped"]) == {"/markers", "/annotated_image", "/diagnostics", "/camera_info"}
    assert summary["messages_played"] == 4 * FRAMES and summary["unmatched_description_arrays"] == 0


def test_the_summary_scores_the_replayed_texts_against_the_recorded_truth(live_run, replayed):
    summary, _, _ = replayed
    for modality in ("image_region", "pointcloud_region"):
        keys = [key for key, (m, _) in live_run.truths.items() if m == modality]
        expected = attribute_exact_match([live_run.texts[k] for k in keys], [live_run.truths[k][1] for k in keys],
                                         modality)
        scores = summary["modalities"][modality]["accuracy"]
        assert scores["regions"] == len(keys)
        assert scores["exact_match"] == round(expected[f"{modality}/exact_match"], 4)
        assert summary["accuracy"][modality] == scores["exact_match"]


def test_the_csv_has_one_row_per_modality_with_the_summary_numbers(replayed):
    summary, _, csv_path = replayed
    rows = {row["modality"]: row for row in csv.DictReader(csv_path.open())}
    assert set(rows) == set(summary["modalities"])
    for modality, row in rows.items():
        counts = summary["modalities"][modality]
        assert int(row["regions_described"]) == counts["regions_described"]
        assert float(row["latency_ms_p90"]) == counts["latency_ms"]["p90"]
        assert float(row["exact_match"]) == counts["accuracy"]["exact_match"]


def test_the_output_mcap_holds_the_descriptions_and_diagnostics(replayed):
    from mcap.reader import make_reader

    summary, out, _ = replayed
    with open(out, "rb") as file:
        counts = make_reader(file).get_summary().statistics.channel_message_counts
        topics = {c.id: c.topic for c in make_reader(open(out, "rb")).get_summary().channels.values()}
    recorded = {topics[i]: n for i, n in counts.items()}
    assert recorded["/descriptions"] == 2 * FRAMES
    assert sum(recorded.values()) == summary["recorded_messages"]


def double_text(region_id: str) -> str:
    """What DescriberDouble says of the camera region with this id (c<frame>-<index>)."""
    return f"region {region_id.rsplit('-', 1)[1]} of {IMAGE_SIZE}x{IMAGE_SIZE} image"


def test_remapped_topics_are_played_on_the_nodes_topics(live_run, tmp_path):
    renamed = copy_bag(live_run.bag, tmp_path / "renamed.mcap",
                       {"/image": "/cam/image_raw", "/regions_2d": "/detector/boxes"},
                       keep=lambda topic: topic in ("/image", "/regions_2d"))
    summary = run_replay(renamed, tmp_path / "out.mcap", "--remap", "/cam/image_raw:=/image",
                         "--remap", "/detector/boxes:=/regions_2d", describer=DescriberDouble())
    camera = {key: double_text(key[1]) for key in live_run.texts if key[1].startswith("c")}
    assert descriptions_in(tmp_path / "out.mcap") == camera
    assert summary["topics"]["played"]["/cam/image_raw"] == {"as": "/image", "type": "sensor_msgs/msg/Image",
                                                             "published": FRAMES}
    assert list(summary["modalities"]) == ["image_region"]
    assert summary["modalities"]["image_region"]["regions_described"] == len(camera)


def test_at_a_recorded_rate_the_replay_takes_the_recorded_time_and_accounts_for_every_array(live_run, tmp_path):
    summary = run_replay(live_run.bag, tmp_path / "out.mcap", "--rate", "2", describer=DescriberDouble())
    assert summary["played_s"] >= summary["recorded_s"] / 2 > 0
    for counts in summary["modalities"].values():
        assert counts["region_arrays_published"] == FRAMES
        assert counts["description_arrays"] + counts["region_arrays_unanswered"] == FRAMES
        assert counts["frames_received_by_node"] <= counts["frames_published"] == FRAMES


FUTURE_S = 2_100_000_000  # 2036-07-18, years ahead of this machine's clock (Time.sec is an int32)


def future_bag(path: Path, with_clock: bool) -> Path:
    """Two camera frames stamped in 2036, each with one region, and (with_clock) the bag's /clock at the time."""
    messages = []
    for frame in range(2):
        header = Header(frame_id="camera_optical")
        header.stamp.sec, log = FUTURE_S + frame, 1_000_000_000 * (frame + 1)
        image = numpy_to_image(np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8), "rgb8", header=header)
        regions = Region2DArray(header=header, regions=[Region2D(id=f"c{frame}-0", x=8.0, y=8.0, width=40.0,
                                                                 height=40.0)])
        if with_clock:
            messages.append(("/clock", log, Clock(clock=header.stamp)))
        messages += [("/image", log + 1, image), ("/regions_2d", log + 2, regions)]
    return write_bag(path, messages)


def test_a_bag_with_clock_runs_the_node_on_its_time(tmp_path):
    summary = run_replay(future_bag(tmp_path / "clock.mcap", True), tmp_path / "out.mcap",
                         describer=DescriberDouble())
    assert summary["use_sim_time"] is True and summary["not_received_by_node"] == {}
    assert summary["modalities"]["image_region"]["description_arrays"] == 2
    assert "stamp_ahead" not in summary["node"]["bad_inputs"]


def test_without_clock_frames_ahead_of_the_nodes_clock_are_counted_lost(tmp_path):
    summary = run_replay(future_bag(tmp_path / "wall.mcap", False), tmp_path / "out.mcap",
                         describer=DescriberDouble())
    counts = summary["modalities"]["image_region"]
    assert summary["use_sim_time"] is False
    assert counts["region_arrays_unanswered"] == 2 and counts["description_arrays"] == 0
    assert summary["node"]["bad_inputs"] == {"stamp_ahead": 2, "unmatched_regions_2d": 2}


def description_array(stamp_ns: int, *ids: str) -> RegionDescriptionArray:
    from regionblip_msgs.msg import RegionDescription

    array = RegionDescriptionArray(descriptions=[RegionDescription(id=i, text=f"text of {i}") for i in ids])
    array.header.stamp.sec, array.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return array


def test_an_answer_on_a_neighbouring_frame_answers_the_nearest_array_within_the_slop():
    from tools.replay_summary import Tally

    tally = Tally(slop_ns=50_000_000)
    first = tally.send("image_region", 1_000_000_000, ["a"], published=10.0)
    second = tally.send("image_region", 1_100_000_000, ["b"], published=10.5)
    tally.answer(description_array(1_130_000_000, "b"), received=10.75)  # matched to a frame 30 ms later
    tally.answer(description_array(3_000_000_000, "x"), received=11.0)   # nothing of ours within 50 ms
    assert second.answered.is_set() and not first.answered.is_set()
    assert tally.answers == [("image_region", 250.0, 0.0, 1)] and tally.unmatched == 1
    assert tally.texts == {(1_130_000_000, "b"): ("image_region", "text of b")}
    assert tally.by_region == {(1_100_000_000, "b"): ("image_region", "text of b")}  # the array's stamp, for truths


def test_a_fusing_node_is_played_the_recorded_camera_info_and_fuses(tmp_path):
    from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
    from mcap.reader import make_reader
    from rclpy.serialization import deserialize_message
    from regionblip_msgs.msg import Region3D, Region3DArray

    from regionblip_ros.conversions import xyz_to_pointcloud2
    from tools.shared_scene import LIDAR_TO_CAMERA, SharedScenes
    from tools.sim_sensors import camera_info

    scenes, stamp_ns = SharedScenes(), 1_000_000_000
    camera, lidar = scenes.camera_scene(0, IMAGE_SIZE), scenes.lidar_scene(0, 1024)
    header = Header(frame_id="lidar")
    header.stamp.sec = 1
    regions = [Region3D(id=f"l-{k}", size=Vector3(x=float(s[0]), y=float(s[1]), z=float(s[2])),
                        center=Pose(position=Point(x=float(c[0]), y=float(c[1]), z=float(c[2])),
                                    orientation=Quaternion(z=float(np.sin(yaw / 2)), w=float(np.cos(yaw / 2)))))
               for k, (c, s, yaw) in enumerate(zip(lidar.centers, lidar.sizes, lidar.yaws))]
    bag = write_bag(tmp_path / "fused.mcap", [
        ("/camera_info", stamp_ns, camera_info(camera.camera_matrix, camera.image.shape, header)),
        ("/image", stamp_ns, numpy_to_image(camera.image, "rgb8", header=header)),
        ("/points", stamp_ns, xyz_to_pointcloud2(lidar.points, header=header)),
        ("/regions_3d", stamp_ns, Region3DArray(header=header, regions=regions))])
    params = tmp_path / "fuse.yaml"
    params.write_text("region_describer:\n  ros__parameters:\n    fuse_camera: true\n"
                      f"    lidar_to_camera: {list(LIDAR_TO_CAMERA)}\n")
    summary = run_replay(bag, tmp_path / "out.mcap", "--params", str(params), describer=DescriberDouble())
    assert summary["topics"]["played"]["/camera_info"]["published"] == 1
    assert summary["not_received_by_node"] == {}
    with open(tmp_path / "out.mcap", "rb") as file:
        (answer,) = [deserialize_message(message.data, RegionDescriptionArray) for _, channel, message
                     in make_reader(file).iter_messages(topics=["/descriptions"])]
    assert [d.id for d in answer.descriptions] == [r.id for r in regions]
    assert all(d.camera_text and d.region_2d.width > 0 for d in answer.descriptions)
