"""training.evaluate: the CLI on a tiny checkpoint, scores equal to pycocoevalcap's, image bit-identity checks and
clear errors for bad input."""

import json
from pathlib import Path

import pytest
import torch
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from training import evaluate
from training.data.samples import ImageSample
from training.modeling_regionblip import RegionBLIP
from training.tokenizer import default_tokenizer
from training.trainer_config import model_config

from test_train import TINY_MODEL


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    RegionBLIP(model_config(TINY_MODEL)).save_pretrained(directory, tokenizer=default_tokenizer())
    return directory


def run_cli(capsys, *args):
    code = evaluate.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_writes_per_modality_scores_for_held_out_samples(checkpoint, tmp_path, capsys):
    out = tmp_path / "results.json"
    code, stdout, _ = run_cli(capsys, "--ckpt", checkpoint, "--data", "synthetic:image_region,pointcloud,image",
                              "--num", 3, "--seed", 7, "--beams", 1, "--max-new-tokens", 4, "--image-size", 48,
                              "--out", out, "--compare-image", checkpoint)
    assert code == 0
    results = json.loads(out.read_text())
    assert list(results["modalities"]) == ["image_region", "pointcloud", "image"]
    region = results["modalities"]["image_region"]
    assert {"exact_match", "size", "colour", "shape", "CIDEr", "Bleu_4", "ROUGE_L", "examples"} <= set(region)
    assert "object_count" in results["modalities"]["image"]
    assert all(0 <= r["exact_match"] <= 1 for r in results["modalities"].values())
    assert len(region["examples"]) == 3 and region["examples"][0]["reference"].startswith("a ")
    assert results["image_identity"] == {"other": str(checkpoint), "num": 3, "identical_logits": True,
                                         "identical_tokens": True}
    assert "image_region" in stdout and "identical captions True" in stdout


def test_variations_score_each_on_the_modalities_it_changes_over_the_same_scenes(checkpoint, tmp_path, capsys):
    out = tmp_path / "variations.json"
    code, stdout, _ = run_cli(capsys, "--ckpt", checkpoint, "--data", "synthetic:image_region,image,pointcloud",
                              "--variations", "clean,black,loose_tight_boxes,clutter", "--num", 3, "--seed", 7,
                              "--beams", 1, "--max-new-tokens", 4, "--image-size", 48, "--out", out)
    assert code == 0
    results = json.loads(out.read_text())
    assert "modalities" not in results
    assert {name: list(scores) for name, scores in results["variations"].items()} == {
        "clean": ["image_region", "image", "pointcloud"], "black": ["image_region", "image"],
        "loose_tight_boxes": ["image_region"], "clutter": ["pointcloud"]}
    black, clean = results["variations"]["black"]["image_region"], results["variations"]["clean"]["image_region"]
    assert 0 <= black["exact_match"] <= 1 and {"size", "colour", "shape", "CIDEr", "examples"} <= set(black)
    # the same held-out scenes: a background leaves the captions as they were
    assert [e["reference"] for e in black["examples"]] == [e["reference"] for e in clean["examples"]]
    table = stdout.splitlines()
    assert table[0].split() == ["variation", "image_region", "image", "pointcloud"]
    assert table[3].split()[:2] == ["loose_tight_boxes", f"{results['variations']['loose_tight_boxes']['image_region']['exact_match']:.3f}"]
    assert table[3].split()[2:] == ["-", "-"]


def test_held_out_samples_depend_on_the_seed_only_and_come_from_the_eval_split():
    assert evaluate.held_out_indices(5, seed=1) == evaluate.held_out_indices(5, seed=1)
    assert evaluate.held_out_indices(5, seed=1) != evaluate.held_out_indices(5, seed=2)
    sample = evaluate.eval_dataset("synthetic", "image_region", 48, model_config(TINY_MODEL))[
        evaluate.held_out_indices(1, seed=1)[0]]
    assert sample.attributes["split"] == "eval"


def test_scores_of_hand_made_predictions_are_pycocoevalcaps():
    image = torch.zeros(8, 8, 3, dtype=torch.uint8).numpy()
    samples = [ImageSample(image, "a small red circle", [0.1, 0.1, 0.5, 0.5],
                           {"shape": "circle", "size": "small", "colour": "red"}),
               ImageSample(image, "a large blue square", [0.2, 0.2, 0.9, 0.9],
                           {"shape": "square", "size": "large", "colour": "blue"})]
    predictions = ["a small red circle", "a large green square"]
    scores = evaluate.score("image_region", predictions, samples)
    gts = {0: ["a small red circle"], 1: ["a large blue square"]}
    res = {0: ["a small red circle"], 1: ["a large green square"]}
    assert scores["Bleu_4"] == pytest.approx(Bleu(4).compute_score(gts, res, verbose=0)[0][3])
    assert scores["ROUGE_L"] == pytest.approx(Rouge().compute_score(gts, res)[0])
    assert scores["CIDEr"] == pytest.approx(Cider().compute_score(gts, res)[0])
    assert (scores["exact_match"], scores["colour"], scores["shape"]) == (0.5, 0.5, 1.0)


