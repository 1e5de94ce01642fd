"""Data-parallel training with PyTorch's own engine: torchrun + DistributedDataParallel.

Two ways in, the same run:

* `torchrun --nproc_per_node N -m stages.train` — torchrun sets WORLD_SIZE/RANK/LOCAL_RANK and
  a rendezvous; `process_group()` joins it (gloo on CPU, NCCL on CUDA).
* `train.distributed.enabled: true` in params.yaml — `python -m stages.train` (so `dvc repro`)
  relaunches itself under `torch.distributed.run --standalone` with `nproc` workers
  (`launch`); the workers see WORLD_SIZE and do not relaunch.

How a run stays equal to single-process training (`ShardedTraining`): every rank builds the same
model from the same seed and draws the same seeded permutation each epoch. The global batch is
`train.batch_size` as in a single process; step k's global batch perm[kB:(k+1)B] is cut into
`world` contiguous pieces, rank r takes piece r. Each rank's mean loss is scaled by
rows_r * world / rows_of_the_step, so DDP's gradient average is the global batch's mean gradient
(a short last batch cut unevenly too; equal up to the order of float32 sums, which Adam can
amplify over many steps, see tests/training/test_distributed.py); a rank left without rows in a tiny last batch
takes one row at scale 0, so every rank makes the same number of steps (DDP all-reduces in
every backward and would hang otherwise). The penalty gradient is added after backward, i.e.
after the all-reduce, on identical weights: the same on every rank, as in one process. Whole-
split losses are computed on contiguous blocks and all-reduced as (sum, count) in float64, so
every rank sees the same numbers; the early-stopping decision is still broadcast from rank 0.
Rank 0 alone writes files (checkpoints, metrics, dvclive, the model).

Nothing here runs unless a process group is initialised: `ShardedTraining` in a plain process
(or in a sweep's threads) is the single-process loop, unchanged.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from stages.core.errors import FitlineError, ParamsError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "gloo", "nccl")


class DistributedError(FitlineError):
    """A distributed run could not start, or one of its workers failed."""


# --------------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank of size; local_rank picks its GPU."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


SINGLE = World()


def env_world(env: Mapping[str, str] | None = None) -> World:
    """The world a launcher (torchrun) announced in WORLD_SIZE/RANK/LOCAL_RANK; SINGLE if none."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env:
        return SINGLE
    try:
        size, rank = int(env["WORLD_SIZE"]), int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise DistributedError(
            f"WORLD_SIZE={env.get('WORLD_SIZE')!r}, RANK={env.get('RANK')!r}, LOCAL_RANK={env.get('LOCAL_RANK')!r}: "
            "not integers (start workers with torchrun)"
        ) from None
    if size < 1 or not 0 <= rank < size or local < 0:
        raise DistributedError(f"WORLD_SIZE={size}, RANK={rank}, LOCAL_RANK={local}: not a valid rank of the world")
    return World(rank=rank, size=size, local_rank=local)


def current() -> World:
    """The world of the initialised process group, else SINGLE (a plain process, a sweep thread)."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=env_world().local_rank)


def pick_backend(requested: str, device: str) -> str:
    """gloo for CPU training, nccl for CUDA (`auto`); nccl without CUDA is a ParamsError."""
    if requested not in BACKENDS:
        raise ValueError(f"train.distributed.backend: unknown backend {requested!r} (allowed: {', '.join(BACKENDS)})")
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if requested == "auto":
        return "nccl" if cuda else "gloo"
    if requested == "nccl" and not cuda:
        raise ParamsError("train.distributed.backend: 'nccl' needs CUDA training (device cuda, or auto with a GPU); use gloo or auto")
    return requested


@contextlib.contextmanager
def process_group(backend: str = "auto", device: str = "auto", env: Mapping[str, str] | None = None) -> Iterator[World]:
    """Join the launcher's process group for the block (torch's env:// rendezvous); SINGLE if not launched."""
    world = env_world(env)
    if not world.active:
        yield SINGLE
        return
    name = pick_backend(backend, device)
    if name == "nccl":
        # "cuda" then means this rank's own GPU everywhere (tensors, generators, DDP)
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group(backend=name)
    log.info("rank %d of %d joined the %s process group", world.rank, world.size, name)
    if not world.is_main:  # every rank computes the same losses: let rank 0 alone report them
        logging.getLogger("stages").setLevel(logging.WARNING)
    try:
        yield current()
        dist.barrier()  # every rank reaches the teardown together: none tears down while a peer still talks
    finally:
        # DDP's reducer sits in reference cycles: collect it while its process group and the
        # interpreter are alive (left to interpreter exit, a gloo rank can abort a finished run)
        gc.collect()
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- the sharding


@dataclass(frozen=True)
class Shard:
    """One rank's part of an epoch.

    rows: positions into the epoch's row order (the permutation, or 0..n-1 for full batch)
    that this rank takes, in step order; None = all of them (single process).
    steps: (start, stop, scale) slices of the rank's gathered rows, one per optimizer step;
    the same count on every rank.
    """

    rows: np.ndarray | None
    steps: tuple[tuple[int, int, float], ...]


