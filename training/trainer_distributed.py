"""Data parallelism under torchrun: gloo on CPU, nccl on GPU.

Every rank runs the same task at the same micro-step, so the set of parameters that received gradients is the same
everywhere; the gradients are averaged explicitly after each accumulation window (rather than by a
DistributedDataParallel wrapper, which would need find_unused_parameters for the per-task parameter subsets).
Parameters are broadcast from rank 0 at the start, so all ranks step from identical weights with identical
averaged gradients and stay bit-identical.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


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

    def broadcast_model(self, model: nn.Module) -> None:
        if self.active:
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, src=0)

    def average_gradients(self, parameters: list[nn.Parameter]) -> None:
        if not self.active:
            return
        with_grad = [p for p in parameters if p.grad is not None]
        if not with_grad:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in with_grad])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p in with_grad:
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
            offset += p.numel()

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
