"""One training stage: AdamW with warmup + cosine, tasks interleaved micro-batch by micro-batch, gradient
accumulation and clipping, optional autocast, checkpoints that resume bit-exactly, metrics.jsonl and a loss curve."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from contract.modalities import IMAGE, POINT_MODALITIES

from .modeling_regionblip import RegionBLIP, RegionBLIPOutput
from .schedule import batches_drawn, learning_rate, task_cycle
from .tasks import CaptionTokens, TaskStream, check_qformer_tokenizer, to_device
from .trainer_config import StageConfig
from .trainer_distributed import Distributed
from .trainer_plot import plot_losses
from .trainer_state import HEADS_PREFIX, latest_checkpoint, load_checkpoint, make_optimizer, save_checkpoint
from .vision_pretraining import MODALITY as PATCH_MODALITY
from .vision_pretraining import PatchAttributeHead, patch_attribute_loss

METRICS_NAME = "metrics.jsonl"
LOSS_PARTS = ("lm_loss", "box_loss", "itc_loss", "itg_loss")  # RegionBLIPOutput's terms, each logged on its own
LOSS_CURVE_NAME = "loss_curve.png"


def training_heads(model: RegionBLIP, stage: StageConfig) -> nn.ModuleDict:
    """Modules that only training uses, never part of the model: the patch head of a vision stage."""
    heads = nn.ModuleDict()
    if any(task.modality == PATCH_MODALITY for task in stage.tasks):
        heads["patch"] = PatchAttributeHead(model.config.vision_config().hidden_size)
    return heads


def trainable_parameters(model: RegionBLIP, stage: StageConfig, heads: nn.ModuleDict) -> dict[str, nn.Parameter]:
    """The stage's set (freeze_for), plus the encoders the config asks to train from their random start, plus the
    training heads (named 'heads.<...>')."""
    named = dict(model.freeze_for(stage.kind))
    named.update({HEADS_PREFIX + n: p for n, p in heads.named_parameters()})
    extra = (["vision_model."] if stage.train_vision else []) + (["point_encoder."] if stage.train_point_encoder
                                                                   else [])
    for name, parameter in model.named_parameters():
        if name.startswith(tuple(extra)):
            parameter.requires_grad_(True)
            named[name] = parameter
    return named


@torch.no_grad()
def init_from_image(model: RegionBLIP, modalities: list[str]) -> None:
    """Start `modalities` from the trained image path: query tokens and LLM projection copied from `image`, and for
    a point modality the point Q-Former's base weights from the image Q-Former (as `from_blip2` does)."""
    for modality in modalities:
        model.query_tokens[modality].copy_(model.query_tokens[IMAGE])
        model.language_projection[modality].load_state_dict(model.language_projection[IMAGE].state_dict())
    if not set(modalities) & set(POINT_MODALITIES):
        return
    image = {k: v for k, v in model.qformer.state_dict().items() if ".lora_" not in k}
    point = model.qformer_pc.state_dict()
    for key, value in image.items():
        if key in point and point[key].shape == value.shape:
            point[key].copy_(value)


def language_only_loss(model: RegionBLIP, input_ids, attention_mask) -> RegionBLIPOutput:
    """The `text` task: the LLM alone (no soft prompt, no adapter) predicts the caption tokens."""
    model.use_modality(IMAGE)
    out = model.language_model(input_ids=input_ids, attention_mask=attention_mask,
                               labels=input_ids.masked_fill(attention_mask == 0, -100))
    return RegionBLIPOutput(loss=out.loss, lm_loss=out.loss, box_loss=None, logits=out.logits)


def task_loss(model: RegionBLIP, inputs: dict, heads: nn.ModuleDict) -> RegionBLIPOutput:
    if inputs["modality"] == "text":
        return language_only_loss(model, inputs["input_ids"], inputs["attention_mask"])
    if inputs["modality"] == PATCH_MODALITY:
        loss = patch_attribute_loss(model.vision_model, heads["patch"], inputs["pixel_values"],
                                    inputs["patch_targets"])
        return RegionBLIPOutput(loss=loss, lm_loss=None, box_loss=None, logits=None)
    return model(**inputs)


class TaskLoss(nn.Module):
    """The model and the stage's training heads as one module whose forward is `task_loss`: what DDP wraps, so that
    every task, including those that bypass RegionBLIP.forward (text, image_patches), runs through its forward."""

    def __init__(self, model: RegionBLIP, heads: nn.ModuleDict):
        super().__init__()
        self.model, self.heads = model, heads

    def forward(self, inputs: dict) -> RegionBLIPOutput:
        return task_loss(self.model, inputs, self.heads)


