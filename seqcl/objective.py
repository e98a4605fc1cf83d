"""The main loss (SPEC §3), chosen by ``loss.main``: ``ce``, ``sampled`` or ``bce``."""

from __future__ import annotations

import torch
from torch import Tensor

from seqcl import losses
from seqcl.config import LossOptions
from seqcl.interfaces import Batch


def main_loss(
    h: Tensor,
    item_table: Tensor,
    batch: Batch,
    options: LossOptions,
    num_items: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """h (B, d), item_table (R, d) → scalar; extra rows after ``num_items`` are never scored."""
    if options.main == "ce":
        return losses.full_softmax_ce(h, item_table, batch.targets, num_items, options.include_pad_logit)
    k = options.negatives if options.main == "sampled" else 1
    negatives = losses.sample_negatives(batch.items, batch.targets, num_items, k, generator)
    if options.main == "sampled":
        return losses.sampled_softmax_ce(h, item_table, batch.targets, negatives)
    return losses.bce(h, item_table, batch.targets, negatives)
