"""DuoRec's same-target index: for each training sample, the other samples with its target.

Built once by a stable sort of the training targets (samples grouped by target,
in sample order within a group); a draw is a few gathers, no Python loop. The
index is cached next to the data cache as ``duorec-<data_key>.pt`` — the key
covers the data file's content and every preprocessing setting, so the training
samples (and hence the index) are the same whenever the key is. A loaded file is
checked against its stored checksum (an entry edited after writing) and against
the current targets in full (O(S)); anything that does not match is rebuilt,
with one warning line. Like the data cache, it never costs the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from seqcl.atomic import atomic_save
from seqcl.data.cache import ChecksumMismatch, tensor_digest, verify_digest
from seqcl.data.notice import load_error, one_line, warn_once

INDEX_VERSION = 2  # 2: tensor checksum
_CHECKED = ("order", "counts", "position")


@dataclass
class SameTargetIndex:
    """Samples grouped by target item.

    order:    (S,) long, sample ids sorted by target (stable).
    counts:   (num_items + 1,) long, number of samples with each target.
    position: (S,) long, each sample's place within its target's group.
    """

    order: Tensor
    counts: Tensor
    position: Tensor

    @property
    def group_start(self) -> Tensor:
        """(num_items + 1,) long: where each target's group begins in ``order``."""
        return torch.cumsum(self.counts, 0) - self.counts

    def draw(self, targets: Tensor, sample_ids: Tensor, generator: torch.Generator) -> Tensor:
        """:func:`draw_same_target` with this index."""
        return draw_same_target(self.order, self.counts, self.position, self.group_start, targets, sample_ids,
                                generator)


def build_index(targets: Tensor, num_items: int) -> SameTargetIndex:
    """(S,) targets in 1..num_items → the index."""
    targets = targets.to(torch.long)
    order = torch.argsort(targets, stable=True)
    counts = torch.bincount(targets, minlength=num_items + 1)
    position = torch.empty_like(order)
    group_start = torch.cumsum(counts, 0) - counts
    position[order] = torch.arange(order.numel(), device=order.device) - group_start[targets[order]]
    return SameTargetIndex(order, counts, position)


def draw_same_target(order: Tensor, counts: Tensor, position: Tensor, group_start: Tensor, targets: Tensor,
                     sample_ids: Tensor, generator: torch.Generator) -> Tensor:
    """(B,) sample ids → (B,) ids of *other* samples with the same target, uniform among them;
    a sample that is alone with its target gets itself.

    ``order``, ``counts``, ``position``, ``group_start``: a :class:`SameTargetIndex`'s
    tensors; ``targets``: all training targets (S,). All on one device.
    """
    t = targets[sample_ids]
    count = counts[t]
    others = (count - 1).clamp(min=1)
    u = torch.rand(sample_ids.shape, generator=generator, device=sample_ids.device, dtype=torch.float64)
    r = torch.minimum((u * others).to(torch.long), others - 1)  # uniform in [0, count - 1)
    chosen = r + (r >= position[sample_ids]).to(torch.long)  # skip the sample itself
    slot = (group_start[t] + chosen).clamp(max=order.numel() - 1)
    return torch.where(count > 1, order[slot], sample_ids)


def check_index(index: SameTargetIndex, targets: Tensor, num_items: int) -> None:
    """Raise ValueError unless ``index`` is exactly the index of ``targets``."""
    s = targets.numel()
    o, c, p = index.order, index.counts, index.position
    for name, x, size in (("order", o, s), ("counts", c, num_items + 1), ("position", p, s)):
        if not isinstance(x, Tensor) or x.dtype != torch.long or x.shape != (size,):
            raise ValueError(f"{name}: wrong type, dtype or shape")
    if s == 0:
        return
    if int(o.min()) < 0 or int(o.max()) >= s or not bool((torch.bincount(o, minlength=s) == 1).all()):
        raise ValueError("order is not a permutation of the samples")
    if not torch.equal(c, torch.bincount(targets, minlength=num_items + 1)):
        raise ValueError("counts do not match the targets")
    if not torch.equal(targets[o], torch.repeat_interleave(torch.arange(num_items + 1), c)):
        raise ValueError("order does not group the samples by target")
    if not torch.equal(p[o], torch.arange(s) - index.group_start[targets[o]]):
        raise ValueError("positions do not match the order")


def cache_file(cache_dir: str | Path, data_key: str) -> Path:
    return Path(cache_dir) / f"duorec-{data_key}.pt"


def load_index(path: Path, targets: Tensor, num_items: int) -> SameTargetIndex | None:
    """The cached index, or None if the file is absent, unreadable or does not match."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("version") != INDEX_VERSION:
            raise ValueError("not a duorec index of this version")
        index = SameTargetIndex(blob["order"], blob["counts"], blob["position"])
        check_index(index, targets, num_items)
        verify_digest(blob, _CHECKED)
        return index
    except Exception as exc:  # noqa: BLE001 - any unusable entry is a cache miss
        mismatch = isinstance(exc, ChecksumMismatch)
        what = "does not match its checksum" if mismatch else f"is unusable ({load_error(exc)})"
        warn_once(f"DuoRec index {path} {what}; rebuilding it", key=f"duorec-load:{path}")
        return None


def save_index(path: Path, index: SameTargetIndex) -> bool:
    """Write atomically (temporary file + ``os.replace``); a cache that cannot be written
    (any error: a full disk makes ``torch.save`` raise RuntimeError) costs one warning."""
    fields = {"order": index.order, "counts": index.counts, "position": index.position}
    try:
        atomic_save({"version": INDEX_VERSION, **fields, "checksum": tensor_digest(fields)}, path)
        return True
    except Exception as exc:  # noqa: BLE001 - the index cache must never kill a run; Ctrl-C propagates
        warn_once(f"could not write DuoRec index {path} ({one_line(exc)}); continuing without it",
                  key=f"duorec-save:{path.parent}")
        return False


def load_or_build(cache_dir: str | Path | None, data_key: str, targets: Tensor, num_items: int) -> SameTargetIndex:
    """The index of ``targets``: from ``cache_dir`` when a valid entry exists, else built (and saved).

    Without a cache dir or a data key nothing is read or written.
    """
    targets = targets.to(torch.long).cpu()
    if cache_dir is None or not data_key:
        return build_index(targets, num_items)
    path = cache_file(cache_dir, data_key)
    index = load_index(path, targets, num_items)
    if index is None:
        index = build_index(targets, num_items)
        save_index(path, index)
    return index
