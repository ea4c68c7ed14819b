"""torchrun --nproc_per_node 2 on CPU (gloo): ranks read different samples, average gradients, and end every step
with bit-identical weights."""

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

# Each rank trains one stage for two steps, then saves its own weights and the samples it read.
RANK_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import torch
    from safetensors.torch import save_model
    from training.modeling_regionblip import RegionBLIP
    from training.tokenizer import default_tokenizer
    from training.trainer import StageTrainer
    from training.trainer_config import load_train_config
    from training.trainer_distributed import init_distributed

    config, out = load_train_config(sys.argv[1]), Path(sys.argv[2])
    dist = init_distributed()
    torch.set_num_threads(1)
    torch.manual_seed(dist.rank)  # different initial weights per rank: the broadcast must make them equal
    model = RegionBLIP(config.model)
    dist.broadcast_model(model)
    if dist.rank == 0:
        save_model(model, str(out / "initial.safetensors"))
    # the vision stage first: its patch head starts random on each rank (seeded per rank) and must be broadcast
    (out / "vision").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(100 + dist.rank)
    vision = StageTrainer(model, config.stages[0], tokenizer=default_tokenizer(), seed=0, stage_dir=out / "vision",
                          dist=dist)
    vision.run(resume=False)
    save_model(vision.heads, str(out / f"heads-rank{dist.rank}.safetensors"))
    save_model(model, str(out / f"vision-rank{dist.rank}.safetensors"))
    (out / "stage").mkdir(parents=True, exist_ok=True)
    regionblip = next(stage for stage in config.stages if stage.kind == "regionblip")
    trainer = StageTrainer(model, regionblip, tokenizer=default_tokenizer(), seed=0, stage_dir=out / "stage",
                           dist=dist)
    trainer.run(resume=False)
    save_model(model, str(out / f"rank{dist.rank}.safetensors"))
    (out / f"indices-rank{dist.rank}.json").write_text(json.dumps(trainer.streams[0].indices(0)))
    dist.shutdown()
""")


@pytest.mark.slow
def test_two_cpu_processes_hold_identical_weights_after_training_steps(tmp_path):
    recipe = tiny_recipe(tmp_path / "runs", steps=2, checkpoint_every=2, batch_size=2)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (tmp_path / "rank.py").write_text(RANK_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(TORCHRUN), "--nproc_per_node", "2", "--master_port", "29517",
                             str(tmp_path / "rank.py"), str(tmp_path / "recipe.yaml"), str(tmp_path)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("heads-rank{}", "vision-rank{}", "rank{}"):
        rank0, rank1 = (load_file(tmp_path / f"{name.format(r)}.safetensors") for r in (0, 1))
        assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), name
    assert (tmp_path / "indices-rank0.json").read_text() != (tmp_path / "indices-rank1.json").read_text()
    initial, vision = load_file(tmp_path / "initial.safetensors"), load_file(tmp_path / "vision-rank0.safetensors")
    assert not torch.equal(initial["vision_model.embeddings.patch_embedding.weight"],
                           vision["vision_model.embeddings.patch_embedding.weight"])
    assert not torch.equal(initial["query_tokens.image_region"], rank0["query_tokens.image_region"])  # it trained
    assert torch.equal(initial["query_tokens.image"], rank0["query_tokens.image"])  # frozen in this stage
    checkpoint = {p.name for p in (tmp_path / "stage" / "checkpoint-0000002").iterdir()}
    assert {"rng-rank0.safetensors", "rng-rank1.safetensors", "optimizer.safetensors"} <= checkpoint


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
