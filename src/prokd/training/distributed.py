"""Devices and data parallelism: one process, or ``torchrun`` ranks with DDP.

``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`context_from_env`
reads them and joins the process group (gloo on CPU, nccl on CUDA). Without them prokd runs
as one process and every helper here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from prokd.devices import resolve_device


@dataclass(frozen=True)
class Context:
    """Where this process runs: its rank, the number of ranks and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether several ranks train together."""
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every rank (no-op in one process)."""
        if self.distributed:
            dist.barrier()

    def shard(self, batch: np.ndarray) -> np.ndarray:
        """This rank's disjoint share of a global batch (sizes differ by at most one)."""
        return np.array_split(batch, self.world_size)[self.rank] if self.distributed else batch

    def shard_sizes(self, total: int) -> list[int]:
        """Length of every rank's share of ``total`` items (as :meth:`shard` splits them)."""
        return [len(part) for part in np.array_split(np.arange(total), self.world_size)]

    def gather(self, tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        """Concatenate every rank's tensor along dim 0, keeping gradients to each rank.

        ``sizes`` are the ranks' lengths (:meth:`shard_sizes`); shards may differ by one, so
        they are padded for the collective and cut back.
        """
        if not self.distributed:
            return tensor
        longest = max(sizes)
        padded = torch.cat([tensor, tensor.new_zeros(longest - len(tensor), *tensor.shape[1:])])
        parts = _AllGather.apply(padded)
        return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])

    def all_gather_object(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order (``[value]`` in one process)."""
        if not self.distributed:
            return [value]
        out = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (no gradient), on this rank's device (NCCL reduces
        CUDA tensors only)."""
        if self.distributed:
            values = values.to(self.device).clone()
            dist.all_reduce(values)
        return values


ONE_PROCESS = Context()  # the default: one process, no ranks


class _AllGather(torch.autograd.Function):
    """All-gather whose backward hands every rank the summed gradient of its own part.

    Every rank computes the same loss from the gathered tensor, so the summed gradient is
    ``world_size`` times the one-process gradient; DDP's average divides it back out.
    """

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return tuple(parts)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack(grads).contiguous()
        dist.all_reduce(stacked)
        return stacked[dist.get_rank()]


def context_from_env(device: str = "auto") -> Context:
    """The context ``torchrun`` describes, joining its process group; else one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size == 1:
        return Context(0, 1, resolved)
    if not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group(backend)
    return Context(dist.get_rank(), dist.get_world_size(), resolved)


def data_parallel(network: torch.nn.Module, context: Context) -> torch.nn.Module:
    """The network wrapped in DistributedDataParallel when several ranks train."""
    if not context.distributed:
        return network
    device_ids = [context.device] if context.device.type == "cuda" else None
    return DistributedDataParallel(network, device_ids=device_ids)


def average_gradients(module: torch.nn.Module, context: Context) -> None:
    """Average ``module``'s gradients over ranks (the distillation adapters live in the
    loss, outside DDP)."""
    if not context.distributed:
        return
    for parameter in module.parameters():
        if parameter.grad is not None:
            parameter.grad = context.sum(parameter.grad) / context.world_size