def test_a_changed_image_path_is_reported_as_not_identical(checkpoint, tmp_path):
    model = RegionBLIP.from_pretrained(checkpoint)
    with torch.no_grad():
        model.language_projection["image"].bias.add_(1e-3)
    samples = [evaluate.eval_dataset("synthetic", "image", 48, model.config)[i] for i in range(2)]
    result = evaluate.compare_image_outputs(model, RegionBLIP.from_pretrained(checkpoint), default_tokenizer(),
                                            samples, batch_size=2, generation=dict(num_beams=1, max_new_tokens=3,
                                                                                   min_new_tokens=1))
    assert result["identical_logits"] is False


@pytest.mark.parametrize("args,message", [
    (["--data", "coco:image"], "unknown source 'coco'"),
    (["--data", "synthetic:video"], "unknown \\['video'\\]"),
    (["--data", "synthetic:"], "comma-separated subset"),
    (["--data", "synthetic:image", "--num", "0"], "--num must be in"),
    (["--data", "synthetic:image", "--variations", "snow"], "--variations 'snow'.*unknown: snow"),
    (["--data", "synthetic:image", "--variations", "white,white"], "distinct names"),
])
def test_bad_cli_input_is_one_line_on_stderr_and_a_non_zero_exit(checkpoint, capsys, args, message):
    code, _, err = run_cli(capsys, "--ckpt", checkpoint, *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("training.evaluate: error:")
    assert pytest.importorskip("re").search(message, err)


def test_a_directory_that_is_not_a_checkpoint_is_named(tmp_path, capsys):
    code, _, err = run_cli(capsys, "--ckpt", tmp_path, "--data", "synthetic:image")
    assert code == 2 and f"{tmp_path} is not a RegionBLIP checkpoint" in err


def test_a_checkpoint_with_broken_weights_is_reported_clearly(checkpoint, tmp_path, capsys):
    for name in ("config.json", "tokenizer.json"):
        (tmp_path / name).write_bytes((checkpoint / name).read_bytes())
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    code, _, err = run_cli(capsys, "--ckpt", tmp_path, "--data", "synthetic:image")
    assert code == 2 and err.count("\n") == 1


DEFAULT_MODEL = Path(__file__).parent.parent / "models" / "default"
STAGE1 = Path(__file__).parent.parent / "runs" / "default" / "blip2" / "final"


@pytest.mark.skipif(not (DEFAULT_MODEL / "config.json").is_file(),
                    reason="models/default is made by make train-default")
def test_the_embedded_default_model_is_small_and_describes_every_modality():
    assert sum(p.stat().st_size for p in DEFAULT_MODEL.iterdir()) <= 30 * 2**20
    results = evaluate.evaluate(DEFAULT_MODEL, "synthetic:image_region,pointcloud_region,pointcloud,image", num=2,
                                seed=3, num_beams=1)
    for modality, scores in results["modalities"].items():
        assert all(example["prediction"].startswith("a ") for example in scores["examples"]), modality


@pytest.mark.skipif(not (DEFAULT_MODEL / "config.json").is_file(),
                    reason="models/default is made by make train-default")
def test_the_default_model_is_scored_per_variation_and_its_known_gap_shows():
    results = evaluate.evaluate(DEFAULT_MODEL, "synthetic:image_region", num=40, seed=20, num_beams=1,
                                variations=["clean", "black"])
    clean, black = (results["variations"][name]["image_region"]["exact_match"] for name in ("clean", "black"))
    assert clean >= 0.9
    # issue #20: trained on light grounds only, the default model cannot name shapes on a black one (0.03 on 200
    # scenes, docs/robustness.md); a default that closes the gap changes this line and the README's table
    assert black < 0.5


@pytest.mark.skipif(not (STAGE1 / "config.json").is_file() or not (DEFAULT_MODEL / "config.json").is_file(),
                    reason="needs make train-default's stage-1 checkpoint (runs/ is not committed)")
def test_the_default_models_image_modality_is_bit_identical_to_its_stage_one():
    model, tokenizer = evaluate.load_checkpoint_dir(DEFAULT_MODEL)
    stage1, _ = evaluate.load_checkpoint_dir(STAGE1)
    samples = [evaluate.eval_dataset("synthetic", "image", 112, model.config)[i] for i in range(8)]
    result = evaluate.compare_image_outputs(model, stage1, tokenizer, samples, batch_size=8,
                                            generation=dict(num_beams=2, max_new_tokens=30, min_new_tokens=1))
    assert result == {"num": 8, "identical_logits": True, "identical_tokens": True}
