"""One process or many: torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; a plain `python` run is rank 0 of 1.

Gradients are averaged across processes with one flat all-reduce per network and phase (as
StyleGAN2-ADA does: G is called through several methods, which DDP's module wrapper does not
follow); only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor

from gsgan_core.arguments import parse_device


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_request: str) -> Dist:
    """Reads torchrun's environment; NCCL on CUDA, gloo on CPU. `device_request` is read as every command
    reads --device (auto: CUDA when available; cuda without CUDA: ConfigError); on CUDA each process takes
    the GPU of its LOCAL_RANK."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = parse_device(device_request).type == "cuda"
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world_size)
    return Dist(rank, world_size, device)


def all_reduce_mean_(tensor: Tensor, world: Dist) -> Tensor:
    if world.world_size > 1:
        dist.all_reduce(tensor)
        tensor /= world.world_size
    return tensor


def average_gradients(params: list[torch.nn.Parameter], world: Dist) -> Tensor:
    """Averages gradients over processes in one flat all-reduce; returns the flat gradient.

    Parameters without a gradient this phase count as zeros, so every process sends the same shape.
    """
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.flatten() for g in grads])
    all_reduce_mean_(flat, world)
    offset = 0
    for p in params:  # each gradient becomes a view into the averaged flat buffer
        p.grad = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
    return flat


def agree_on_failure(problem: Exception | None, world: Dist, what: str) -> None:
    """Raises `problem` on rank 0 and a pointer to it on the others, so that no process waits forever
    for one that stopped; nothing when rank 0 found no problem."""
    if world.world_size > 1:
        flag = torch.tensor([float(problem is not None)], device=world.device)
        dist.broadcast(flag, src=0)
        if flag.item() and problem is None:
            from gsgan_core.errors import TrainingError

            raise TrainingError(f"{what}: rank 0 found a problem (see its message)")
    if problem is not None:
        raise problem
