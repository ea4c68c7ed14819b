"""Every command line refuses bad input with one line on stderr that says what is wrong and what to do, and a
non-zero exit; arguments and configs are checked before any model is built or exported."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from contract.manifest import MANIFEST_NAME, file_hashes
from export import onnx as export_onnx
from export import trt as export_trt
from runtime import cli as runtime_cli
from training import evaluate, train

DEFAULT_RECIPE = Path(__file__).parent.parent / "config" / "train_default.yaml"


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.fixture
def frame(tmp_path) -> Path:
    path = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def scene(tmp_path) -> Path:
    path = tmp_path / "scene.npy"
    np.save(path, np.random.default_rng(0).uniform(-1, 1, (300, 3)).astype(np.float32))
    return path


def rehashed(bundle: Path):
    """Rewrite the manifest's sha256 of every file, as a tool that 'repairs' a bundle would."""
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    (bundle / MANIFEST_NAME).write_text(json.dumps({**manifest, "files": file_hashes(bundle)}))


# runtime.cli

def test_a_truncated_graph_that_passes_the_hash_check_names_the_file_and_re_export(tiny_bundle, tmp_path, frame,
                                                                                    capsys):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    graph = bundle / "vision.onnx"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    rehashed(bundle)
    assert runtime_cli.main(["--bundle", str(bundle), "--image", str(frame)]) == 2
    line = error_line(capsys)
    assert line.startswith(f"runtime.cli: ONNX Runtime cannot load bundle graph {graph} (InvalidProtobuf")
    assert line.endswith("re-export the bundle with python -m export.onnx --ckpt CHECKPOINT --out BUNDLE")


def test_a_damaged_tokenizer_that_passes_the_hash_check_is_one_line(tiny_bundle, tmp_path, frame, capsys):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    tokenizer = bundle / "tokenizer" / "tokenizer.json"
    tokenizer.write_text("not json")
    rehashed(bundle)
    assert runtime_cli.main(["--bundle", str(bundle), "--image", str(frame)]) == 2
    line = error_line(capsys)
    assert line.startswith(f"runtime.cli: tokenizer {tokenizer} cannot be read (")
    assert line.endswith("re-export the bundle with python -m export.onnx --ckpt CHECKPOINT --out BUNDLE")


@pytest.mark.parametrize("field, message", [
    ("files", "have no sha256 in the manifest: re-export the bundle"),
    ("graphs", "manifest has missing fields ['graphs']: it was written by another version; re-export the bundle"),
    ("generation", "manifest has missing fields ['generation']: it was written by another version; re-export"),
])
def test_a_manifest_without_a_section_is_refused_in_one_line(tiny_bundle, tmp_path, frame, capsys, field, message):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    del manifest[field]
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert runtime_cli.main(["--bundle", str(bundle), "--image", str(frame)]) == 2
    assert message in error_line(capsys)


def test_a_truncated_png_is_refused_as_unreadable(tiny_bundle, tmp_path, frame, capsys):
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(frame.read_bytes()[:200])
    assert runtime_cli.main(["--bundle", str(tiny_bundle), "--image", str(truncated)]) == 2
    assert error_line(capsys) == (f"runtime.cli: image {truncated} cannot be read (image file is truncated): give a "
                                  "complete image file")


def test_a_directory_given_as_the_image_is_refused(tiny_bundle, tmp_path, capsys):
    assert runtime_cli.main(["--bundle", str(tiny_bundle), "--image", str(tmp_path)]) == 2
    assert error_line(capsys) == f"runtime.cli: image {tmp_path} is a directory: give an image file (PNG, JPEG, ...)"


def test_a_directory_given_as_the_point_cloud_is_refused(tiny_bundle, tmp_path, capsys):
    assert runtime_cli.main(["--bundle", str(tiny_bundle), "--points", str(tmp_path)]) == 2
    assert error_line(capsys) == f"runtime.cli: point cloud {tmp_path} is a directory: give a .npy file"


def test_a_bad_image_is_reported_before_the_bundle_is_loaded(tmp_path, capsys):
    assert runtime_cli.main(["--bundle", str(tmp_path / "no-bundle"), "--image", str(tmp_path)]) == 2
    assert "is a directory" in error_line(capsys)


