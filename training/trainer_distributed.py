"""Data parallelism under torchrun: gloo on CPU, nccl on GPU, gradients averaged by DistributedDataParallel.

The trainer wraps one module whose forward computes any task's loss (trainer.TaskLoss: the model and the stage's
training heads), so every forward that must be synchronised, the LLM-only text task and the ViT's patch task too,
runs through DDP's forward. DDP broadcasts rank 0's parameters and buffers when it wraps the module, so all ranks
start from identical weights, step with identical averaged gradients and stay bit-identical.

Each micro-batch trains one task, and a task uses only part of the stage's trainable set (its modality's LoRA
adapters, query tokens, projection). So DDP runs with find_unused_parameters: after each synchronised forward it
walks the autograd graph to find the parameters this backward will not reach and marks them ready at once, instead
of waiting for their gradients forever. static_graph is no alternative: the used set changes from task to task (DDP
itself reports can_set_static_graph 0 for a regionblip stage). Nor is one DDP per task: several reducers would hook
the shared parameters. The walk is cheap: on the tiny model's regionblip stage (2 CPU processes, median of 40) a
synchronised forward, which walks, took 18.4 ms and one under no_sync, which does not, 19.2 ms: below the noise of a
46 ms step. A vision stage, whose one task uses all of its parameters, logs torch's warning that none were unused;
it is expected there.

Gradient accumulation runs all micro-batches of an optimizer step but the last under `no_sync()`: their gradients
accumulate locally, and the last backward averages the sum. DDP remembers which parameters any micro-batch of the
window used, so a parameter only an earlier micro-batch reached is averaged too; one no rank used keeps no gradient.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def data_parallel(self, module: nn.Module) -> nn.Module:
        """`module` wrapped in DDP under torchrun (as is in a plain process). Wrap it after the stage has set which
        parameters require grad: DDP hooks exactly those. DDP shares the module's parameters, so the caller saves
        and loads the unwrapped module, under unchanged names."""
        if not self.active:
            return module
        # forward_sync_buffers=False: the model's only buffers are Point-BERT's BatchNorm statistics, and Point-BERT
        # always runs in eval, so the broadcast at wrapping suffices; one before every forward would cost a
        # collective per micro-batch for nothing.
        return DistributedDataParallel(module, find_unused_parameters=True, forward_sync_buffers=False)

    @staticmethod
    def gradient_sync(module: nn.Module, sync: bool):
        """Context for one micro-batch's forward and backward: gradients stay local (`no_sync`) unless `sync`, the
        last micro-batch of the optimizer step, whose backward averages them."""
        if sync or not isinstance(module, DistributedDataParallel):
            return contextlib.nullcontext()
        return module.no_sync()

    def shutdown(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed() -> Distributed:
    """From torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK); a plain process is rank 0 of 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if world_size == 1:
        return Distributed(device=device)
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Distributed(rank=dist.get_rank(), world_size=world_size, local_rank=local_rank, device=device)
