"""GRU4Rec encoder: item embedding → dropout → GRU → Linear, as RecBole's GRU4Rec.

Padding
-------
Windows are left-padded (the most recent item in the last column). A GRU run
over the full window would read the padding first, and its state after the
padding would depend on how much padding there is. So the GRU never sees a
padding slot. Each row's *active* slots (those from its first real item on;
with left padding, exactly its real items) are laid out as a
:class:`torch.nn.utils.rnn.PackedSequence` straight from the left-padded
tensor (:func:`pack_layout`), so the GRU runs over each row's own items from
the zero initial state, just as a GRU over that sequence alone would. Packing
is also the faster layout: the recurrence costs the number of real tokens,
not B·W (on Beauty a batch is mostly padding).

* ``contextualize`` returns (B, W, d): at an active slot the dense layer applied
  to the GRU output there. At a leading padding slot it is the dense layer
  applied to the initial state 0 (= ``dense.bias``): "what the GRU reads
  before any item". No padding input (not even a perturbed one) reaches an
  active slot.
* ``encode`` embeds only the active tokens and reads the GRU's final state
  ``h_n``, which is the output at each row's last slot, without unpacking.

A row with no real item keeps its last slot (so every row has a state); its
output is finite and meaningless. The lengths are computed on the host, so on
CUDA every call syncs once (cuDNN runs packed sequences natively).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from seqcl.errors import ConfigError
from seqcl.interfaces import BuildContext, Encoder


@dataclass
class GRU4RecOptions:
    """GRU4Rec hyperparameters; the defaults are RecBole's ``GRU4Rec.yaml``.

    ``hidden_size`` is d: the width of the item embeddings, the user
    representation and every view (RecBole's ``embedding_size``, 64).
    ``gru_size`` is the width of the GRU state (RecBole's ``hidden_size``, 128);
    a dense layer maps it back to d, so scores are dot products with the item
    embeddings. ``num_layers`` stacked GRU layers (no dropout between them, as
    RecBole). ``dropout`` is applied to the item embeddings (RecBole's ``dropout``).
    """

    hidden_size: int = 64
    gru_size: int = 128
    num_layers: int = 1
    dropout: float = 0.3

    def validate(self) -> None:
        for name in ("hidden_size", "gru_size", "num_layers"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"gru4rec.{name} must be >= 1, got {value}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"gru4rec.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class PackLayout:
    """Where the active tokens of a (B, W) left-padded window sit in a ``PackedSequence``.

    ``index`` (n,): packed token → flat window position ``row·W + column``
    (time-major, rows by decreasing length, as ``PackedSequence.data``).
    ``batch_sizes`` (CPU), ``sorted_indices``, ``unsorted_indices``: as in
    ``PackedSequence``. ``lengths`` (B,): active tokens per row.
    """

    shape: tuple[int, int]
    index: Tensor
    batch_sizes: Tensor
    sorted_indices: Tensor
    unsorted_indices: Tensor
    lengths: Tensor

    def pack(self, data: Tensor) -> PackedSequence:
        """(n, k) token features in packed order → the ``PackedSequence`` the GRU takes."""
        return PackedSequence(data, self.batch_sizes, self.sorted_indices, self.unsorted_indices)

    def gather(self, dense: Tensor) -> Tensor:
        """(B, W, k) → (n, k), the active tokens in packed order."""
        return dense.reshape(-1, dense.shape[-1]).index_select(0, self.index)


def pack_layout(items: Tensor) -> PackLayout:
    """The packed layout of left-padded ``items`` (B, W); a few vectorised ops on the host.

    A row's active tokens are its slots from its first real item on; a row with
    no real item keeps its last slot.
    """
    b, w = items.shape
    cpu = items.detach().to("cpu")
    active = (cpu > 0).cummax(dim=1).values
    active[:, -1] = True
    lengths = active.sum(dim=1)
    order = torch.argsort(lengths, descending=True, stable=True)
    sorted_len = lengths[order]
    steps = torch.arange(int(sorted_len[0]))
    valid = steps.unsqueeze(1) < sorted_len.unsqueeze(0)  # (steps, B): time-major, like PackedSequence.data
    t, i = valid.nonzero(as_tuple=True)
    index = order[i] * w + (w - sorted_len[i]) + t
    unsorted = torch.empty_like(order)
    unsorted[order] = torch.arange(b)
    dev = items.device
    return PackLayout((b, w), index.to(dev), valid.sum(dim=1), order.to(dev), unsorted.to(dev), lengths.to(dev))


class GRU4Rec(Encoder):
    """GRU4Rec (Hidasi et al., ICLR 2016) as RecBole and the CL papers use it; see the module doc.

    ``embed``: item embedding + dropout (H_in). ``contextualize``: GRU over each
    row's real items + dense layer (H). ``encode``: H at the last slot.
    ``item_table``: the embedding weight (scores are dot products with it).

    Init (RecBole's ``_init_weights``): embeddings ``xavier_normal_``, GRU weight
    matrices ``xavier_uniform_`` (RecBole reaches layer 0 only; here every layer),
    dense layer PyTorch's default; the GRU has no biases (``bias=False``, as
    RecBole). Unlike RecBole the padding row 0 is zeroed after init (it is never
    fed to the GRU nor scored). Weights are drawn from ``ctx.seed`` alone.
    """

    def __init__(self, opt: GRU4RecOptions, ctx: BuildContext) -> None:
        super().__init__()
        self.hidden_size = opt.hidden_size
        rows = ctx.num_items + 1 + ctx.extra_rows
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            self.item_embedding = nn.Embedding(rows, opt.hidden_size, padding_idx=0)
            self.dropout = nn.Dropout(opt.dropout)
            self.gru = nn.GRU(opt.hidden_size, opt.gru_size, num_layers=opt.num_layers, bias=False,
                              batch_first=True)
            self.dense = nn.Linear(opt.gru_size, opt.hidden_size)
            nn.init.xavier_normal_(self.item_embedding.weight)
            for name, weight in self.gru.named_parameters():
                if name.startswith("weight_"):
                    nn.init.xavier_uniform_(weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def embed(self, items: Tensor) -> Tensor:
        return self.dropout(self.item_embedding(items))

    def embed_without_dropout(self, items: Tensor) -> Tensor:
        return self.item_embedding(items)

    def embedding_dropout(self, x: Tensor) -> Tensor:
        return self.dropout(x)

    def contextualize(self, h_in: Tensor, items: Tensor) -> Tensor:
        layout = pack_layout(items)
        out, _ = self.gru(layout.pack(layout.gather(h_in)))
        y = self.dense(out.data)  # (n, d)
        b, w = layout.shape
        before_any_item = self.dense.bias.to(y.dtype).unsqueeze(0).expand(b * w, -1)  # dense(h_0 = 0)
        return before_any_item.index_copy(0, layout.index, y).view(b, w, -1)

    def encode(self, items: Tensor) -> Tensor:
        """(B, W) → (B, d): embeds the active tokens only and reads the GRU's final state."""
        layout = pack_layout(items)
        tokens = items.reshape(-1).index_select(0, layout.index)
        _, h_n = self.gru(layout.pack(self.dropout(self.item_embedding(tokens))))
        return self.dense(h_n[-1])  # h_n is in the original row order

    def item_table(self) -> Tensor:
        return self.item_embedding.weight
