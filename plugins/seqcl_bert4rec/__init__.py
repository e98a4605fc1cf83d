"""Shipped plugin: BERT4Rec (Sun et al., CIKM 2019) — the ``bert4rec`` encoder and its ``cloze`` objective.

* Encoder ``bert4rec`` (:mod:`.encoder`): bidirectional Transformer (SASRec's
  blocks, no causal mask, padding masked as keys), slot positions, a ``[mask]``
  item row of its own (the last row of the item table, never scored), the
  official output head. Its ``default_objective`` is ``cloze``.
* Objective ``cloze`` (:mod:`.cloze`): the target is appended as the last
  position; a sample masks either only that position (``cloze.last_only``,
  default 0.5) or ``round(cloze.mask_ratio · n)`` random positions (default
  0.2); all-item softmax CE over the masked positions.

Augmenters. BERT4Rec's user representation is the output at a ``[mask]``
appended after the history, which only :meth:`BERT4Rec.encode` computes; the
core's main pass (``embed`` → ``contextualize``) over the unmasked history has
no such slot, and the ``cloze`` objective does not use it. So an augmenter
works with BERT4Rec exactly when its views come from ``encoder.encode``:

* ``none``: yes (cloze alone: plain BERT4Rec).
* ``crop``, ``reorder``, ``mask``, ``random`` (CL4SRec): yes — two augmented
  copies, each encoded with the appended ``[mask]`` (a CBiT-like setup).
  ``mask``'s token is the augmenter's own row (``num_items + 1``), distinct
  from BERT4Rec's ``[mask]`` and trained only through the contrastive term, as
  it is with SASRec; ``mask_with=padding`` works too.
* ``dropout`` (DuoRec): yes in its default mode ``duorec`` (both views are
  re-encoded); modes ``unsupervised``/``supervised`` contrast the main pass's
  ``H[:, -1]`` and are refused when the check is given the options.
* ``aclsrec``: no — it perturbs the main pass's ``H_in`` and contrasts
  ``H[:, -1]``, the output at the last history item, not the ``[mask]`` output
  that is ranked; :meth:`BERT4Rec.check_augmenter` raises ``ConfigError``.
"""

from __future__ import annotations

from seqcl.hookspecs import hookimpl

from .cloze import ClozeObjective, ClozeOptions, append_targets, cloze_loss, draw_positions, mask_counts
from .encoder import BERT4Rec, BERT4RecOptions

__all__ = ["BERT4Rec", "BERT4RecOptions", "ClozeObjective", "ClozeOptions", "append_targets", "cloze_loss",
           "draw_positions", "mask_counts"]


@hookimpl
def register_encoders(register):
    register(
        "bert4rec",
        BERT4Rec,
        "BERT4Rec bidirectional Transformer; the next item is read at an appended [mask] (objective cloze)",
        options=BERT4RecOptions,
    )


@hookimpl
def register_objectives(register):
    register(
        "cloze",
        ClozeObjective,
        "BERT4Rec cloze task: mask the target or random items, all-item softmax CE at the masked positions",
        options=ClozeOptions,
    )
