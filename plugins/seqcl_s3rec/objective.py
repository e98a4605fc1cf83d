"""S3Rec's pre-training objective ``mip``: masked item prediction, one sampled negative per masked item.

Per training sample, as the official ``PretrainDataset`` and ``S3RecModel.pretrain``:

1. the sequence is the window with its target appended (a prefix of the
   user's training items, its last ``T``);
2. every position but the last is masked with probability ``mask_p`` (0.2),
   the last always; masked positions become the encoder's ``[mask]``;
3. each masked item gets a negative drawn uniformly from the items not in
   the sequence;
4. the encoder (bidirectional in the pre-training stage) runs on the masked
   sequence; :func:`.formulas.mip_loss` on ``W h + b`` (``W`` d × d, the
   objective's own ``mip_norm``) — a sum over the batch's masked positions.

Not followed: the code draws a negative with ``randint(1, item_size − 1)``,
which can return the ``[mask]`` id (here: real items only); its negatives are
independent per position (here: distinct within a row, via
:func:`seqcl_objectives.formulas.sample_negatives` — the same when the
catalogue is large); it also pre-trains on length-1 prefixes, which seqcl's
training samples (a window and its target) do not contain; and it scales the
loss by ``mip_weight`` 0.2, which Adam's step does not see (only its ε).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seqcl.errors import ConfigError, PluginError
from seqcl.interfaces import Batch, BuildContext, Encoder, Objective
from seqcl.rng import DeviceGenerators, OwnsGenerators
from seqcl_bert4rec.cloze import append_targets
from seqcl_objectives.formulas import sample_negatives

from .formulas import mip_loss

#: offset of the masking stream from the run's seed
SEED_OFFSET = 0x53EC


@dataclass
class MIPOptions:
    """``mask_p``: probability that a position other than the last is masked (S3Rec's 0.2)."""

    mask_p: float = 0.2

    def validate(self) -> None:
        if not 0.0 <= self.mask_p <= 1.0:
            raise ConfigError(f"mip.mask_p must be in [0, 1], got {self.mask_p}")


def draw_masked(seq: Tensor, mask_p: float, generator: torch.Generator, max_len: int) -> Tensor:
    """(B, L) sequences (last slot real) → (B, L) bool: real positions masked with ``mask_p``, the last always.

    Draws ``B·max_len`` uniforms whatever the width, so a trimmed batch masks what
    its full-width version would and the stream advances alike for every batch.
    """
    b, length = seq.shape
    keys = torch.rand(b, max_len, generator=generator, device=seq.device)[:, max_len - length:]
    chosen = (keys < mask_p) & (seq > 0)
    chosen[:, -1] = True
    return chosen


class MIPObjective(OwnsGenerators, Objective):
    """Masked item prediction with its own projection ``mip_norm``; its own encoder pass."""

    uses_main_pass = False

    def __init__(self, options: MIPOptions | None, ctx: BuildContext) -> None:
        super().__init__()
        options = options or MIPOptions()
        self.mask_p = float(options.mask_p)
        self.num_items, self.max_len = ctx.num_items, ctx.max_len
        self.mip_norm = nn.Linear(ctx.hidden_size, ctx.hidden_size)
        nn.init.normal_(self.mip_norm.weight, std=0.02)  # S3Rec's init_weights
        nn.init.zeros_(self.mip_norm.bias)
        self.generators = DeviceGenerators(int(ctx.seed) + SEED_OFFSET)

    def forward(self, encoder: Encoder, batch: Batch, h: Tensor | None = None) -> Tensor:
        if not hasattr(encoder, "mask_token"):
            raise PluginError(f"objective mip needs an encoder with a [mask] token (s3rec), "
                              f"got {type(encoder).__name__}")
        seq = append_targets(batch.items, batch.targets, self.max_len)
        generator = self.generator(seq.device)
        chosen = draw_masked(seq, self.mask_p, generator, self.max_len)
        negatives = sample_negatives(seq, batch.targets, self.num_items, seq.shape[1], generator)  # (B, L)
        inputs = seq.masked_fill(chosen, encoder.mask_token)
        hidden = encoder.contextualize(encoder.embed(inputs), inputs)  # (B, L, d)
        table = encoder.item_table()
        return mip_loss(self.mip_norm(hidden[chosen]), table[seq[chosen]], table[negatives[chosen]])
