"""Tests of the example plugin: registration, view shapes, the noise, one training step."""

import torch

from seqcl.interfaces import Batch, BuildContext
from seqcl.plugins import load_plugins
from seqcl_embnoise import EmbNoiseAugmenter, EmbNoiseOptions
from seqcl_sasrec import SASRec, SASRecOptions


def _setup(scale=0.1, dropout=0.0):
    ctx = BuildContext(num_items=20, max_len=6, hidden_size=8, seed=0)
    torch.manual_seed(0)
    encoder = SASRec(SASRecOptions(hidden_size=8, heads=2, inner_size=16, dropout=dropout, attn_dropout=dropout), ctx)
    augmenter = EmbNoiseAugmenter(EmbNoiseOptions(scale=scale), ctx)
    items = torch.tensor([[0, 0, 0, 0, 0, 3], [0, 0, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6]])
    batch = Batch(items=items, targets=torch.tensor([1, 2, 3]), sample_ids=torch.arange(3))
    return encoder, augmenter, batch


def _forward(encoder, augmenter, batch):
    h_in = encoder.embed(batch.items)
    hidden = encoder.contextualize(h_in, batch.items)
    return hidden, augmenter(batch, encoder, h_in, hidden)


def test_registered_through_the_plugin_manager():
    loaded = load_plugins(["seqcl_embnoise"], entry_points=False)  # works installed or not
    component = loaded.registry.get("augmenter", "embnoise")
    assert component.factory.__name__ == EmbNoiseAugmenter.__name__  # (another test may re-import the module)
    assert component.plugin == "seqcl_embnoise"
    assert component.default_options() == {"scale": 0.1}


def test_two_distinct_views_of_shape_b_d():
    encoder, augmenter, batch = _setup()
    before = batch.items.clone()
    _, views = _forward(encoder, augmenter, batch)
    assert views.pairs == [("n1", "n2")]
    for name in ("n1", "n2"):
        assert views.tensors[name].shape == (3, 8)
        assert torch.isfinite(views.tensors[name]).all()
    assert not torch.allclose(views.tensors["n1"], views.tensors["n2"])  # even the length-1 row differs
    assert not torch.allclose(views.tensors["n1"][0], views.tensors["n2"][0])
    assert torch.equal(batch.items, before)


def test_zero_noise_gives_the_main_representation():
    encoder, augmenter, batch = _setup(scale=0.0)
    hidden, views = _forward(encoder, augmenter, batch)
    torch.testing.assert_close(views.tensors["n1"], hidden[:, -1])
    torch.testing.assert_close(views.tensors["n2"], hidden[:, -1])


def test_gradients_reach_the_encoder():
    from seqcl_contrastive.formulas import contrastive

    encoder, augmenter, batch = _setup()
    _, views = _forward(encoder, augmenter, batch)
    contrastive(views.tensors["n1"], views.tensors["n2"], tau=0.2, sim="cos").backward()
    grad = encoder.item_embedding.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_readme_tutorial_code_is_this_plugin():
    """The README's code block runs as is and registers the same component."""
    import re
    import sys
    import types
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.findall(r"```python\n(.*?)```", readme, re.S)[0]
    module = types.ModuleType("embnoise_tutorial")
    exec(compile(code, "README.md", "exec"), module.__dict__)
    sys.modules["embnoise_tutorial"] = module
    try:
        tutorial = load_plugins(["embnoise_tutorial"], entry_points=False).registry.get("augmenter", "embnoise")
    finally:
        sys.modules.pop("embnoise_tutorial")
    shipped = load_plugins(["seqcl_embnoise"], entry_points=False).registry.get("augmenter", "embnoise")
    assert tutorial.description == shipped.description
    assert tutorial.default_options() == shipped.default_options()
    for attr in ("default_terms", "pairs"):
        assert getattr(tutorial.factory, attr) == getattr(shipped.factory, attr)
