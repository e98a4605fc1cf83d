"""Data-parallel training under ``torchrun``: one process per device, one model replica each.

``torchrun --nproc-per-node N -m seqcl train …`` starts N copies of ``seqcl
train``; each reads the torchrun environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``) and joins one process group
(:func:`session`): gloo for CPU tensors and, where CUDA exists, NCCL for CUDA
tensors, each rank on ``cuda:LOCAL_RANK``. In one process (no torchrun, or
``WORLD_SIZE=1``) every function here is a no-op and training is unchanged.

What the core does with N ranks, and why:

* **One global batch.** ``train.batch_size`` is the batch over all ranks. Every
  rank draws the same seeded permutation of the training samples and takes its
  contiguous slice of each global batch (:func:`shard_ids`; sizes differ by at
  most one). A final batch with fewer rows than ranks is dropped (its samples
  come round in the next epoch's shuffle).
* **Gradients of the global loss.** A component's loss is a mean over its rows;
  DDP averages the ranks' gradients. So the core weights each rank's row-mean
  losses by ``N · n_rank / B`` (:attr:`Shard.weight`, 1 when the shards are
  equal): the average over ranks is then exactly the gradient of the mean over
  the global batch.
* **Global-batch terms.** A loss term with ``needs_global_batch = True``
  (``seqcl.interfaces.LossTerm``) gets the views of the whole global batch,
  gathered across ranks with gradients (``torch.distributed.nn.functional.all_gather``),
  rows in global order, and the gathered ``Batch``. Every rank computes the same
  value; the gather's backward sums the ranks' gradients into each rank's rows
  (N × the gradient of its own rows), which DDP's average divides by N again:
  the gradient of a one-process run on the same batch, in-batch negatives included.
* **Random streams.** Rank 0 keeps exactly the streams of a one-process run;
  rank r > 0 re-seeds the global stream (dropout) and every component stream
  (``seqcl.rng``) with ``seed + r · RANK_STRIDE`` (:func:`decorrelate`), so
  ranks do not draw the same augmentations for different samples. Checkpoints
  keep every rank's streams (:func:`gather_streams`), so a resume with the same
  number of ranks continues each of them.
* **Rank 0 writes.** Only rank 0 creates the run folder and writes files;
  :func:`from_main` runs a step on rank 0 and hands its result (or its error) to
  every rank.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from seqcl.interfaces import Batch, Views
from seqcl.rng import DeviceGenerators, OwnsGenerators

__all__ = ["RANK_STRIDE", "Shard", "World", "decorrelate", "from_main", "gather_rows", "gather_streams",
           "is_main_process", "needs_global_batch", "replicate", "restore_streams", "session", "shard_ids",
           "step_shard", "sum_over_ranks", "world"]

#: rank r > 0 seeds its random streams with ``seed + r · RANK_STRIDE``
RANK_STRIDE = 1_000_003

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's rank among ``size`` processes (``size`` 1: no process group)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """The current process group's rank and size, or rank 0 of 1 outside one."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def launched() -> bool:
    """Started by torchrun with more than one process (reads ``WORLD_SIZE``; no group needed)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a process not started by torchrun (reads ``RANK``; no group needed)."""
    return int(os.environ.get("RANK", "0")) == 0


@contextmanager
def session() -> Iterator[World]:
    """Join torchrun's process group for one training run and leave it afterwards.

    Outside torchrun (``WORLD_SIZE`` unset or 1), or when the caller already
    initialised a group, nothing is started or destroyed.
    """
    if not launched() or not dist.is_available() or dist.is_initialized():
        yield world()
        return
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local % torch.cuda.device_count())  # "cuda" now means this rank's device
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend)
    try:
        yield world()
    finally:
        dist.destroy_process_group()


