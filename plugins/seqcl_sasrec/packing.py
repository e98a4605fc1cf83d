"""The packed layout of SASRec: active tokens only, attention per length bucket.

The per-token layers of a Transformer block run on the *active* tokens of a
(B, W) window (a slot is active when its row has a real item at or before it),
packed (n, d) in the order of :class:`PackedLayout`; attention runs per
**length bucket** (:class:`Bucket`): rows sorted by length and cut into buckets
of similar length, each laid out (b, w) with ``w`` its longest row, so
attention costs Σ b·w² instead of B·W². Exact for every active slot, because an
inactive slot (leading padding) is masked as a key and so never feeds an active
one. The model that uses it is :class:`seqcl_sasrec.encoder.SASRec`.

The row moves (pack, scatter, bucket layout, unsort) are injective, so their
backward is a copy (:func:`gather_rows`, :func:`scatter_rows`), not
``index_select``'s serial scatter-add.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from .attention import additive_mask, attention

#: upper bounds of the attention buckets' row lengths (the last bucket takes the rest).
#: Geometric: a row is at most 2× shorter than its bucket's width.
BUCKET_BOUNDS = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)



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
    ``mask``: (b, 1, w, w) additive: causal (unless the layout is not), padding masked as keys.
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
                  bounds: tuple[int, ...] = BUCKET_BOUNDS, causal: bool = True) -> PackedLayout:
    """The packed layout of ``items`` (B, W), computed on the CPU (vectorised: a few
    small kernels, plus a few per bucket) and moved to ``items``' device.

    ``causal=False``: the buckets' masks let every query see every real key, before
    and after it (BERT4Rec). Still exact on the active slots: the leading padding is
    masked as a key either way, so it never feeds an active slot.

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
        square = torch.ones(w, w, dtype=torch.bool)
        allowed = (square.tril() if causal else square) & keys.unsqueeze(1)
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


def packed_last_attention(q: Tensor, kv: Tensor, layout: PackedLayout, heads: int, p: float,
                          training: bool) -> Tensor:
    """Attention output of each row's **last** token only: q (B, d) of the last tokens in sorted row
    order, kv (n, 2d) of all packed tokens → (B, d), sorted rows."""
    t = layout.to_buckets(kv)
    out, row = [], 0
    for bk in layout.buckets:
        part = t[bk.offset:bk.offset + bk.b * bk.w]
        k, v = rearrange(part, "(b w) (two h e) -> two b h w e", b=bk.b, two=2, h=heads)
        q_last = rearrange(q[row:row + bk.b], "b (h e) -> b h 1 e", h=heads)
        a = attention(q_last, k, v, bk.mask[:, :, -1:], p, training)  # the last query row only
        out.append(rearrange(a, "b h 1 e -> b (h e)"))
        row += bk.b
    return torch.cat(out) if len(out) > 1 else out[0]
