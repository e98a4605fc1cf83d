"""The main losses as pure tensor functions (SPEC §3): full-softmax CE, sampled softmax, BCE.

Nothing here holds state: every function maps tensors to a 0-dim tensor (the
mean over the batch) or, for :func:`sample_negatives`, to ``(B, K)`` item ids.
Shapes: ``B`` the batch, ``d`` the hidden size, ``R`` the item-table rows
(``num_items + 1`` plus any extra rows such as a mask token, never scored).
Softmax losses go through ``F.cross_entropy`` / ``logsumexp`` on logits, so huge
scores neither overflow nor give NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

__all__ = ["full_softmax_ce", "sample_negatives", "sampled_softmax_ce", "bce"]


def full_softmax_ce(
    h: Tensor,
    item_table: Tensor,
    targets: Tensor,
    num_items: int,
    include_pad_logit: bool = False,
) -> Tensor:
    """Full-softmax cross-entropy over all real items (SPEC §3 default ``ce``).

    ``logits = h @ item_table[1 : num_items + 1]ᵀ`` (B, num_items); the target
    ``t`` (in ``1..num_items``) sits in column ``t - 1``. Padding (row 0) and
    extra rows after ``num_items`` (e.g. a mask token) are never scored.
    ``include_pad_logit=True`` scores rows ``0..num_items`` instead (RecBole's
    CE, for benchmark parity only); extra rows are still excluded.

    Args:
        h: (B, d) user representations (any leading dims ``(..., d)`` are
            flattened together with ``targets``).
        item_table: (R, d), R >= num_items + 1; row 0 = padding.
        targets: (B,) long in ``1..num_items``.
        num_items: number of real items |V|.
        include_pad_logit: add the padding logit to the softmax.

    Returns:
        0-dim tensor, mean over the batch.
    """
    if item_table.dim() != 2 or item_table.shape[0] < num_items + 1:
        raise ValueError(
            f"item_table must be (R, d) with R >= num_items + 1 = {num_items + 1}; got {tuple(item_table.shape)}"
        )
    if h.shape[:-1] != targets.shape:
        raise ValueError(f"h {tuple(h.shape)} and targets {tuple(targets.shape)} do not match")
    h = rearrange(h, "... d -> (...) d")
    targets = rearrange(targets, "... -> (...)")
    if include_pad_logit:
        table, labels = item_table[: num_items + 1], targets
    else:
        table, labels = item_table[1 : num_items + 1], targets - 1
    logits = torch.einsum("bd,vd->bv", h, table)
    return F.cross_entropy(logits, labels)


def sample_negatives(
    items: Tensor,
    targets: Tensor,
    num_items: int,
    k: int,
    generator: torch.Generator | None = None,
    max_rounds: int = 32,
) -> Tensor:
    """Draw ``k`` negatives per row, uniform in ``1..num_items`` (SPEC §3 ``sampled``).

    Excluded per row: the items of its window and its target. Within a row the
    ``k`` negatives are distinct whenever the row has at least ``k`` valid items
    (sampling without replacement); a row with fewer valid items (tiny
    ``num_items``) gets repeats, but never an excluded item.

    Vectorised rejection sampling: all entries are drawn at once, then only the
    entries that collide (with an excluded item, or with an earlier entry of the
    same row) are redrawn, for at most ``max_rounds`` rounds. Rows still
    colliding after that are drawn exactly from their explicit valid set with
    ``torch.multinomial``, so the result is always valid.

    Args:
        items: (B, T) long window, 0 = padding (ids > num_items are ignored).
        targets: (B,) long.
        num_items: |V|; negatives lie in ``1..num_items``.
        k: negatives per row, >= 1.
        generator: optional ``torch.Generator``; it may live on another device
            than ``items`` (e.g. a CPU generator for CUDA batches): draws are
            made on the generator's device and moved to ``items.device``.
        max_rounds: bound on rejection rounds before the exact fallback.

    Returns:
        (B, k) long tensor on ``items.device``.

    Raises:
        ValueError: ``k < 1``, ``num_items < 1``, or a row with no valid
            negative at all (its window and target cover every item).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    if num_items < 1:
        raise ValueError(f"num_items must be >= 1; got {num_items}")
    if items.dim() != 2 or targets.shape != items.shape[:1]:
        raise ValueError(f"items must be (B, T) and targets (B,); got {tuple(items.shape)}, {tuple(targets.shape)}")
    device = items.device
    bsz = items.shape[0]
    forbidden = torch.cat([items.long(), rearrange(targets.long(), "b -> b 1")], dim=1)  # (B, T+1)
    forbidden, _ = forbidden.sort(dim=1)

    # number of distinct forbidden ids inside 1..num_items, per row
    in_range = (forbidden >= 1) & (forbidden <= num_items)
    is_new = torch.ones_like(in_range)
    is_new[:, 1:] = forbidden[:, 1:] != forbidden[:, :-1]
    n_valid = num_items - (in_range & is_new).sum(dim=1)  # (B,)
    if bool((n_valid < 1).any()):
        bad = int(torch.nonzero(n_valid < 1)[0, 0])
        raise ValueError(
            f"row {bad} has no valid negative: its window and target cover all {num_items} items"
        )
    distinct = rearrange(n_valid >= k, "b -> b 1")  # (B, 1) rows that must not repeat

    gen_device = generator.device if generator is not None else device

    def draw(shape: tuple[int, ...]) -> Tensor:
        return torch.randint(1, num_items + 1, shape, generator=generator, device=gen_device).to(device)

    def collisions(neg: Tensor) -> Tensor:
        pos = torch.searchsorted(forbidden, neg).clamp_max(forbidden.shape[1] - 1)
        hit = forbidden.gather(1, pos) == neg  # (B, k)
        vals, order = neg.sort(dim=1, stable=True)
        dup_sorted = torch.zeros_like(hit)
        dup_sorted[:, 1:] = vals[:, 1:] == vals[:, :-1]  # all but the first of equal runs
        dup = torch.zeros_like(hit).scatter(1, order, dup_sorted)
        return hit | (dup & distinct)

    neg = draw((bsz, k))
    bad = collisions(neg)
    for _ in range(max_rounds):
        n_bad = int(bad.sum())
        if n_bad == 0:
            return neg
        neg = neg.masked_scatter(bad, draw((n_bad,)))
        bad = collisions(neg)

    # exact fallback for the rows still colliding: sample from the explicit valid set
    rows = torch.nonzero(bad.any(dim=1)).flatten()  # (r,)
    if rows.numel() > 0:
        idx = forbidden[rows]  # (r, T+1)
        idx = torch.where((idx < 0) | (idx > num_items), torch.zeros_like(idx), idx)
        allowed = torch.ones(rows.numel(), num_items + 1, dtype=torch.bool, device=device)
        allowed = allowed.scatter(1, idx, False)
        allowed[:, 0] = False  # padding is never a negative
        row_distinct = distinct[rows, 0]  # (r,)
        for replace in (False, True):
            sel = row_distinct != replace
            if bool(sel.any()):
                weights = allowed[sel].to(device=gen_device, dtype=torch.float)
                neg[rows[sel]] = torch.multinomial(weights, k, replacement=replace, generator=generator).to(device)
    return neg


