"""The trainer reads the real formats: a regionblip stage on RefCOCO, Cap3D and ScanRefer files written here in
those formats, config errors that name the task and file, and point augmentation drawn per epoch yet recomputable."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.test_data_cap3d import _cloud
from tests.test_data_region_readers import _refcoco
from tests.test_data_scanrefer import ENTRY, _scene
from tests.test_train import run, tiny_recipe
from tests.tiny_checkpoint import tiny_config, write_tiny_checkpoint
from training.tasks import TaskStream
from training.trainer_config import TaskConfig, TrainConfigError, parse_train_config


def real_files(root):
    (root / "refcoco").mkdir(parents=True)
    instances, refs, images = _refcoco(root / "refcoco")
    (root / "cap3d.txt").write_text('abc,"A wooden chair."\ndef,a red lamp\n')
    for seed, uid in enumerate(("abc", "def")):
        _cloud(root / "clouds" / uid / f"{uid}_8192.npz", seed=seed)
    (root / "scannet").mkdir()
    _scene(root / "scannet", "scene0000_00")
    (root / "scanrefer.json").write_text(json.dumps([ENTRY, {**ENTRY, "description": "the chair by the table"}]))
    return [
        {"name": "refcoco", "modality": "image_region", "data": "refcoco",
         "paths": {"instances_json": str(instances), "refs_json": str(refs), "image_dir": str(images)}},
        {"name": "cap3d", "modality": "pointcloud", "data": "cap3d",
         "paths": {"captions_file": str(root / "cap3d.txt"), "points_dir": str(root / "clouds")}},
        {"name": "scanrefer", "modality": "pointcloud_region", "data": "scanrefer",
         "paths": {"scanrefer_json": str(root / "scanrefer.json"), "scannet_dir": str(root / "scannet")}},
    ]


def real_recipe(tmp_path, tasks):
    recipe = tiny_recipe(tmp_path / "run", steps=3, checkpoint_every=3, batch_size=2)
    recipe.pop("model")
    stage = next(s for s in recipe["stages"] if s["kind"] == "regionblip")
    recipe.update(init_checkpoint=str(write_tiny_checkpoint(tmp_path / "start")), stages=[{**stage, "tasks": tasks}])
    return recipe


def test_a_regionblip_stage_trains_on_refcoco_cap3d_and_scanrefer_files(tmp_path):
    final = run(real_recipe(tmp_path, real_files(tmp_path / "data")))
    records = [json.loads(line) for line in (tmp_path / "run" / "regionblip" / "metrics.jsonl").read_text().splitlines()]
    assert [r["task"] for r in records] == ["refcoco", "cap3d", "scanrefer"]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in records)
    before, after = load_file(tmp_path / "start" / "model.safetensors"), load_file(final / "model.safetensors")
    for modality in ("image_region", "pointcloud", "pointcloud_region"):
        assert not torch.equal(before[f"query_tokens.{modality}"], after[f"query_tokens.{modality}"]), modality


@pytest.mark.parametrize("change,message", [
    (lambda t: t[0].update(modality="pointcloud"), "refcoco holds image_region samples, not 'pointcloud'"),
    (lambda t: t[1]["paths"].pop("points_dir"), r"cap3d needs exactly \['captions_file', 'points_dir'\]"),
    (lambda t: t[2]["paths"].update(scannet_dir="/nowhere/scannet"), "paths.scannet_dir: /nowhere/scannet does not"),
    (lambda t: t.append({"name": "s", "modality": "image_region", "paths": {"path": "x"}}), "only a real data source"),
])
def test_a_bad_real_source_is_named_before_training(tmp_path, change, message):
    tasks = real_files(tmp_path / "data")
    change(tasks)
    with pytest.raises(TrainConfigError, match=message):
        parse_train_config(real_recipe(tmp_path, tasks))


def test_point_augmentation_is_drawn_per_epoch_and_a_batch_recomputes_exactly(tmp_path):
    cap3d = real_files(tmp_path)[1]
    task = TaskConfig(**{**cap3d, "paths": {k: tmp_path / v for k, v in cap3d["paths"].items()}})
    stream = TaskStream(task, 0, seed=0, batch_size=2, model_config=tiny_config())
    epoch0, epoch1 = stream.samples(0), stream.samples(1)  # two clouds: batch n is epoch n
    by_uid = {s.attributes["uid"]: s.points for s in epoch0}
    assert all(not np.allclose(by_uid[s.attributes["uid"]], s.points) for s in epoch1)
    again = stream.samples(0)
    assert all(np.array_equal(a.points, b.points) for a, b in zip(epoch0, again))


def test_the_real_data_recipe_is_valid_up_to_its_files(tmp_path):
    recipe = yaml.safe_load((Path(__file__).parent.parent / "config" / "train_real.yaml").read_text())
    recipe["init_checkpoint"] = str(write_tiny_checkpoint(tmp_path / "start"))
    with pytest.raises(TrainConfigError, match=r"tasks\[0\].paths.instances_json: data/refcoco/instances.json does"):
        parse_train_config(recipe)
    for task in recipe["stages"][0]["tasks"]:  # with every file in place it parses
        for key, path in task["paths"].items():
            target = tmp_path / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
            task["paths"][key] = str(target)
    stage = parse_train_config(recipe).stages[0]
    assert [(t.data, t.modality, t.weight) for t in stage.tasks] == [
        ("refcoco", "image_region", 1), ("cap3d", "pointcloud", 1), ("scanrefer", "pointcloud_region", 2)]