def from_main(fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0, its result (or the exception it raised) on every rank.

    For the steps only rank 0 may take (claiming the run folder, reading a
    checkpoint that other nodes may not see); the result must pickle.
    """
    w = world()
    if w.size == 1:
        return fn()
    box: list[Any] = [None]
    if w.is_main:
        try:
            box[0] = ("ok", fn())
        except Exception as exc:  # noqa: BLE001 - handed to every rank, then raised there
            box[0] = ("error", exc)
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def shard_ids(ids: Tensor, w: World) -> Tensor | None:
    """This rank's contiguous slice of one global batch's sample ids; None when a rank would get none."""
    if w.size == 1:
        return ids
    if len(ids) < w.size:
        return None
    return ids.tensor_split(w.size)[w.rank]


def needs_global_batch(term: Any) -> bool:
    """The term's declaration (``seqcl.interfaces.LossTerm.needs_global_batch``; default False)."""
    return bool(getattr(term, "needs_global_batch", False))


def gather_rows(x: Tensor, sizes: tuple[int, ...]) -> Tensor:
    """(n_rank, …) on every rank → (Σ sizes, …), rows in rank order, gradients flowing back.

    The ranks' parts may differ in length by one: each is zero-padded to the
    longest, gathered, and cut back to its own ``sizes[r]`` rows.
    """
    from torch.distributed.nn.functional import all_gather

    longest = max(sizes)
    padded = F.pad(x, (0, 0) * (x.dim() - 1) + (0, longest - x.shape[0]))
    with warnings.catch_warnings():  # deprecated in torch 2.13 for a private API; still the public one
        warnings.simplefilter("ignore", FutureWarning)
        parts = all_gather(padded)
    return torch.cat([part[:n] for part, n in zip(parts, sizes)])


def _gather_plain(x: Tensor, sizes: tuple[int, ...]) -> Tensor:
    """:func:`gather_rows` without gradients (batch tensors: ids, targets, items)."""
    longest = max(sizes)
    padded = F.pad(x, (0, 0) * (x.dim() - 1) + (0, longest - x.shape[0]))
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:n] for part, n in zip(parts, sizes)])


@dataclass(frozen=True)
class Shard:
    """This rank's part of one global batch: every rank's row count and item width."""

    rank: int
    sizes: tuple[int, ...]
    widths: tuple[int, ...]

    @property
    def total(self) -> int:
        """B, the rows of the global batch."""
        return sum(self.sizes)

    @property
    def weight(self) -> float:
        """``N · n_rank / B``: the factor that makes DDP's average of row-mean losses the global mean."""
        return len(self.sizes) * self.sizes[self.rank] / self.total

    def gather(self, views: Views, batch: Batch) -> tuple[Views, Batch]:
        """The global batch's views (with gradients) and ``Batch`` (items left-padded to one width).

        Two collectives: the views stacked into one (n, V, d) tensor, and the
        batch's items, targets and sample ids as one (n, W + 2) long tensor.
        """
        names = list(views.tensors)
        tensors = [views.tensors[n] for n in names]
        if len({(t.dtype, t.shape[1:]) for t in tensors}) == 1:
            gathered = gather_rows(torch.stack(tensors, dim=1), self.sizes).unbind(1)
        else:  # views of different dtypes or widths: one gather each
            gathered = [gather_rows(t, self.sizes) for t in tensors]
        width = max(self.widths)
        items = F.pad(batch.items, (width - batch.items.shape[1], 0))  # left padding, as windows are
        whole = _gather_plain(torch.cat([items, batch.targets.view(-1, 1).to(items.dtype),
                                         batch.sample_ids.view(-1, 1).to(items.dtype)], dim=1), self.sizes)
        return (Views(dict(zip(names, gathered)), list(views.pairs)),
                Batch(whole[:, :width], whole[:, width], whole[:, width + 1]))

    def average(self, values: Tensor) -> Tensor:
        """The mean over ranks of ``values`` (detached), identical on every rank."""
        out = values.detach().clone()
        dist.all_reduce(out)
        return out / len(self.sizes)


def step_shard(batch: Batch) -> Shard | None:
    """Every rank's rows and width for this step (one small collective); None in one process."""
    w = world()
    if w.size == 1:
        return None
    mine = torch.tensor([batch.size, batch.items.shape[1]], device=batch.items.device)
    parts = [torch.empty_like(mine) for _ in range(w.size)]
    dist.all_gather(parts, mine)
    table = torch.stack(parts).tolist()
    return Shard(w.rank, tuple(int(n) for n, _ in table), tuple(int(c) for _, c in table))


