"""The whole registry, as timm tests every registered model: every encoder, augmenter, loss term and
objective is built from its defaults and runs one training epoch and one evaluation on tiny data.

Combinations an encoder refuses at resolve time (``check_augmenter``, or an optional encoder method the
augmenter needs, ``Augmenter.encoder_methods``) must be refused with one line
(a ``ConfigError``), never fail later; every other combination must train.
"""

from __future__ import annotations

import math

import pytest

from seqcl.config import resolve
from seqcl.data.synthetic import SyntheticConfig, generate
from seqcl.errors import ConfigError
from seqcl.plugins import load_plugins
from seqcl.training import train

PLUGINS = load_plugins()
REGISTRY = PLUGINS.registry


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    data = generate(seed=3, config=SyntheticConfig(num_users=60))
    path = tmp_path_factory.mktemp("data") / "small.txt"
    lines = [" ".join(map(str, [u + 1, *data.items[data.offsets[u]:data.offsets[u + 1]].tolist()]))
             for u in range(data.num_users)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _train(tmp_path, small_file, encoder: str, augmenter: str = "none", objective: str = "",
           with_terms: tuple[str, ...] = ()):
    overrides = [("encoder", encoder), ("augmenter", augmenter), ("dataset", str(small_file)),
                 (f"{encoder}.hidden_size", 16), ("data.max_len", 10), ("train.epochs", 1),
                 ("train.batch_size", 64), ("run.dir", str(tmp_path)), ("run.save_ranks", False)]
    if objective:
        overrides.append(("objective", objective))
    stages = getattr(REGISTRY.get("encoder", encoder).factory, "default_stages", [])
    if stages:  # an encoder that trains in stages (S3Rec): each stage for one epoch; one stage for an objective
        overrides.append(("stages", [] if objective else [{**s, "epochs": 1} for s in stages]))
    resolved = resolve(REGISTRY, overrides=overrides, with_terms=list(with_terms))
    result = train(resolved, PLUGINS, log=lambda m: None)
    assert all(0.0 <= v <= 1.0 and math.isfinite(v) for v in result.test.values())
    return resolved, result


@pytest.mark.parametrize("encoder", REGISTRY.names("encoder"))
@pytest.mark.parametrize("augmenter", REGISTRY.names("augmenter"))
def test_every_encoder_with_every_augmenter(tmp_path, small_file, encoder, augmenter):
    from seqcl.config import check_encoder

    factory = REGISTRY.get("encoder", encoder).factory
    methods = tuple(getattr(REGISTRY.get("augmenter", augmenter).factory, "encoder_methods", ()))
    try:
        check_encoder(REGISTRY.get("encoder", encoder), augmenter, None, methods)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        with pytest.raises(ConfigError):
            _train(tmp_path, small_file, encoder, augmenter)
        return
    resolved, _ = _train(tmp_path, small_file, encoder, augmenter)
    assert resolved.objective == getattr(factory, "default_objective", "ce")


@pytest.mark.parametrize("objective", REGISTRY.names("objective"))
def test_every_objective_trains(tmp_path, small_file, objective):
    """Each objective with an encoder that names it as its default or in its stages, else with sasrec."""
    def names_it(n: str) -> bool:
        factory = REGISTRY.get("encoder", n).factory
        return (getattr(factory, "default_objective", "ce") == objective
                or any(s.get("objective") == objective for s in getattr(factory, "default_stages", [])))

    encoders = [n for n in REGISTRY.names("encoder") if names_it(n)]
    resolved, _ = _train(tmp_path, small_file, (encoders or ["sasrec"])[0], objective=objective)
    assert resolved.objective == objective


def _host(term: str) -> str:
    """ACLSRec (two view pairs: every generic term's requirement holds), unless the term's ``check``
    refuses it (a method's own term, e.g. MCLRec's ``mcl``): then the augmenter that enables it by default."""
    from seqcl.registry import AugmenterInfo

    comp = REGISTRY.get("loss_term", term)
    check = getattr(comp.factory, "check", None)
    try:
        if callable(check):
            check(comp.options() if comp.options else None, AugmenterInfo("aclsrec", [("o", "pr"), ("p", "op")]))
        return "aclsrec"
    except ConfigError:
        owners = [a for a in REGISTRY.names("augmenter")
                  if term in (getattr(REGISTRY.get("augmenter", a).factory, "default_terms", {}) or {})]
        assert owners, f"loss term {term} refuses aclsrec and no augmenter enables it"
        return owners[0]


@pytest.mark.parametrize("term", REGISTRY.names("loss_term"))
def test_every_loss_term_trains(tmp_path, small_file, term):
    """Each term added to ACLSRec's views, or to its own augmenter's (see :func:`_host`)."""
    resolved, result = _train(tmp_path, small_file, "sasrec", _host(term), with_terms=(term,))
    assert term in resolved.terms
    import json

    record = json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert term in record["loss"] and math.isfinite(record["loss"][term])


@pytest.mark.parametrize("term", [n for n in REGISTRY.names("loss_term")
                                  if REGISTRY.get("loss_term", n).options is not None
                                  and "tau" in REGISTRY.get("loss_term", n).default_options()
                                  and _host(n) == "aclsrec"])
def test_every_term_computes_with_its_resolved_tau(term):
    """flag → resolved config → options → factory → formula: a term that ignored its τ fails here.
    (A method's own term tests its τ with its own views, e.g. ``tests/plugins/test_mclrec.py``.)"""
    import dataclasses

    import torch

    from seqcl.interfaces import Batch, BuildContext, Views

    def value(tau: float) -> torch.Tensor:
        resolved = resolve(REGISTRY, overrides=[("augmenter", "aclsrec"), (f"loss.{term}.tau", tau)],
                           with_terms=[term])
        options = resolved.term_options[term]
        assert options.tau == tau
        ctx = BuildContext(num_items=9, max_len=4, hidden_size=6, view_pairs=[("o", "pr"), ("p", "op")],
                           augmenter="aclsrec")
        built = REGISTRY.get("loss_term", term).factory(options, ctx)
        g = torch.Generator().manual_seed(0)
        views = Views({n: torch.randn(5, 6, generator=g) for n in ("o", "pr", "p", "op")},
                      [("o", "pr"), ("p", "op")])
        batch = Batch(torch.ones(5, 4, dtype=torch.long), torch.ones(5, dtype=torch.long), torch.arange(5))
        out = built(views, batch)
        reference = REGISTRY.get("loss_term", term).factory(dataclasses.replace(options, tau=tau), ctx)(views, batch)
        assert torch.equal(out, reference)
        return out

    assert not torch.isclose(value(0.37), value(0.74))
