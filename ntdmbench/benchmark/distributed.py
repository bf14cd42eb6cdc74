"""torchrun support: the process group from the environment, and how work is split over ranks.

``torchrun --nproc_per_node N -m ntdmbench suite run ...`` (and ``--nnodes``) sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; without them everything runs as rank 0 of 1. Samples are sharded
by the runner (``ids[rank::world]``, no padding, merged by id); whole jobs (the training of one model
or one category) go round-robin over ranks with ``spread``. Several nodes need the output folder on a
shared file system, since rank 0 merges every rank's shards and checkpoints.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ntdmbench.errors import InputError
T = TypeVar("T")

TIMEOUT_ENV = "NTDMBENCH_DIST_TIMEOUT_MIN"
"""Minutes a rank waits for the others at a collective (default 24 h: one rank may train a model for hours)."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: ``rank`` of ``world``, ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (also a barrier)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise InputError(f"environment variable {name}={value!r} is not an integer") from None


def init_from_env(device: str = "cpu") -> tuple[Dist, str]:
    """Join the torchrun process group if there is one; returns it and this rank's device.

    gloo on CPU, nccl on CUDA; a CUDA rank uses the GPU ``cuda:LOCAL_RANK``.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Dist(), device
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise InputError(f"RANK={rank} is outside WORLD_SIZE={world}")
    import torch
    import torch.distributed as dist

    cuda = device.startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available on rank {rank}")
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    timeout = datetime.timedelta(minutes=_env_int(TIMEOUT_ENV, 24 * 60))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world, timeout=timeout)
    return Dist(rank, world, local_rank), device


def spread(jobs: Sequence[T], dist: Dist) -> list[T]:
    """This rank's share of whole jobs: every ``world``-th, starting at ``rank``."""
    return list(jobs[dist.rank::dist.world])
