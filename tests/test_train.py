"""The training pipeline on the default recipe at tiny sizes: learning, exact resume, the frozen image path,
schedules, optimizer groups, and clear errors for bad configs and CLI input."""

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from training import train
from training.evaluate import compare_image_outputs, eval_dataset
from training.modeling_regionblip import RegionBLIP
from training.schedule import batches_drawn, learning_rate, task_cycle
from training.tokenizer import load_tokenizer
from training.trainer_config import TrainConfigError, parse_train_config
from training.trainer_state import make_optimizer, no_decay

DEFAULT_RECIPE = Path(__file__).parent.parent / "config" / "train_default.yaml"
STAGE_NAMES = ("vision", "blip2", "regionblip")
TINY_MODEL = {"preset": "tiny", "overrides": {
    "vision": {"initializer_range": 0.02}, "text": {"vocab_size": 364}, "newline_token_id": 202,
    "object_num_points": 128, "scene_num_points": 128, "lora_alpha": 8,
    "region_feature_mask": True, "point_region_crop": 32,  # the default recipe's PaFE options
    "qformer": {"initializer_range": 0.1, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
}}


def tiny_recipe(output_dir, steps=30, checkpoint_every=10, batch_size=8) -> dict:
    """config/train_default.yaml with the tiny model, small synthetic data and `steps` per stage."""
    recipe = yaml.safe_load(DEFAULT_RECIPE.read_text())
    recipe.update(model=copy.deepcopy(TINY_MODEL), output_dir=str(output_dir), export_dir=None)
    for stage in recipe["stages"]:
        stage.update(steps=steps, checkpoint_every=checkpoint_every, batch_size=batch_size,
                     warmup_steps=min(stage["warmup_steps"], steps // 6))
        for task in stage["tasks"]:
            if task["modality"].startswith("image"):
                task.update(image_size=48)
    return recipe


def run(recipe: dict, **kwargs):
    return train.run_training(parse_train_config(recipe), **kwargs)


def losses(stage_dir: Path) -> dict[str, list[float]]:
    by_task = {}
    for line in (stage_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        by_task.setdefault(record["task"], []).append(record["loss"])
    return by_task


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    final = run(tiny_recipe(out))
    return out, final


def test_thirty_steps_of_the_default_recipe_lower_every_task_loss(trained):
    out, _ = trained
    drops = {}
    for stage in STAGE_NAMES:
        for task, values in losses(out / stage).items():
            drops[task] = values[0] - sum(values[-3:]) / 3
    assert sorted(drops) == ["image", "image_patches", "image_region", "image_single", "pointcloud",
                             "pointcloud_region", "text"]
    assert all(drops[task] > 0.5 for task in ("image", "image_single", "text")), drops  # from ~ln(364) = 5.9
    assert drops["image_patches"] > 0.5, drops  # from ~ln 6 + ln 6 + ln 2 = 4.3 (the shape term weighted)
    # stage 2 trains 10 batches per task through the frozen LLM; the random Point-BERT only starts to move
    assert drops["image_region"] > 0.1 and drops["pointcloud_region"] > 0.1 and drops["pointcloud"] > 0, drops


def test_a_run_writes_checkpoints_metrics_curve_and_final_models(trained):
    out, final = trained
    assert final == out / "regionblip" / "final"
    for stage in STAGE_NAMES:
        names = {p.name for p in (out / stage).iterdir()}
        assert {"metrics.jsonl", "loss_curve.png", "final", "checkpoint-0000020", "checkpoint-0000030"} <= names
        assert "checkpoint-0000010" not in names  # keep_checkpoints: 2
        checkpoint = {p.name for p in (out / stage / "checkpoint-0000030").iterdir()}
        heads = {"heads.safetensors"} if stage == "vision" else set()  # the patch head, for resuming only
        assert checkpoint == {"config.json", "model.safetensors", "optimizer.safetensors", "rng-rank0.safetensors",
                              "trainer_state.json", "tokenizer.json", "tokenizer_config.json", *heads}
        RegionBLIP.from_pretrained(out / stage / "checkpoint-0000030")  # a checkpoint is a model on its own
        state = json.loads((out / stage / "checkpoint-0000030" / "trainer_state.json").read_text())
        assert state["step"] == 30 and state["world_size"] == 1
    # stage 2 interleaves its tasks by weight (image_region 4, pointcloud 1, pointcloud_region 6) one micro-batch at
    # a time, cycle [pcr, ir, pcr, ir, pcr, pc, pcr, ir, pcr, ir, pcr]: after 30 steps, 2 whole cycles and 8 more
    assert json.loads((out / "regionblip" / "checkpoint-0000030" / "trainer_state.json").read_text())[
        "task_batches"] == [11, 3, 16]
    assert not any(p.suffix in (".pt", ".pth", ".bin", ".pkl") for p in out.rglob("*"))


def test_stage_two_leaves_the_image_modality_bit_identical(trained):
    out, final = trained
    stage1, stage2 = RegionBLIP.from_pretrained(out / "blip2" / "final"), RegionBLIP.from_pretrained(final)
    dataset = eval_dataset("synthetic", "image", 48, stage1.config)
    result = compare_image_outputs(stage2, stage1, load_tokenizer(final), [dataset[i] for i in range(4)],
                                   batch_size=4, generation=dict(num_beams=2, max_new_tokens=8, min_new_tokens=1))
    assert result == {"num": 4, "identical_logits": True, "identical_tokens": True}
    weights1, weights2 = load_file(out / "blip2/final/model.safetensors"), load_file(final / "model.safetensors")
    changed = {k for k in weights1 if not torch.equal(weights1[k], weights2[k])}
    image_path = ("vision_model.", "language_projection.image.")
    assert changed and not any(k.startswith(image_path) or k == "query_tokens.image" for k in changed)


def test_resuming_an_interrupted_run_gives_bit_identical_weights_and_optimizer(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run(tiny_recipe(straight, steps=8, checkpoint_every=4, batch_size=4))
    assert run(tiny_recipe(interrupted, steps=8, checkpoint_every=4, batch_size=4), stop_after=6) is None
    assert (interrupted / "vision" / "checkpoint-0000004").is_dir() and not (interrupted / "blip2").exists()
    torch.manual_seed(12345)  # the resumed run must restore the RNG, not rely on the process state
    run(tiny_recipe(interrupted, steps=8, checkpoint_every=4, batch_size=4), resume=True)
    for stage in STAGE_NAMES:
        names = ("model.safetensors", "optimizer.safetensors") + (("heads.safetensors",) if stage == "vision" else ())
        for name in names:
            a = load_file(straight / stage / "checkpoint-0000008" / name)
            b = load_file(interrupted / stage / "checkpoint-0000008" / name)
            assert a.keys() == b.keys()
            assert all(torch.equal(a[k], b[k]) for k in a), (stage, name)
    metrics = (interrupted / "vision" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in metrics] == list(range(8))  # no duplicated steps 4, 5


def test_an_earlier_run_is_neither_overwritten_nor_mixed_in_silently(tmp_path):
    recipe = tiny_recipe(tmp_path, steps=2, checkpoint_every=2, batch_size=2)
    run(recipe)
    with pytest.raises(TrainConfigError, match="--resume to continue it or --overwrite"):
        run(recipe)
    assert run(recipe, overwrite=True) == tmp_path / "regionblip" / "final"


def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_min_lr():
    kw = dict(lr=1e-3, min_lr=1e-5, warmup_lr=1e-6, warmup_steps=10, total_steps=111)
    assert learning_rate(0, **kw) == 1e-6
    assert learning_rate(5, **kw) == pytest.approx(1e-6 + 0.5 * (1e-3 - 1e-6))
    assert learning_rate(10, **kw) == pytest.approx(1e-3)
    assert learning_rate(60, **kw) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))
    assert learning_rate(110, **kw) == pytest.approx(1e-5)


def test_task_cycle_spreads_weighted_tasks_and_counts_batches_drawn():
    assert task_cycle([1, 1, 1]) == [0, 1, 2]
    assert task_cycle([2, 1]) == [0, 1, 0]
    cycle = task_cycle([2, 1, 1])
    assert sorted(cycle) == [0, 0, 1, 2] and cycle[0] != cycle[1]
    assert [batches_drawn(cycle, 10, t) for t in range(3)] == [sum(cycle[k % 4] == t for k in range(10))
                                                               for t in range(3)]


def test_weight_decay_skips_biases_norms_and_one_dimensional_parameters():
    model = RegionBLIP(parse_train_config(tiny_recipe("unused")).model)
    named = dict(model.named_parameters())
    assert no_decay("qformer.layernorm.weight", named["qformer.layernorm.weight"])
    assert no_decay("language_projection.image.bias", named["language_projection.image.bias"])
    assert not no_decay("language_projection.image.weight", named["language_projection.image.weight"])
    stage = parse_train_config(tiny_recipe("unused")).stages[1]
    decay, plain = make_optimizer(named, stage).param_groups
    assert (decay["weight_decay"], plain["weight_decay"]) == (0.05, 0.0) and decay["betas"] == (0.9, 0.999)
    assert len(decay["params"]) + len(plain["params"]) == len(named)
    assert all(p.ndim >= 2 for p in decay["params"])


@pytest.mark.parametrize("change,message", [
    (lambda r: r["stages"][0].update(kind="everything"), "kind is 'everything'"),
    (lambda r: r["stages"][0].update(stpes=3), r"unknown keys \['stpes'\]"),
    (lambda r: r["stages"][0]["tasks"][0].update(modality="video"), "modality is 'video'"),
    (lambda r: r["stages"][0]["tasks"][0].update(data="coco"), "data is 'coco'"),
    (lambda r: r["stages"][2].update(train_vision=True), "frozen image path"),
    (lambda r: r["stages"][2]["tasks"].append({"modality": "image"}), "image path and the LLM are frozen"),
    (lambda r: r["stages"][0].update(train_vision=True), "a vision stage trains the ViT alone"),
    (lambda r: r["stages"][0]["tasks"].append({"modality": "image"}), "'image_patches' is the task of a vision"),
    (lambda r: r["stages"][1]["tasks"].append({"modality": "image_patches", "name": "p"}),
     "got 'image_patches' in a blip2 stage"),
    (lambda r: r["stages"][0].update(steps=0), "steps must be a positive integer"),
    (lambda r: r["stages"][0].update(amp="fp8"), "amp is 'fp8'"),
    (lambda r: r["stages"][2].update(init_from_image=["image"]), "init_from_image must list modalities"),
    (lambda r: r["stages"][1].update(init_from_image=["pointcloud"]), "belong to a regionblip stage"),
    (lambda r: r["stages"][1]["tasks"].append({"modality": "image"}), "task names .* repeat"),
    (lambda r: r["model"]["overrides"].update(colour_depth=3), "colour_depth is not a RegionBLIPConfig field"),
])
def test_bad_training_configs_name_the_field(change, message):
    recipe = tiny_recipe("unused")
    change(recipe)
    with pytest.raises(TrainConfigError, match=message):
        parse_train_config(recipe)


def test_a_model_that_does_not_fit_the_tokenizer_is_rejected_before_training(tmp_path):
    recipe = tiny_recipe(tmp_path)
    recipe["model"]["overrides"]["newline_token_id"] = 10
    with pytest.raises(TrainConfigError, match="newline_token_id 10 != the tokenizer's 202"):
        run(recipe)


def test_cli_reports_bad_input_on_one_line_and_exits_non_zero(tmp_path, capsys):
    assert train.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err
    (tmp_path / "bad.yaml").write_text("stages: [\n")
    assert train.main(["--config", str(tmp_path / "bad.yaml")]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_a_run_can_start_from_a_saved_checkpoint_and_keeps_its_frozen_blip2_path(tmp_path):
    from tests.tiny_checkpoint import write_tiny_checkpoint

    start = write_tiny_checkpoint(tmp_path / "start")
    recipe = tiny_recipe(tmp_path / "run", steps=2, checkpoint_every=2)
    recipe.pop("model")
    recipe.update(init_checkpoint=str(start), stages=[s for s in recipe["stages"] if s["kind"] == "regionblip"])
    final = run(recipe)
    before, after = load_file(start / "model.safetensors"), load_file(final / "model.safetensors")
    assert all(torch.equal(before[name], after[name]) for name in before if name.startswith("vision_model."))
    assert any(not torch.equal(before[name], after[name]) for name in before if "image_region" in name)


def test_init_checkpoint_and_model_together_are_rejected(tmp_path):
    with pytest.raises(TrainConfigError, match="either model .* or init_checkpoint"):
        parse_train_config({**tiny_recipe(tmp_path), "init_checkpoint": str(tmp_path)})


def test_the_text_task_holds_each_caption_twice_so_the_llm_learns_to_read_its_context():
    from training.tasks import SyntheticCaptions
    from training.data import SyntheticImageDataset, SyntheticPointDataset

    captions = SyntheticCaptions("train", 40, max_objects=5)
    sources = [SyntheticImageDataset("image", "train", 40), SyntheticImageDataset("image_region", "train", 40),
               SyntheticPointDataset("pointcloud", "train", 40), SyntheticPointDataset("pointcloud_region", "train", 40)]
    for i in range(8):
        first, second = captions[i].split("\n")
        assert first == second == sources[i % 4].caption(i // 4)



def test_the_vision_stage_trains_the_vit_alone_and_its_head_stays_out_of_the_model(trained):
    out, _ = trained
    config = parse_train_config(tiny_recipe(out))
    torch.manual_seed(config.seed)  # how train.py starts the first stage
    start = RegionBLIP(config.model).state_dict()
    after = load_file(out / "vision" / "final" / "model.safetensors")
    changed = {k for k in after if not torch.equal(start[k], after[k])}
    assert changed and all(k.startswith("vision_model.") for k in changed), sorted(changed)[:5]
    assert not any(k.startswith("heads.") for k in after)
    # stage 1 then keeps that ViT frozen, as BLIP-2 keeps its pretrained one
    stage1 = load_file(out / "blip2" / "final" / "model.safetensors")
    assert all(torch.equal(after[k], stage1[k]) for k in after if k.startswith("vision_model."))
