"""The optimizer and the resumable state of a stage, written without pickle.

A training checkpoint is a directory `checkpoint-<step>/`:
    config.json, model.safetensors     the model with its tokenizer (RegionBLIP.save_pretrained): evaluable on its own
    tokenizer.json, tokenizer_config.json
    optimizer.safetensors              AdamW moments per parameter *name*: "<name>::exp_avg", "::exp_avg_sq", "::step"
    heads.safetensors                  training-only heads (a vision stage's patch head), when the stage has any
    rng-rank<r>.safetensors            torch CPU (+ CUDA) generator states of every process
    trainer_state.json                 step, batches drawn per task, stage name, world size
Written to a temporary directory and renamed, so a crash never leaves half a checkpoint behind.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import checkpoint
from .trainer_config import StageConfig

STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"
HEADS_NAME = "heads.safetensors"
HEADS_PREFIX = "heads."  # training heads' parameter names, beside the model's
MOMENTS = ("exp_avg", "exp_avg_sq", "step")


def no_decay(name: str, parameter: nn.Parameter) -> bool:
    """As LAVIS: no weight decay on biases, 1-D parameters and norm layers."""
    lowered = name.lower()
    return parameter.ndim < 2 or name.endswith(".bias") or "norm" in lowered or ".ln" in lowered or ".bn" in lowered


def make_optimizer(named: dict[str, nn.Parameter], stage: StageConfig) -> torch.optim.AdamW:
    decay = [p for n, p in named.items() if not no_decay(n, p)]
    plain = [p for n, p in named.items() if no_decay(n, p)]
    groups = [{"params": decay, "weight_decay": stage.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=stage.warmup_lr, betas=stage.betas)


def optimizer_tensors(optimizer: torch.optim.Optimizer, names: dict[nn.Parameter, str]) -> dict[str, torch.Tensor]:
    flat = {}
    for parameter, state in optimizer.state.items():
        for key in MOMENTS:
            flat[f"{names[parameter]}::{key}"] = state[key].detach().cpu().contiguous()
    return flat


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, flat: dict[str, torch.Tensor],
                           names: dict[nn.Parameter, str]) -> None:
    by_name = {}
    for key, tensor in flat.items():
        name, moment = key.rsplit("::", 1)
        by_name.setdefault(name, {})[moment] = tensor
    unknown = sorted(set(by_name) - set(names.values()))
    if unknown:
        raise ValueError(f"the checkpoint's optimizer holds state for parameters this stage does not train, e.g. "
                         f"{unknown[:3]}: resume with the config that wrote it")
    state_dict = optimizer.state_dict()
    index = {p: i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
    state_dict["state"] = {index[p]: dict(by_name[names[p]]) for p in index if names[p] in by_name}
    optimizer.load_state_dict(state_dict)


def rng_state() -> dict[str, torch.Tensor]:
    state = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["torch_cuda"])


def checkpoint_dir(stage_dir: Path, step: int) -> Path:
    return stage_dir / f"checkpoint-{step:07d}"


def latest_checkpoint(stage_dir: Path) -> Path | None:
    found = sorted(p for p in stage_dir.glob("checkpoint-*") if (p / STATE_NAME).is_file())
    return found[-1] if found else None


def parameter_names(model: nn.Module, heads: nn.Module | None) -> dict[nn.Parameter, str]:
    """What the optimizer state is keyed by: the model's parameter names and 'heads.<name>' for training heads."""
    names = {p: n for n, p in model.named_parameters()}
    if heads is not None:
        names.update({p: HEADS_PREFIX + n for n, p in heads.named_parameters()})
    return names


def save_checkpoint(stage_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, *, stage: StageConfig,
                    step: int, task_batches: list[int], rank: int, world_size: int, barrier, tokenizer=None,
                    heads: nn.Module | None = None) -> Path:
    """All ranks call this: rank 0 writes model, heads, optimizer and state, every rank its own RNG state."""
    final, staging = checkpoint_dir(stage_dir, step), stage_dir / f".tmp-checkpoint-{step:07d}"
    if rank == 0:
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging, tokenizer=tokenizer)
        if heads is not None and len(heads):
            save_file({k: v.detach().cpu().contiguous() for k, v in heads.state_dict().items()},
                      str(staging / HEADS_NAME))
        save_file(optimizer_tensors(optimizer, parameter_names(model, heads)), str(staging / OPTIMIZER_NAME))
    barrier()
    save_file(rng_state(), str(staging / f"rng-rank{rank}.safetensors"))
    barrier()
    if rank == 0:
        state = {"stage": stage.name, "step": step, "task_batches": task_batches, "world_size": world_size}
        (staging / STATE_NAME).write_text(json.dumps(state, indent=2) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        for old in sorted(stage_dir.glob("checkpoint-*"))[:-stage.keep_checkpoints]:
            shutil.rmtree(old)
    barrier()
    return final


def load_checkpoint(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, *, stage: StageConfig,
                    rank: int, world_size: int, heads: nn.Module | None = None) -> dict:
    """Restore model, heads, optimizer and this rank's RNG; returns the trainer state (step, task_batches)."""
    state = json.loads((directory / STATE_NAME).read_text())
    if state["stage"] != stage.name:
        raise ValueError(f"{directory} belongs to stage {state['stage']!r}, not {stage.name!r}")
    if state["world_size"] != world_size:
        raise ValueError(f"{directory} was written by {state['world_size']} processes, this run has {world_size}: "
                         "resume with the same --nproc_per_node (the data order depends on it)")
    checkpoint.load_weights(model, directory / checkpoint.WEIGHTS_NAME)
    if heads is not None and len(heads):
        if not (directory / HEADS_NAME).is_file():
            raise ValueError(f"{directory} has no {HEADS_NAME} for this stage's training heads: resume with the "
                             "config that wrote it")
        heads.load_state_dict(load_file(str(directory / HEADS_NAME)))
    load_optimizer_tensors(optimizer, load_file(str(directory / OPTIMIZER_NAME)), parameter_names(model, heads))
    set_rng_state(load_file(str(directory / f"rng-rank{rank}.safetensors")))
    return state
