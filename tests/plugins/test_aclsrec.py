"""ACLSRec augmenter (SPEC §4): views, the one-embed/two-Transformer dataflow, MLP shape and init."""

import math

import pytest
import torch
from torch import nn

from seqcl.cli import main
from seqcl.interfaces import Batch, BuildContext
from seqcl.training import main_pass
from seqcl_aclsrec.augmenter import MLP, ACLSRecAugmenter, ACLSRecOptions
from seqcl_sasrec.encoder import SASRec, SASRecOptions

T, D, N_ITEMS = 10, 16, 40


def build(scope="token", depth=2, residual=False, init_std=0.0):
    torch.manual_seed(0)
    ctx = BuildContext(num_items=N_ITEMS, max_len=T, hidden_size=D)
    enc = SASRec(SASRecOptions(hidden_size=D, heads=2, inner_size=32, dropout=0.0, attn_dropout=0.0), ctx)
    aug = ACLSRecAugmenter(ACLSRecOptions(mlp_depth=depth, scope=scope, residual=residual, init_std=init_std), ctx)
    return enc, aug


def batch(b=6, width=T):
    g = torch.Generator().manual_seed(3)
    items = torch.randint(1, N_ITEMS + 1, (b, width), generator=g)
    lengths = torch.randint(1, width + 1, (b,), generator=g)
    items = torch.where(torch.arange(width) >= width - lengths.unsqueeze(1), items, 0)
    return Batch(items, torch.randint(1, N_ITEMS + 1, (b,), generator=g), torch.arange(b))


class Spy(nn.Module):
    """Counts the stage calls of a wrapped encoder."""

    def __init__(self, enc):
        super().__init__()
        self.enc, self.calls = enc, []

    def embed(self, items):
        self.calls.append("embed")
        return self.enc.embed(items)

    def contextualize(self, h_in, items):
        self.calls.append("contextualize")
        return self.enc.contextualize(h_in, items)

    def contextualize_last(self, h_in, items, token_map=None):
        self.calls.append("contextualize_last")
        return self.enc.contextualize_last(h_in, items, token_map)


@pytest.mark.parametrize("scope", ["token", "sequence"])
def test_views_and_dataflow(scope):
    """Embed once, Transformer twice; token scope through the last-slot passes, the views equal
    to the plain per-slot formulas (MLPs on every slot, then the last slot read)."""
    enc, aug = build(scope)
    bt = batch()
    spy = Spy(enc)
    h_in, hidden = main_pass(spy, aug, bt.items)
    views = aug(bt, spy, h_in, hidden)
    second = "contextualize_last" if scope == "token" else "contextualize"
    assert spy.calls == ["embed", second, second]
    assert hidden.shape == ((6, 1, D) if scope == "token" else (6, T, D))
    assert set(views.tensors) == {"o", "p", "pr", "op"} and views.pairs == [("o", "pr"), ("p", "op")]
    assert all(v.shape == (6, D) and torch.isfinite(v).all() for v in views.tensors.values())
    assert torch.equal(views.tensors["o"], hidden[:, -1])  # o is the main path's own output
    if scope == "token":
        enc.layout_mode = "padded"  # the plain reference: every slot of the padded layout
        p_full = enc.contextualize(aug.mlp_p(h_in), bt.items)
        h_full = enc.contextualize(h_in, bt.items)
        assert torch.allclose(views.tensors["o"], h_full[:, -1], atol=1e-6)
        assert torch.allclose(views.tensors["p"], p_full[:, -1], atol=1e-6)
        assert torch.allclose(views.tensors["pr"], aug.mlp_r(p_full)[:, -1], atol=1e-6)
        assert torch.allclose(views.tensors["op"], aug.mlp_p2(h_full)[:, -1], atol=1e-6)


def test_sequence_scope_widths_and_full_width():
    _, aug = build("sequence")
    assert aug.full_width
    first = aug.mlp_p.net[0]
    assert first.in_features == first.out_features == T * D
    _, tok = build("token")
    assert not tok.full_width and tok.mlp_p.net[0].in_features == D


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_mlp_shape(depth):
    mlp = MLP(D, depth, residual=False, init_std=0.0)
    kinds = [type(m).__name__ for m in mlp.net]
    assert kinds.count("Linear") == depth and kinds.count("GELU") == depth - 1
    assert kinds[-1] == "Linear" and all(k in ("Linear", "GELU") for k in kinds)  # no norm, dropout


def test_three_separate_mlps_with_pytorch_default_init():
    _, aug = build(depth=2)
    ids = {id(p) for m in (aug.mlp_p, aug.mlp_r, aug.mlp_p2) for p in m.parameters()}
    assert len(ids) == 3 * 4
    assert not torch.equal(aug.mlp_p.net[0].weight, aug.mlp_r.net[0].weight)
    w = torch.cat([m.net[0].weight.detach().flatten() for m in (aug.mlp_p, aug.mlp_r, aug.mlp_p2)])
    # kaiming-uniform(a=√5): U(-1/√fan_in, 1/√fan_in), std 1/√(3·fan_in) — far from N(0, 0.02)
    assert abs(float(w.std()) - 1 / math.sqrt(3 * D)) < 0.02
    assert float(w.abs().max()) <= 1 / math.sqrt(D) + 1e-6
    assert float(aug.mlp_p.net[0].bias.detach().abs().max()) > 0  # biases on


def test_residual_and_init_std_options():
    _, aug = build(residual=True, init_std=1e-8)
    x = torch.randn(3, D)
    assert torch.allclose(aug.mlp_p(x), x, atol=1e-5)  # ≈ x + 0


def test_views_give_finite_grads_for_short_sequences():
    enc, aug = build()
    bt = batch(b=4, width=3)
    h_in = enc.embed(bt.items)
    hidden = enc.contextualize(h_in, bt.items)
    views = aug(bt, enc, h_in, hidden)
    sum(v.pow(2).sum() for v in views.tensors.values()).backward()
    for p in list(enc.parameters()) + list(aug.parameters()):
        assert p.grad is None or torch.isfinite(p.grad).all()


@pytest.mark.parametrize(
    "args, terms",
    [
        ([], ["cl", "align", "boundary"]),
        (["--without", "boundary"], ["cl", "align"]),
        (["--without", "align"], ["cl", "boundary"]),
        (["--without", "cl"], ["align", "boundary"]),
        (["--without", "cl", "--without", "align", "--without", "boundary"], []),
    ],
)
def test_ablation_rows_are_one_command_line(capsys, args, terms):
    import yaml

    assert main(["train", "--augmenter", "aclsrec", *args, "--dry-run"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["terms"] == terms
    assert all(cfg["loss"][t]["tau"] == 1.0 for t in ("cl", "align") if t in cfg["loss"])  # the shipped τ
    assert all(cfg["loss"][t]["sim"] == "cos" for t in ("cl", "boundary") if t in cfg["loss"])


def test_options_from_command_line(capsys):
    import yaml

    assert main(["train", "--augmenter", "aclsrec", "--set", "aclsrec.mlp_depth=3", "--set", "aclsrec.scope=sequence",
                 "--set", "loss.cl.tau=0.2", "--set", "loss.cl.sim=cos", "--dry-run"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["aclsrec"]["mlp_depth"] == 3 and cfg["aclsrec"]["scope"] == "sequence"
    assert cfg["loss"]["cl"]["tau"] == cfg["loss"]["align"]["tau"] == 0.2 and cfg["loss"]["cl"]["sim"] == "cos"
    assert main(["train", "--augmenter", "aclsrec", "--set", "aclsrec.scope=global", "--dry-run"]) == 2
