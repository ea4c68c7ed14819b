"""torchrun --nproc_per_node 2 on CPU (gloo): ranks read different samples, DistributedDataParallel averages their
gradients (accumulated ones too), every step ends with bit-identical weights, and a resumed run matches a straight
one."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from test_train import tiny_recipe

ROOT = Path(__file__).parent.parent
TORCHRUN = Path(sys.executable).parent / "torchrun"

# Each rank trains a vision stage and a regionblip stage for two steps, then the regionblip stage again with three
# micro-batches per step; after each it saves its own weights, and what its DDP wrapper reported.
RANK_SCRIPT = textwrap.dedent("""
    import dataclasses, json, sys
    from pathlib import Path
    import torch
    from safetensors.torch import save_model
    from training.modeling_regionblip import RegionBLIP
    from training.tokenizer import default_tokenizer
    from training.trainer import StageTrainer
    from training.trainer_config import load_train_config
    from training.trainer_distributed import init_distributed

    def ddp_report(trainer):
        # the wrapper, and per parameter its reducer averages, on how many ranks the last step used it (DDP
        # all-reduces that map along with the gradients)
        ddp = trainer.task
        names = [name for name, parameter in ddp.module.named_parameters() if parameter.requires_grad]
        used = ddp.reducer._get_local_used_map().tolist()
        assert len(used) == len(names)
        return {"wrapper": type(ddp).__name__, "module": type(ddp.module).__name__,
                "find_unused_parameters": ddp.find_unused_parameters, "used": dict(zip(names, used))}

    def train(stage, name):
        (out / name).mkdir(parents=True, exist_ok=True)
        trainer = StageTrainer(model, stage, tokenizer=default_tokenizer(), seed=0, stage_dir=out / name, dist=dist)
        trainer.run(resume=False)
        save_model(model, str(out / f"{name}-rank{dist.rank}.safetensors"))
        (out / f"{name}-ddp-rank{dist.rank}.json").write_text(json.dumps(ddp_report(trainer)))
        return trainer

    config, out = load_train_config(sys.argv[1]), Path(sys.argv[2])
    dist = init_distributed()
    torch.set_num_threads(1)
    torch.manual_seed(dist.rank)  # different initial weights per rank: DDP's broadcast must make them equal
    model = RegionBLIP(config.model)
    if dist.rank == 0:
        save_model(model, str(out / "initial.safetensors"))
    # the vision stage first: its patch head starts random on each rank (seeded per rank) and must be broadcast
    torch.manual_seed(100 + dist.rank)
    vision = train(config.stages[0], "vision")
    save_model(vision.heads, str(out / f"heads-rank{dist.rank}.safetensors"))
    regionblip = next(stage for stage in config.stages if stage.kind == "regionblip")
    trainer = train(regionblip, "stage")
    (out / f"indices-rank{dist.rank}.json").write_text(json.dumps(trainer.streams[0].indices(0)))
    # task cycle [pointcloud_region, image_region, pointcloud_region, image_region, pointcloud_region, pointcloud,
    # ...]: image_region is never the last micro-batch of a step
    train(dataclasses.replace(regionblip, grad_accum=3), "accumulated")
    dist.shutdown()
""")

# Two ranks run a blip2 stage (its text task bypasses RegionBLIP.forward) with two micro-batches per step: straight
# through, and stopped after its first checkpoint, then resumed.
RESUME_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from training.train import run_training
    from training.trainer_config import load_train_config
    from training.trainer_distributed import init_distributed

    dist = init_distributed()
    run_training(load_train_config(sys.argv[1]), dist=dist)
    interrupted = load_train_config(sys.argv[2])
    assert run_training(interrupted, stop_after=2, dist=dist) is None
    torch.manual_seed(12345)  # the resumed run must restore the RNG, not rely on the process state
    run_training(interrupted, resume=True, dist=dist)
    dist.shutdown()
""")


def torchrun(port: int, *args: str):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(TORCHRUN), "--nproc_per_node", "2", "--master_port", str(port), *args],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def ranks_equal(directory: Path, name: str) -> bool:
    rank0, rank1 = (load_file(directory / f"{name}-rank{r}.safetensors") for r in (0, 1))
    return rank0.keys() == rank1.keys() and all(torch.equal(rank0[k], rank1[k]) for k in rank0)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two_ranks")
    recipe = tiny_recipe(out / "runs", steps=2, checkpoint_every=2, batch_size=2)
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (out / "rank.py").write_text(RANK_SCRIPT)
    torchrun(29517, str(out / "rank.py"), str(out / "recipe.yaml"), str(out))
    return out


