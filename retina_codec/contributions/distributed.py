"""Scale-out under ``torchrun``: one process per device, bins split across ranks (gloo on CPU, nccl on GPU).

``torchrun --nproc_per_node=K -m retina_codec contributions ...`` sets ``WORLD_SIZE`` / ``RANK`` /
``LOCAL_RANK``; :func:`context` then joins the process group (once) and picks this rank's device.
Without those variables everything runs in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistContext", "context"]


@dataclass
class DistContext:
    """This process's rank, the world size and its device; collectives are no-ops in one process."""

    rank: int = 0
    world: int = 1
    device: torch.device | None = None

    def broadcast(self, obj: Any) -> Any:
        """``obj`` from rank 0, on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def context(device: str | torch.device | None = None) -> DistContext:
    """Join the torchrun process group when ``WORLD_SIZE > 1``; single-process context otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(0, 1, None if device is None else torch.device(device))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want = torch.device(device) if device is not None else None
    use_cuda = torch.cuda.is_available() and (want is None or want.type == "cuda")
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), dev)
