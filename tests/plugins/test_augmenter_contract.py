"""The augmenter contract, checked for EVERY registered augmenter (timm-style, over the registry).

Each augmenter is built through the real path (``resolve`` → ``build_model``) on
a tiny data set with its default terms, and runs one training step on a small
batch that includes length-1 rows, and on a batch of one: its views are (B, d)
(or the shape it declares in ``view_shapes``) and finite, its pairs name existing views and match what it declared before
the terms were built, the loss backpropagates to finite gradients, and the
batch's items are not modified.
"""

from __future__ import annotations

import pytest
import torch

from seqcl.config import resolve
from seqcl.data.dataset import SequenceData, TrainSamples, training_samples, trim_padding
from seqcl.interfaces import Batch, BuildContext, Views
from seqcl.plugins import load_plugins
from seqcl.training import build_model, training_step

REGISTRY = load_plugins().registry
AUGMENTERS = REGISTRY.names("augmenter")
NUM_ITEMS, MAX_LEN, HIDDEN = 15, 8, 16


def _samples() -> TrainSamples:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(4, 14, (12,), generator=g)
    items = torch.randint(1, NUM_ITEMS + 1, (int(lengths.sum()),), generator=g)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lengths, 0)])
    return training_samples(SequenceData(items, offsets, NUM_ITEMS))


SAMPLES = _samples()
ONE_ITEM = torch.nonzero(SAMPLES.ends - SAMPLES.starts == 1).flatten()  # length-1 inputs
LONG = torch.nonzero(SAMPLES.ends - SAMPLES.starts >= MAX_LEN).flatten()  # full windows
BATCHES = {
    "mixed": torch.cat([ONE_ITEM[:3], LONG[:2], torch.arange(5, 40, 6)]),
    "single": ONE_ITEM[:1],
    "single_long": LONG[:1],
}


def _build(name: str, tmp_path):
    resolved = resolve(REGISTRY, overrides=[
        ("augmenter", name), ("data.max_len", MAX_LEN), ("sasrec.hidden_size", HIDDEN), ("sasrec.heads", 2),
        ("sasrec.inner_size", 32), ("sasrec.layers", 1),
    ])
    context = BuildContext(num_items=NUM_ITEMS, max_len=MAX_LEN, hidden_size=HIDDEN,
                           train=SAMPLES, cache_dir=tmp_path, data_key="contract", seed=0)
    return resolved, build_model(resolved, REGISTRY, context)


def _batch(ids: torch.Tensor, full_width: bool) -> Batch:
    items = SAMPLES.windows(ids, MAX_LEN)
    return Batch(items if full_width else trim_padding(items), SAMPLES.targets[ids], ids)


def test_every_shipped_augmenter_is_covered():
    assert {"none", "aclsrec", "crop", "mask", "reorder", "random", "dropout"} <= set(AUGMENTERS)


@pytest.mark.parametrize("batch_kind", sorted(BATCHES))
@pytest.mark.parametrize("name", AUGMENTERS)
def test_augmenter_contract(name, batch_kind, tmp_path):
    torch.manual_seed(0)
    resolved, model = _build(name, tmp_path)
    augmenter, encoder = model.augmenter, model.encoder
    assert model.encoder.item_table().shape[0] == NUM_ITEMS + 1 + augmenter.extra_rows
    batch = _batch(BATCHES[batch_kind], getattr(augmenter, "full_width", False))
    before = batch.items.clone()
    assert (batch.lengths() == 1).any() or batch_kind == "single_long"
    model.train(True)

    # the views themselves
    h_in = encoder.embed(batch.items)
    hidden = encoder.contextualize(h_in, batch.items)
    views = augmenter(batch, encoder, h_in, hidden)
    assert isinstance(views, Views)
    assert views.pairs == list(augmenter.pairs), "pairs differ from those declared before the terms were built"
    for a, b in views.pairs:
        assert a in views.tensors and b in views.tensors, f"pair ({a}, {b}) names a missing view"
    for view, h in views.tensors.items():
        shape = (batch.size, *augmenter.view_shapes.get(view, (HIDDEN,)))  # (B, d) unless declared
        assert h.shape == shape, f"view {view}: shape {tuple(h.shape)}"
        assert torch.isfinite(h).all(), f"view {view} is not finite"
    if resolved.terms:
        assert views.pairs, "an augmenter that enables terms must give view pairs"
    assert torch.equal(batch.items, before), "the augmenter modified batch.items"

    # one training step: main loss + its default terms
    out = training_step(model, batch)
    assert torch.isfinite(out.total)
    assert set(out.parts) == {"main", *resolved.terms}
    for part, value in out.parts.items():
        assert torch.isfinite(value), f"{part} is not finite"
    out.total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert torch.equal(batch.items, before), "the training step modified batch.items"


@pytest.mark.parametrize("name", AUGMENTERS)
def test_augmenter_repeats_with_the_same_seed(name, tmp_path):
    """Two builds with the same seed give the same views on the same batch (eval-mode encoder)."""
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        _, model = _build(name, tmp_path)
        model.train(False)
        batch = _batch(BATCHES["mixed"], getattr(model.augmenter, "full_width", False))
        h_in = model.encoder.embed(batch.items)
        with torch.no_grad():
            torch.manual_seed(1)
            views = model.augmenter(batch, model.encoder, h_in, model.encoder.contextualize(h_in, batch.items))
        results.append(views.tensors)
    assert results[0].keys() == results[1].keys()
    for key in results[0]:
        torch.testing.assert_close(results[0][key], results[1][key])
