"""BERT4Rec encoder: a bidirectional Transformer over left-padded windows, with a ``[mask]`` item row.

The blocks are SASRec's (``seqcl_sasrec.encoder.TransformerBlock``: post-LN,
GELU feed-forward, RecBole's layout); the only change in the stages is the
attention mask: every query sees every **real** key, before and after it
(padding is masked as a key, never as a query), so no causal triangle.

Item table: rows ``0`` (padding), ``1..num_items`` (items), the augmenter's
``extra_rows`` (e.g. CL4SRec's own mask token), then one more row that is this
encoder's ``[mask]`` token: ``mask_token = num_items + 1 + extra_rows``, the
last row. Every loss and the evaluation score rows ``1..num_items`` only, so
neither ``[mask]`` nor the augmenter's rows are ever ranked. The table is tied:
it is both the input embedding and the output layer.

Positions are slot ids, as SASRec's default: column ``j`` of a ``(B, W)``
window is slot ``T - W + j``, so trimming all-padding leading columns is exact,
and the last slot (where the ``[mask]`` query sits, in training and at
inference) is always position ``T - 1``.

:meth:`BERT4Rec.encode` — evaluation, and the views of augmenters that
re-encode sequences — appends ``[mask]`` after the history (the window moves
left by one slot; a full window drops its oldest item) and returns the
(head-transformed) output at that slot: BERT4Rec's next-item query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqcl.errors import ConfigError
from seqcl.interfaces import BuildContext, Encoder
from seqcl_sasrec.encoder import (BUCKET_BOUNDS, Dropout, PackedLayout, TransformerBlock, additive_mask,
                                  gather_rows, packed_layout, validate_transformer)

#: augmenters whose views do not come from :meth:`BERT4Rec.encode`, with the reason (see the package doc)
INCOMPATIBLE_AUGMENTERS = {
    "aclsrec": "aclsrec perturbs the main pass's H_in and contrasts H[:, -1], the output at the last "
               "history item; BERT4Rec's user representation is the output at an appended [mask] slot, "
               "which the main pass does not have (the cloze objective runs its own masked pass)",
}
#: DuoRec modes whose view ``h`` is the main pass's ``H[:, -1]`` (same reason as aclsrec)
MAIN_PASS_DUOREC_MODES = ("unsupervised", "supervised")


@dataclass
class BERT4RecOptions:
    """BERT4Rec hyperparameters; defaults are the official Beauty configuration
    (FeiSun/BERT4Rec ``bert_config_beauty_64.json``; RecBole uses dropout 0.2 for both).

    ``output_head``: the official output transform (Dense → GELU → LayerNorm) applied
    to an output before it is scored against the item table; off, outputs are
    scored directly (current RecBole). The official per-item output bias is
    left out: scores must stay ``h · E_i`` (the evaluation and the views use
    (B, d) representations).
    """

    hidden_size: int = 64
    layers: int = 2
    heads: int = 2
    inner_size: int = 256
    dropout: float = 0.5
    attn_dropout: float = 0.2
    layer_norm_eps: float = 1e-12
    init_std: float = 0.02
    output_head: bool = True

    def validate(self) -> None:
        validate_transformer(self, "bert4rec")


class OutputHead(nn.Module):
    """Official BERT4Rec output transform: Dense → GELU → LayerNorm."""

    def __init__(self, d: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d, d)
        self.ln = nn.LayerNorm(d, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.ln(F.gelu(self.dense(x)))


class BERT4Rec(Encoder):
    """Bidirectional Transformer encoder; the user representation is the output at an appended ``[mask]``.

    ``layout_mode``: ``auto`` runs the two hot passes — the cloze objective's
    (:meth:`outputs_at`) and :meth:`encode` — on SASRec's packed layout on the
    CPU (active tokens only, attention per length bucket, bidirectional masks;
    :mod:`seqcl_sasrec.packing`) and padded elsewhere; ``padded`` is the
    reference. Same outputs either way (tested), so it is not a config option;
    :meth:`contextualize` (every slot of ``H``) is always padded.
    """

    default_objective = "cloze"
    layout_mode = "auto"

    def __init__(self, opt: BERT4RecOptions, ctx: BuildContext) -> None:
        super().__init__()
        self.hidden_size = opt.hidden_size
        self.max_len = ctx.max_len
        self.num_items = ctx.num_items
        rows = ctx.num_items + 1 + ctx.extra_rows + 1
        self.mask_token = rows - 1  # the last row: after the items and the augmenter's extra rows
        self.item_embedding = nn.Embedding(rows, opt.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(ctx.max_len, opt.hidden_size)
        self.ln = nn.LayerNorm(opt.hidden_size, eps=opt.layer_norm_eps)
        self.dropout = Dropout(opt.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(opt) for _ in range(opt.layers))  # type: ignore[arg-type]
        self.head = OutputHead(opt.hidden_size, opt.layer_norm_eps) if opt.output_head else nn.Identity()
        self._init_weights(opt.init_std)

    def _init_weights(self, std: float) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    # -------------------------------------------------------------- resolve-time checks

    @classmethod
    def check_augmenter(cls, augmenter: str, options: Any = None) -> None:
        """Raise ConfigError for an augmenter whose views are not BERT4Rec's user representation.

        ``options`` (optional) are the augmenter's options: DuoRec's ``dropout`` is
        refused only in the modes that contrast the main pass's ``H[:, -1]``.
        """
        reason = INCOMPATIBLE_AUGMENTERS.get(augmenter)
        if reason is None and augmenter == "dropout" and getattr(options, "mode", None) in MAIN_PASS_DUOREC_MODES:
            reason = (f"dropout mode {options.mode} contrasts the main pass's H[:, -1], not BERT4Rec's "
                      f"[mask] output; use dropout.mode=duorec (its views are re-encoded)")
        if reason is not None:
            raise ConfigError(f"encoder bert4rec cannot use augmenter {augmenter}: {reason}")

    def request_full_width(self) -> None:
        """Every pass on the padded layout, as SASRec's: ``contextualize`` always computes every slot
        of ``H``, and the layout without host-side shape work is the one a traced export needs."""
        self.layout_mode = "padded"

    # -------------------------------------------------------------- stages

    def position_ids(self, items: Tensor) -> Tensor:
        """(B, W) → (B, W) slot ids ``T - W + j``: a trimmed window keeps its slots."""
        w = items.shape[1]
        if w > self.max_len:
            raise ValueError(f"window of width {w} is longer than max_len {self.max_len}")
        return (torch.arange(w, device=items.device) + (self.max_len - w)).expand_as(items)

    def embed(self, items: Tensor) -> Tensor:
        h = self.item_embedding(items) + self.position_embedding(self.position_ids(items))
        return self.dropout(self.ln(h))

    @staticmethod
    def attention_mask(items: Tensor) -> Tensor:
        """(B, W) → (B, 1, W, W) additive mask: bidirectional, padding masked as keys."""
        w = items.shape[1]
        allowed = (items > 0).unsqueeze(1).expand(-1, w, -1)  # (B, query, key)
        return additive_mask(allowed, torch.float32).unsqueeze(1)

    def contextualize(self, h_in: Tensor, items: Tensor) -> Tensor:
        mask = self.attention_mask(items).to(h_in.dtype)
        x = h_in
        for block in self.blocks:
            x = block(x, mask)
        return x

    def item_table(self) -> Tensor:
        return self.item_embedding.weight

    # -------------------------------------------------------------- BERT4Rec queries

    def project(self, h: Tensor) -> Tensor:
        """Transformer outputs (..., d) → the representations that are scored (the output head)."""
        return self.head(h)

    def with_mask_query(self, items: Tensor) -> Tensor:
        """(B, W) history → (B, min(W + 1, T)): the history moved left by one slot, ``[mask]`` last.

        A window narrower than T grows by one column instead of dropping its first
        (in the full-width picture that column is padding), so trimming stays exact.
        """
        query = torch.full_like(items[:, :1], self.mask_token)
        return torch.cat([items, query], dim=1)[:, -self.max_len:]

    def encode(self, items: Tensor) -> Tensor:
        """(B, W) history → (B, d): the output at the ``[mask]`` appended after the history."""
        x = self.with_mask_query(items)
        if not self.packs(x):
            return self.project(self.contextualize(self.embed(x), x)[:, -1])
        layout = self.layout(x)
        h = self._embed_packed(x, layout)
        for block in self.blocks[:-1]:
            h = block.packed(h, layout)
        return self.project(layout.unsort(self.blocks[-1].packed_last(h, layout)))

    def outputs_at(self, items: Tensor, where: Tensor) -> Tensor:
        """(B, W) items (``[mask]`` where to predict), (B, W) bool → (M, d) scored representations,
        M = ``where.sum()``, in row-major order of ``where`` (the cloze objective's pass).
        ``where`` must mark real (non-padding) slots when packed: only those are computed."""
        if not self.packs(items):
            hidden = self.contextualize(self.embed(items), items)
            return self.project(hidden[where])
        layout = self.layout(items)
        h = self._embed_packed(items, layout)
        for block in self.blocks:
            h = block.packed(h, layout)
        slot_to_token = torch.full((items.numel(),), -1, dtype=torch.long, device=items.device)
        slot_to_token[layout.index] = torch.arange(layout.n, device=items.device)
        tokens = slot_to_token[where.reshape(-1)]  # row-major order of where
        if bool((tokens < 0).any()):
            raise ValueError("outputs_at: a slot to predict is leading padding, which the packed layout skips")
        return self.project(gather_rows(h, tokens))

    # -------------------------------------------------------------- packed layout

    def packs(self, items: Tensor) -> bool:
        """Whether ``items`` goes through the packed layout (see the class doc)."""
        if self.layout_mode == "padded":
            return False
        return self.layout_mode == "packed" or items.device.type == "cpu"

    def layout(self, items: Tensor) -> PackedLayout:
        return packed_layout(items, self.ln.weight.dtype, BUCKET_BOUNDS, causal=False)

    def _embed_packed(self, items: Tensor, layout: PackedLayout) -> Tensor:
        """H_in of the active tokens only, (n, d), each with its slot's position id."""
        flat = items.reshape(-1)[layout.index]
        positions = self.position_ids(items).reshape(-1)[layout.index]
        return self.dropout(self.ln(self.item_embedding(flat) + self.position_embedding(positions)))
