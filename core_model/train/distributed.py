"""Multi-process training under `torchrun`: one process per device (or per CPU share, with gloo).

    context = DistributedContext.from_environment()   # world of 1 without torchrun
    rows = context.rows(batch_size)                   # this process's slice of a global batch
    context.all_reduce_sum(tensor)

Gradients are averaged by DDP; the routers' token counts (which drive the bias updates) are
summed here, so every process applies the same update and the biases never drift apart.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @classmethod
    def from_environment(cls, device: str | torch.device | None = None) -> DistributedContext:
        """Joins the process group torchrun describes (WORLD_SIZE, RANK, ...); else a world of 1."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        chosen = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if world_size == 1:
            return cls(device=chosen)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
        rank = dist.get_rank()
        if chosen.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            chosen = torch.device("cuda", local)
        return cls(rank=rank, world_size=world_size, device=chosen)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def rows(self, batch_size: int) -> slice:
        """This process's contiguous share of a global batch."""
        if batch_size % self.world_size:
            raise ValueError(f"batch size {batch_size} does not split over {self.world_size} processes")
        share = batch_size // self.world_size
        return slice(self.rank * share, (self.rank + 1) * share)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            # NOTE: a DDP wrapper sits in reference cycles, so it can outlive training until the
            # interpreter's final collection, where freeing its Gloo work aborts the process
            # ("terminate called without an active exception"). Collect it while all is alive.
            gc.collect()
            dist.destroy_process_group()