def sampled_softmax_ce(h: Tensor, item_table: Tensor, targets: Tensor, negatives: Tensor) -> Tensor:
    """Sampled softmax over ``[target, K negatives]`` (SPEC §3 ``sampled``), no logQ.

    ``s_pos = h_b · E[t_b]``, ``s_k = h_b · E[n_bk]``::

        loss = mean_b [ -s_pos + log(exp s_pos + sum_k exp s_k) ]

    With K = 1 this is BPR: ``-log sigmoid(s_pos - s_neg)``.

    Args:
        h: (B, d).
        item_table: (R, d).
        targets: (B,) long.
        negatives: (B, K) long (e.g. from :func:`sample_negatives`).

    Returns:
        0-dim tensor.
    """
    if negatives.dim() != 2 or negatives.shape[0] != h.shape[0] or targets.shape != h.shape[:1]:
        raise ValueError(
            f"expected h (B, d), targets (B,), negatives (B, K); got "
            f"{tuple(h.shape)}, {tuple(targets.shape)}, {tuple(negatives.shape)}"
        )
    cand = torch.cat([rearrange(targets, "b -> b 1"), negatives], dim=1)  # (B, 1+K)
    logits = torch.einsum("bd,bkd->bk", h, item_table[cand])  # (B, 1+K)
    return F.cross_entropy(logits, logits.new_zeros(h.shape[0], dtype=torch.long))


def bce(h: Tensor, item_table: Tensor, targets: Tensor, negatives: Tensor) -> Tensor:
    """Binary cross-entropy of original SASRec (SPEC §3 ``bce``)::

        loss = mean_b [ -log sigmoid(s_pos) - sum_k log(1 - sigmoid(s_bk)) ]

    written with ``logsigmoid`` (``log(1 - sigmoid(x)) = logsigmoid(-x)``).
    SASRec uses one negative, ``negatives`` (B, 1); K > 1 sums over negatives.

    Args:
        h: (B, d).
        item_table: (R, d).
        targets: (B,) long.
        negatives: (B, K) long, normally K = 1.

    Returns:
        0-dim tensor.
    """
    if negatives.dim() != 2 or negatives.shape[0] != h.shape[0] or targets.shape != h.shape[:1]:
        raise ValueError(
            f"expected h (B, d), targets (B,), negatives (B, K); got "
            f"{tuple(h.shape)}, {tuple(targets.shape)}, {tuple(negatives.shape)}"
        )
    s_pos = torch.einsum("bd,bd->b", h, item_table[targets])  # (B,)
    s_neg = torch.einsum("bd,bkd->bk", h, item_table[negatives])  # (B, K)
    return (-F.logsigmoid(s_pos) - F.logsigmoid(-s_neg).sum(dim=1)).mean()
