"""ACLSRec's learnable perturbation/restoration augmenter (SPEC §4, paper eq. 11–15).

One embedding pass gives ``H_in``; it feeds the main path (``o``) and the
perturbed path (``MLP_p`` → shared Transformer → ``p``). ``pr`` restores ``p``
with ``MLP_r``; ``op`` perturbs ``o`` with ``MLP_p'``. So a step runs the
embedding once and the Transformer twice.

Every view is read at the last slot. Under ``token`` scope the MLPs act on each
slot alone, so ``MLP_r``/``MLP_p'`` run on the last slot only, ``MLP_p`` runs
inside ``encoder.contextualize_last`` (SASRec: on the packed active tokens), and
both Transformer passes are last-slot passes (``hidden_slots = "last"``).
``sequence`` scope mixes slots and runs everything on the full padded layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from einops import rearrange
from torch import Tensor, nn

from seqcl.errors import ConfigError
from seqcl.interfaces import Augmenter, Batch, BuildContext, Encoder, Views


@dataclass
class ACLSRecOptions:
    """Shape of the three MLPs (``MLP_p``, ``MLP_r``, ``MLP_p'``)."""

    mlp_depth: int = 2  # Linear layers, GELU between them
    scope: Literal["token", "sequence"] = "token"  # per slot (width d) or flattened (width T·d)
    residual: bool = False  # x + MLP(x)
    init_std: float = 0.0  # 0 → PyTorch's default Linear init (SPEC §4); > 0 → N(0, std)

    def validate(self) -> None:
        if not 1 <= self.mlp_depth <= 4:
            raise ConfigError(f"aclsrec.mlp_depth must be in 1..4, got {self.mlp_depth}")
        if self.init_std < 0:
            raise ConfigError(f"aclsrec.init_std must be >= 0, got {self.init_std}")


class MLP(nn.Module):
    """``depth`` Linear layers of constant width with GELU between them (none after the last)."""

    def __init__(self, width: int, depth: int, residual: bool, init_std: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            if i:
                layers.append(nn.GELU())
            layers.append(nn.Linear(width, width))
        self.net = nn.Sequential(*layers)
        self.residual = residual
        if init_std > 0:
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    nn.init.normal_(layer.weight, std=init_std)
                    nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        y = self.net(x)
        return x + y if self.residual else y


class ACLSRecAugmenter(Augmenter):
    """Views ``o``, ``p``, ``pr``, ``op``; pairs (o, pr) and (p, op)."""

    # Chosen on Beauty's validation split (docs/results.md §2, issue #11): cosine similarity in L_cl
    # and R and τ = 1 (best valid MRR@10 of the three finalists run to early stopping). SPEC's first
    # readings (dot product, τ = 0.1) stall the main loss (docs/diagnosis.md); they stay config
    # values: loss.cl.sim=dot loss.boundary.sim=dot loss.cl.tau=0.1.
    default_terms = {"cl": {"weight": 0.1, "tau": 1.0, "sim": "cos"}, "align": {"weight": 1.0, "tau": 1.0},
                     "boundary": {"weight": 0.005, "sim": "cos"}}
    tied_options = [("loss.cl.tau", "loss.align.tau")]  # SPEC §6: one τ for L_cl and L_align
    pairs = [("o", "pr"), ("p", "op")]

    def __init__(self, options: ACLSRecOptions, ctx: BuildContext) -> None:
        super().__init__()
        self.scope = options.scope
        self.max_len = ctx.max_len
        self.full_width = options.scope == "sequence"  # the flattened MLP needs all T slots
        self.hidden_slots = "last" if options.scope == "token" else "all"  # token scope reads H[:, -1] only
        width = ctx.hidden_size if options.scope == "token" else ctx.hidden_size * ctx.max_len
        make = lambda: MLP(width, options.mlp_depth, options.residual, options.init_std)  # noqa: E731
        self.mlp_p, self.mlp_r, self.mlp_p2 = make(), make(), make()

    def _per_sequence(self, mlp: MLP, x: Tensor) -> Tensor:
        """Sequence scope: (B, T, d) flattened to (B, T·d), mapped, and back."""
        t = x.shape[1]
        if t != self.max_len:
            raise ValueError(f"sequence scope needs the full padded layout (T={self.max_len}), got T={t}")
        return rearrange(mlp(rearrange(x, "b t d -> b (t d)")), "b (t d) -> b t d", t=t)

    def forward(self, batch: Batch, encoder: Encoder, h_in: Tensor, hidden: Tensor) -> Views:
        if self.scope == "token":  # per-token MLPs: the last slot is all the views read
            p = encoder.contextualize_last(h_in, batch.items, token_map=self.mlp_p)  # eq. 11–12
            o = hidden[:, -1]
            views = {"o": o, "p": p, "pr": self.mlp_r(p), "op": self.mlp_p2(o)}  # eq. 14, 13, 15
        else:
            perturbed = encoder.contextualize(self._per_sequence(self.mlp_p, h_in), batch.items)
            views = {"o": hidden[:, -1], "p": perturbed[:, -1], "pr": self._per_sequence(self.mlp_r, perturbed)[:, -1],
                     "op": self._per_sequence(self.mlp_p2, hidden)[:, -1]}
        return Views(views, list(self.pairs))
