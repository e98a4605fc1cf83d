"""The ``cl`` and ``boundary`` terms share each pair's similarity matrix through ``Views.shared``."""

import pytest
import torch

from seqcl.interfaces import BuildContext, Views
from seqcl_contrastive import BoundaryOptions, BoundaryTerm, ContrastiveOptions, ContrastiveTerm
from seqcl_contrastive.formulas import dynamic_boundary, info_nce, nt_xent

PAIRS = [("o", "pr"), ("p", "op")]


def views_and_leaves(n=12, d=8):
    g = torch.Generator().manual_seed(0)
    leaves = {k: torch.randn(n, d, generator=g, requires_grad=True) for k in ("o", "pr", "p", "op")}
    return Views(dict(leaves), list(PAIRS)), leaves


@pytest.mark.parametrize("sim", ["dot", "cos"])
@pytest.mark.parametrize("kind", ["nt_xent", "info_nce"])
def test_shared_pair_similarity_equals_separate_formulas(sim, kind):
    """Loss and gradients with the shared matrix equal the formulas computing their own (rtol 1e-5,
    fp32), and the matrix is built once per step for both terms."""
    ctx = BuildContext(num_items=5, max_len=4, hidden_size=8, view_pairs=list(PAIRS))
    cl = ContrastiveTerm(ContrastiveOptions(tau=0.1, sim=sim, kind=kind), ctx)
    bd = BoundaryTerm(BoundaryOptions(sim=sim), ctx)
    views, t = views_and_leaves()
    got = cl(views, None) + 0.5 * bd(views, None)
    assert list(views.shared) == [("contrastive.pair_similarity", sim)]
    contrast = nt_xent if kind == "nt_xent" else info_nce
    ref = sum(contrast(t[a], t[b], 0.1, sim) + 0.5 * dynamic_boundary(t[a], t[b], sim) for a, b in PAIRS)
    leaves = list(t.values())
    g_got = torch.autograd.grad(got, leaves, retain_graph=True)
    g_ref = torch.autograd.grad(ref, leaves)
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6)
    for x, y in zip(g_got, g_ref):
        assert float(y.abs().max()) > 0 and torch.allclose(x, y, rtol=1e-5, atol=1e-6 * float(y.abs().max()))