@pytest.mark.parametrize("argument, message", [
    (["--box3d", "0,0,0,-1,1,1"], "argument --box3d: '0,0,0,-1,1,1' has a negative size [-1.0, 1.0, 1.0]: give full "
                                  "extents sx,sy,sz >= 0 (see --help)"),
    (["--box3d", "0,0,0,1,1,nan"], "argument --box3d: '0,0,0,1,1,nan' has a number that is not finite"),
    (["--box", "0,0,inf,5"], "argument --box: '0,0,inf,5' has a number that is not finite"),
    (["--beams", "0"], "argument --beams: '0' is not a positive integer (see --help)"),
    (["--max-new-tokens", "-3"], "argument --max-new-tokens: '-3' is not a positive integer"),
    (["--backend", "tflite"], "argument --backend: invalid choice: 'tflite'"),
])
def test_bad_arguments_are_refused_at_parsing_in_one_line(tiny_bundle, scene, capsys, argument, message):
    assert runtime_cli.main(["--bundle", str(tiny_bundle), "--points", str(scene)] + argument) == 2
    line = error_line(capsys)
    assert line.startswith("runtime.cli: ") and message in line


def test_a_missing_required_argument_is_one_line(capsys):
    assert runtime_cli.main(["--image", "frame.png"]) == 2
    assert error_line(capsys) == "runtime.cli: the following arguments are required: --bundle (see --help)"


def test_a_zero_size_box_is_still_described(tiny_bundle, scene, capsys):
    assert runtime_cli.main(["--bundle", str(tiny_bundle), "--points", str(scene), "--box3d", "0,0,0,0,0,0",
                             "--max-new-tokens", "2"]) == 0
    assert capsys.readouterr().out.startswith("box3d 0 [0,0,0,0,0,0]: ")


# export.onnx and export.trt

@pytest.mark.parametrize("argument, message", [
    (["--max-new-tokens", "0"], "argument --max-new-tokens: got 0, expected an integer >= 1 (see --help)"),
    (["--num-beams", "0"], "argument --num-beams: got 0, expected an integer >= 1"),
    (["--min-new-tokens", "-1"], "argument --min-new-tokens: got -1, expected an integer >= 0"),
    (["--num-beams", "five"], "argument --num-beams: 'five' is not an integer"),
    (["--min-new-tokens", "9", "--max-new-tokens", "4"], "--min-new-tokens 9 exceeds --max-new-tokens 4"),
    (["--max-new-tokens", "500"], "--max-new-tokens 500 does not fit the model: its 8 query tokens, BOS and the new "
                                  "tokens make 509, above its 128 positions; give at most 119"),
])
def test_export_refuses_bad_generation_defaults_before_exporting(tiny_checkpoint, tmp_path, capsys, argument,
                                                                 message):
    assert export_onnx.main(["--ckpt", str(tiny_checkpoint), "--out", str(tmp_path / "bundle")] + argument) == 2
    line = error_line(capsys)
    assert line.startswith("export.onnx: ") and message in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argument, message", [
    (["--workspace", "0"], "argument --workspace: got 0, expected a finite number > 0"),
    (["--workspace", "inf"], "argument --workspace: got inf, expected a finite number > 0"),
    (["--parity-tolerance", "-0.001"], "argument --parity-tolerance: got -0.001, expected a finite number > 0"),
    (["--max-regions", "0"], "argument --max-regions: got 0, expected an integer >= 1"),
    (["--max-new-tokens", "0"], "argument --max-new-tokens: got 0, expected an integer >= 1"),
    (["--min-new-tokens", "9", "--max-new-tokens", "4"], "--min-new-tokens 9 exceeds --max-new-tokens 4"),
])
def test_trt_refuses_bad_arguments_before_exporting(tiny_checkpoint, tmp_path, capsys, argument, message):
    assert export_trt.main(["--ckpt", str(tiny_checkpoint), "--out", str(tmp_path / "bundle")] + argument) == 2
    line = error_line(capsys)
    assert line.startswith("export.trt: ") and message in line
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_a_file_given_as_the_checkpoint(tmp_path, capsys):
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert export_onnx.main(["--ckpt", str(tmp_path / "model.safetensors"), "--out", str(tmp_path / "b")]) == 2
    assert error_line(capsys) == (f"export.onnx: checkpoint {tmp_path / 'model.safetensors'} is a file, not a "
                                  "directory: pass a directory written by save_pretrained")


