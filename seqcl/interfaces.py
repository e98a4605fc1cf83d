"""The three component interfaces: Encoder, Augmenter, LossTerm (+ the data they share).

One training step, as the core runs it (``seqcl.training``)::

    h_in  = encoder.embed(batch.items)               # (B, T, d), one dropout sample
    H     = encoder.contextualize(h_in, batch.items)  # (B, T, d)
    h     = H[:, -1]                                  # (B, d) user representation
    loss  = main_loss(h, item table, batch.targets)
    views = augmenter(batch, encoder, h_in, H)        # named (B, d) views + pairs
    loss += Σ weight_i · term_i(views, batch)         # only the selected terms

An augmenter that reads only the last slot of ``H`` (``hidden_slots = "last"``)
gets ``H[:, -1:]`` (B, 1, d), from ``encoder.contextualize_last`` (or ``encode``
when it does not read ``h_in`` either, ``reads_embedding = False``), which an
encoder may compute more cheaply (SASRec runs its last layer for the last slot only).

The augmenter receives the main path's own ``h_in`` and ``H`` so nothing is
recomputed: ACLSRec transforms ``h_in`` and runs the Transformer once more;
CL4SRec encodes two augmented copies of ``batch.items``; DuoRec re-encodes
(another dropout sample) and encodes a same-target sample. The core has no
special case for any of them.

State
-----
Checkpoints (``last.pt`` every epoch, ``best.pt``) hold each component's
``state_dict()``, by name (``encoder``, ``augmenter``, ``term.<name>``), and
``--resume`` loads it back with ``load_state_dict``. For an ``nn.Module`` that
is its parameters and persistent buffers; state outside them — an RNG stream,
a step counter, a cluster table — goes through PyTorch's own hooks
``get_extra_state()`` / ``set_extra_state(state)``, which return and take
tensors and plain containers (checkpoints load with ``weights_only=True``).
A component that draws random numbers keeps its own generators in a
:class:`seqcl.rng.DeviceGenerators` and mixes in :class:`seqcl.rng.OwnsGenerators`,
which does exactly this. A component that is not an ``nn.Module`` may define
``state_dict``/``load_state_dict`` itself. Derived data that can be rebuilt
(an index of the training set) belongs in non-persistent buffers, not in
checkpoints.

Training-loop hooks
-------------------
Methods beyond one loss and one optimiser step declare what they need; the
core runs it and names no method. Each hook is optional, and the default path
(no plan, no callback) does no extra work per step.

* **Lifecycle callbacks** — any component (encoder, augmenter, objective, term)
  may define any of these methods (:mod:`seqcl.lifecycle` collects them)::

      def on_fit_start(self, fit: FitContext) -> None:      # once per process, before the first epoch
          if not fit.resumed:                               # resumed: the state is in last.pt
              pooled = torch.cat([pool(fit.encoder, b.items) for b in fit.batches()])
              self.centres.copy_(kmeans(pooled, self.k))    # ELCRec
      def on_epoch_start(self, epoch: int) -> None:         # epoch counts from 1, also the first after --resume
          self.tau = self.tau_end + (self.tau_start - self.tau_end) * 0.9 ** (epoch - 1)  # a τ schedule
      def after_optimizer_step(self) -> None:               # after every optimiser step
          with torch.no_grad():
              self.centres.copy_(F.normalize(self.centres, dim=-1))

* **Optimisation plan** — one component may define ``optim_plan(weights)``
  returning an :class:`OptimPlan`: parameter groups it owns, each with its own
  optimiser, and the steps each batch takes. Every step re-runs the forward
  pass (a step with its own ``weights`` computes only the parts of non-zero
  weight), then minimises its weighted loss parts and updates only its groups
  (the others are frozen: no gradient is computed for them). ``"model"`` is
  every parameter in no declared group. MCLRec::

      def optim_plan(self, weights):
          groups = [ParamGroup("augmenters", list(self.learners.parameters()))]
          encoder = PlanStep(update=("model",))               # CE + Σ weight·term, as configured
          learners = PlanStep(update=("augmenters",), weights={"cl": weights["cl"], "mcl": 1.0})
          return OptimPlan(groups, [encoder, learners, encoder])

  :mod:`seqcl.optimplan` runs it; the optimiser states are checkpointed.

* **Views of any declared shape** — a view is (B, d) unless the augmenter
  lists it in ``view_shapes`` (name → trailing shape), e.g. CFIT4SRec's
  flattened hidden sequences ``{"low1": (T * d,), ...}``.

* **Stages** — a run may be an ordered list of stages (config key ``stages``,
  or the encoder's ``default_stages``): each stage trains with its own
  objective, epochs and settings, and hands named components to the next.
  S3Rec (abridged; the s3rec plugin's ``DEFAULT_STAGES``)::

      default_stages = [
          {"name": "pretrain", "objective": "mip", "epochs": 150,
           "set": {"s3rec.attention": "bidirectional"}, "handoff": ["encoder"], "handoff_from": "last"},
          {"name": "finetune", "objective": "ce"},
      ]

  :mod:`seqcl.stages` runs them, one run folder per stage inside the run's
  folder; ``--resume`` continues in the stage that was interrupted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn


@dataclass
class Batch:
    """A batch of training samples.

    items:      (B, W) long, left-padded with 0; the most recent item is in the last
                column. W ≤ T: columns that are padding in every row are trimmed
                (exact: the encoder keeps slot position ids), unless the augmenter
                sets ``full_width``.
    targets:    (B,)   long, next item of each sample, in 1..num_items.
    sample_ids: (B,)   long, row of each sample in :class:`seqcl.data.dataset.TrainSamples`.
    """

    items: Tensor
    targets: Tensor
    sample_ids: Tensor

    @property
    def size(self) -> int:
        return int(self.items.shape[0])

    def lengths(self) -> Tensor:
        """(B,) number of real (non-padding) items of each row."""
        return (self.items > 0).sum(dim=1)


@dataclass
class Views:
    """Named representations produced by an augmenter, and the pairs to contrast.

    tensors: name → (B, d), or (B, *shape) for a name the augmenter declares in
    ``view_shapes`` (e.g. CFIT4SRec's flattened (B, T·d)). ``pairs`` lists (a, b) view names; row u of ``a`` is
    the positive of row u of ``b``. Generic loss terms (``cl``, ``boundary``)
    sum over all pairs; ``align`` needs exactly two.
    """

    tensors: dict[str, Tensor] = field(default_factory=dict)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    #: per-step values the loss terms share, keyed by their owner (e.g. the similarity matrix
    #: of a pair, which ``cl`` and ``boundary`` both need); built once, read by both
    shared: dict[Any, Any] = field(default_factory=dict, repr=False)

    def pair_tensors(self) -> list[tuple[Tensor, Tensor]]:
        return [(self.tensors[a], self.tensors[b]) for a, b in self.pairs]


@dataclass
class BuildContext:
    """What a component factory may need to know, besides its own options.

    num_items:   real items are 1..num_items; 0 is padding. Extra rows (a mask
                 token) sit after num_items and are never scored.
    extra_rows:  extra item-table rows requested by the augmenter.
    hidden_size: d, the width of every (B, d) view (the encoder's ``hidden_size``).
    max_len:     T, the window length.
    train:       the training samples (a :class:`seqcl.data.dataset.TrainSamples`).
    cache_dir:   where a component may cache derived tensors (key them by ``data_key``).
    data_key:    hash of the data file and its preprocessing settings.
    view_pairs:  the augmenter's view pairs (set before the terms are built).
    augmenter:   the augmenter's name (for error messages).
    seed:        the run's seed (components draw their own init from it).
    """

    num_items: int
    max_len: int
    hidden_size: int
    extra_rows: int = 0
    train: Any = None
    cache_dir: Path | None = None
    data_key: str = ""
    device: torch.device = torch.device("cpu")
    view_pairs: list[tuple[str, str]] = field(default_factory=list)
    augmenter: str = ""
    seed: int = 0


class Encoder(nn.Module, ABC):
    """Maps left-padded item windows to per-slot representations, in two stages.

    Inputs are (B, W) with W ≤ T: the core trims columns that are padding in
    every row, so the last column is always slot T-1 and an encoder must give
    column j the position of slot T-W+j (SASRec does).

    The stages are separate (SPEC §2) because ACLSRec perturbs ``H_in`` between
    them. Row 0 of the item table is padding; rows 1..num_items are items; any
    ``extra_rows`` follow.
    """

    hidden_size: int

    @abstractmethod
    def embed(self, items: Tensor) -> Tensor:
        """(B, T) long → H_in (B, T, d): item + position embedding, LayerNorm, dropout."""

    @abstractmethod
    def contextualize(self, h_in: Tensor, items: Tensor) -> Tensor:
        """H_in (B, T, d) → H (B, T, d); ``items`` (B, T) gives the padding mask."""

    @abstractmethod
    def item_table(self) -> Tensor:
        """(num_items + 1 + extra_rows, d): the item embedding matrix (output layer too)."""

    #: the objective a run trains this encoder with unless the config names one
    default_objective: ClassVar[str] = "ce"

    @classmethod
    def check_augmenter(cls, augmenter: str, options: Any = None) -> None:
        """Raise :class:`seqcl.errors.ConfigError` (one line, the reason) for an augmenter (name,
        resolved options) this encoder cannot serve; called when the config is resolved. Default: all."""

    def request_full_width(self) -> None:
        """The augmenter reads every slot of ``H`` (``Augmenter.full_width``): compute all of
        them, no shortcut that leaves padding slots or earlier slots unset. Default: nothing to do."""

    def contextualize_last(self, h_in: Tensor, items: Tensor,
                           token_map: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """H_in (B, T, d) → (B, d): the last slot of ``contextualize(token_map(h_in), items)``.

        ``token_map`` acts on each token alone, (..., d) → (..., d) (ACLSRec's token-scope
        ``MLP_p``), so an encoder may apply it only to the slots that can reach the last
        one (SASRec: the active tokens) and run its last layer for the last slot alone."""
        x = h_in if token_map is None else token_map(h_in)
        return self.contextualize(x, items)[:, -1]

    def encode(self, items: Tensor) -> Tensor:
        """(B, T) long → (B, d): the user representation at the last slot."""
        return self.contextualize_last(self.embed(items), items)

    # Optional stages, for augmenters that transform the embedding before its dropout (CFIT4SRec):
    # ``embed(items) == embedding_dropout(embed_without_dropout(items))``. An augmenter that needs them
    # lists them in ``encoder_methods``; an encoder without them is refused when the config is resolved.

    def embed_without_dropout(self, items: Tensor) -> Tensor:
        """(B, T) long → (B, T, d): the embedding stage before its dropout."""
        raise NotImplementedError(f"{type(self).__name__} has no embed_without_dropout")

    embed_without_dropout.optional = True  # type: ignore[attr-defined]

    def embedding_dropout(self, x: Tensor) -> Tensor:
        """(B, T, d) → (B, T, d): the embedding stage's dropout."""
        raise NotImplementedError(f"{type(self).__name__} has no embedding_dropout")

    embedding_dropout.optional = True  # type: ignore[attr-defined]

    def contextualize_padded(self, h_in: Tensor, items: Tensor) -> Tensor:
        """H_in (B, T, d) → H (B, T, d) at every slot, leading padding slots included, with the values
        of the plain padded computation (a padding slot's query has no allowed key). For views that read
        the padding slots of their own pass (CFIT4SRec's filtered embeddings are non-zero there), while
        the core's main pass keeps the encoder's shortcuts (``full_width`` would turn them off for all)."""
        raise NotImplementedError(f"{type(self).__name__} has no contextualize_padded")

    contextualize_padded.optional = True  # type: ignore[attr-defined]


class Augmenter(nn.Module):
    """Produces named views (and the pairs to contrast) for one batch.

    Class attributes, read before the augmenter is built:

    * ``default_terms``: loss terms this augmenter enables, each with option
      overrides, e.g. ``{"cl": {"weight": 0.1}}``. They show in the resolved
      config; ``--without NAME`` removes one, ``--with NAME`` adds another.
      A term that takes a temperature owns it (``loss.cl.tau``), so the
      augmenter sets its default here too: ``{"cl": {"weight": 0.1, "tau": 1.0}}``.
    * ``tied_options``: groups of config keys that move as one, e.g. ACLSRec's
      ``[("loss.cl.tau", "loss.align.tau")]`` (SPEC §6: one τ): setting one key
      of a group sets all of them, unless one source sets them to different
      values (which unties them). The resolved config lists every value.

    Instance attributes, read after it is built and before the encoder and the
    terms are: ``extra_rows``, item-table rows to add after the real items
    (CL4SRec's mask token; never scored or ranked), and ``pairs``, the view
    pairs its ``Views`` will carry (so a term can reject an augmenter at build
    time, e.g. ``align`` needs two pairs), ``full_width`` (keep all T
    columns in every batch instead of trimming all-padding columns) and
    ``view_shapes`` (views wider than d; see the module doc).
    """

    default_terms: ClassVar[dict[str, dict[str, Any]]] = {}
    tied_options: ClassVar[list[tuple[str, ...]]] = []
    extra_rows: int = 0
    pairs: list[tuple[str, str]] = []
    full_width: bool = False  # True: batches keep all T columns (e.g. a flattened T·d MLP)
    #: which slots of ``hidden`` forward reads: "all", "last" (the core then passes H[:, -1:], (B, 1, d)),
    #: or "none" (forward reads neither ``hidden`` nor ``h_in``: both None; the core runs its main pass
    #: for the objective only, so a plan step that does not minimise it skips it — MCLRec's learner step)
    hidden_slots: Literal["all", "last", "none"] = "all"
    #: whether forward reads ``h_in`` (False: the core passes None and may skip the dense H_in)
    reads_embedding: bool = True
    #: view name → shape after the batch dimension, for views that are not (B, d), e.g. (T·d,)
    view_shapes: dict[str, tuple[int, ...]] = {}
    #: optional Encoder methods the augmenter calls (e.g. ``embed_without_dropout``), checked at resolve time
    encoder_methods: ClassVar[tuple[str, ...]] = ()

    def forward(self, batch: Batch, encoder: Encoder, h_in: Tensor | None, hidden: Tensor) -> Views:  # noqa: D401
        """Views for ``batch``. ``h_in`` and ``hidden`` (both (B, T, d)) are the main path's
        embedding output and Transformer output; the main representation is ``hidden[:, -1]``.
        With ``hidden_slots = "last"``, ``hidden`` is (B, 1, d); without ``reads_embedding``, ``h_in`` is None;
        with ``hidden_slots = "none"`` both are None."""
        return Views()


class Objective(nn.Module):
    """The main training objective: what every step minimises before the terms are added.

    ``forward(encoder, batch, h) -> scalar``. With ``uses_main_pass`` (the
    default) ``h`` is the main pass's user representation ``H[:, -1]`` (B, d),
    which the views share, and the objective scores it against
    ``encoder.item_table()`` (rows ``1..num_items`` only). An objective that
    needs its own encoder pass (BERT4Rec's cloze task masks the input) sets
    ``uses_main_pass = False`` and gets ``h = None``. An objective that draws
    random numbers owns its generators (``seqcl.rng``), so they are checkpointed.

    Under ``torchrun`` the loss is taken to be a mean over the rank's rows: the
    core weights it by the rank's share of the global batch, which makes the
    averaged gradient that of the global batch (``seqcl.distributed``). A mean
    over something else (BERT4Rec's cloze loss averages over masked positions)
    is then weighted by rows, close to but not exactly the one-process gradient.
    """

    uses_main_pass: ClassVar[bool] = True

    def forward(self, encoder: Encoder, batch: Batch, h: Tensor | None) -> Tensor:  # noqa: D401
        raise NotImplementedError


@runtime_checkable
class LossTerm(Protocol):
    """An auxiliary loss: views (+ batch) → unweighted scalar.

    The core multiplies by the term's ``weight`` option and adds it to the main
    loss; a removed term is never computed, weight 0 means computed and logged
    but not added. A term that needs in-batch negatives returns 0 for a batch of
    one and is logged as skipped.

    ``needs_global_batch`` (default False when absent): under ``torchrun`` the
    term is computed on the **global** batch — the core gathers every rank's
    views (with gradients, rows in global order) and the ``Batch`` before
    calling it, so in-batch negatives and means cover all ranks and a run on N
    processes computes the loss of one process on the same global batch
    (``seqcl.distributed``). Contrastive terms declare it. A term without it
    sees this rank's rows only and must be a mean over them; the core weights
    it by the rank's share of the global batch. In one process both are the same.
    """

    needs_negatives: bool
    needs_global_batch: bool

    def __call__(self, views: Views, batch: Batch) -> Tensor: ...


# --------------------------------------------------------------------------- training-loop hooks


@dataclass
class FitContext:
    """What ``on_fit_start`` gets: the data and the encoder, before the first epoch of this process.

    resumed:  True when the run continues from ``last.pt`` (state set at fit start is
              already restored: do not redo it).
    epoch:    the last finished epoch (0 for a new run).
    batches:  ``batches()`` iterates the training samples once, in order, full width,
              on ``device`` (e.g. to cluster the training set's representations).
    """

    encoder: Encoder
    train: Any  # seqcl.data.dataset.TrainSamples
    device: torch.device
    resumed: bool
    epoch: int
    batches: Callable[[], Iterator[Batch]]

    @torch.no_grad()
    def representations(self) -> Tensor:
        """(N, d): ``encoder.encode`` of every training sample, eval mode (no dropout)."""
        was_training = self.encoder.training
        self.encoder.train(False)
        try:
            return torch.cat([self.encoder.encode(batch.items) for batch in self.batches()])
        finally:
            self.encoder.train(was_training)


@dataclass
class ParamGroup:
    """Parameters a component owns, with their own optimiser (Adam at ``lr``/``weight_decay``;
    None: the run's ``train.lr``/``train.weight_decay``). ``name`` is what steps update."""

    name: str
    params: list[nn.Parameter]
    lr: float | None = None
    weight_decay: float | None = None


@dataclass
class PlanStep:
    """One optimiser step of a batch: a fresh forward pass, then minimise
    ``Σ weights[part] · part`` (parts: ``"main"`` and each active term; a part
    not computed in this run is left out) and update the groups in ``update``
    only. ``weights`` None: the run's own total, main + Σ weight·term. With
    ``weights``, the forward pass computes only the parts of non-zero weight."""

    update: tuple[str, ...]
    weights: dict[str, float] | None = None


@dataclass
class OptimPlan:
    """Parameter groups and the per-batch sequence of steps (see the module doc).
    The loss parts logged for a batch are those of its first step."""

    groups: list[ParamGroup]
    steps: list[PlanStep]