class StageTrainer:
    def __init__(self, model: RegionBLIP, stage: StageConfig, *, tokenizer, seed: int, stage_dir: Path,
                 dist: Distributed, qformer_tokenizer=None):
        """`qformer_tokenizer`: the Q-Former's, for a stage with ITC / ITG; None: the LLM's ids serve it too."""
        self.model, self.stage, self.tokenizer, self.dist = model, stage, tokenizer, dist
        captions = CaptionTokens(stage.max_text_tokens, stage.itc, stage.itg, qformer_tokenizer)
        if stage.itc or stage.itg:
            check_qformer_tokenizer(qformer_tokenizer or tokenizer, model.config)
        self.stage_dir, self.metrics_path = stage_dir, stage_dir / METRICS_NAME
        self.heads = training_heads(model, stage).to(dist.device)
        self.named = trainable_parameters(model, stage, self.heads)
        self.parameters = list(self.named.values())
        # after freeze_for: DDP hooks the parameters that require grad when it wraps, and broadcasts rank 0's
        # weights then (the heads' random start, drawn per rank, included)
        self.task = dist.data_parallel(TaskLoss(model, self.heads))
        self.optimizer = make_optimizer(self.named, stage)
        self.cycle = task_cycle([t.weight for t in stage.tasks])
        self.streams = [TaskStream(task, i, seed=seed, batch_size=stage.batch_size,
                                   model_config=model.config, rank=dist.rank, world_size=dist.world_size,
                                   captions=captions)
                        for i, task in enumerate(stage.tasks)]

    def _lr(self, step: int) -> float:
        s = self.stage
        return learning_rate(step, lr=s.lr, min_lr=s.min_lr, warmup_lr=s.warmup_lr, warmup_steps=s.warmup_steps,
                             total_steps=s.steps)

    def _autocast(self):
        if self.stage.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.dist.device.type, dtype=torch.bfloat16)

    def _restore(self) -> int:
        found = latest_checkpoint(self.stage_dir)
        if found is None:
            return 0
        state = load_checkpoint(found, self.model, self.optimizer, stage=self.stage, rank=self.dist.rank,
                                world_size=self.dist.world_size, heads=self.heads)
        step = state["step"]
        expected = [batches_drawn(self.cycle, step * self.stage.grad_accum, i) for i in range(len(self.streams))]
        if state["task_batches"] != expected:
            raise ValueError(f"{found}: its data position {state['task_batches']} does not fit the tasks of this "
                             f"config (expected {expected}): resume with the config that wrote it")
        if self.dist.is_main and self.metrics_path.exists():  # drop what the interrupted run logged after it
            kept = [line for line in self.metrics_path.read_text().splitlines() if json.loads(line)["step"] < step]
            self.metrics_path.write_text("".join(line + "\n" for line in kept))
        return step

    def _micro_batch(self, micro: int) -> tuple[str, dict]:
        task = self.cycle[micro % len(self.cycle)]
        n = batches_drawn(self.cycle, micro, task)
        inputs = self.streams[task].batch(n, self.tokenizer)
        return self.stage.tasks[task].name, to_device(inputs, self.dist.device)

    def _train_step(self, step: int) -> list[dict]:
        lr = self._lr(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        records = []
        for k in range(self.stage.grad_accum):
            task, inputs = self._micro_batch(step * self.stage.grad_accum + k)
            with self.dist.gradient_sync(self.task, sync=k == self.stage.grad_accum - 1):
                with self._autocast():
                    out = self.task(inputs)
                (out.loss / self.stage.grad_accum).backward()
            records.append({"stage": self.stage.name, "step": step, "task": task, "loss": out.loss.item(),
                            **{name: None if getattr(out, name) is None else getattr(out, name).item()
                               for name in LOSS_PARTS}, "lr": lr})
        if self.stage.clip_grad_norm:
            norm = torch.nn.utils.clip_grad_norm_([p for p in self.parameters if p.grad is not None],
                                                  self.stage.clip_grad_norm)
            for record in records:
                record["grad_norm"] = norm.item()
        self.optimizer.step()
        return records

    def run(self, resume: bool, stop_after: int | None = None) -> bool:
        """Train to the stage's last step (or until `stop_after` steps are done); True when the stage finished."""
        start = self._restore() if resume else 0
        end = self.stage.steps if stop_after is None else min(self.stage.steps, stop_after)
        self.model.train()
        self.heads.train()
        started = time.perf_counter()
        bar = tqdm(range(start, end), initial=start, total=self.stage.steps, desc=f"stage {self.stage.name}",
                   disable=not self.dist.is_main, dynamic_ncols=True)
        losses: dict[str, float] = {}
        with self.metrics_path.open("a") if self.dist.is_main else contextlib.nullcontext() as metrics:
            for step in bar:
                records = self._train_step(step)
                if metrics is not None:
                    for record in records:
                        record["elapsed_s"] = round(time.perf_counter() - started, 3)
                        metrics.write(json.dumps(record) + "\n")
                        losses[record["task"]] = record["loss"]
                    metrics.flush()
                    bar.set_postfix({task: f"{loss:.3f}" for task, loss in losses.items()})
                done = step + 1
                if done % self.stage.checkpoint_every == 0 or done == self.stage.steps:
                    task_batches = [batches_drawn(self.cycle, done * self.stage.grad_accum, i)
                                    for i in range(len(self.streams))]
                    save_checkpoint(self.stage_dir, self.model, self.optimizer, stage=self.stage, step=done,
                                    task_batches=task_batches, rank=self.dist.rank, world_size=self.dist.world_size,
                                    barrier=self.dist.barrier, tokenizer=self.tokenizer, heads=self.heads)
        bar.close()
        self.model.eval()
        if self.dist.is_main and self.metrics_path.exists():
            plot_losses(self.metrics_path, self.stage_dir / LOSS_CURVE_NAME)
        return end == self.stage.steps
