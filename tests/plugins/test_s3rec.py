"""S3Rec-MIP: the MIP loss against loops, its masking and negatives, bidirectional attention,
and the two stages (fine-tuning starts from the pre-trained encoder; --resume across the boundary)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import yaml
from hypothesis import given
from hypothesis import strategies as st

import seqcl.training as training
from seqcl.cli import main
from seqcl.config import parse_assignment, resolve
from seqcl.interfaces import Batch, BuildContext
from seqcl.plugins import load_plugins
from seqcl.training import resume, train
from seqcl_bert4rec.cloze import append_targets
from seqcl_s3rec import DEFAULT_STAGES, MIPObjective, MIPOptions, S3Rec, S3RecOptions, draw_masked, mip_loss

from conftest import TINY
from formula_refs import FAST, SLOW, _gen, close, grads_finite, rows, softplus
from test_bert4rec import both_layouts, left_padded
from test_resume import records

# --------------------------------------------------------------------------- the MIP loss


def ref_mip(projected, positives, negatives):
    """Loops: Σ_m −log σ(σ(⟨p_m, e⁺_m⟩) − σ(⟨p_m, e⁻_m⟩)), the code's BCELoss(σ(pos − neg), 1) summed."""
    def sigmoid(x):
        return 1 / (1 + math.exp(-x))

    total = 0.0
    for p, e_pos, e_neg in zip(rows(projected), rows(positives), rows(negatives)):
        s_pos = sigmoid(sum(a * b for a, b in zip(p, e_pos)))
        s_neg = sigmoid(sum(a * b for a, b in zip(p, e_neg)))
        total += -math.log(sigmoid(s_pos - s_neg))
    return total


@st.composite
def mip_inputs(draw, max_m=12, max_d=6):
    m, d = draw(st.integers(1, max_m)), draw(st.integers(1, max_d))
    g = _gen(draw(st.integers(0, 2**31 - 1)))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0]))
    return [torch.randn(m, d, generator=g, dtype=torch.float64) * scale for _ in range(3)]


@FAST
@given(x=mip_inputs())
def test_mip_loss_matches_loops(x):
    close(mip_loss(*x), ref_mip(*x))


@FAST
@given(x=mip_inputs())
def test_mip_loss_bounds_and_swap(x):
    projected, pos, neg = x
    m = projected.shape[0]
    loss = float(mip_loss(projected, pos, neg))
    assert m * softplus(-1.0) - 1e-9 <= loss <= m * softplus(1.0) + 1e-9  # σ differences lie in (−1, 1)
    assert float(mip_loss(projected, pos, pos)) == pytest.approx(m * math.log(2))  # s⁺ = s⁻
    swapped = float(mip_loss(projected, neg, pos))  # softplus(z) − softplus(−z) = z, term by term:
    s_pos, s_neg = (projected * pos).sum(-1).sigmoid(), (projected * neg).sum(-1).sigmoid()
    assert loss - swapped == pytest.approx(float((s_neg - s_pos).sum()), abs=1e-9)
    assert loss + swapped >= 2 * m * math.log(2) - 1e-9  # convexity: equal only when s⁺ = s⁻


@SLOW
@given(x=mip_inputs(), scale=st.sampled_from([1.0, 1e2, 1e4]))
def test_mip_loss_finite_gradients_at_extremes(x, scale):
    inputs = [(t * scale).requires_grad_(True) for t in x]
    grads_finite(mip_loss(*inputs), inputs)


# --------------------------------------------------------------------------- masking, negatives, attention


