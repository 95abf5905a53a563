"""torch.distributed for shadow fleets across processes (torchrun): rank 0 owns the run
folder and every stage but the shadows, which all ranks share. Without torchrun every
helper here is the identity of a single process."""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self):
        return self.rank == 0


def setup_distributed(device_type):
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def broadcast_from_main(obj, info):
    """Rank 0's `obj` on every rank."""
    if info.world_size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_main(obj, info):
    """[obj of rank 0, obj of rank 1, ...] on rank 0; None elsewhere."""
    if info.world_size == 1:
        return [obj]
    out = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def shutdown_distributed(info):
    if info.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
