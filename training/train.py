"""Train RegionBLIP stage by stage from a YAML recipe.

    python -m training.train --config config/train_default.yaml [--resume | --overwrite]
    torchrun --nproc_per_node 2 -m training.train --config ...      (data parallel; gloo on CPU, nccl on GPU)

Each stage writes <output_dir>/<stage>/: checkpoint-<step>/ (resumable), metrics.jsonl, loss_curve.png and, when
done, final/ (a RegionBLIP checkpoint with the tokenizer). A stage starts from the previous stage's final/. With
export_dir set, the last stage's final model is copied there (the embedded default: models/default).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import torch

from contract.cli import OneLineParser

from .modeling_regionblip import RegionBLIP
from .tasks import load_qformer_tokenizer
from .tokenizer import default_tokenizer, load_tokenizer, newline_token_id
from .trainer import StageTrainer, init_from_image
from .trainer_config import TrainConfig, TrainConfigError, load_train_config
from .trainer_distributed import Distributed, init_distributed
from .trainer_state import latest_checkpoint

FINAL_NAME = "final"
SUMMARY_NAME = "training.json"


def load_recipe_tokenizer(config: TrainConfig):
    tokenizer = default_tokenizer() if config.tokenizer == "default" else load_tokenizer(config.tokenizer)
    text = config.model.text_config()
    problems = []
    if len(tokenizer) > text.vocab_size:
        problems.append(f"text vocab_size {text.vocab_size} < the tokenizer's {len(tokenizer)} tokens")
    if newline_token_id(tokenizer) != config.model.newline_token_id:
        problems.append(f"newline_token_id {config.model.newline_token_id} != the tokenizer's "
                        f"{newline_token_id(tokenizer)}")
    for name in ("bos", "eos", "pad"):
        if getattr(tokenizer, f"{name}_token_id") != getattr(text, f"{name}_token_id"):
            problems.append(f"text {name}_token_id {getattr(text, f'{name}_token_id')} != the tokenizer's "
                            f"{getattr(tokenizer, f'{name}_token_id')}")
    if problems:
        raise TrainConfigError("model and tokenizer disagree: " + "; ".join(problems) +
                               ": set them in model.overrides")
    return tokenizer


def _stage_start(config: TrainConfig, index: int, previous: Path | None) -> RegionBLIP:
    torch.manual_seed(config.seed)
    if previous is None and config.init_checkpoint is None:
        return RegionBLIP(config.model)
    model = RegionBLIP.from_pretrained(previous or config.init_checkpoint)
    init_from_image(model, config.stages[index].init_from_image)
    return model


def _export(final: Path, export_dir: Path) -> None:
    export_dir.mkdir(parents=True, exist_ok=True)
    for path in final.iterdir():
        if path.is_file() and path.name != SUMMARY_NAME:
            shutil.copy2(path, export_dir / path.name)


def run_training(config: TrainConfig, *, resume: bool = False, overwrite: bool = False,
                 stop_after: int | None = None, dist: Distributed | None = None) -> Path | None:
    """Run the stages; returns the last stage's final/ directory, or None when stopped early by `stop_after`
    (steps of the stage in progress, for tests and for splitting a run)."""
    dist = dist or init_distributed()
    if config.threads and dist.device.type == "cpu":
        torch.set_num_threads(config.threads)
    tokenizer = load_recipe_tokenizer(config)
    qformer_tokenizer = None if config.qformer_tokenizer is None else load_qformer_tokenizer(config.qformer_tokenizer)
    if overwrite and dist.is_main:
        for stage in config.stages:
            shutil.rmtree(config.output_dir / stage.name, ignore_errors=True)
    dist.barrier()
    previous = None
    for index, stage in enumerate(config.stages):
        stage_dir = config.output_dir / stage.name
        final = stage_dir / FINAL_NAME
        if (final / SUMMARY_NAME).is_file() or latest_checkpoint(stage_dir) is not None:
            if not resume:
                raise TrainConfigError(f"{stage_dir} holds an earlier run: pass --resume to continue it or "
                                       "--overwrite to start over")
            if (final / SUMMARY_NAME).is_file():
                previous = final
                continue
        stage_dir.mkdir(parents=True, exist_ok=True)
        model = _stage_start(config, index, previous).to(dist.device)  # the trainer's DDP broadcasts rank 0's
        torch.manual_seed(config.seed + 1000 * (index + 1) + dist.rank)  # dropout streams, distinct per rank
        trainer = StageTrainer(model, stage, tokenizer=tokenizer, seed=config.seed, stage_dir=stage_dir, dist=dist,
                               qformer_tokenizer=qformer_tokenizer)
        started = time.perf_counter()
        if not trainer.run(resume=resume, stop_after=stop_after):
            return None
        wall = time.perf_counter() - started
        if dist.is_main:
            model.save_pretrained(final, tokenizer=tokenizer)
            summary = {"stage": stage.name, "kind": stage.kind, "steps": stage.steps, "wall_s": round(wall, 1),
                       "world_size": dist.world_size, "resumed": resume}
            (final / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
            print(f"stage {stage.name}: {stage.steps} steps in {wall:.0f} s -> {final}", file=sys.stderr)
        dist.barrier()
        previous = final
    if config.export_dir is not None and dist.is_main:
        _export(previous, config.export_dir)
        print(f"exported {previous} -> {config.export_dir}", file=sys.stderr)
    return previous


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="training YAML, e.g. config/train_default.yaml")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue from the latest checkpoint of each stage")
    group.add_argument("--overwrite", action="store_true", help="delete earlier runs of these stages first")
    parser.add_argument("--stop-after", type=int, default=None, metavar="STEPS",
                        help="stop the stage in progress after this many steps (resume later with --resume)")
    dist = None
    try:
        args = parser.parse_args(argv)
        if args.stop_after is not None and args.stop_after < 1:
            raise ValueError(f"--stop-after is {args.stop_after}: give a number of steps >= 1")
        config = load_train_config(args.config)
        dist = init_distributed()
        run_training(config, resume=args.resume, overwrite=args.overwrite, stop_after=args.stop_after, dist=dist)
    except (TrainConfigError, ValueError, FileNotFoundError) as error:
        print(f"training.train: error: {error}".replace("\n", " "), file=sys.stderr)
        return 2
    finally:
        if dist is not None:
            dist.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