def shard_epoch(n: int, batch: int, world: World = SINGLE) -> Shard:
    """Cut an epoch of n rows in global batches of `batch` rows into `world.rank`'s shard."""
    if n < 1 or batch < 1:
        raise ValueError(f"shard_epoch: n={n} and batch={batch} must be positive")
    starts = range(0, n, batch)
    if not world.active:
        return Shard(rows=None, steps=tuple((s, min(s + batch, n), 1.0) for s in starts))
    rows: list[np.ndarray] = []
    steps: list[tuple[int, int, float]] = []
    taken = 0
    for s in starts:
        g = min(s + batch, n) - s  # rows in this global step
        lo, hi = s + g * world.rank // world.size, s + g * (world.rank + 1) // world.size
        if hi > lo:
            piece, scale = np.arange(lo, hi), (hi - lo) * world.size / g
        else:  # fewer rows than ranks: a stand-in row that contributes nothing
            piece, scale = np.array([s]), 0.0
        rows.append(piece)
        steps.append((taken, taken + len(piece), scale))
        taken += len(piece)
    return Shard(rows=np.concatenate(rows), steps=tuple(steps))


def eval_block(n: int, world: World = SINGLE) -> tuple[int, int]:
    """This rank's contiguous block [start, stop) of a split of n rows (for whole-split losses)."""
    return n * world.rank // world.size, n * (world.rank + 1) // world.size


# --------------------------------------------------------------------------- the training side


class _RawForward(nn.Module):
    """DDP syncs gradients of calls through its own forward: route the model's `head` (the training
    forward on prepared rows) through it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.head(x)


class ShardedTraining:
    """One rank's side of a training run sharded over the world (alone: the plain loop, unchanged).

    Not a model wrapper like torch's DataParallel: it holds what the loop needs per rank.
    forward: the training forward (model.head on prepared rows, through DDP when distributed);
    shard: this rank's rows and steps of each epoch; rows_of / evaluate / agree: see below.
    """

    def __init__(self, model: nn.Module, n: int, batch: int, device: torch.device, world: World | None = None) -> None:
        self.world = current() if world is None else world
        self.device = device
        self.shard = shard_epoch(n, batch, self.world)
        self.steps = self.shard.steps
        self._rows = None if self.shard.rows is None else torch.from_numpy(self.shard.rows)
        if self.world.active:
            # the scaling buffers are fitted on the whole train split on every rank: identical,
            # no need to broadcast them every step; every parameter takes part in every step
            ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
            self.forward: Callable[[torch.Tensor], torch.Tensor] = nn.parallel.DistributedDataParallel(
                _RawForward(model), device_ids=ids, forward_sync_buffers=False)
        else:
            self.forward = model.head

    @property
    def is_main(self) -> bool:
        return self.world.is_main

    def rows_of(self, order: torch.Tensor | None) -> torch.Tensor | None:
        """Row indices this rank trains on this epoch, given the epoch's order (None = 0..n-1).

        None when the rank takes every row in stored order (single process, full batch)."""
        if self._rows is None:
            return order
        return self._rows if order is None else order[self._rows]

    def evaluate(self, loss_of: Callable[..., float], model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 *args: Any) -> float:
        """`loss_of(model, x, y, *args)` (a mean over rows) of the whole split, all ranks sharing the work."""
        if not self.world.active:
            return loss_of(model, x, y, *args)
        lo, hi = eval_block(len(x), self.world)
        part = loss_of(model, x[lo:hi], y[lo:hi], *args) * (hi - lo) if hi > lo else 0.0
        total = torch.tensor([part, float(hi - lo)], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return float(total[0] / total[1])

    def agree(self, flag: bool) -> bool:
        """Rank 0's decision, on every rank (so all ranks stop at the same epoch)."""
        if not self.world.active:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=self.device)
        dist.broadcast(t, src=0)
        return bool(t.item())


# ------------------------------------------------------------------------------- launching


def launch(nproc: int, module: str, backend: str = "auto") -> None:
    """Run `python -m <module>` as `nproc` workers under torch.distributed.run (standalone, one node).

    Blocks until all finish; a failed worker (it reports its own error) is a DistributedError.
    CPU workers get cores // nproc threads each unless OMP_NUM_THREADS is set.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if nproc < 1:
        raise ParamsError(f"train.distributed.nproc: {nproc}; must be at least 1")
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    # workers read the backend from params; the launcher only names the module
    args = parse_args(["--standalone", "--nproc_per_node", str(nproc), "--max_restarts", "0", "-m", module])
    log.info("launching %d %s workers of %s under torch.distributed.run", nproc, backend, module)
    try:
        run(args)
    except ChildFailedError as exc:
        failures = exc.failures
        where = "a worker failed"
        if failures:
            rank, first = min(failures.items(), key=lambda kv: kv[1].timestamp)
            where = f"rank {rank} exited first, with code {first.exitcode}"
        raise DistributedError(f"{len(failures)} of {nproc} workers failed ({where}); see their messages above") from None


def launched() -> bool:
    """True in a worker started by torchrun / `launch` (it must not launch again)."""
    return "WORLD_SIZE" in os.environ

