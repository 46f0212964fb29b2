"""Device choice and DDP set-up (``torchrun`` sets WORLD_SIZE/RANK/LOCAL_RANK)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(spec: str) -> torch.device:
    """``auto``: CUDA (this rank's GPU) when available, else the CPU. A CUDA device that is not
    there is refused in one line, before any data is loaded."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only torch build" if torch.version.cuda is None else "no usable GPU found"
            raise ValueError(f"--device {spec}: CUDA is not available here ({build}); "
                             "use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def broadcast_int(value: int, device: torch.device, world: int) -> int:
    """Rank 0's ``value`` on every rank (a no-op without DDP)."""
    if world <= 1:
        return value
    agreed = torch.tensor([value], device=device)
    dist.broadcast(agreed, src=0)
    return int(agreed.item())


def mean_over_ranks(t: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(t)
        t /= world
    return t


def barrier(world: int) -> None:
    """Wait for every rank (a no-op without DDP)."""
    if world > 1:
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