@pytest.mark.slow
def test_two_cpu_processes_hold_identical_weights_after_training_steps(two_ranks):
    for name in ("heads", "vision", "stage"):
        assert ranks_equal(two_ranks, name), name
    assert (two_ranks / "indices-rank0.json").read_text() != (two_ranks / "indices-rank1.json").read_text()
    initial, vision = load_file(two_ranks / "initial.safetensors"), load_file(two_ranks / "vision-rank0.safetensors")
    stage = load_file(two_ranks / "stage-rank0.safetensors")
    assert not torch.equal(initial["vision_model.embeddings.patch_embedding.weight"],
                           vision["vision_model.embeddings.patch_embedding.weight"])
    assert not torch.equal(initial["query_tokens.image_region"], stage["query_tokens.image_region"])  # it trained
    assert torch.equal(initial["query_tokens.image"], stage["query_tokens.image"])  # frozen in this stage
    checkpoint = two_ranks / "stage" / "checkpoint-0000002"
    assert {"rng-rank0.safetensors", "rng-rank1.safetensors", "optimizer.safetensors"} <= {
        p.name for p in checkpoint.iterdir()}
    assert load_file(checkpoint / "model.safetensors").keys() == initial.keys()  # the unwrapped model's names


@pytest.mark.slow
def test_distributed_data_parallel_averages_the_gradients_of_the_tasks_each_step_used(two_ranks):
    for rank in (0, 1):
        report = json.loads((two_ranks / f"stage-ddp-rank{rank}.json").read_text())
        assert (report["wrapper"], report["module"], report["find_unused_parameters"]) == (
            "DistributedDataParallel", "TaskLoss", True)
        # the last step trained image_region: both ranks' backward reached its parameters, and not the point tasks'
        used = report["used"]
        assert used["model.query_tokens.image_region"] == used["model.box_regression.image_region.weight"] == 2
        assert used["model.query_tokens.pointcloud_region"] == used["model.qformer_pc.layernorm.weight"] == 0


@pytest.mark.slow
def test_accumulated_micro_batches_are_averaged_once_with_every_task_of_the_step(two_ranks):
    assert ranks_equal(two_ranks, "accumulated")
    # the last step ran image_region, pointcloud_region, pointcloud; only the last of them outside no_sync, and the
    # one synchronised backward averaged what all three reached
    used = json.loads((two_ranks / "accumulated-ddp-rank0.json").read_text())["used"]
    assert {used[f"model.query_tokens.{task}"] for task in ("image_region", "pointcloud_region", "pointcloud")} == {2}
    before, after = (load_file(two_ranks / f"{name}-rank0.safetensors") for name in ("stage", "accumulated"))
    # image_region never ran last in a step: its gradient was averaged all the same
    assert not torch.equal(before["query_tokens.image_region"], after["query_tokens.image_region"])


@pytest.mark.slow
def test_a_resumed_two_process_run_ends_bit_identical_to_a_straight_one(tmp_path):
    paths = {}
    for name in ("straight", "interrupted"):
        recipe = tiny_recipe(tmp_path / name, steps=4, checkpoint_every=2, batch_size=2)
        recipe["stages"] = [dict(stage, grad_accum=2) for stage in recipe["stages"] if stage["kind"] == "blip2"]
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(recipe))
    (tmp_path / "resume.py").write_text(RESUME_SCRIPT)
    torchrun(29519, str(tmp_path / "resume.py"), str(paths["straight"]), str(paths["interrupted"]))
    for name in ("model.safetensors", "optimizer.safetensors"):
        a, b = (load_file(tmp_path / run / "blip2" / "checkpoint-0000004" / name)
                for run in ("straight", "interrupted"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.slow
def test_the_training_cli_runs_under_torchrun(tmp_path):
    recipe = tiny_recipe(tmp_path / "runs", steps=2, checkpoint_every=2, batch_size=2)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(TORCHRUN), "--nproc_per_node", "2", "--master_port", "29518", "-m", "training.train",
                             "--config", str(tmp_path / "recipe.yaml")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    final = tmp_path / "runs" / "regionblip" / "final"
    assert {"config.json", "model.safetensors", "tokenizer.json", "training.json"} <= {p.name for p in final.iterdir()}
    assert '"world_size": 2' in (final / "training.json").read_text()
