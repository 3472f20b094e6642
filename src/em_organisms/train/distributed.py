"""What training needs to run the same under `accelerate launch` with several processes.

Every process trains; only the main one (rank 0) writes the run folder's own files. The
cheaper loss (trainer.py) calls the model's backbone directly, so DistributedDataParallel never
sees a forward pass and never averages the gradients: `average_gradients` does it instead, once
per optimizer step, as DDP would (the mean over processes of each process's gradient).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from em_organisms.errors import EmOrganismsError


class LaunchError(EmOrganismsError, ValueError):
    """An `accelerate launch` set-up that would not train as it says."""


def check_launch(device: torch.device) -> None:
    """Refuse FSDP on the CPU. accelerate (1.15) turns `distributed_type: FSDP` into FSDP only on
    GPUs and other accelerators; on the CPU its processes are MULTI_CPU and would silently train
    with plain data parallelism (DDP) instead, every process holding the whole model. (torch
    itself shards on the CPU; accelerate's set-up does not get there.)"""
    import accelerate

    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes")
    if fsdp and device.type == "cpu":
        raise LaunchError(
            f"accelerate launch asked for FSDP, but accelerate {accelerate.__version__} sets FSDP "
            "up only on GPUs: on the CPU every process would hold the whole model and train with "
            "plain data parallelism instead. On the CPU launch with "
            "organisms/accelerate/cpu-ddp.yaml; run the FSDP config on GPUs"
        )


# Gradients are averaged in buckets of at most this many elements (one all-reduce each).
BUCKET_NUMEL = 1 << 24


def average_gradients(parameters: Iterable[torch.nn.Parameter], world_size: int) -> None:
    """Replace each gradient by its mean over the `world_size` processes (all of them call this)."""
    grads = [p.grad for p in parameters if p.requires_grad and p.grad is not None]
    bucket: list[torch.Tensor] = []
    size = 0
    for grad in grads:
        bucket.append(grad)
        size += grad.numel()
        if size >= BUCKET_NUMEL:
            _average(bucket, world_size)
            bucket, size = [], 0
    if bucket:
        _average(bucket, world_size)


def _average(grads: list[torch.Tensor], world_size: int) -> None:
    by_dtype: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for grad in grads:
        by_dtype.setdefault((grad.dtype, grad.device), []).append(grad)
    for same in by_dtype.values():
        flat = _flatten_dense_tensors(same)
        dist.all_reduce(flat)
        flat.div_(world_size)
        for grad, synced in zip(same, _unflatten_dense_tensors(flat, same), strict=True):
            grad.copy_(synced)
