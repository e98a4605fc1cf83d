"""ELCRec's augmenter ``elcrec`` (learnable intent centres) and its terms ``intent`` and ``cluster``.

Read from the official code (yueliu1999/ELCRec, ``trainers.py``, Beauty settings of ``main.py`` and
``scripts/run_beauty.sh``; the code is ICLRec's with end-to-end clustering):

* **Centres** ``C`` (K = 256, d): an ``nn.Parameter`` of the augmenter, trained by the run's Adam;
  initialised once, at fit start (:meth:`ELCRecAugmenter.on_fit_start`), by k-means over the
  mean over all T slots of the encoder's outputs (eval mode) for every training sample; L2-normalised
  after every optimiser step (:meth:`after_optimizer_step`; the code normalises before each batch,
  the same values).
* **Cluster loss** (term ``cluster``, weight 10 = Beauty's ``trade_off``): with ``z`` the unit-norm
  mean over slots of the main pass's ``H``, :func:`.formulas.cluster_loss_rows` averaged.
* **Intent-assisted instance CL** (generic term ``cl``, weight 0.1 = ``cf_weight``, τ = 1, dot): two
  data augmentations (ICLRec's ``random``: per view one of crop keeping 20 %, mask 70 % with padding,
  reorder 20 %, drawn independently), their whole output sequences shifted slot by slot by the
  nearest centre and flattened to (B, T·d).
* **Intent CL** (term ``intent``, weight 0.1 = ``intent_cf_weight``): the views' mean-pooled outputs
  each contrasted (NT-Xent) with the centre assigned to ``z``: ½ (NT-Xent(p1, c) + NT-Xent(p2, c)).

Run it as the code does with ``--objective bce --set sasrec.layers=1``: ELCRec's main loss is BCE
with one negative (over every position of a user's sequence; seqcl's samples are every prefix, so
``bce`` on each sample's last position covers the same pairs) and Beauty uses one layer; both belong
to the objective and the encoder, which an augmenter does not set.

Not followed: the code encodes the two augmented batches twice (once per CL term, two dropout
samples); here one pass serves both terms. Its k-means is faiss's (20 iterations, best of several
restarts); here Lloyd's, ``kmeans_iters`` iterations from one random start, on the augmenter's own
stream. It trains and clusters one sequence per user (BCE over every position, the CL and clustering
terms on the whole sequence); here every prefix is a sample, as for every seqcl method. The code's
clustering weight (10) stalls the main loss here (docs/results.md §5: built-in valid MRR@10 0.036 against
0.435 with ``loss.cluster.weight=0``) and holds the official code back too (Beauty, 15 epochs: valid HIT@5
0.0035 against 0.0168 with ``trade_off`` 0); the defaults stay the code's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqcl.errors import ConfigError
from seqcl.interfaces import BuildContext, Batch, Encoder, FitContext, Views
from seqcl.registry import AugmenterInfo
from seqcl_cl4srec.augmenter import RandomAugmenter, RandomOptions
from seqcl_contrastive.formulas import nt_xent

from . import formulas


@dataclass
class ELCRecOptions(RandomOptions):
    """ICLRec's augmentation ratios (crop keeps 0.2, mask 0.7 with padding, reorder 0.2, independent draws),
    the number of intent centres and the k-means iterations."""

    crop_ratio: float = 0.2
    mask_ratio: float = 0.7
    reorder_ratio: float = 0.2
    mask_with: Literal["token", "padding"] = "padding"
    independent: bool = True
    clusters: int = 256
    kmeans_iters: int = 20

    def validate(self) -> None:
        super().validate()
        if self.clusters < 1 or self.kmeans_iters < 0:
            raise ConfigError(f"elcrec.clusters must be >= 1 and elcrec.kmeans_iters >= 0, got {self.clusters}, "
                              f"{self.kmeans_iters}")


class ELCRecAugmenter(RandomAugmenter):
    """Views ``inst1``/``inst2`` (B, T·d), ``pool1``/``pool2``/``intent`` (B, d), ``clu`` (B,); pair (inst1, inst2)."""

    default_terms = {"cl": {"weight": 0.1, "tau": 1.0}, "intent": {"weight": 0.1}, "cluster": {"weight": 10.0}}
    pairs = [("inst1", "inst2")]
    full_width = True  # the mean over all T slots and the flattened views read every slot

    def __init__(self, options: ELCRecOptions, ctx: BuildContext) -> None:
        super().__init__(options, ctx)
        self.centres = nn.Parameter(torch.zeros(options.clusters, ctx.hidden_size))  # k-means at fit start
        self.kmeans_iters = options.kmeans_iters
        t, d = ctx.max_len, ctx.hidden_size
        self.view_shapes = {"inst1": (t * d,), "inst2": (t * d,), "clu": ()}

    @torch.no_grad()
    def on_fit_start(self, fit: FitContext) -> None:
        """k-means over the training samples' mean-pooled outputs (a resumed run has its centres)."""
        if fit.resumed:
            return
        was = fit.encoder.training
        fit.encoder.train(False)
        try:
            pooled = torch.cat([fit.encoder.contextualize(fit.encoder.embed(b.items), b.items).mean(1)
                                for b in fit.batches()])
        finally:
            fit.encoder.train(was)
        k = self.centres.shape[0]
        if pooled.shape[0] < k:
            raise ConfigError(f"elcrec.clusters is {k} but there are only {pooled.shape[0]} training samples")
        centres = formulas.kmeans(pooled.float(), k, self.kmeans_iters, self.generator(torch.device("cpu")))
        self.centres.copy_(F.normalize(centres, dim=-1))

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        self.centres.copy_(F.normalize(self.centres, dim=-1))

    def forward(self, batch: Batch, encoder: Encoder, h_in: Tensor, hidden: Tensor) -> Views:
        c = self.centres
        z = F.normalize(hidden.mean(dim=1), dim=-1)  # (B, d)
        intent = c[formulas.nearest(z, c)]  # (B, d)
        v1, v2 = self.augment(batch.items, self.generator(batch.items.device))
        both = torch.cat([v1, v2])  # (2B, T): full width, the flattened views read every slot
        out = encoder.contextualize(encoder.embed(both), both)  # (2B, T, d)
        inst = formulas.shift_to_nearest(out, c).flatten(1)  # (2B, T·d)
        pools = out.mean(dim=1)  # (2B, d)
        b = batch.size
        return Views({"inst1": inst[:b], "inst2": inst[b:], "pool1": pools[:b], "pool2": pools[b:],
                      "intent": intent, "clu": formulas.cluster_loss_rows(z, c)}, list(self.pairs))


