"""Shipped plugin: S3Rec-MIP (Zhou et al., CIKM 2020) — encoder ``s3rec`` and objective ``mip``.

``seqcl train --encoder s3rec`` trains two stages (the encoder's
``default_stages``, :mod:`seqcl.stages`):

1. ``pretrain`` — objective ``mip`` (masked item prediction, :mod:`.objective`)
   with bidirectional attention, 150 epochs, batch 100, no early stopping;
   hands the last epoch's encoder on (S3Rec fine-tunes a fixed pre-training
   checkpoint; the released Beauty one is epoch 150, ``run_pretrain.py``'s
   default 300);
2. ``finetune`` — the whole encoder as a causal SASRec, objective ``ce``,
   the run's batch size, early stopping on validation.

Only MIP: S3Rec's three other pre-training losses (AAP, MAP, SP) need item
attributes or segments and are 0 in S3Rec-MIP. Fine-tuning uses seqcl's
``ce`` like every other method of the comparison; the official fine-tuning
trains SASRec's per-position BCE with one negative (``objective: bce`` in the
finetune stage is the closest seqcl objective, last position only). Other
departures from the code: see :mod:`.objective`.

On Beauty, MIP-only pre-training is a worse start for fine-tuning than a random
one, while the official full-S3Rec checkpoint is a better one
(docs/results.md §5, "Why S3Rec-MIP fine-tunes slowly").
"""

from __future__ import annotations

from seqcl.hookspecs import hookimpl

from .encoder import DEFAULT_STAGES, S3Rec, S3RecOptions
from .formulas import mip_loss
from .objective import MIPObjective, MIPOptions, draw_masked

__all__ = ["DEFAULT_STAGES", "MIPObjective", "MIPOptions", "S3Rec", "S3RecOptions", "draw_masked", "mip_loss"]


@hookimpl
def register_encoders(register):
    register("s3rec", S3Rec, "S3Rec: SASRec + [mask] row, bidirectional for pre-training; trains in two stages "
             "(mip pre-training, then fine-tuning)", options=S3RecOptions)


@hookimpl
def register_objectives(register):
    register("mip", MIPObjective, "S3Rec masked item prediction (bidirectional encoder, one negative per "
             "masked item)", options=MIPOptions)
