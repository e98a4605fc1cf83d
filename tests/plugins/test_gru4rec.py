"""GRU4Rec encoder plugin: exact padding handling against a hand-written per-sequence GRU,
shapes, options, training with every shipped augmenter, determinism."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqcl.config import parse_assignment, resolve
from seqcl.data.dataset import training_samples, trim_padding
from seqcl.errors import ConfigError
from seqcl.interfaces import BuildContext
from seqcl.plugins import load_plugins
from seqcl.training import iterate_batches, prepare, train, training_step
from seqcl_gru4rec import GRU4Rec, GRU4RecOptions, pack_layout

T, N_ITEMS, D, G = 12, 30, 8, 12
AUGMENTERS = ["none", "crop", "mask", "reorder", "random", "dropout", "aclsrec"]
TINY_GRU = ["encoder=gru4rec", "gru4rec.hidden_size=16", "gru4rec.gru_size=24", "data.max_len=20",
            "train.batch_size=128", "train.threads=1"]


def make(layers=1, drop=0.0, seed=0, extra_rows=1):
    opt = GRU4RecOptions(hidden_size=D, gru_size=G, num_layers=layers, dropout=drop)
    return GRU4Rec(opt, BuildContext(num_items=N_ITEMS, max_len=T, hidden_size=D, extra_rows=extra_rows, seed=seed))


def left_padded(lengths, seed=0, width=T):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, N_ITEMS + 2, (len(lengths), width), generator=g)  # N_ITEMS + 1: the extra row
    slot = torch.arange(width)
    return torch.where(slot >= width - torch.tensor(lengths).unsqueeze(1), items, 0)


def reference_outputs(enc: GRU4Rec, x: torch.Tensor) -> torch.Tensor:
    """The GRU equations written out, one sequence, one step at a time: x (L, d) → dense outputs (L, d).

    r = σ(W_ir x + W_hr h), z = σ(W_iz x + W_hz h), n = tanh(W_in x + r ⊙ (W_hn h)),
    h' = (1 − z) ⊙ n + z ⊙ h, from h = 0 (no biases, as RecBole's GRU4Rec).
    """
    for layer in range(enc.gru.num_layers):
        w_ih = getattr(enc.gru, f"weight_ih_l{layer}").double()
        w_hh = getattr(enc.gru, f"weight_hh_l{layer}").double()
        h = torch.zeros(w_hh.shape[1], dtype=torch.float64)
        outs = []
        for x_t in x.double():
            ir, iz, in_ = (w_ih @ x_t).chunk(3)
            hr, hz, hn = (w_hh @ h).chunk(3)
            r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
            n = torch.tanh(in_ + r * hn)
            h = (1 - z) * n + z * h
            outs.append(h)
        x = torch.stack(outs)
    return (x @ enc.dense.weight.double().T + enc.dense.bias.double()).float()


@pytest.mark.parametrize("layers", [1, 2])
def test_padding_exact_against_per_sequence_gru(layers):
    """Every real slot of H, and encode(), equal a GRU run over that row's items alone.

    The padding row is made non-zero first (RecBole's xavier init leaves it so): with a zero
    padding embedding and a bias-free GRU, a plain GRU over the left padding would keep the
    state at exactly 0 and pass this test by accident.
    """
    enc = make(layers=layers).eval()
    lengths = [1, 2, 5, T, 7, 1, 3]
    items = left_padded(lengths)
    with torch.no_grad():
        enc.item_embedding.weight[0].normal_()
        h_in = enc.embed(items)
        hidden = enc.contextualize(h_in, items)
        last = enc.encode(items)
        for row, length in enumerate(lengths):
            ref = reference_outputs(enc, h_in[row, T - length:])
            assert torch.allclose(hidden[row, T - length:], ref, atol=1e-5), row
            assert torch.allclose(last[row], ref[-1], atol=1e-5), row
            # leading padding: the dense layer on the initial state 0
            assert torch.equal(hidden[row, :T - length], enc.dense.bias.expand(T - length, D))


def test_padding_inputs_never_reach_real_slots():
    """Perturbed padding slots of H_in (ACLSRec's MLP_p makes them non-zero) change nothing."""
    enc = make(layers=2).eval()
    items = left_padded([3, 1, 9])
    with torch.no_grad():
        h_in = enc.embed(items)
        base = enc.contextualize(h_in, items)
        noisy = torch.where((items > 0).unsqueeze(-1), h_in, torch.randn_like(h_in) * 10)
        assert torch.equal(enc.contextualize(noisy, items), base)
        enc.item_embedding.weight[0] += 5.0  # the padding row itself
        assert torch.equal(enc.contextualize(enc.embed(items), items), base)


def test_more_padding_same_output_and_encode_equals_last_slot():
    enc = make(layers=2).eval()
    items = left_padded([4, 2, 6])
    wide = torch.cat([torch.zeros(3, 30, dtype=torch.long), items], dim=1)  # 30 more padding columns
    with torch.no_grad():
        ref = enc.contextualize(enc.embed(items), items)[:, -1]
        assert torch.allclose(enc.encode(wide), ref, atol=1e-6)
        assert torch.allclose(enc.encode(trim_padding(items)), ref, atol=1e-6)
        assert torch.allclose(enc.encode(items), ref, atol=1e-6)


def test_pack_layout_indices():
    items = torch.tensor([[0, 0, 5, 6], [0, 0, 0, 7], [1, 2, 3, 4], [0, 0, 0, 0]])
    layout = pack_layout(items)
    assert layout.lengths.tolist() == [2, 1, 4, 1]  # an empty row keeps its last slot
    assert layout.batch_sizes.tolist() == [4, 2, 1, 1]
    assert layout.sorted_indices.tolist() == [2, 0, 1, 3]
    # time-major: the first step of rows 2, 0, 1, 3, then the second of 2, 0, ...
    assert layout.index.tolist() == [8, 2, 7, 15, 9, 3, 10, 11]


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 3), min_size=1, max_size=6), st.booleans(), st.integers(1, 2))
def test_shapes_and_finite_for_short_sequences(lengths, training, layers):
    enc = make(layers=layers, drop=0.3).train(training)
    items = left_padded(lengths)
    hidden = enc.contextualize(enc.embed(items), items)
    assert hidden.shape == (len(lengths), T, D) and torch.isfinite(hidden).all()
    h = enc.encode(trim_padding(items))
    assert h.shape == (len(lengths), D) and torch.isfinite(h).all()
    (hidden.sum() + h.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters() if p.grad is not None)
    assert torch.all(enc.item_embedding.weight.grad[0] == 0)


