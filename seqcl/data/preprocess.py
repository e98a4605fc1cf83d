"""Raw records → clean :class:`SequenceData` (SPEC §1), vectorised with numpy.

Raw interactions (``.inter``, CSV) get the full pipeline: chronological sort
(stable on ties), de-duplication keeping the earliest, iterative k-core,
short-user drop, first-appearance renumbering. One-line-per-user files are
taken as already preprocessed — that is how every paper uses Beauty — so only
users too short to split are dropped.

What was dropped is logged on the ``seqcl.data`` logger and returned in a
:class:`PrepReport` by the ``*_with_report`` variants.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from seqcl.data.dataset import SequenceData
from seqcl.data.options import DataOptions
from seqcl.data.readers import RawInteractions, RawSequences
from seqcl.errors import DataError

log = logging.getLogger("seqcl.data")


@dataclass
class PrepReport:
    """Counts of what preprocessing removed (for the log and for tests)."""

    rows: int = 0  # interactions read
    duplicates: int = 0
    kcore_rounds: int = 0  # counting passes, the last (stable) one included
    kcore_removed: int = 0
    short_users: int = 0
    remapped: bool = False
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.rows} rows read"]
        if self.duplicates:
            parts.append(f"{self.duplicates} repeated (user, item) pairs removed")
        if self.kcore_rounds:
            parts.append(f"k-core removed {self.kcore_removed} interactions, stable after {self.kcore_rounds} round(s)")
        if self.short_users:
            parts.append(f"{self.short_users} short users dropped")
        if self.remapped:
            parts.append("item ids renumbered")
        return "; ".join(parts + self.notes)


# ---------------------------------------------------------------- interactions


def preprocess_interactions(raw: RawInteractions, options: DataOptions, name: str = "data") -> SequenceData:
    """SPEC §1 pipeline for raw interactions; see :func:`preprocess_interactions_with_report`."""
    return preprocess_interactions_with_report(raw, options, name)[0]


def preprocess_interactions_with_report(
    raw: RawInteractions, options: DataOptions, name: str = "data"
) -> tuple[SequenceData, PrepReport]:
    """Sort, dedupe (earliest kept), iterative k-core, drop short users, renumber.

    Users keep their order of first appearance in the file; items are numbered
    1..N in order of first appearance reading users in that order and each
    sequence left to right (the SASRec/ICLRec convention).
    """
    report = PrepReport(rows=len(raw))
    # Users ranked by first appearance, so grouping by rank keeps file order of
    # users whatever codes the reader chose; the row index makes ties explicit.
    users, user_codes = first_appearance_ids(raw.users)
    items = raw.items
    order = np.lexsort((np.arange(users.size), raw.timestamps, users))
    users, items = users[order], items[order]

    first = _first_occurrence(users, items, int(items.max(initial=-1)) + 1)
    report.duplicates = int(users.size - first.sum())
    users, items = users[first], items[first]

    keep = _k_core(users, items, options.k_core, report)
    users, items = users[keep], items[keep]

    keep = _long_enough(users, options.min_user_items, report)
    users, items = users[keep], items[keep]
    if users.size == 0:
        raise DataError(
            f"{raw.source}: no users left after preprocessing "
            f"(k_core={options.k_core}, min_user_items={options.min_user_items})"
        )
    report.remapped = True
    items, item_codes = first_appearance_ids(items)
    data = _to_sequence_data(users, items, name)
    data.item_ids = raw.item_tokens[item_codes].tolist()
    data.user_ids = raw.user_tokens[user_codes[np.unique(users) - 1]].tolist()
    log.info("%s: %s", raw.source, report.summary())
    return data, report


def _first_occurrence(users: np.ndarray, items: np.ndarray, num_items: int) -> np.ndarray:
    """Mask of the first (earliest, after sorting) row of each (user, item) pair."""
    pair = users * num_items + items
    _, first_idx = np.unique(pair, return_index=True)  # first occurrence, by numpy's contract
    mask = np.zeros(pair.size, dtype=bool)
    mask[first_idx] = True
    return mask


def _k_core(users: np.ndarray, items: np.ndarray, k: int, report: PrepReport) -> np.ndarray:
    """Mask of rows surviving the iterative k-core on users and items (until stable)."""
    keep = np.ones(users.size, dtype=bool)
    if k <= 1:
        return keep
    n_users, n_items = int(users.max(initial=-1)) + 1, int(items.max(initial=-1)) + 1
    while True:  # a round = one counting pass; the last one finds nothing to remove
        report.kcore_rounds += 1
        u, i = users[keep], items[keep]
        ok = (np.bincount(u, minlength=n_users)[u] >= k) & (np.bincount(i, minlength=n_items)[i] >= k)
        if ok.all():
            return keep
        report.kcore_removed += int((~ok).sum())
        keep[np.flatnonzero(keep)[~ok]] = False


def _long_enough(users: np.ndarray, min_items: int, report: PrepReport) -> np.ndarray:
    counts = np.bincount(users, minlength=int(users.max(initial=-1)) + 1)
    report.short_users = int(((counts > 0) & (counts < min_items)).sum())
    return counts[users] >= min_items


def renumber_by_first_appearance(items: np.ndarray) -> np.ndarray:
    """Item ids → 1..N, numbered in order of first appearance in ``items``."""
    return first_appearance_ids(items)[0]


def first_appearance_ids(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values`` → (ids 1..N in order of first appearance, the originals): ``originals[j]`` got id j + 1.

    The originals are what a run's id map records, so the renumbering can be undone.
    """
    uniq, first_idx, inverse = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(first_idx, kind="stable")
    rank = np.empty(uniq.size, dtype=np.int64)
    rank[order] = np.arange(1, uniq.size + 1)
    return rank[inverse.ravel()], uniq[order]


