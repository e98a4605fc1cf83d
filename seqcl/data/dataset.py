"""Sequences in CSR form, the leave-one-out split, training prefixes and windows.

Everything here is vectorised: no per-user Python loop after loading.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class SequenceData:
    """All users' chronological item sequences, concatenated (CSR).

    items:    (nnz,) long, item ids in 1..num_items, user after user.
    offsets:  (U+1,) long, user u's sequence is items[offsets[u]:offsets[u+1]].
    item_ids: the original id (a string, as the file wrote it) of each item:
              ``item_ids[i - 1]`` is item i's; None: the ids are the original ones.
    user_ids: the original id of each user row u; None: ``str(u + 1)``.

    The id maps travel with the data through the cache into every run folder
    (``ids.json``), so that a trained model answers in the data's own ids.
    """

    items: Tensor
    offsets: Tensor
    num_items: int
    name: str = "data"
    item_ids: list[str] | None = None
    user_ids: list[str] | None = None

    @property
    def num_users(self) -> int:
        return int(self.offsets.numel() - 1)

    @property
    def num_actions(self) -> int:
        return int(self.items.numel())

    def lengths(self) -> Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def user_of_position(self) -> Tensor:
        """(nnz,) user index of every flat position."""
        return torch.repeat_interleave(torch.arange(self.num_users), self.lengths())


@dataclass
class TrainSamples:
    """Every prefix of every user's training part (SPEC §1), as flat positions.

    Sample i's input is ``data.items[starts[i]:ends[i]]`` (its last ``T`` items),
    its target ``data.items[ends[i]]``.
    """

    data: SequenceData
    starts: Tensor  # (S,) long, first flat position of the user
    ends: Tensor  # (S,) long, exclusive end of the input prefix
    targets: Tensor  # (S,) long

    def __len__(self) -> int:
        return int(self.ends.numel())

    def windows(self, sample_ids: Tensor, max_len: int) -> Tensor:
        """(B,) sample ids → (B, max_len) left-padded input windows."""
        return windows(self.data.items, self.starts[sample_ids], self.ends[sample_ids], max_len)


def windows(flat: Tensor, starts: Tensor, ends: Tensor, max_len: int) -> Tensor:
    """Last ``max_len`` items of ``flat[starts[i]:ends[i]]`` per row, left-padded with 0.

    flat: (nnz,); starts, ends: (B,) → (B, max_len) long.
    """
    idx = ends.unsqueeze(1) - max_len + torch.arange(max_len, device=ends.device).unsqueeze(0)
    valid = idx >= starts.unsqueeze(1)
    return torch.where(valid, flat[idx.clamp(min=0)], torch.zeros((), dtype=flat.dtype))


def trim_padding(items: Tensor) -> Tensor:
    """Drop the leading columns that are padding (0) in every row: (B, W) → (B, W'), a view.

    The one trimming helper of seqcl. Contract: ``W' = W − k``, ``k`` the number
    of leading columns that are 0 in every row, but ``W' ≥ 1`` (a batch of empty
    rows keeps its last column; a (B, 0) tensor comes back as is). Column ``j``
    of the result is column ``k + j`` of the input; nothing else changes, so any
    padding pattern survives: for left-padded rows ``W'`` is the longest row,
    and ICLRec-style padding inside a sequence (CL4SRec's ``mask`` with
    ``mask_with=padding``) is never cut.

    Exact for an encoder that keeps slot position ids (SASRec's ``slot`` and
    ``from_oldest`` positions both do): padding slots are masked as keys, so
    dropping columns that are padding in every row changes no real slot's
    output. One host sync (the width): the core trims batches on the CPU before
    copying them to the device, and augmenters trim only CPU tensors.
    """
    if items.shape[1] == 0:
        return items
    used = (items != 0).any(dim=0)  # (W,): some row has a real (or mask) item in the column
    first = torch.where(used.any(), used.to(torch.int8).argmax(), used.numel() - 1)  # first used column
    return items[:, int(first):]


def training_samples(data: SequenceData) -> TrainSamples:
    """Prefix samples ``t = 1 … n-3`` of each user (input v_1..v_t, target v_{t+1})."""
    lengths = data.lengths()
    per_user = (lengths - 3).clamp(min=0)
    user = torch.repeat_interleave(torch.arange(data.num_users), per_user)
    first = torch.cumsum(per_user, 0) - per_user  # index of each user's first sample
    t = torch.arange(int(per_user.sum())) - first[user] + 1  # 1..n-3
    starts = data.offsets[:-1][user]
    ends = starts + t
    return TrainSamples(data, starts, ends, data.items[ends])


@dataclass
class EvalSet:
    """Leave-one-out evaluation inputs for one split, one row per user.

    starts/ends: flat range of the input (and of the full history to exclude).
    targets: (U,) the held-out item.
    """

    data: SequenceData
    starts: Tensor
    ends: Tensor
    targets: Tensor

    def __len__(self) -> int:
        return int(self.ends.numel())

    def windows(self, rows: Tensor, max_len: int) -> Tensor:
        return windows(self.data.items, self.starts[rows], self.ends[rows], max_len)


def eval_set(data: SequenceData, split: str) -> EvalSet:
    """``valid``: input v_1..v_{n-2}, target v_{n-1}; ``test``: input v_1..v_{n-1}, target v_n."""
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    held_out = 2 if split == "valid" else 1
    starts = data.offsets[:-1]
    ends = data.offsets[1:] - held_out
    return EvalSet(data, starts, ends, data.items[ends])
