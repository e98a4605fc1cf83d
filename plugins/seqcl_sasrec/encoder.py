"""SASRec encoder (SPEC §2): item + slot-position embedding, post-LN Transformer blocks.

Two layouts compute the same outputs for every slot a caller can read:

* **padded** (the reference): every column of the (B, W) window goes through
  every layer; attention is one (B, heads, W, W) product with an additive mask.
* **packed** (the default on CPU): the per-token layers — embedding LayerNorm
  and dropout, QKV and output projections, feed-forward, the block LayerNorms —
  run on the *active* tokens only (a slot is active when its row has a real item
  at or before it; for left-padded rows these are exactly the real items), each
  keeping its slot position id. Attention runs per **length bucket**: rows are
  sorted by length and cut into buckets of similar length; each bucket is laid
  out (b, w, ·) with ``w`` its longest row, so attention costs Σ b·w² instead of
  B·W² (about 9× less on Beauty, where a batch of mean length 8.4 is 50 wide).
  Exact for every active slot, because a slot that is inactive (leading
  padding) is masked as a key and so never feeds an active one. Inactive slots
  of the returned (B, W, d) tensors are 0.

  :meth:`SASRec.encode` (evaluation, CL4SRec's and DuoRec's views, and the
  core's main pass when no augmenter reads more than the last slot) and
  :meth:`SASRec.contextualize_last` (ACLSRec's main and perturbed passes, its
  per-token ``MLP_p`` applied to the packed tokens) also run the last layer's
  attention, projection and feed-forward for the last slot only.

The packed layout needs the row lengths on the host; on CUDA that would be a
device sync per call, so ``layout: auto`` packs on CPU and keeps the padded layout
(one SDPA kernel per layer) on other devices. An augmenter that reads every
slot of ``H_in``/``H`` — ACLSRec's ``sequence`` scope, whose MLP mixes slots —
sets ``full_width``, and the core then turns packing off (``request_full_width``).

The packed layout and the bucketed attention are :mod:`seqcl_sasrec.packing`;
the attention kernels both layouts share are :mod:`seqcl_sasrec.attention`
(their names are re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from seqcl.errors import ConfigError
from seqcl.interfaces import BuildContext, Encoder

from .attention import MASK_VALUE, Dropout, additive_mask, attention, dropout
from .packing import (BUCKET_BOUNDS, Bucket, PackedLayout, gather_rows, packed_attention, packed_last_attention,
                      packed_layout, scatter_rows)

__all__ = ["MASK_VALUE", "BUCKET_BOUNDS", "Bucket", "Dropout", "PackedLayout", "SASRec", "SASRecOptions",
           "TransformerBlock", "additive_mask", "attention", "dropout", "gather_rows", "packed_attention",
           "packed_last_attention", "packed_layout", "scatter_rows"]


@dataclass
class SASRecOptions:
    """SASRec hyperparameters; defaults are SPEC §2's (RecBole's SASRec).

    ``layout``: ``auto`` (packed on CPU, padded elsewhere), ``packed``, or
    ``padded`` (the reference). Same outputs either way; see the module doc.
    """

    hidden_size: int = 64
    layers: int = 2
    heads: int = 2
    inner_size: int = 256
    dropout: float = 0.5
    attn_dropout: float = 0.5
    layer_norm_eps: float = 1e-12
    init_std: float = 0.02
    positions: Literal["slot", "from_oldest"] = "slot"
    layout: Literal["auto", "packed", "padded"] = "auto"

    def validate(self) -> None:
        validate_transformer(self, "sasrec")


def validate_transformer(opt: Any, section: str) -> None:
    """Sizes ≥ 1, d divisible by the heads, dropouts in [0, 1), init std > 0 (shared with BERT4Rec)."""
    for name in ("hidden_size", "layers", "heads", "inner_size"):
        if getattr(opt, name) < 1:
            raise ConfigError(f"{section}.{name} must be >= 1, got {getattr(opt, name)}")
    if opt.hidden_size % opt.heads:
        raise ConfigError(
            f"{section}.hidden_size ({opt.hidden_size}) must be divisible by {section}.heads ({opt.heads})"
        )
    for name in ("dropout", "attn_dropout"):
        if not 0.0 <= getattr(opt, name) < 1.0:
            raise ConfigError(f"{section}.{name} must be in [0, 1), got {getattr(opt, name)}")
    if opt.init_std <= 0:
        raise ConfigError(f"{section}.init_std must be > 0, got {opt.init_std}")


def _version(t: Tensor) -> int | None:
    """In-place version counter of ``t``; None for inference tensors (they have none)."""
    try:
        return t._version
    except RuntimeError:
        return None


class TransformerBlock(nn.Module):
    """RecBole's post-LN block: attn → dropout → residual → LN, FFN → dropout → residual → LN."""

    def __init__(self, opt: SASRecOptions) -> None:
        super().__init__()
        d = opt.hidden_size
        self.heads = opt.heads
        self.attn_dropout = opt.attn_dropout
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ln1 = nn.LayerNorm(d, eps=opt.layer_norm_eps)
        self.ff1 = nn.Linear(d, opt.inner_size)
        self.ff2 = nn.Linear(opt.inner_size, d)
        self.ln2 = nn.LayerNorm(d, eps=opt.layer_norm_eps)
        self.dropout = Dropout(opt.dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Padded layout: x (B, T, d), mask (B, 1, T, T) additive → (B, T, d)."""
        q, k, v = rearrange(self.qkv(x), "b t (three h e) -> three b h t e", three=3, h=self.heads)
        a = attention(q, k, v, mask, self.attn_dropout, self.training)
        return self._rest(x, rearrange(a, "b h t e -> b t (h e)"))

    def packed(self, x: Tensor, layout: PackedLayout) -> Tensor:
        """Packed layout: x (n, d) → (n, d)."""
        a = packed_attention(self.qkv(x), layout, self.heads, self.attn_dropout, self.training)
        return self._rest(x, a)

    def packed_last(self, x: Tensor, layout: PackedLayout) -> Tensor:
        """Packed layout, last token of each row only: x (n, d) → (B, d), sorted rows.
        Keys and values for every token, the query for the last tokens only (rows of ``qkv``)."""
        d = x.shape[-1]
        last = gather_rows(x, layout.last)
        q = F.linear(last, self.qkv.weight[:d], self.qkv.bias[:d])
        kv = F.linear(x, self.qkv.weight[d:], self.qkv.bias[d:])
        return self._rest(last, packed_last_attention(q, kv, layout, self.heads, self.attn_dropout, self.training))

    def _rest(self, x: Tensor, a: Tensor) -> Tensor:
        """Everything after attention (per token): projection, residuals, LayerNorms, feed-forward."""
        x = self.ln1(x + self.dropout(self.out(a)))
        return self.ln2(x + self.dropout(self.ff2(F.gelu(self.ff1(x)))))


class SASRec(Encoder):
    """Self-attentive sequential encoder; ``h = H^L[T-1]`` is the user representation.

    ``dense_layout`` (set through :meth:`request_full_width` when the augmenter
    reads every slot) forces the padded layout, whose inactive slots hold the
    reference values.
    """

    def __init__(self, opt: SASRecOptions, ctx: BuildContext) -> None:
        super().__init__()
        self.hidden_size = opt.hidden_size
        self.max_len = ctx.max_len
        self.positions = opt.positions
        self.layout_mode = opt.layout
        self.dense_layout = False
        self.bucket_bounds = BUCKET_BOUNDS
        rows = ctx.num_items + 1 + ctx.extra_rows
        self.item_embedding = nn.Embedding(rows, opt.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(ctx.max_len, opt.hidden_size)
        self.ln = nn.LayerNorm(opt.hidden_size, eps=opt.layer_norm_eps)
        self.dropout = Dropout(opt.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(opt) for _ in range(opt.layers))
        self._init_weights(opt.init_std)
        self._cached: tuple[Tensor, int, PackedLayout, bool] | None = None

    def _init_weights(self, std: float) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def request_full_width(self) -> None:
        self.dense_layout = True  # packing would leave padding slots of H unset

    # -------------------------------------------------------------- layout

    def packs(self, items: Tensor) -> bool:
        """Whether ``items`` goes through the packed layout."""
        if self.dense_layout or self.layout_mode == "padded":
            return False
        return self.layout_mode == "packed" or items.device.type == "cpu"

    @property
    def causal(self) -> bool:
        """Whether a query sees only earlier keys (SASRec: always; a subclass may attend both ways)."""
        return True

    def layout(self, items: Tensor, dtype: torch.dtype = torch.float32) -> PackedLayout:
        """The packed layout of ``items``; reused while the same, unmodified tensor comes back
        (ACLSRec contextualizes one batch twice; embed and contextualize share it)."""
        version = _version(items)
        causal = self.causal
        c = self._cached
        if c is not None and c[0] is items and version is not None and c[1] == version \
                and c[2].buckets[0].mask.dtype == dtype and c[3] == causal:
            return c[2]
        layout = packed_layout(items, dtype, self.bucket_bounds, causal=causal)
        self._cached = (items, version, layout, causal) if version is not None else None
        return layout

    def position_ids(self, items: Tensor) -> Tensor:
        """(B, T) → (B, T) position ids: the slot, or counted from the oldest kept item."""
        t = items.shape[1]
        slots = torch.arange(t, device=items.device).expand_as(items)
        if self.positions == "slot":
            return slots + (self.max_len - t)  # a trimmed window keeps its slot ids
        padding = (items == 0).sum(dim=1, keepdim=True)
        return (slots - padding).clamp(min=0)

    # -------------------------------------------------------------- stages

    def _embed_tokens(self, items: Tensor, positions: Tensor) -> Tensor:
        return self.dropout(self.ln(self.item_embedding(items) + self.position_embedding(positions)))

    def _embed_packed(self, items: Tensor, layout: PackedLayout) -> Tensor:
        """H_in of the active tokens only, (n, d), each with its slot's position id."""
        flat = items.reshape(-1)
        return self._embed_tokens(flat[layout.index], self.position_ids(items).reshape(-1)[layout.index])

    def embed_without_dropout(self, items: Tensor) -> Tensor:
        """(B, T) → LN(item + position), (B, T, d), every slot (the padded layout's values)."""
        return self.ln(self.item_embedding(items) + self.position_embedding(self.position_ids(items)))

    def embedding_dropout(self, x: Tensor) -> Tensor:
        return self.dropout(x)

    def embed(self, items: Tensor) -> Tensor:
        if not self.packs(items):
            return self._embed_tokens(items, self.position_ids(items))
        layout = self.layout(items, self.ln.weight.dtype)
        packed = self._embed_packed(items, layout)
        dense = layout.scatter(packed)
        version = _version(dense)
        if version is not None:  # kept on the tensor itself: it lives exactly as long as H_in
            dense._seqcl_packed = (version, layout, packed)  # type: ignore[attr-defined]
        return dense

    @staticmethod
    def _pack(h_in: Tensor, layout: PackedLayout) -> Tensor:
        """``layout.pack(h_in)``; for an unmodified H_in from :meth:`embed` of the same items (same
        layout), its packed tokens themselves (pack ∘ scatter is the identity): no (B, W, d) gradient."""
        kept = getattr(h_in, "_seqcl_packed", None)
        if kept is not None and kept[0] == _version(h_in) and kept[1] is layout:
            return kept[2]
        return layout.pack(h_in)

    def attention_mask(self, items: Tensor) -> Tensor:
        """(B, T) → (B, 1, T, T) additive mask: causal, padding masked as keys."""
        t = items.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=items.device).tril()
        allowed = causal & (items > 0).unsqueeze(1)  # (B, T_query, T_key)
        return additive_mask(allowed, torch.float32).unsqueeze(1)

    def contextualize(self, h_in: Tensor, items: Tensor) -> Tensor:
        if not self.packs(items):
            return self._dense(h_in, items)
        layout = self.layout(items, h_in.dtype)
        x = self._pack(h_in, layout)
        for block in self.blocks:
            x = block.packed(x, layout)
        return layout.scatter(x)

    def contextualize_last(self, h_in: Tensor, items: Tensor,
                           token_map: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """(B, W, d) → (B, d), the last slot; packed, ``token_map`` runs on the active tokens
        only and the last layer for the last slot only."""
        if not self.packs(items):
            return super().contextualize_last(h_in, items, token_map)
        layout = self.layout(items, h_in.dtype)
        x = self._pack(h_in, layout)
        return self._last_slot(x if token_map is None else token_map(x), layout)

    def encode(self, items: Tensor) -> Tensor:
        """(B, W) → (B, d), the last slot; packed, the last layer runs for the last slot only."""
        if not self.packs(items):
            return self._dense(self.embed(items), items)[:, -1]
        layout = self.layout(items, self.ln.weight.dtype)
        return self._last_slot(self._embed_packed(items, layout), layout)

    def _last_slot(self, x: Tensor, layout: PackedLayout) -> Tensor:
        """Packed H_in (n, d) → (B, d): all blocks, the last one for each row's last token only."""
        for block in self.blocks[:-1]:
            x = block.packed(x, layout)
        return layout.unsort(self.blocks[-1].packed_last(x, layout))

    def contextualize_padded(self, h_in: Tensor, items: Tensor) -> Tensor:
        """(B, T, d) → (B, T, d) on the padded layout whatever ``layout`` says: every slot computed."""
        return self._dense(h_in, items)

    def _dense(self, h_in: Tensor, items: Tensor) -> Tensor:
        mask = self.attention_mask(items).to(h_in.dtype)
        x = h_in
        for block in self.blocks:
            x = block(x, mask)
        return x

    def item_table(self) -> Tensor:
        return self.item_embedding.weight