def _to_sequence_data(users: np.ndarray, items: np.ndarray, name: str) -> SequenceData:
    """CSR from rows already grouped by user (in output order)."""
    new_user = np.concatenate(([True], users[1:] != users[:-1])) if users.size else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(new_user)
    offsets = np.append(starts, users.size).astype(np.int64)
    return SequenceData(
        items=torch.from_numpy(np.ascontiguousarray(items, dtype=np.int64)),
        offsets=torch.from_numpy(offsets),
        num_items=int(items.max(initial=0)),
        name=name,
    )


# ---------------------------------------------------------------- sequences


def preprocess_sequences(raw: RawSequences, options: DataOptions, name: str = "data") -> SequenceData:
    """Already-preprocessed sequences; see :func:`preprocess_sequences_with_report`."""
    return preprocess_sequences_with_report(raw, options, name)[0]


def preprocess_sequences_with_report(
    raw: RawSequences, options: DataOptions, name: str = "data"
) -> tuple[SequenceData, PrepReport]:
    """Keep order and ids; drop users with fewer than ``min_user_items`` items.

    No k-core and no de-duplication: published files (Beauty, ML-1M) are already
    5-core, and re-filtering would change the benchmark. Ids are kept when the
    file uses exactly 1..max (then ``num_items = max``, even if dropping short
    users leaves a few ids unused, so ids match the file); otherwise (0-based,
    gaps, huge ids) they are renumbered by first appearance, so the embedding
    table is not sized by the largest id.
    """
    report = PrepReport(rows=int(raw.items.size))
    contiguous = _is_one_to_max(raw.items)
    long_enough = raw.lengths >= options.min_user_items
    report.short_users = int((~long_enough).sum())
    row_keep = np.repeat(long_enough, raw.lengths)
    items, lengths = raw.items[row_keep], raw.lengths[long_enough]
    if lengths.size == 0:
        raise DataError(f"{raw.source}: no user has at least {options.min_user_items} items (data.min_user_items)")
    if contiguous:
        num_items = int(raw.items.max())
        item_ids = [str(i) for i in range(1, num_items + 1)]
    else:
        items, originals = first_appearance_ids(items)
        num_items = int(items.max())
        item_ids = originals.astype(str).tolist()
        report.remapped = True
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    data = SequenceData(
        items=torch.from_numpy(np.ascontiguousarray(items, dtype=np.int64)),
        offsets=torch.from_numpy(offsets),
        num_items=num_items,
        name=name,
        item_ids=item_ids,
        user_ids=[raw.users[u] for u in np.flatnonzero(long_enough)],
    )
    log.info("%s: %s", raw.source, report.summary())
    return data, report


def _is_one_to_max(items: np.ndarray) -> bool:
    """Whether the ids are exactly {1, …, max} (every id used, none below 1)."""
    if items.size == 0 or items.min() < 1:
        return False
    top = int(items.max())
    return top <= items.size and bool(np.bincount(items, minlength=top + 1)[1:].all())


def drop_short_users(data: SequenceData, min_items: int) -> SequenceData:
    """Remove users with fewer than ``min_items`` items; item ids and ``num_items`` unchanged."""
    lengths = data.lengths()
    keep = lengths >= min_items
    if bool(keep.all()):
        return data
    items = data.items[torch.repeat_interleave(keep, lengths)]
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lengths[keep], 0)])
    log.info("%s: %d short users dropped", data.name, int((~keep).sum()))
    users = data.user_ids or [str(u + 1) for u in range(data.num_users)]
    return SequenceData(items=items, offsets=offsets, num_items=data.num_items, name=data.name,
                        item_ids=data.item_ids, user_ids=[users[u] for u in keep.nonzero().flatten().tolist()])
