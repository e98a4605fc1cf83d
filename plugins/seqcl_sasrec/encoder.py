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

  :meth:`SASRec.encode` (evaluation, CL4SRec, DuoRec, and the core's step when
  no loss term reads ``hidden``) also runs the last layer's attention,
  projection and feed-forward for the last slot only.

The packed layout needs the row lengths on the host; on CUDA that would be a
device sync per call, so ``layout: auto`` packs on CPU and keeps the padded layout
(one SDPA kernel per layer) on other devices. An augmenter that reads every
slot of ``H_in``/``H`` — ACLSRec's ``sequence`` scope, whose MLP mixes slots —
sets ``full_width``, and the core then turns packing off (``request_full_width``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from seqcl.errors import ConfigError
from seqcl.interfaces import BuildContext, Encoder

#: additive mask for forbidden keys: finite, so a fully masked (padding) query row
#: gets a finite uniform softmax instead of NaN, and exp() of it underflows to an
#: exact 0 in every row that has at least one allowed key.
MASK_VALUE = -1e9

#: upper bounds of the attention buckets' row lengths (the last bucket takes the rest).
#: Geometric: a row is at most 2× shorter than its bucket's width.
BUCKET_BOUNDS = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


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
        for name in ("hidden_size", "layers", "heads", "inner_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"sasrec.{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.heads:
            raise ConfigError(
                f"sasrec.hidden_size ({self.hidden_size}) must be divisible by sasrec.heads ({self.heads})"
            )
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"sasrec.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.init_std <= 0:
            raise ConfigError(f"sasrec.init_std must be > 0, got {self.init_std}")


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout from a uniform draw.

    Same distribution as ``F.dropout``, but on CPU ``torch.rand`` + compare is
    about 2.5× faster than the ``bernoulli_`` kernel ``F.dropout`` uses, and
    dropout was a third of a SASRec training step's time. On other devices it is
    ``F.dropout`` (a fused kernel there).
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    keep = (torch.rand_like(x) >= p).to(x.dtype)
    return x * keep.mul_(1.0 / (1.0 - p))


class Dropout(nn.Module):
    """:func:`dropout` as a module."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, p: float, training: bool) -> Tensor:
    """softmax(q kᵀ/√e + mask) v with dropout p on the probabilities; (B, h, T, e) each.

    Without dropout this is ``scaled_dot_product_attention``; with dropout on
    CPU the explicit form is faster (SDPA falls back to its math path and draws
    the mask with ``bernoulli_``). Off CPU, SDPA with ``dropout_p``.
    """
    if not training or p == 0.0:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5) + mask
    return torch.matmul(dropout(torch.softmax(scores, dim=-1), p, True), v)


def additive_mask(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """bool → 0 where allowed, :data:`MASK_VALUE` elsewhere, in ``dtype``."""
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.full((), MASK_VALUE, dtype=dtype, device=allowed.device))


# ------------------------------------------------------------------ packed layout


class _Gather(torch.autograd.Function):
    """``x[index]`` (rows) for an injective ``index``; backward: zeros + ``index_copy_``.

    ``index_select``'s own backward is an ``index_add`` (a scatter-add, serial on
    CPU, a sixth of the step); with no repeated index a plain copy does."""

    @staticmethod
    def forward(ctx, x, index):  # type: ignore[override]
        ctx.save_for_backward(index)
        ctx.rows = x.shape[0]
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (index,) = ctx.saved_tensors
        return g.new_zeros((ctx.rows, *g.shape[1:])).index_copy_(0, index, g), None


class _Scatter(torch.autograd.Function):
    """Rows of ``x`` placed at ``index`` in ``rows`` zero rows; backward: a gather."""

    @staticmethod
    def forward(ctx, x, index, rows):  # type: ignore[override]
        ctx.save_for_backward(index)
        return x.new_zeros((rows, *x.shape[1:])).index_copy_(0, index, x)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (index,) = ctx.saved_tensors
        return g.index_select(0, index), None, None


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x[index]`` along dim 0; ``index`` must not repeat (packing, permuting)."""
    if x.requires_grad and torch.is_grad_enabled():
        return _Gather.apply(x, index)
    return x.index_select(0, index)


def scatter_rows(x: Tensor, index: Tensor, rows: int) -> Tensor:
    """``rows`` rows of zeros with row ``index[i]`` = ``x[i]``; ``index`` must not repeat."""
    if x.requires_grad and torch.is_grad_enabled():
        return _Scatter.apply(x, index, rows)
    return x.new_zeros((rows, *x.shape[1:])).index_copy_(0, index, x)


@dataclass
class Bucket:
    """``b`` consecutive rows of the sorted batch, of similar length, laid out (b, w) for
    attention, ``w`` the longest of them (shorter rows left-padded).

    ``offset``: where the bucket's b·w rows start in the bucket layout.
    ``mask``: (b, 1, w, w) additive: causal, padding masked as keys.
    """

    b: int
    w: int
    offset: int
    mask: Tensor


@dataclass
class PackedLayout:
    """Where the active tokens of a (B, W) window sit in the packed (n, d) tensors.

    Packed order: rows sorted by active length, each row's active tokens in slot
    order. Row maps (each injective, so both directions are a copy):

    * ``index`` (n,): packed token → flat window position ``row·W + column``;
    * ``from_buckets`` (n,): packed token → its row in the bucket layout
      (M = Σ b·w rows; the other rows are the leading padding of shorter rows);
    * ``last`` (B,): packed position of each sorted row's last token;
    * ``rows`` (B,): the original row of each sorted row; ``inverse`` (B,): the
      sorted position of each original row.
    """

    shape: tuple[int, int]
    index: Tensor
    from_buckets: Tensor
    bucket_rows: int
    last: Tensor
    rows: Tensor
    inverse: Tensor
    buckets: list[Bucket]

    @property
    def n(self) -> int:
        return int(self.index.numel())

    def pack(self, dense: Tensor) -> Tensor:
        """(B, W, d) → (n, d), the active tokens in packed order."""
        return gather_rows(dense.reshape(-1, dense.shape[-1]), self.index)

    def scatter(self, x: Tensor) -> Tensor:
        """(n, d) → (B, W, d); inactive slots 0."""
        b, w = self.shape
        return scatter_rows(x, self.index, b * w).view(b, w, x.shape[-1])

    def to_buckets(self, x: Tensor) -> Tensor:
        """(n, k) → (M, k), the bucket layout; padding rows 0."""
        return scatter_rows(x, self.from_buckets, self.bucket_rows)

    def from_bucket_layout(self, y: Tensor) -> Tensor:
        """(M, k) → (n, k)."""
        return gather_rows(y, self.from_buckets)

    def unsort(self, x: Tensor) -> Tensor:
        """(B, d) in sorted row order → original row order."""
        return gather_rows(x, self.inverse)


def packed_layout(items: Tensor, dtype: torch.dtype = torch.float32,
                  bounds: tuple[int, ...] = BUCKET_BOUNDS) -> PackedLayout:
    """The packed layout of ``items`` (B, W), computed on the CPU (vectorised: a few
    small kernels, plus a few per bucket) and moved to ``items``' device.

    A row's active tokens are its slots from its first real item on (for left
    padding: its real items; ICLRec-style interior padding stays active, as its
    query still sees earlier items). A row with no real item keeps its last slot,
    so every row has a last token (its output is then that of a fully masked
    query — finite, and meaningless in either layout).
    """
    b_all, w_all = items.shape
    cpu = items.detach().to("cpu")
    real = cpu > 0
    active = real.cummax(dim=1).values
    active[:, -1] = True
    lengths = active.sum(dim=1)
    rows = torch.argsort(lengths, stable=True)
    sorted_len = lengths[rows]
    inverse = torch.empty_like(rows)
    inverse[rows] = torch.arange(b_all)
    n = int(sorted_len.sum())
    first = torch.cumsum(sorted_len, 0) - sorted_len  # packed position of each sorted row's first token
    row_of = torch.repeat_interleave(torch.arange(b_all), sorted_len, output_size=n)
    index = rows[row_of] * w_all + (w_all - sorted_len[row_of]) + torch.arange(n) - first[row_of]
    last = first + sorted_len - 1

    # buckets: contiguous ranges of the sorted rows, cut where the bucket id changes;
    # each is laid out (b, w) with w its longest row, shorter rows left-padded
    bucket_id = torch.bucketize(sorted_len, torch.tensor(bounds, dtype=sorted_len.dtype))
    cuts = (torch.nonzero(bucket_id[1:] != bucket_id[:-1]).view(-1) + 1).tolist()
    edges = [0, *cuts, b_all]
    widths = sorted_len[torch.tensor(edges[1:]) - 1].tolist()
    row_width = torch.repeat_interleave(torch.tensor(widths), torch.tensor(edges[1:]) - torch.tensor(edges[:-1]))
    row_start = torch.cumsum(row_width, 0) - row_width  # bucket-layout offset of each sorted row
    # a row's tokens are the last sorted_len of its row_width columns in the bucket layout
    from_buckets = (row_start + row_width - sorted_len)[row_of] + torch.arange(n) - first[row_of]

    dev = items.device
    buckets = []
    for r0, r1, w in zip(edges[:-1], edges[1:], widths):
        keys = real[rows[r0:r1], w_all - w:]  # (b, w): which columns hold real items
        allowed = torch.ones(w, w, dtype=torch.bool).tril() & keys.unsqueeze(1)
        buckets.append(Bucket(b=r1 - r0, w=w, offset=int(row_start[r0]),
                              mask=additive_mask(allowed.to(dev), dtype).unsqueeze(1)))
    to = lambda t: t.to(dev)  # noqa: E731
    return PackedLayout((b_all, w_all), to(index), to(from_buckets), int(row_width.sum()), to(last), to(rows),
                        to(inverse), buckets)


def packed_attention(qkv: Tensor, layout: PackedLayout, heads: int, p: float, training: bool) -> Tensor:
    """Self-attention of the packed tokens, bucket by bucket: qkv (n, 3d) → (n, d)."""
    t = layout.to_buckets(qkv)  # (M, 3d)
    out = []
    for bk in layout.buckets:
        part = t[bk.offset:bk.offset + bk.b * bk.w]
        q, k, v = rearrange(part, "(b w) (three h e) -> three b h w e", b=bk.b, three=3, h=heads)
        out.append(rearrange(attention(q, k, v, bk.mask, p, training), "b h w e -> (b w) (h e)"))
    return layout.from_bucket_layout(torch.cat(out) if len(out) > 1 else out[0])


def packed_last_attention(qkv: Tensor, layout: PackedLayout, heads: int, p: float, training: bool) -> Tensor:
    """Attention output of each row's **last** token only: qkv (n, 3d) → (B, d), sorted rows."""
    t = layout.to_buckets(qkv)
    out = []
    for bk in layout.buckets:
        part = t[bk.offset:bk.offset + bk.b * bk.w]
        q, k, v = rearrange(part, "(b w) (three h e) -> three b h w e", b=bk.b, three=3, h=heads)
        a = attention(q[:, :, -1:], k, v, bk.mask[:, :, -1:], p, training)  # the last query row only
        out.append(rearrange(a, "b h 1 e -> b (h e)"))
    return torch.cat(out) if len(out) > 1 else out[0]


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
        """Packed layout, last token of each row only: x (n, d) → (B, d), sorted rows."""
        a = packed_last_attention(self.qkv(x), layout, self.heads, self.attn_dropout, self.training)
        return self._rest(gather_rows(x, layout.last), a)

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
        self._cached: tuple[Tensor, int, PackedLayout] | None = None

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

    def layout(self, items: Tensor, dtype: torch.dtype = torch.float32) -> PackedLayout:
        """The packed layout of ``items``; reused while the same, unmodified tensor comes back
        (ACLSRec contextualizes one batch twice; embed and contextualize share it)."""
        version = _version(items)
        c = self._cached
        if c is not None and c[0] is items and version is not None and c[1] == version \
                and c[2].buckets[0].mask.dtype == dtype:
            return c[2]
        layout = packed_layout(items, dtype, self.bucket_bounds)
        self._cached = (items, version, layout) if version is not None else None
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

    def embed(self, items: Tensor) -> Tensor:
        if not self.packs(items):
            return self._embed_tokens(items, self.position_ids(items))
        layout = self.layout(items, self.ln.weight.dtype)
        return layout.scatter(self._embed_packed(items, layout))

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
        x = layout.pack(h_in)
        for block in self.blocks:
            x = block.packed(x, layout)
        return layout.scatter(x)

    def encode(self, items: Tensor) -> Tensor:
        """(B, W) → (B, d), the last slot; packed, the last layer runs for the last slot only."""
        if not self.packs(items):
            return self._dense(self.embed(items), items)[:, -1]
        layout = self.layout(items, self.ln.weight.dtype)
        x = self._embed_packed(items, layout)
        for block in self.blocks[:-1]:
            x = block.packed(x, layout)
        return layout.unsort(self.blocks[-1].packed_last(x, layout))

    def _dense(self, h_in: Tensor, items: Tensor) -> Tensor:
        mask = self.attention_mask(items).to(h_in.dtype)
        x = h_in
        for block in self.blocks:
            x = block(x, mask)
        return x


    def item_table(self) -> Tensor:
        return self.item_embedding.weight
