"""ACLSRec's learnable perturbation/restoration augmenter (SPEC §4, paper eq. 11–15).

One embedding pass gives ``H_in``; it feeds the main path (``o``) and the
perturbed path (``MLP_p`` → shared Transformer → ``p``). ``pr`` restores ``p``
with ``MLP_r``; ``op`` perturbs ``o`` with ``MLP_p'``. So a step runs the
embedding once and the Transformer twice.
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

    default_terms = {"cl": {"weight": 0.1, "tau": 0.1}, "align": {"weight": 1.0, "tau": 0.1},
                     "boundary": {"weight": 0.005}}
    tied_options = [("loss.cl.tau", "loss.align.tau")]  # SPEC §6: one τ for L_cl and L_align
    pairs = [("o", "pr"), ("p", "op")]

    def __init__(self, options: ACLSRecOptions, ctx: BuildContext) -> None:
        super().__init__()
        self.scope = options.scope
        self.max_len = ctx.max_len
        self.full_width = options.scope == "sequence"  # the flattened MLP needs all T slots
        width = ctx.hidden_size if options.scope == "token" else ctx.hidden_size * ctx.max_len
        make = lambda: MLP(width, options.mlp_depth, options.residual, options.init_std)  # noqa: E731
        self.mlp_p, self.mlp_r, self.mlp_p2 = make(), make(), make()

    def _map(self, mlp: MLP, x: Tensor) -> Tensor:
        """Per token: x (..., d) as is. Per sequence: (B, T, d) flattened to (B, T·d) and back."""
        if self.scope == "token":
            return mlp(x)
        t = x.shape[1]
        if t != self.max_len:
            raise ValueError(f"sequence scope needs the full padded layout (T={self.max_len}), got T={t}")
        return rearrange(mlp(rearrange(x, "b t d -> b (t d)")), "b (t d) -> b t d", t=t)

    def _last(self, mlp: MLP, hidden: Tensor) -> Tensor:
        """MLP on the Transformer output, last slot only: under token scope that is the same
        as mapping every slot and then taking the last, at 1/T of the cost."""
        if self.scope == "token":
            return mlp(hidden[:, -1])
        return self._map(mlp, hidden)[:, -1]

    def forward(self, batch: Batch, encoder: Encoder, h_in: Tensor, hidden: Tensor) -> Views:
        perturbed = encoder.contextualize(self._map(self.mlp_p, h_in), batch.items)  # eq. 11–12
        views = {
            "o": hidden[:, -1],  # eq. 14, the main path's own output
            "p": perturbed[:, -1],
            "pr": self._last(self.mlp_r, perturbed),  # eq. 13
            "op": self._last(self.mlp_p2, hidden),  # eq. 15
        }
        return Views(views, list(self.pairs))
