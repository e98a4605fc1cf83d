"""seqcl-embnoise: two views = the shared Transformer on ``H_in`` + Gaussian noise.

No data-level operation and no extra embedding pass; works for any sequence length."""

from dataclasses import dataclass

import torch
from seqcl.hookspecs import hookimpl
from seqcl.interfaces import Augmenter, Views


@dataclass
class EmbNoiseOptions:
    scale: float = 0.1  # noise std, relative to H_in (LayerNorm output, unit scale per feature)


class EmbNoiseAugmenter(Augmenter):
    """Views ``n1``, ``n2`` = contextualize(H_in + scale·ε, items), ε ~ N(0, I); pair (n1, n2)."""

    default_terms = {"cl": {"weight": 0.1, "sim": "cos", "tau": 0.2}}  # the generic NT-Xent term
    pairs = [("n1", "n2")]

    def __init__(self, options, context):
        super().__init__()
        self.scale = options.scale

    def forward(self, batch, encoder, h_in, hidden):
        real = (batch.items > 0).unsqueeze(-1)  # (B, W, 1): leave padding slots at exactly 0 noise
        views = {}
        for name in ("n1", "n2"):
            noisy = h_in + self.scale * torch.randn_like(h_in) * real
            views[name] = encoder.contextualize(noisy, batch.items)[:, -1]
        return Views(views, list(self.pairs))


@hookimpl
def register_augmenters(register):
    register("embnoise", EmbNoiseAugmenter, "Gaussian noise on the item embeddings, two views (example plugin)",
             options=EmbNoiseOptions)