class _Replica(nn.Module):
    """The trainable components as one module, so that DDP can wrap them; forward = one training step.

    Returns ``(total, step_output)``: DDP must see the loss tensor itself among the
    outputs (with ``static_graph`` its first backward's all-reduce hangs off it).
    """

    def __init__(self, modules: list[nn.Module], step: Callable[[Batch], Any]) -> None:
        super().__init__()
        self.components = nn.ModuleList(modules)
        self._step = step

    def forward(self, batch: Batch) -> tuple[Tensor, Any]:
        out = self._step(batch)
        return out.total, out


def replicate(modules: list[nn.Module], step: Callable[[Batch], Any]) -> nn.Module:
    """DistributedDataParallel over ``modules`` whose forward runs ``step(batch)``.

    Rank 0's parameters are broadcast now; gradients are averaged over ranks in
    backward. ``static_graph``: a run computes the same terms every step, so the
    set of parameters that get gradients never changes (a term of weight 0 or
    an augmenter without terms leaves some without, which DDP then skips).
    Buffers are not re-broadcast each step: they are derived data (an index of
    the training set) that every rank builds identically.
    """
    from torch.nn.parallel import DistributedDataParallel

    with warnings.catch_warnings():  # torch 2.13 renames broadcast_buffers; the old name still means this
        warnings.simplefilter("ignore", FutureWarning)
        return DistributedDataParallel(_Replica(modules, step), broadcast_buffers=False, static_graph=True)


def sync_from_main(modules: list[nn.Module]) -> None:
    """Copy rank 0's parameters and buffers to every rank (no-op in one process).

    For state a component sets after DDP's one broadcast, e.g. in ``on_fit_start``
    (ELCRec's k-means centres): each rank draws from its own random streams, so
    without this the ranks would train different models.
    """
    if world().size == 1:
        return
    with torch.no_grad():
        for module in modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)


def decorrelate(modules: list[nn.Module], seed: int, w: World) -> None:
    """Rank r > 0: re-seed the global stream and every component stream with ``seed + r · RANK_STRIDE``.

    Rank 0 keeps the streams of a one-process run.
    """
    if w.rank == 0:
        return
    torch.manual_seed(seed + w.rank * RANK_STRIDE)
    for module in modules:
        for sub in module.modules():
            if isinstance(sub, OwnsGenerators):
                sub.generators = DeviceGenerators(sub.generators.seed + w.rank * RANK_STRIDE)


def _extra_states(model_state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Component → its ``*_extra_state`` entries (the RNG streams of ``seqcl.rng``, counters)."""
    return {name: {k: v for k, v in state.items() if k == "_extra_state" or k.endswith("._extra_state")}
            for name, state in model_state.items() if isinstance(state, dict)}


def gather_streams(model_state: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Every rank's random streams (global CPU/CUDA state, components' extra state); None in one process.

    A collective: every rank calls it (``seqcl.checkpoint.build`` does, each epoch).
    """
    w = world()
    if w.size == 1:
        return None
    mine = {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "extra": _extra_states(model_state)}
    out: list[Any] = [None] * w.size
    dist.all_gather_object(out, mine)
    return out


def restore_streams(components: dict[str, Any], ranks: list[dict[str, Any]] | None, seed: int) -> None:
    """After a resume: this rank's own streams from the checkpoint, if it was written by as many ranks.

    Otherwise (a checkpoint of a run with another number of ranks) rank r > 0
    starts fresh streams as at the start of a run (:func:`decorrelate`).
    """
    w = world()
    if w.size == 1:
        return
    if ranks is None or len(ranks) != w.size:
        decorrelate([c for c in components.values() if isinstance(c, nn.Module)], seed, w)
        return
    mine = ranks[w.rank]
    torch.set_rng_state(mine["torch"])
    if mine["cuda"]:
        torch.cuda.set_rng_state_all(mine["cuda"])
    for name, extra in mine["extra"].items():
        component = components.get(name)
        for key, value in extra.items():
            owner = component.get_submodule(key.removesuffix("_extra_state").removesuffix(".")) \
                if isinstance(component, nn.Module) else None
            if owner is not None:
                owner.set_extra_state(value)


def sum_over_ranks(x: Tensor) -> Tensor:
    """Element-wise sum over ranks (in place on ``x``, returned); ``x`` itself in one process."""
    if world().size > 1:
        dist.all_reduce(x)
    return x
