"""python -m tools.demo (make demo): a shortened run on the tiny checkpoint, the bundle cache, and,
where the default model is trained, its accuracy end to end through the ROS node."""

import contextlib
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")

from tools import demo  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "models" / "default"
SHORT_S = 2.0


def run_demo(checkpoint: Path, out: Path, bundle: Path, duration: float = SHORT_S, config: Path | None = None,
             scenes: str | None = None) -> dict:
    extra = ([] if config is None else ["--config", str(config)]) + ([] if scenes is None else ["--scenes", scenes])
    assert demo.main(["--duration", str(duration), "--checkpoint", str(checkpoint), "--out", str(out),
                      "--bundle", str(bundle), *extra]) == 0
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def short_run(tiny_checkpoint, tmp_path_factory):
    """A 2 s demo on the tiny random checkpoint: (summary, out directory, bundle directory)."""
    root = tmp_path_factory.mktemp("demo")
    summary = run_demo(tiny_checkpoint, root / "out", root / "bundle")
    return summary, root / "out", root / "bundle"


def test_a_short_demo_describes_frames_of_both_sensors(short_run):
    summary, _, _ = short_run
    assert summary["frames"] > 0 and summary["regions"] > 0
    for modality in ("image_region", "pointcloud_region"):
        counts = summary["modalities"][modality]
        assert counts["frames_described"] > 0 and counts["regions_described"] >= counts["frames_described"]
        assert counts["frames_published"] >= counts["frames_described"] + counts["frames_dropped"]
    assert summary["bundle_reused"] is False  # the first run exported it


def test_the_summary_scores_each_modality_by_attribute_exact_match(short_run):
    summary, _, _ = short_run
    accuracy = {modality: summary["modalities"][modality]["accuracy"] for modality in summary["accuracy"]}
    assert set(accuracy["image_region"]) == {"exact_match", "size", "colour", "shape"}
    assert set(accuracy["pointcloud_region"]) == {"exact_match", "size", "shape"}  # point regions have no colour
    assert all(0.0 <= value <= 1.0 for scores in accuracy.values() for value in scores.values())
    assert summary["accuracy"] == {modality: scores["exact_match"] for modality, scores in accuracy.items()}


def test_by_default_camera_and_lidar_see_one_world_and_every_lidar_region_is_fused(short_run):
    summary, _, _ = short_run
    fused = summary["fused"]
    assert summary["scenes"] == "shared"
    # every object of a shared scene lies in the camera's view, so each LiDAR region described is fused
    assert fused["fused_regions"] == fused["lidar_regions"] == summary["modalities"]["pointcloud_region"][
        "regions_described"] > 0
    assert 0.0 <= fused["exact_match"] <= 1.0 and 0.0 <= fused["colour"] <= 1.0
    assert fused["examples"] and all(line.startswith("lidar: ") and " | fused: " in line for line in fused["examples"])


def test_the_separate_scenes_keep_the_camera_only_world_without_fusion(tiny_checkpoint, short_run, tmp_path):
    _, _, bundle = short_run
    summary = run_demo(tiny_checkpoint, tmp_path / "out", bundle, duration=1.0, scenes="separate")
    assert summary["scenes"] == "separate" and summary["frames"] > 0
    assert summary["fused"]["fused_regions"] == 0 and summary["fused"]["lidar_regions"] > 0


def test_the_summary_reports_latency_percentiles_and_drops(short_run):
    summary, _, _ = short_run
    assert 0 < summary["latency_ms"]["p50"] <= summary["latency_ms"]["p95"]
    assert summary["drops"] == sum(m["frames_dropped"] for m in summary["modalities"].values()) >= 0


def test_annotated_camera_frames_are_written_as_pngs(short_run):
    summary, out, _ = short_run
    pngs = sorted(out.glob("annotated_*.png"))
    assert pngs and [str(p) for p in pngs] == summary["annotated"]
    drawn = np.asarray(Image.open(pngs[0]))
    assert drawn.shape == (4 * 96, 4 * 96, 3)  # the 96 px camera frame, drawn 4x so the captions read


