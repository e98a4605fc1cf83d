"""CL4SRec's data-level operators (SPEC §9) as pure, vectorised tensor functions.

Every function takes a batch of **left-padded** windows ``items`` (B, W) long —
row u holds its ``n_u`` real items in the last ``n_u`` columns, 0 before them —
and a ``torch.Generator``, and returns a new (B, W) tensor. No Python loop over
sequences; the input is never modified in place (DuoRec's and SSLRec's CL4SRec
augment stored sequences through numpy/tensor views, so the data decays over
the epochs).

Shared rules: a row's real items are counted as its non-zero entries; padding
never becomes an item; a sequence of length 1 is returned as is; outputs stay
left-padded (except ``mask`` with ``token=0``, ICLRec's variant, which puts
padding *inside* the sequence on purpose). Counts use Python's float rounding,
``floor(ratio * n)`` in float64, as the reference code's ``int(ratio * len(seq))``.

Operator ids (for :func:`draw_operators` / :func:`apply_operators`):
``CROP = 0``, ``MASK = 1``, ``REORDER = 2``.
"""

from __future__ import annotations

import torch
from torch import Tensor

CROP, MASK, REORDER = 0, 1, 2
OPERATOR_NAMES = ("crop", "mask", "reorder")


def real_lengths(items: Tensor) -> Tensor:
    """(B, W) → (B,) long: number of real (non-zero) items per row."""
    return (items != 0).sum(dim=1)


def count(ratio: float, n: Tensor) -> Tensor:
    """(B,) lengths → (B,) long ``floor(ratio · n)``, computed in float64."""
    return torch.floor(n.to(torch.float64) * ratio).to(torch.long)


def _uniform_int(high_exclusive: Tensor, generator: torch.Generator) -> Tensor:
    """(B,) long ≥ 1 → (B,) long, row u uniform in ``[0, high_u)``."""
    u = torch.rand(high_exclusive.shape, generator=generator, device=high_exclusive.device, dtype=torch.float64)
    return torch.minimum((u * high_exclusive).to(torch.long), high_exclusive - 1)


def _columns(items: Tensor) -> Tensor:
    """(1, W) long column indices."""
    return torch.arange(items.shape[1], device=items.device).unsqueeze(0)


def crop(items: Tensor, ratio: float, generator: torch.Generator) -> Tensor:
    """Keep a contiguous window of ``keep = max(1, floor(ratio·n))`` items, re-left-padded.

    The window's start (within the row's real items) is uniform in ``[0, n - keep]``;
    ``ratio`` is the **kept** fraction. (B, W) → (B, W).
    """
    n = real_lengths(items)
    keep = torch.minimum(count(ratio, n).clamp(min=1), n)  # n = 0 keeps nothing
    start = _uniform_int(n - keep + 1, generator)
    # output column c (keep - 1 - r from the right edge, r = W-1-c) takes input column c - shift
    shift = (n - start - keep).unsqueeze(1)  # ≥ 0: how far the window moves right
    cols = _columns(items)
    from_right = items.shape[1] - 1 - cols
    src = (cols - shift).clamp(min=0)
    return torch.where(from_right < keep.unsqueeze(1), items.gather(1, src), torch.zeros_like(items))


def mask(items: Tensor, ratio: float, token: int, generator: torch.Generator) -> Tensor:
    """Replace ``floor(ratio·n)`` distinct real positions, uniformly chosen, by ``token``.

    ``token`` is the mask row ``num_items + 1`` (CL4SRec) or 0 (ICLRec's variant:
    the slot becomes padding, hidden from attention too). (B, W) → (B, W).
    """
    real = items != 0
    m = count(ratio, real.sum(dim=1))
    # random keys for real slots, 2 (> any uniform) for padding: the m smallest keys of
    # a row are m uniformly chosen real slots
    keys = torch.rand(items.shape, generator=generator, device=items.device).masked_fill(~real, 2.0)
    order = keys.argsort(dim=1)
    rank = torch.empty_like(order).scatter_(1, order, _columns(items).expand_as(order))
    chosen = (rank < m.unsqueeze(1)) & real
    return items.masked_fill(chosen, token)


def reorder(items: Tensor, ratio: float, generator: torch.Generator) -> Tensor:
    """Shuffle a random contiguous window of ``floor(ratio·n)`` items; the rest stays in place.

    The window's start (within the real items) is uniform in ``[0, n - k]``; the
    window's order is a uniform random permutation. (B, W) → (B, W).
    """
    n = real_lengths(items)
    k = count(ratio, n)
    first = items.shape[1] - n + _uniform_int(n - k + 1, generator)  # first column of the window
    cols = _columns(items)
    inside = (cols >= first.unsqueeze(1)) & (cols < (first + k).unsqueeze(1))
    # sort keys: a column outside the window keeps its index; inside, first + U·k with U
    # uniform in [0, 1) — within [first, first + k), so the window only permutes itself
    noise = torch.rand(items.shape, generator=generator, device=items.device, dtype=torch.float64)
    keys = torch.where(inside, first.unsqueeze(1) + noise * k.unsqueeze(1), cols.to(torch.float64))
    return items.gather(1, keys.argsort(dim=1, stable=True))


def draw_operators(batch_size: int, generator: torch.Generator, device: torch.device | str = "cpu",
                   independent: bool = False) -> tuple[Tensor, Tensor]:
    """Operator ids for two views of each sequence, each (B,) long in {0, 1, 2}.

    Default: two **different** operators per sequence (uniform over the 6 ordered
    pairs). ``independent``: two independent uniform draws (may coincide).
    """
    first = torch.randint(0, 3, (batch_size,), generator=generator, device=device)
    if independent:
        return first, torch.randint(0, 3, (batch_size,), generator=generator, device=device)
    return first, (first + torch.randint(1, 3, (batch_size,), generator=generator, device=device)) % 3


def apply_operators(items: Tensor, ops: Tensor, generator: torch.Generator, crop_ratio: float = 0.6,
                    mask_ratio: float = 0.3, reorder_ratio: float = 0.6, mask_token: int = 0) -> Tensor:
    """Row u gets operator ``ops[u]`` (0 crop, 1 mask, 2 reorder). (B, W), (B,) → (B, W).

    All three operators run on the whole batch (each is a few small kernels) and
    each row keeps its own operator's result: no per-sequence loop.
    """
    out = crop(items, crop_ratio, generator)
    out = torch.where((ops == MASK).unsqueeze(1), mask(items, mask_ratio, mask_token, generator), out)
    return torch.where((ops == REORDER).unsqueeze(1), reorder(items, reorder_ratio, generator), out)
