"""Process groups for data-parallel training, started by ``torchrun``.

``torchrun`` (``python -m torch.distributed.run``) starts one process per device and sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``; this module reads
them and joins the group: gloo on CPU, nccl on CUDA. Multi-node runs use torchrun's own
rendezvous flags on every node (``--nnodes 2 --node-rank K --rdzv-backend c10d
--rdzv-endpoint HOST:PORT``); nothing here changes for them.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job: rank, world size, local rank, backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes logs and checkpoints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """Whether the environment names a multi-process job (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device_type: str, timeout_s: float = 1800.0) -> DistContext:
    """Joins the process group torchrun describes; a single process gets a trivial context.

    Args:
        device_type: ``"cpu"`` (gloo) or ``"cuda"`` (nccl).
        timeout_s: how long collectives wait for a missing peer.
    """
    if not launched_by_torchrun():
        return DistContext()
    if dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(),
                           int(os.environ.get("LOCAL_RANK", "0")), dist.get_backend())
    backend = "nccl" if device_type == "cuda" else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    context = DistContext(dist.get_rank(), dist.get_world_size(), local_rank, backend)
    logger.info("joined %s process group: rank %d of %d", backend, context.rank,
                context.world_size)
    return context


def shutdown_distributed() -> None:
    """Leaves the process group, if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Sums ``tensor`` over all processes, in place; returns it."""
    if context.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: Any, context: DistContext) -> list[Any]:
    """Every rank's ``obj``, in rank order (a one-element list for a single process)."""
    if not context.is_distributed:
        return [obj]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(context: DistContext) -> None:
    if context.is_distributed:
        dist.barrier()


def torchrun_command(nproc: int, module_args: Sequence[str]) -> list[str]:
    """The command line that runs ``python -m fbnas MODULE_ARGS`` in ``nproc`` processes here.

    ``--standalone`` picks a free port on this machine; for several machines run torchrun
    yourself with its rendezvous flags.
    """
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", "-m", "fbnas", *module_args]