@FAST
@given(seed=st.integers(0, 2**31 - 1), p=st.sampled_from([0.0, 0.2, 1.0]))
def test_draw_masked_last_always_real_only_and_width_invariant(seed, p):
    g = _gen(seed)
    lengths = torch.randint(1, 9, (6,), generator=g)
    seq = torch.zeros(6, 8, dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        seq[i, 8 - n:] = torch.randint(1, 50, (n,), generator=g)
    full = draw_masked(seq, p, _gen(seed + 1), max_len=8)
    assert full[:, -1].all() and not (full & (seq == 0)).any()
    if p == 1.0:
        assert torch.equal(full, seq > 0)
    if p == 0.0:
        assert int(full.sum()) == 6
    w = int(lengths.max())
    trimmed = draw_masked(seq[:, 8 - w:], p, _gen(seed + 1), max_len=8)
    assert torch.equal(trimmed, full[:, 8 - w:])  # a trimmed batch masks what its full-width version does


def test_mask_rate_is_mask_p():
    seq = torch.randint(1, 100, (4000, 20))
    chosen = draw_masked(seq, 0.2, _gen(0), max_len=20)
    assert abs(float(chosen[:, :-1].float().mean()) - 0.2) < 0.01


def _ctx(n_items=40, max_len=8, d=16):
    return BuildContext(num_items=n_items, max_len=max_len, hidden_size=d, seed=3)


def test_objective_is_the_formula_on_the_masked_bidirectional_pass():
    torch.manual_seed(0)
    enc = S3Rec(S3RecOptions(hidden_size=16, inner_size=32, attention="bidirectional", dropout=0.0,
                             attn_dropout=0.0), _ctx())
    assert enc.mask_token == 41 and enc.item_table().shape[0] == 42
    obj = MIPObjective(MIPOptions(mask_p=0.5), _ctx())
    g = _gen(1)
    items = torch.randint(1, 41, (5, 7), generator=g)
    items[0, :4] = 0
    batch = Batch(items, torch.randint(1, 41, (5,), generator=g), torch.arange(5))
    state = obj.generator("cpu").get_state()
    loss = obj(enc, batch)
    # recompute by hand from the same stream
    from seqcl_bert4rec.cloze import append_targets
    from seqcl_objectives.formulas import sample_negatives

    gen = torch.Generator().manual_seed(0)
    gen.set_state(state)
    seq = append_targets(items, batch.targets, 8)
    chosen = draw_masked(seq, 0.5, gen, 8)
    negatives = sample_negatives(seq, batch.targets, 40, seq.shape[1], gen)
    for row in range(5):
        assert not set(negatives[row].tolist()) & set(seq[row].tolist())  # never an item of the sequence
    inputs = seq.masked_fill(chosen, enc.mask_token)
    hidden = enc.contextualize(enc.embed(inputs), inputs)
    table = enc.item_table()
    expected = mip_loss(obj.mip_norm(hidden[chosen]), table[seq[chosen]], table[negatives[chosen]])
    torch.testing.assert_close(loss, expected)


def test_bidirectional_sees_later_items_causal_does_not():
    torch.manual_seed(0)
    outs = {}
    for attention in ("causal", "bidirectional"):
        torch.manual_seed(0)
        enc = S3Rec(S3RecOptions(hidden_size=16, inner_size=32, attention=attention, dropout=0.0,
                                 attn_dropout=0.0, layout="padded"), _ctx()).eval()
        a = torch.tensor([[0, 3, 4, 5, 6, 7, 8, 9]])
        b = a.clone()
        b[0, -1] = 20  # change the last item only
        ha, hb = (enc.contextualize(enc.embed(x), x) for x in (a, b))
        outs[attention] = torch.allclose(ha[0, 1], hb[0, 1])
    assert outs == {"causal": True, "bidirectional": False}


# --------------------------------------------------------------------------- packed layout (the fast path)


@SLOW
@given(lengths=st.lists(st.integers(1, 7), min_size=1, max_size=8), p=st.sampled_from([0.2, 0.5, 1.0]),
       attention=st.sampled_from(["bidirectional", "causal"]), seed=st.integers(0, 2**16))
def test_packed_layout_equals_padded_on_every_real_slot(lengths, p, attention, seed):
    """Pre-training's bidirectional pass (and fine-tuning's causal one) on the packed layout gives the
    padded reference's output at every real slot — the MIP pass reads nothing else — and ``encode``
    (the validation during pre-training) the same user representation."""
    torch.manual_seed(seed % 5)
    enc = S3Rec(S3RecOptions(hidden_size=16, inner_size=32, attention=attention), _ctx()).eval()
    targets = torch.randint(1, 41, (len(lengths),), generator=_gen(seed))
    seq = append_targets(left_padded(lengths, width=7, seed=seed, num_items=40), targets, 8)
    chosen = draw_masked(seq, p, _gen(seed + 1), 8)
    inputs = seq.masked_fill(chosen, enc.mask_token)
    real = inputs > 0
    packed, padded = both_layouts(enc, lambda: enc.contextualize(enc.embed(inputs), inputs))
    torch.testing.assert_close(packed[real], padded[real], atol=1e-5, rtol=1e-5)
    packed, padded = both_layouts(enc, lambda: enc.encode(seq))
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)


def test_packed_mip_loss_and_gradients_match_padded_in_float64():
    torch.manual_seed(0)
    enc = S3Rec(S3RecOptions(hidden_size=16, inner_size=32, attention="bidirectional", dropout=0.0,
                             attn_dropout=0.0), _ctx()).double()
    obj = MIPObjective(MIPOptions(mask_p=0.4), _ctx()).double()
    items = left_padded([1, 2, 5, 7, 7, 3], width=7, seed=3, num_items=40)
    batch = Batch(items, torch.randint(1, 41, (6,), generator=_gen(4)), torch.arange(6))
    state = obj.generator("cpu").get_state()

    def loss_and_grads():
        obj.generator("cpu").set_state(state)  # the same masks and negatives on both layouts
        enc.zero_grad(), obj.zero_grad()
        loss = obj(enc, batch)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in enc.parameters() if p.grad is not None]

    (l1, g1), (l2, g2) = both_layouts(enc, loss_and_grads)
    assert torch.allclose(l1, l2, rtol=1e-12, atol=1e-12)
    assert len(g1) == len(g2) > 0
    assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(g1, g2))


