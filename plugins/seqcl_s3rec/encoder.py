"""The ``s3rec`` encoder: SASRec with a ``[mask]`` item row and a switch to bidirectional attention.

S3Rec's model is SASRec's (item + position embedding, LayerNorm, dropout,
Transformer blocks; the item table is also the output layer); pre-training
attends both ways (every real key, ``[mask]`` included), fine-tuning
causally. ``s3rec.attention`` selects the mask; the run's stages set it
(:data:`DEFAULT_STAGES`). The ``[mask]`` row is the last row of the item
table, after the augmenter's extra rows, never scored; it exists in both
stages so the hand-off loads every weight.

Both masks run on SASRec's packed layout on the CPU (active tokens only,
attention per length bucket; bidirectional buckets for pre-training, as
BERT4Rec's): exact on every real slot, which is all MIP reads (tested against
the padded layout). Causal ``s3rec`` is ``sasrec`` with one more, unused, item
row (so its random initial weights differ from sasrec's for the same seed).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from seqcl.interfaces import BuildContext
from seqcl_sasrec.encoder import SASRec, SASRecOptions, additive_mask

#: S3Rec-MIP: masked item prediction, bidirectional, then SASRec fine-tuning (see the package doc)
DEFAULT_STAGES: list[dict[str, Any]] = [
    {"name": "pretrain", "objective": "mip", "epochs": 150,
     "set": {"s3rec.attention": "bidirectional", "train.batch_size": 100, "train.patience": 150},
     "handoff": ["encoder"], "handoff_from": "last"},
    {"name": "finetune", "objective": "ce", "set": {"s3rec.attention": "causal"}},
]


@dataclass
class S3RecOptions(SASRecOptions):
    """SASRec's options (S3Rec's Beauty values are SASRec's defaults: d 64, 2 layers, 2 heads,
    dropout 0.5 / 0.5) and the attention mask: ``causal`` or ``bidirectional``."""

    attention: Literal["causal", "bidirectional"] = "causal"


class S3Rec(SASRec):
    """SASRec + a ``[mask]`` row (``mask_token``) + bidirectional attention on request."""

    default_stages: ClassVar[list[dict[str, Any]]] = DEFAULT_STAGES

    def __init__(self, opt: S3RecOptions, ctx: BuildContext) -> None:
        super().__init__(opt, dataclasses.replace(ctx, extra_rows=ctx.extra_rows + 1))
        self.mask_token = ctx.num_items + 1 + ctx.extra_rows  # the last row
        self.attention = opt.attention

    @property
    def causal(self) -> bool:
        return self.attention == "causal"

    def attention_mask(self, items: Tensor) -> Tensor:
        if self.attention == "causal":
            return super().attention_mask(items)
        w = items.shape[1]
        allowed = (items > 0).unsqueeze(1).expand(-1, w, -1)  # (B, query, key): every real key
        return additive_mask(allowed, torch.float32).unsqueeze(1)
