"""Process groups for data-parallel training, started by ``torchrun``, and their collectives.

``torchrun`` (``python -m torch.distributed.run``) starts one process per device and sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``; this module reads
them and joins the group: gloo on CPU, nccl on CUDA. Multi-node runs use torchrun's own
rendezvous flags on every node (``--nnodes 2 --node-rank K --rdzv-backend c10d
--rdzv-endpoint HOST:PORT``); nothing here changes for them.

Besides the group itself: which device a process uses (:func:`resolve_device`, shared by
the trainer and the search engine), and the explicit collectives of loops that do not wrap
their model in ``DistributedDataParallel`` (the search engine: its supernets run a different
subset of parameters at every step): broadcasting a module's state, reducing share-weighted
gradients and averaging batch-norm statistics, all on flat buckets.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from fbnas.train.config import RecipeError

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


def resolve_device(device: str | torch.device | None, context: DistContext) -> torch.device:
    """``None``/``"auto"``: this process's GPU if CUDA is available, else the CPU.

    A bare ``"cuda"`` becomes this process's GPU (``cuda:LOCAL_RANK``), so every rank of a
    torchrun job on one machine takes its own device.

    Raises:
        RecipeError: ``"cuda"`` was asked for and CUDA is not available.
    """
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", context.local_rank)
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RecipeError("device 'cuda' requested but CUDA is not available here")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", context.local_rank)
    return device


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


# Collectives run on flat buckets of at most this many elements (16 MiB of float32), like
# DDP's gradient buckets: few messages, without copying a whole supernet at once.
BUCKET_ELEMENTS = 1 << 22


def in_buckets(tensors: Sequence[torch.Tensor],
               collective: Callable[[torch.Tensor], object]) -> None:
    """Runs ``collective`` in place on flat copies of ``tensors`` and copies the results back.

    Tensors are grouped by dtype, in order; every rank must pass the same shapes in the same
    order. A flat copy also serves tensors a collective refuses (channels-last weights).
    """
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for tensor in tensors:
        by_dtype.setdefault(tensor.dtype, []).append(tensor)

    def flush(bucket: list[torch.Tensor]) -> None:
        flat = torch.cat([t.reshape(-1) for t in bucket])  # (elements,)
        collective(flat)
        offset = 0
        for t in bucket:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()

    for group in by_dtype.values():
        bucket: list[torch.Tensor] = []
        size = 0
        for tensor in group:
            if bucket and size + tensor.numel() > BUCKET_ELEMENTS:
                flush(bucket)
                bucket, size = [], 0
            bucket.append(tensor)
            size += tensor.numel()
        if bucket:
            flush(bucket)


def all_reduce_sum_scaled(tensors: Sequence[torch.Tensor], scale: float) -> None:
    """``t <- sum over ranks of scale * t`` for each tensor, in place."""
    in_buckets(tensors, lambda flat: dist.all_reduce(flat.mul_(scale), op=dist.ReduceOp.SUM))


def broadcast_state(module: nn.Module, context: DistContext) -> None:
    """Gives every rank rank 0's parameters and buffers (as DDP does at start)."""
    if context.is_distributed:
        in_buckets(list(module.state_dict().values()), lambda flat: dist.broadcast(flat, src=0))


def reduce_gradients(params: Sequence[nn.Parameter], share: float,
                     context: DistContext) -> None:
    """Sums the share-weighted gradients over ranks: the global batch's mean-loss gradient.

    ``share`` is this rank's part of the global batch (its slice size over the batch size),
    so the sum is the gradient of the global batch's mean loss whatever the slice sizes.
    Parameters without a gradient (the candidates off a single path) are skipped. Callers
    make every rank skip the same ones (a shared path), so all reduce the same tensors in
    the same order.
    """
    if context.is_distributed:
        all_reduce_sum_scaled([p.grad for p in params if p.grad is not None], share)


def average_batchnorm_statistics(module: nn.Module, context: DistContext) -> None:
    """Averages BN running statistics over ranks, so evaluation and checkpoints see one set.

    For loops whose ranks normalise their own slices (no SyncBN, e.g. on CPU): called at the
    end of every epoch.
    """
    if not context.is_distributed:
        return
    buffers = [buf for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               for buf in (m.running_mean, m.running_var) if buf is not None]
    all_reduce_sum_scaled(buffers, 1.0 / context.world_size)