def test_bidirectional_layout_is_not_the_causal_one():
    """The packed path must use bidirectional buckets in pre-training: with causal buckets the first
    real slot could not see the last item (the control that makes the tests above fail)."""
    torch.manual_seed(0)
    enc = S3Rec(S3RecOptions(hidden_size=16, inner_size=32, attention="bidirectional", layout="packed"),
                _ctx()).eval()
    a = torch.tensor([[0, 3, 4, 5, 6, 7, 8, 9]])
    b = a.clone()
    b[0, -1] = 20
    ha, hb = (enc.contextualize(enc.embed(x), x) for x in (a, b))
    assert not torch.allclose(ha[0, 1], hb[0, 1])
    enc.attention = "causal"
    ha, hb = (enc.contextualize(enc.embed(x), x) for x in (a, b))
    assert torch.allclose(ha[0, 1], hb[0, 1])


# --------------------------------------------------------------------------- stages


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


def tiny_stages():
    stages = copy.deepcopy(DEFAULT_STAGES)
    stages[0]["epochs"], stages[1]["epochs"] = 2, 2
    return stages


def config(plugins, run_dir, dataset):
    tiny = [(k.replace("sasrec.", "s3rec."), v) for k, v in (parse_assignment(a) for a in TINY[1::2])]
    pairs = tiny + [("encoder", "s3rec"), ("dataset", str(dataset)), ("run.dir", str(run_dir)),
                    ("stages", tiny_stages())]
    return resolve(plugins.registry, overrides=pairs)


def test_default_stages_pretrain_mip_then_finetune(tmp_path, capsys):
    assert main(["train", "--encoder", "s3rec", "--dry-run", "--set", f"run.dir={tmp_path}"]) == 0
    tree = yaml.safe_load(capsys.readouterr().out)
    pre, fine = tree["stages"]
    assert (pre["objective"], pre["epochs"], pre["set"]["s3rec.attention"], pre["set"]["train.batch_size"]) == (
        "mip", 150, "bidirectional", 100)
    assert pre["handoff"] == ["encoder"] and pre["handoff_from"] == "last"
    assert pre["set"]["train.patience"] >= pre["epochs"]  # S3Rec pre-trains a fixed number of epochs
    assert (fine["objective"], fine["set"]["s3rec.attention"]) == ("ce", "causal")


def test_finetuning_starts_from_the_pretrained_encoder(plugins, tmp_path, tiny_file, monkeypatch):
    starts = []
    real = training._fit

    def fit(model, *args, **kwargs):
        starts.append((model.encoder.attention, type(model.objective).__name__,
                       {k: v.clone() for k, v in model.encoder.state_dict().items()}))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(training, "_fit", fit)
    res = train(config(plugins, tmp_path, tiny_file), plugins, log=lambda m: None)
    pretrained = torch.load(res.run_dir / "1-pretrain" / "last.pt", weights_only=True)["model"]["encoder"]
    (a1, o1, init), (a2, o2, fine) = starts
    assert (a1, o1, a2, o2) == ("bidirectional", "MIPObjective", "causal", "CrossEntropy")
    assert all(torch.equal(fine[k], pretrained[k]) for k in pretrained)  # every weight, the [mask] row too
    assert not all(torch.equal(init[k], pretrained[k]) for k in pretrained)
    assert [set(r["loss"]) for r in records(res.run_dir / "1-pretrain")] == [{"main"}] * 2
    summary = json.loads((res.run_dir / "summary.json").read_text())
    assert [s["name"] for s in summary["stages"]] == ["1-pretrain", "2-finetune"]


def test_resume_across_the_stage_boundary(plugins, tmp_path, tiny_file):
    full = train(config(plugins, tmp_path / "a", tiny_file), plugins, log=lambda m: None)
    lines = []

    def log(msg):
        lines.append(msg)
        if msg.startswith("stage 2/2 finetune: objective"):  # pre-training done, fine-tuning not started
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config(plugins, tmp_path / "b", tiny_file), plugins, log=log)
    (path,) = (tmp_path / "b").glob("*.incomplete")
    assert (path / "1-pretrain" / "summary.json").is_file() and not (path / "2-finetune").exists()
    resumed = resume(path, plugins, log=lambda m: None)
    for stage in ("1-pretrain", "2-finetune"):
        assert records(resumed.run_dir / stage) == records(full.run_dir / stage)
    assert (resumed.valid, resumed.test) == (full.valid, full.test)