def test_item_table_and_init_like_recbole():
    enc = make(extra_rows=1)
    table = enc.item_table()
    assert table.shape == (N_ITEMS + 2, D) and table is enc.item_embedding.weight
    assert torch.all(table[0] == 0)
    assert not enc.gru.bias  # RecBole: bias=False
    big = GRU4Rec(GRU4RecOptions(), BuildContext(num_items=5000, max_len=T, hidden_size=64))
    w = big.item_embedding.weight.detach()[1:]
    assert abs(float(w.std()) - math.sqrt(2.0 / (5001 + 64))) < 0.002  # xavier_normal
    for name in ("weight_ih_l0", "weight_hh_l0"):
        weight = getattr(big.gru, name).detach()
        bound = math.sqrt(6.0 / sum(weight.shape))  # xavier_uniform
        assert float(weight.abs().max()) <= bound and float(weight.abs().max()) > 0.95 * bound
    assert big.dense.weight.shape == (64, 128) and big.hidden_size == 64


def test_init_depends_on_seed_only():
    torch.manual_seed(123)
    a = make(seed=5)
    torch.rand(10)
    b = make(seed=5)
    c = make(seed=6)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.item_embedding.weight, c.item_embedding.weight)


@pytest.mark.parametrize("key,value,needle", [
    ("hidden_size", 0, "gru4rec.hidden_size must be >= 1"),
    ("gru_size", 0, "gru4rec.gru_size must be >= 1"),
    ("num_layers", 0, "gru4rec.num_layers must be >= 1"),
    ("dropout", 1.0, "gru4rec.dropout must be in [0, 1)"),
    ("dropout", -0.1, "gru4rec.dropout must be in [0, 1)"),
])
def test_options_validation_one_line(key, value, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")) as exc:
        GRU4RecOptions(**{key: value}).validate()
    assert "\n" not in str(exc.value)
    GRU4RecOptions().validate()


# ------------------------------------------------------------------ training through the core


@pytest.fixture(scope="module")
def plugins():
    # --plugin semantics: registers the module once even after it is installed as an entry point
    return load_plugins(extra_modules=("seqcl_gru4rec",))


def config(plugins, tmp_path, dataset, *extra, augmenter="none"):
    pairs = [parse_assignment(a) for a in (*TINY_GRU, *extra)]
    pairs += [("augmenter", augmenter), ("dataset", str(dataset)), ("run.dir", str(tmp_path / "runs"))]
    return resolve(plugins.registry, overrides=pairs)


def test_resolved_defaults_are_recbole(plugins, tmp_path, tiny_file):
    r = resolve(plugins.registry, overrides=[("encoder", "gru4rec"), ("dataset", str(tiny_file))])
    assert r.tree["gru4rec"] == {"hidden_size": 64, "gru_size": 128, "num_layers": 1, "dropout": 0.3}
    with pytest.raises(ConfigError, match="gru4rec.num_layers"):
        resolve(plugins.registry, overrides=[("encoder", "gru4rec"), ("gru4rec.num_layers", 0),
                                             ("dataset", str(tiny_file))])


@pytest.mark.parametrize("augmenter", AUGMENTERS)
def test_trains_and_evaluates_with_each_augmenter(plugins, tmp_path, tiny_file, augmenter):
    r = config(plugins, tmp_path, tiny_file, "train.epochs=1", augmenter=augmenter)
    data, _, model = prepare(r, plugins)
    assert isinstance(model.encoder, GRU4Rec)
    batch = next(iterate_batches(training_samples(data), 64, 20, torch.Generator().manual_seed(0),
                                 torch.device("cpu"), trim=not model.augmenter.full_width))
    out = training_step(model, batch)
    out.total.backward()
    assert torch.isfinite(out.total) and set(out.parts) == {"main", *r.terms}
    assert model.encoder.gru.weight_hh_l0.grad is not None
    res = train(r, plugins, log=lambda m: None)
    assert res.epochs_run == 1 and 0 <= res.valid["mrr@10"] <= 1 and 0 <= res.test["hr@10"] <= 1


def test_aclsrec_sequence_scope_full_width(plugins, tmp_path, tiny_file):
    r = config(plugins, tmp_path, tiny_file, "train.epochs=1", "aclsrec.scope=sequence", augmenter="aclsrec")
    res = train(r, plugins, log=lambda m: None)
    assert all(math.isfinite(v) for v in res.valid.values())


def test_same_seed_same_results(plugins, tmp_path, tiny_file):
    r = config(plugins, tmp_path, tiny_file, "train.epochs=2", augmenter="crop")
    a = train(r, plugins, log=lambda m: None)
    b = train(r, plugins, log=lambda m: None)
    assert a.valid == b.valid and a.test == b.test
    c = train(config(plugins, tmp_path, tiny_file, "train.epochs=2", "train.seed=7", augmenter="crop"), plugins,
              log=lambda m: None)
    assert c.valid != a.valid
