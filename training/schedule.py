"""Schedules of a training stage, each a pure function of the step so that a resumed run needs no extra state:
the learning rate (linear warmup, then cosine decay to min_lr) and the order in which tasks take turns."""

from __future__ import annotations

import math


def learning_rate(step: int, *, lr: float, min_lr: float, warmup_lr: float, warmup_steps: int,
                  total_steps: int) -> float:
    """LR of optimizer step `step` (0-based): warmup_lr -> lr linearly over warmup_steps, then a half cosine
    from lr down to min_lr at the last step."""
    if step < warmup_steps:
        return warmup_lr + (lr - warmup_lr) * step / warmup_steps
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def task_cycle(weights: list[int]) -> list[int]:
    """One cycle of task indices, task i appearing weights[i] times, spread out (smooth weighted round robin):
    [2, 1] -> [0, 1, 0]. Micro-batch k of a stage comes from task cycle[k % len(cycle)]."""
    if not weights or any(w < 1 for w in weights):
        raise ValueError(f"task weights must be positive integers, got {weights}")
    current, total, cycle = [0] * len(weights), sum(weights), []
    for _ in range(total):
        current = [c + w for c, w in zip(current, weights)]
        best = max(range(len(weights)), key=lambda i: current[i])
        current[best] -= total
        cycle.append(best)
    return cycle


def batches_drawn(cycle: list[int], micro_steps: int, task: int) -> int:
    """How many batches `task` has contributed after `micro_steps` micro-batches: the data position of a resume."""
    full, rest = divmod(micro_steps, len(cycle))
    return full * cycle.count(task) + cycle[:rest].count(task)