def _check_elcrec(term: str, augmenter: AugmenterInfo) -> None:
    if augmenter.name != "elcrec":
        raise ConfigError(f"loss term {term} needs the views of augmenter elcrec; augmenter {augmenter.name!r} "
                          "has none")


@dataclass
class IntentOptions:
    """``intent``: ½ Σ_views NT-Xent(view, its assigned centre), dot product, temperature ``tau``."""

    weight: float = 0.1
    tau: float = 1.0

    def validate(self) -> None:
        if self.weight < 0 or not self.tau > 0:
            raise ConfigError(f"loss.intent: weight must be >= 0 and tau > 0, got {self.weight}, {self.tau}")


class IntentTerm:
    """ELCRec's intent CL (the code's ``PCLoss`` without de-noising)."""

    needs_negatives = True
    needs_global_batch = True  # in-batch negatives over all ranks' rows (seqcl.interfaces.LossTerm)

    def __init__(self, options: IntentOptions, ctx: BuildContext) -> None:
        _check_elcrec("intent", AugmenterInfo(ctx.augmenter, ctx.view_pairs))
        self.tau = options.tau

    @staticmethod
    def check(options: IntentOptions, augmenter: AugmenterInfo) -> None:
        _check_elcrec("intent", augmenter)

    def __call__(self, views: Views, batch: Batch) -> Tensor:
        t = views.tensors
        return 0.5 * (nt_xent(t["pool1"], t["intent"], self.tau) + nt_xent(t["pool2"], t["intent"], self.tau))


@dataclass
class ClusterOptions:
    """``cluster``: mean over the batch of :func:`.formulas.cluster_loss_rows` (weight: Beauty's trade_off 10)."""

    weight: float = 10.0

    def validate(self) -> None:
        if self.weight < 0:
            raise ConfigError(f"loss.cluster.weight must be >= 0, got {self.weight}")


class ClusterTerm:
    """ELCRec's clustering loss; its per-row values come from the augmenter (view ``clu``)."""

    needs_negatives = False

    def __init__(self, options: ClusterOptions, ctx: BuildContext) -> None:
        _check_elcrec("cluster", AugmenterInfo(ctx.augmenter, ctx.view_pairs))

    @staticmethod
    def check(options: ClusterOptions, augmenter: AugmenterInfo) -> None:
        _check_elcrec("cluster", augmenter)

    def __call__(self, views: Views, batch: Batch) -> Tensor:
        return views.tensors["clu"].mean()
