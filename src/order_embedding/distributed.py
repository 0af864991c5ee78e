"""Data-parallel training over ``torch.distributed`` (launched with ``torchrun``).

Every process draws the same global batch, encodes its own contiguous share of it,
and the embeddings are all-gathered so that each process computes the loss of the
whole global batch, with the negatives of every process, exactly as one process
would. The gradient flows back through the gather: each process receives the
gradient of its own rows summed over all processes, and since every process holds
the same global loss, DistributedDataParallel's average of the parameter gradients
equals the single-process gradient of that loss.

Launch: ``torchrun --nproc_per_node N -m order_embedding train ...`` (the
environment variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` select the process group; gloo on CPU, nccl on CUDA).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank, the number of processes, its rank on the node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    created: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run folder, validates and prints."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def setup(device: str | torch.device | None = None) -> Context:
    """Join the process group described by torchrun's environment, or run as a single process.

    An already initialised process group is used as it is. Otherwise, when
    ``WORLD_SIZE`` is above 1, the group is created (nccl when ``device`` is CUDA or,
    with no device given, when CUDA is available; gloo otherwise), and on CUDA the
    process is bound to the GPU ``LOCAL_RANK``.
    """
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), created=False)
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Context()
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside 0..{world - 1} (WORLD_SIZE={world})")
    if not dist.is_available():
        raise ValueError(f"WORLD_SIZE={world} but this PyTorch build has no torch.distributed")
    cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo", rank=rank, world_size=world)
    return Context(rank, world, local_rank, created=True)


def teardown(context: Context) -> None:
    """Leave the process group if :func:`setup` created it."""
    if context.created and dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this is rank 0 (always true for a single process)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every process (no-op for a single process)."""
    if world_size() > 1:
        dist.barrier()


def shard_sizes(n: int, world: int) -> list[int]:
    """Rows of an ``n``-row global batch held by each of ``world`` processes (contiguous, differing by at most one)."""
    if world < 1:
        raise ValueError(f"world size must be at least 1, got {world}")
    return [n // world + (1 if r < n % world else 0) for r in range(world)]


def shard(n: int, rank_: int | None = None, world: int | None = None) -> slice:
    """This process's contiguous rows of an ``n``-row global batch."""
    world = world_size() if world is None else world
    rank_ = rank() if rank_ is None else rank_
    sizes = shard_sizes(n, world)
    start = sum(sizes[:rank_])
    return slice(start, start + sizes[rank_])


class _GatherRows(torch.autograd.Function):
    """Concatenate every process's rows in rank order; the backward pass sums the gradient over processes."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
        ctx.sizes = sizes
        ctx.rank = dist.get_rank()
        longest = max(sizes)
        padded = x.new_zeros((longest, *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([p[:n] for p, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None


def all_gather_with_grad(x: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """Rows of ``x`` from every process concatenated in rank order, differentiable.

    ``total`` is the number of rows of the global batch when the shares were cut by
    :func:`shard` (they may then differ by one row); without it every process must
    hold the same number of rows. The gradient reaching ``x`` is the sum over all
    processes of the gradient of their copy of the gathered rows. One process:
    ``x`` itself.
    """
    world = world_size()
    if world == 1:
        return x
    sizes = tuple(shard_sizes(total, world)) if total is not None else (x.shape[0],) * world
    if sizes[rank()] != x.shape[0]:
        raise ValueError(f"rank {rank()} holds {x.shape[0]} rows but its share of the batch is {sizes[rank()]}")
    return _GatherRows.apply(x, sizes)