def test_the_run_is_recorded_as_an_mcap_that_ros2_readers_decode(short_run):
    pytest.importorskip("mcap_ros2", reason="mcap-ros2-support is not installed: the demo records nothing")
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    summary, out, _ = short_run
    topics, description_ids = {}, set()
    with open(out / "run.mcap", "rb") as file:
        for _, channel, _, message in make_reader(file, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
            topics[channel.topic] = topics.get(channel.topic, 0) + 1
            if channel.topic == "/descriptions":
                description_ids |= {d.id for d in message.descriptions}
    assert {"/image", "/camera_info", "/regions_2d", "/points", "/regions_3d", "/descriptions",
            "/markers"} <= set(topics)
    assert sum(topics.values()) == summary["recorded_messages"]
    assert any(i.startswith("c") for i in description_ids) and any(i.startswith("l") for i in description_ids)


@pytest.fixture(scope="module")
def second_run(short_run, tiny_checkpoint, tmp_path_factory):
    """A 0.5 s demo on the same checkpoint and bundle, where exporting fails and mcap is not importable:
    (summary, printed output, manifest mtime before the run)."""
    _, _, bundle = short_run
    manifest_mtime = (bundle / "manifest.json").stat().st_mtime_ns

    def no_export(checkpoint, bundle):
        raise AssertionError("the bundle of an unchanged checkpoint was exported again")

    out = tmp_path_factory.mktemp("second") / "out"
    with pytest.MonkeyPatch.context() as patch, capture_stdout() as printed:
        patch.setattr(demo, "export_bundle", no_export)
        patch.setitem(sys.modules, "mcap.writer", None)  # import mcap.writer raises ImportError
        summary = run_demo(tiny_checkpoint, out, bundle, duration=0.5)
    return summary, printed.getvalue(), manifest_mtime


@contextlib.contextmanager
def capture_stdout():
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield buffer


def test_a_second_run_reuses_the_bundle_without_exporting(second_run, short_run):
    summary, _, manifest_mtime = second_run
    _, _, bundle = short_run
    assert summary["bundle_reused"] is True
    assert (bundle / "manifest.json").stat().st_mtime_ns == manifest_mtime


def test_without_mcap_the_demo_says_so_and_records_nothing(second_run):
    summary, printed, _ = second_run
    assert "mcap is not installed: no recording" in printed
    assert summary["recording"] is None and summary["frames"] > 0


def test_the_bundle_is_exported_again_when_the_checkpoint_changes(short_run, tiny_checkpoint, tmp_path):
    _, _, bundle = short_run
    changed = Path(shutil.copytree(tiny_checkpoint, tmp_path / "checkpoint"))
    with open(changed / "model.safetensors", "ab") as weights:
        weights.write(b" ")  # other bytes, other sha256
    exports = []
    assert demo.prepare_bundle(changed, bundle, export=lambda *args: exports.append(args)) is False
    assert exports == [(changed, bundle)]
    assert demo.prepare_bundle(tiny_checkpoint, bundle, export=lambda *args: exports.append(args)) is True


def test_a_missing_checkpoint_says_how_to_get_one(tmp_path, capsys):
    assert demo.main(["--checkpoint", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]) == 2
    assert "make train-default" in capsys.readouterr().err


@pytest.fixture
def ros_context():
    from rclpy.context import Context
    context = Context()
    rclpy.init(context=context)
    yield context
    context.try_shutdown()


def description_array(stamp_ns: int, ids_texts: list[tuple[str, str]], modality: str):
    from builtin_interfaces.msg import Time
    from regionblip_msgs.msg import RegionDescription, RegionDescriptionArray
    array = RegionDescriptionArray(descriptions=[RegionDescription(id=i, text=t, modality=modality)
                                                 for i, t in ids_texts])
    array.header.stamp = Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
    return array


def test_the_monitor_scores_only_descriptions_of_the_frame_the_regions_were_boxed_on(ros_context, tmp_path):
    from tools.sim_sensors import Detection
    monitor = demo.DemoMonitor(tmp_path, context=ros_context)
    red = {"size": "small", "colour": "red", "shape": "circle", "phrase": "a small red circle"}
    blue = {"size": "large", "colour": "blue", "shape": "square", "phrase": "a large blue square"}
    monitor.add_detection(Detection("lidar", 16, 1_000_000_000, 0.0, {"l0016-0": red}, None))
    monitor.add_detection(Detection("lidar", 17, 1_001_000_000, 0.0, {"l0017-0": blue}, None))
    # l0017's regions described on l0016's cloud (a slop match after a dropped cloud): not l0017's scene
    monitor.on_descriptions(description_array(1_000_000_000, [("l0017-0", "a large blue square")],
                                              "pointcloud_region"))
    monitor.on_descriptions(description_array(5, [("x-0", "a cube")], "pointcloud_region"))  # not ours
    assert monitor.unmatched == 2 and monitor.frames["lidar"] == []
    monitor.on_descriptions(description_array(1_001_000_000, [("l0017-0", "a large blue circle")],
                                              "pointcloud_region"))
    [record] = monitor.frames["lidar"]
    assert record["index"] == 17 and record["regions"][0]["truth"] == blue and not record["regions"][0]["correct"]
    monitor.destroy_node()


class FixedScenes:
    def camera_scene(self, index, image_size):
        from tools.sim_sensors import CameraScene
        return CameraScene(np.zeros((image_size, image_size, 3), np.uint8), np.array([[1.0, 1.0, 9.0, 9.0]]),
                           [{"phrase": f"scene {index}"}])

    def lidar_scene(self, index, num_points):
        raise AssertionError("the camera-only test draws no LiDAR scene")


def test_the_simulated_detector_hands_over_each_detection_before_publishing_it(ros_context):
    from tools.sim_sensors import SimulatedSensors
    events = []
    sim = SimulatedSensors(FixedScenes(), on_detection=lambda d: events.append(("record", d.index, d.truths)),
                           context=ros_context)
    sim.regions_2d_pub.publish = lambda array: events.append(("publish", array.regions[0].id))
    sim.camera_tick()
    sim.camera_tick()  # releases frame 0's regions
    sim.stop()         # releases frame 1's
    assert events == [("record", 0, {"c0000-0": {"phrase": "scene 0"}}), ("publish", "c0000-0"),
                      ("record", 1, {"c0001-0": {"phrase": "scene 1"}}), ("publish", "c0001-0")]
    sim.destroy_node()


needs_default_model = pytest.mark.skipif(
    not (DEFAULT_MODEL / "model.safetensors").is_file(),
    reason="models/default/model.safetensors does not exist yet (make train-default writes it)")


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """make demo's configuration at half its sensor rates for 10 s: the describer keeps up even on a loaded CI
    machine, so it describes the same held-out frames (the first 50 camera, 25 LiDAR) every run, and the accuracy
    is a property of the model, not of which frames a busy worker happened to drop."""
    out = tmp_path_factory.mktemp("default")
    config = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    rates = config["sim_sensors"]["ros__parameters"]
    # a new scene every frame (no tracked objects, so no cached descriptions): as many held-out scenes as frames
    rates.update(camera_rate_hz=rates["camera_rate_hz"] / 2, lidar_rate_hz=rates["lidar_rate_hz"] / 2, scene_frames=1)
    (out / "demo.yaml").write_text(yaml.safe_dump(config))
    return run_demo(DEFAULT_MODEL, out / "out", out / "bundle", duration=10.0, config=out / "demo.yaml")


@needs_default_model
def test_the_default_model_describes_regions_of_both_sensors_through_the_node(default_run):
    # 10 s at 5 Hz / 2.5 Hz publish 50 camera and 25 LiDAR frames (shared scenes: 151 and 78 regions; the separate
    # scenes had 141 and 72); minimums a loaded 2-core CI machine clears (within make test, on the separate scenes, 7
    # of the 25 LiDAR frames went undescribed: 48 regions)
    assert default_run["modalities"]["image_region"]["regions_described"] >= 100
    assert default_run["modalities"]["pointcloud_region"]["regions_described"] >= 25
    assert default_run["unmatched_description_arrays"] == 0
    assert all(0.0 <= default_run["accuracy"][m] <= 1.0 for m in ("image_region", "pointcloud_region"))


@needs_default_model
def test_the_default_model_describes_the_demo_scenes_as_accurately_as_training_requires(default_run):
    # the thresholds of the training issue: image regions 0.95, point regions 0.90. Measured on the shared scenes
    # (camera and LiDAR see one world, tools/shared_scene.py): 0.980 of 148 described regions and 0.974 of 78; make
    # demo (20 s at full rates) 0.975 of 558 and 0.970 of 300. On the separate scenes (--scenes separate) before:
    # 0.979 of 141 and 0.986 of 72, make demo 0.965 of 520 and 0.953 of 211; held-out with exact boxes 0.990 and
    # 0.965.
    assert default_run["accuracy"]["image_region"] >= 0.95
    assert default_run["accuracy"]["pointcloud_region"] >= 0.90


@needs_default_model
def test_the_default_model_fuses_lidar_regions_with_the_cameras_colour(default_run):
    # the fused phrase is right when the LiDAR's size and shape and the camera's colour all are: it can score no
    # higher than point regions, whose threshold it shares. Measured: 78 of 78 LiDAR regions fused, exact match 0.974,
    # colour 1.000; make demo (20 s at full rates) 300 of 300, 0.970 and 1.000 (every miss is the LiDAR's shape)
    fused = default_run["fused"]
    assert fused["fused_regions"] == fused["lidar_regions"] >= 25
    assert fused["exact_match"] >= 0.90 and fused["colour"] >= 0.95


@needs_default_model
def test_the_detectors_prompt_reaches_the_model_and_its_answers_are_scored_apart(default_run):
    # config/demo.yaml puts the prompt "a" on each camera array's first region; the default model, not trained for
    # prompts, continues it ("large blue circle"). Measured in make demo: 198 regions, exact match 0.929 (captions of
    # the same run 0.987)
    prompted = default_run["prompted"]
    assert prompted["prompts"] == ["a"] and prompted["regions"] >= 25
    assert prompted["exact_match"] >= 0.80
    assert all(example.startswith('"a" → "') and not example.startswith('"a" → "a ') for example in prompted["examples"])