def test_export_refuses_a_checkpoint_whose_tokenizer_cannot_be_read(tiny_checkpoint, tmp_path, capsys):
    checkpoint = shutil.copytree(tiny_checkpoint, tmp_path / "checkpoint")
    (checkpoint / "tokenizer.json").write_text("not json")
    assert export_onnx.main(["--ckpt", str(checkpoint), "--out", str(tmp_path / "bundle")]) == 2
    line = error_line(capsys)
    assert line.startswith(f"export.onnx: checkpoint {checkpoint} has a tokenizer.json that cannot be read (")
    assert line.endswith("save the model with its tokenizer again (model.save_pretrained(dir, tokenizer=...))")
    assert not (tmp_path / "bundle").exists()


def test_export_refuses_a_file_given_as_the_bundle_and_keeps_it(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    assert export_onnx.main(["--ckpt", str(tiny_checkpoint), "--out", str(tmp_path / "notes.txt")]) == 2
    assert error_line(capsys) == (f"export.onnx: --out {tmp_path / 'notes.txt'} is a file: give the bundle's "
                                  "directory (replaced if present)")
    assert (tmp_path / "notes.txt").read_text() == "keep me"


# training.train

def recipe(tmp_path, change) -> Path:
    values = yaml.safe_load(DEFAULT_RECIPE.read_text())
    values.update(output_dir=str(tmp_path / "run"), export_dir=None)
    change(values)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.parametrize("change, message", [
    (lambda r: r["stages"][0].update(lr="fast"), "stages[0].lr must be a positive number, got 'fast'"),
    (lambda r: r["stages"][0].update(lr=-1.0), "stages[0].lr must be a positive number, got -1.0"),
    (lambda r: r["stages"][1].update(lr="1e-4"), "stages[1].lr must be a positive number, got '1e-4' (YAML reads it "
                                                 "as a string: write the number unquoted, with a decimal point"),
    (lambda r: r["stages"][0].update(batch_size=2.5), "stages[0].batch_size must be a positive integer, got 2.5"),
    (lambda r: r["stages"][0].update(steps=0), "stages[0].steps must be a positive integer, got 0"),
    (lambda r: r["stages"][0].update(warmup_steps=-5), "stages[0].warmup_steps must be a non-negative integer, got -5"),
    (lambda r: r["stages"][0].update(weight_decay=-0.1), "stages[0].weight_decay must be a non-negative number"),
    (lambda r: r["stages"][0].update(min_lr="low"), "stages[0].min_lr must be a non-negative number, got 'low'"),
    (lambda r: r["stages"][0].update(min_lr=0.5), "stages[0].min_lr 0.5 is above lr 0.001"),
    (lambda r: r["stages"][0].update(betas=[0.9, 1.5]), "stages[0].betas must be two numbers in [0, 1)"),
    (lambda r: r["stages"][0].update(betas=0.9), "stages[0].betas must be two numbers in [0, 1)"),
    (lambda r: r["stages"][0].update(clip_grad_norm=0), "stages[0].clip_grad_norm must be a positive number or null"),
    (lambda r: r["stages"][0].update(grad_accum=True), "stages[0].grad_accum must be a positive integer, got True"),
    (lambda r: r["stages"][1].update(train_vision="yes"), "stages[1].train_vision must be a boolean (true or false)"),
    (lambda r: r["stages"][1]["tasks"][0].update(weight=0), "stages[1].tasks[0].weight must be a positive integer"),
    (lambda r: r["stages"][1]["tasks"][0].update(length="many"), "stages[1].tasks[0].length must be a positive int"),
    (lambda r: r.update(seed=-1), "seed must be a non-negative integer, got -1"),
    (lambda r: r.update(threads=0), "threads must be a positive integer or null, got 0"),
    (lambda r: r.update(output_dir=7), "output_dir must be a path (a string), got 7"),
    (lambda r: r["model"]["overrides"].update(lora_r="eight"), "model.overrides.lora_r must be an integer"),
])
def test_a_bad_training_config_is_refused_before_any_model_is_built(tmp_path, capsys, monkeypatch, change, message):
    monkeypatch.setattr(train, "run_training", lambda *args, **kwargs: pytest.fail("training started"))
    assert train.main(["--config", str(recipe(tmp_path, change))]) == 2
    assert error_line(capsys).startswith(f"training.train: error: {message}")


def test_the_default_recipe_passes_the_checks(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(train, "run_training", lambda config, **kwargs: started.append(config))
    assert train.main(["--config", str(recipe(tmp_path, lambda r: None))]) == 0
    assert started[0].stages[0].lr == 1.0e-3 and started[0].stages[-1].betas == (0.9, 0.999)


@pytest.mark.parametrize("argv, message", [
    (["--config", "{tmp}"], "training config {tmp} is a directory: pass the YAML file"),
    (["--config", "{tmp}/recipe.yaml", "--stop-after", "0"], "--stop-after is 0: give a number of steps >= 1"),
    ([], "the following arguments are required: --config (see --help)"),
])
def test_bad_training_arguments_are_one_line(tmp_path, capsys, argv, message):
    assert train.main([a.format(tmp=tmp_path) for a in argv]) == 2
    assert error_line(capsys).startswith(f"training.train: error: {message.format(tmp=tmp_path)}")


# training.evaluate

def test_evaluate_names_a_checkpoint_config_that_is_not_json(tiny_checkpoint, tmp_path, capsys):
    checkpoint = shutil.copytree(tiny_checkpoint, tmp_path / "checkpoint")
    (checkpoint / "config.json").write_text("garbage")
    assert evaluate.main(["--ckpt", str(checkpoint), "--data", "synthetic:image", "--num", "1"]) == 2
    line = error_line(capsys)
    assert line.startswith(f"training.evaluate: error: {checkpoint / 'config.json'} is not valid JSON (")
    assert line.endswith("re-run training or copy the checkpoint again")


@pytest.mark.parametrize("argv, message", [
    (["--ckpt", "{tmp}/nowhere"], "{tmp}/nowhere is not a RegionBLIP checkpoint (no config.json)"),
    (["--ckpt", "{ckpt}", "--out", "{tmp}"], "--out {tmp} is a directory: give the results file to write"),
    (["--ckpt", "{ckpt}", "--threads", "0"], "--threads is 0: give at least 1"),
    (["--ckpt", "{ckpt}", "--max-new-tokens", "0"], "--min-new-tokens 1 and --max-new-tokens 0: give 0 <= min <= max"),
    (["--ckpt", "{ckpt}", "--image-size", "0"], "--image-size is 0"),
    (["--ckpt", "{ckpt}", "--num", "many"], "argument --num: invalid int value: 'many' (see --help)"),
])
def test_evaluate_refuses_bad_arguments_before_evaluating(tiny_checkpoint, tmp_path, capsys, monkeypatch, argv,
                                                          message):
    monkeypatch.setattr(evaluate, "generate_captions", lambda *args, **kwargs: pytest.fail("evaluation started"))
    argv = ["--data", "synthetic:image", "--num", "1"] + [a.format(tmp=tmp_path, ckpt=tiny_checkpoint) for a in argv]
    assert evaluate.main(argv) == 2
    assert error_line(capsys).startswith(f"training.evaluate: error: {message.format(tmp=tmp_path)}")



# tools.replay

@pytest.fixture
def replay_main(monkeypatch):
    """tools.replay.main, where building the region_describer fails the test: every error below comes first."""
    pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")
    from tools import replay

    monkeypatch.setattr(replay, "RegionDescriber", lambda **kwargs: pytest.fail("the node was built"))
    return replay.main


def camera_messages() -> list:
    """One camera frame and its region array, as (topic, log time, message)."""
    from regionblip_msgs.msg import Region2D, Region2DArray
    from std_msgs.msg import Header

    from regionblip_ros.conversions import numpy_to_image

    header = Header(frame_id="camera_optical")
    header.stamp.sec = 1_700_000_000
    return [("/image", 1, numpy_to_image(np.zeros((32, 32, 3), np.uint8), "rgb8", header=header)),
            ("/regions_2d", 2, Region2DArray(header=header, regions=[Region2D(id="r0", width=8.0, height=8.0)]))]


@pytest.fixture
def camera_bag(tmp_path) -> Path:
    """A rosbag2 MCAP with one camera frame and its region array."""
    pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")
    from tests.bags import write_bag

    return write_bag(tmp_path / "camera.mcap", camera_messages())


@pytest.mark.parametrize("argv, message", [
    (["{tmp}/none.mcap", "--out", "{tmp}/out.mcap"], "bag {tmp}/none.mcap does not exist: give a rosbag2 .mcap file"),
    (["{tmp}", "--out", "{tmp}/out.mcap"], "bag {tmp} is a directory: give the .mcap file inside it"),
    (["{tmp}/notes.txt", "--out", "{tmp}/out.mcap"], "bag {tmp}/notes.txt cannot be read as MCAP (InvalidMagic"),
    (["{bag}"], "the following arguments are required: --out (see --help)"),
    (["{bag}", "--out", "{bag}"], "--out {bag} is the bag itself: give another file, the bag is only read"),
    (["{bag}", "--out", "{tmp}"], "--out {tmp} is a directory: give a file to write"),
    (["{bag}", "--out", "{tmp}/no/out.mcap"], "--out {tmp}/no/out.mcap: directory {tmp}/no does not exist"),
    (["{bag}", "--out", "{tmp}/o.mcap", "--rate", "fast"], "--rate 'fast': give max, recorded or a positive speed"),
    (["{bag}", "--out", "{tmp}/o.mcap", "--rate", "0"], "--rate '0': give max, recorded or a positive speed factor"),
    (["{bag}", "--out", "{tmp}/o.mcap", "--rate", "inf"], "--rate 'inf': give max, recorded or a positive speed"),
    (["{bag}", "--out", "{tmp}/o.mcap", "--remap", "/image=/camera"],
     "--remap '/image=/camera' is not FROM:=TO with two absolute topics: write e.g. --remap /camera/image_raw:=/image"),
    (["{bag}", "--out", "{tmp}/o.mcap", "--remap", "image:=/camera"], "--remap 'image:=/camera' is not FROM:=TO"),
    (["{bag}", "--out", "{tmp}/o.mcap", "--remap", "/camera:=/image"],
     "--remap names /camera, which bag {bag} does not hold: its topics are /image, /regions_2d"),
    (["{bag}", "--out", "{tmp}/o.mcap", "--params", "{tmp}/none.yaml"],
     "cannot read parameters file '{tmp}/none.yaml'"),
])
def test_replay_refuses_bad_arguments_and_bags_before_starting_the_node(replay_main, camera_bag, tmp_path, capsys,
                                                                         argv, message):
    (tmp_path / "notes.txt").write_text("not a bag")
    fill = {"tmp": tmp_path, "bag": camera_bag}
    assert replay_main([a.format(**fill) for a in argv]) == 2
    line = error_line(capsys)
    assert line.startswith("python -m tools.replay: ") and message.format(**fill) in line
    assert not (tmp_path / "o.mcap").exists() and not (tmp_path / "out.mcap").exists()


@pytest.mark.parametrize("remap, message", [
    ("/regions_2d:=/image", "bag topic /regions_2d (regionblip_msgs/msg/Region2DArray) is played on /image, where the "
                            "node reads sensor_msgs/msg/Image: remap it elsewhere or leave it out"),
    ("/regions_2d:=/detections", "the bag has no region arrays on the topics the node reads (/image, /points, "
                                 "/regions_2d, /regions_3d): remap the bag's Region2DArray / Region3DArray topics onto "
                                 "them, e.g. --remap /detector/regions:=/regions_2d"),
])
def test_replay_refuses_a_bag_that_does_not_fit_the_nodes_topics(camera_bag, tmp_path, capsys, remap, message):
    pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")
    from tests.describer_double import DescriberDouble
    from tools import replay

    argv = [str(camera_bag), "--out", str(tmp_path / "o.mcap"), "--remap", remap]
    assert replay.main(argv, describer=DescriberDouble()) == 2
    assert error_line(capsys) == f"python -m tools.replay: {message}"
    assert not (tmp_path / "o.mcap").exists()


def test_replay_says_when_the_node_cannot_load_its_bundle(camera_bag, tmp_path, capsys):
    pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")
    from tools import replay

    assert replay.main([str(camera_bag), "--out", str(tmp_path / "o.mcap"), "--bundle", str(tmp_path / "none")]) == 1
    line = error_line(capsys)
    assert line.startswith("python -m tools.replay: the region_describer did not start: ") and "none" in line


def test_replay_names_a_ground_truth_message_it_cannot_read(tmp_path, capsys):
    pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")
    from std_msgs.msg import String

    from tests.bags import write_bag
    from tests.describer_double import DescriberDouble
    from tools import replay

    bag = write_bag(tmp_path / "bag.mcap", [*camera_messages(), ("/ground_truth", 3, String(data="not json"))])
    assert replay.main([str(bag), "--out", str(tmp_path / "o.mcap")], describer=DescriberDouble()) == 2
    assert error_line(capsys).startswith("python -m tools.replay: a /ground_truth message is not the JSON "
                                         "{stamp_ns, modality, truths} this topic carries (")
