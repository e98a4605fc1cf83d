import pytest

from seqcl.config import parse_assignment, read_yaml, resolve
from seqcl.errors import ConfigError, SeqclError
from seqcl.plugins import load_plugins


@pytest.fixture(scope="module")
def registry():
    return load_plugins().registry


def test_defaults(registry):
    r = resolve(registry)
    assert r.dataset == "builtin" and r.encoder == "sasrec" and r.augmenter == "none"
    assert r.terms == []
    assert r.train.lr == 1e-3 and r.train.batch_size == 256 and r.train.patience == 10
    assert r.encoder_options.hidden_size == 64 and r.encoder_options.dropout == 0.5
    assert r.data.max_len == 50 and r.eval.ks == [5, 10]


def test_augmenter_supplies_term_defaults_and_tau(registry):
    r = resolve(registry, overrides=[("augmenter", "aclsrec")])
    assert r.terms == ["cl", "align", "boundary"]
    assert r.tree["loss"]["cl"]["weight"] == 0.1
    assert r.tree["loss"]["align"]["weight"] == 1.0
    assert r.tree["loss"]["boundary"]["weight"] == 0.005
    assert r.term_options["cl"].tau == r.term_options["align"].tau == 1.0
    assert r.term_options["cl"].sim == r.term_options["boundary"].sim == "cos"
    assert r.objective == "ce" and r.tree["ce"] == {"include_pad_logit": False}
    assert r.tree["aclsrec"]["mlp_depth"] == 2


def test_set_converts_types(registry):
    r = resolve(registry, overrides=[parse_assignment("train.lr=1e-3"), parse_assignment("eval.ks=[1,20]"),
                                     parse_assignment("sasrec.dropout=0.2")])
    assert isinstance(r.train.lr, float) and r.train.lr == 1e-3
    assert r.eval.ks == [1, 20]
    assert r.encoder_options.dropout == 0.2


def test_without_and_with(registry):
    r = resolve(registry, overrides=[("augmenter", "aclsrec")], without_terms=["boundary", "align"])
    assert r.terms == ["cl"] and "boundary" not in r.tree["loss"]
    with pytest.raises(ConfigError, match="--without nope.*active: cl, align, boundary"):
        resolve(registry, overrides=[("augmenter", "aclsrec")], without_terms=["nope"])
    r = resolve(registry, overrides=[("augmenter", "aclsrec")], with_terms=["cl"])
    assert r.terms == ["cl", "align", "boundary"]


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("train.lrr=1", "unknown key 'train.lrr' \\(did you mean 'train.lr'\\?\\)"),
        ("train.lr=-1", "train.lr must be > 0, got -1.0"),
        ("train.epochs=abc", "train.epochs must be an integer, got 'abc'"),
        ("train.epochs=1.5", "train.epochs must be an integer"),
        ("objective=foo", "unknown objective 'foo'"),
        ("loss.main=sampled", "loss.main is gone: the main objective is a plugin now: objective=NAME"),
        ("loss.negatives=3", "loss.negatives is gone: sampled.negatives"),
        ("eval.exclude_history=maybe", "eval.exclude_history must be true or false"),
        ("train=3", "train is a section"),
        ("loss.tau=0.2", "loss.tau is gone: .*loss.cl.tau, loss.align.tau"),
    ],
)
def test_bad_values_name_key_and_value(registry, assignment, message):
    with pytest.raises(SeqclError, match=message):
        resolve(registry, overrides=[parse_assignment(assignment)])


def test_aclsrec_option_validation(registry):
    with pytest.raises(ConfigError, match="aclsrec.mlp_depth must be in 1..4, got 7"):
        resolve(registry, overrides=[("augmenter", "aclsrec"), parse_assignment("aclsrec.mlp_depth=7")])


def test_yaml_file_then_set_order(registry, tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("augmenter: aclsrec\ntrain:\n  lr: 0.01\n  epochs: 3\nloss:\n  cl:\n    weight: 0.5\n")
    r = resolve(registry, read_yaml(f), [parse_assignment("train.lr=0.002")])
    assert r.augmenter == "aclsrec" and r.train.epochs == 3
    assert r.train.lr == 0.002  # --set wins over the file
    assert r.term_options["cl"].weight == 0.5


def test_resolved_config_round_trips(registry, tmp_path):
    r = resolve(registry, overrides=[("augmenter", "aclsrec")], without_terms=["align"])
    f = tmp_path / "resolved.yaml"
    f.write_text(r.to_yaml())
    again = resolve(registry, read_yaml(f))
    assert again.tree == r.tree


def test_bad_yaml_names_file_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  lr: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml:\\d+: invalid YAML"):
        read_yaml(f)
    with pytest.raises(ConfigError, match="not found"):
        read_yaml(tmp_path / "missing.yaml")


def test_unknown_component(registry):
    from seqcl.errors import PluginError

    with pytest.raises(PluginError, match="unknown augmenter 'nope'.*available: .*aclsrec"):
        resolve(registry, overrides=[("augmenter", "nope")])


# ------------------------------------------- issue #9: what --dry-run must already catch


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "CPU", "cpu:0", "tpu"])
def test_device_name_checked_at_resolve(registry, device):
    with pytest.raises(ConfigError, match=f"train.device must be cpu, cuda, cuda:N or mps, got '{device}'"):
        resolve(registry, overrides=[("train.device", device)])


def test_device_availability_checked_at_resolve(registry, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="train.device is 'cuda:0' but CUDA is not available"):
        resolve(registry, overrides=[("train.device", "cuda:0")])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve(registry, overrides=[("train.device", "cuda")]).train.device == "cuda"
    with pytest.raises(ConfigError, match="train.device is 'cuda:1' but only 1 CUDA device"):
        resolve(registry, overrides=[("train.device", "cuda:1")])
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="train.device is 'mps' but MPS is not available"):
        resolve(registry, overrides=[("train.device", "mps")])


@pytest.mark.parametrize(
    "overrides, with_terms, message",
    [
        ([("augmenter", "crop")], ["align"],
         "loss term align needs exactly 2 view pairs .*augmenter 'crop' provides 1: \\(v1, v2\\)"),
        ([("augmenter", "dropout"), ("dropout.mode", "supervised")], ["align"],
         "augmenter 'dropout' provides 1: \\(h, h_sem\\)"),
        ([("augmenter", "none")], ["cl"], "loss term cl needs at least one view pair; augmenter 'none' provides none"),
        ([("augmenter", "none")], ["boundary"], "loss term boundary needs at least one view pair"),
    ],
)
def test_term_rejects_augmenter_at_resolve(registry, overrides, with_terms, message):
    with pytest.raises(ConfigError, match=message):
        resolve(registry, overrides=overrides, with_terms=with_terms)


@pytest.mark.parametrize("augmenter", ["crop", "dropout", "aclsrec"])
def test_compatible_terms_pass_the_check(registry, augmenter):
    assert "boundary" in resolve(registry, overrides=[("augmenter", augmenter)], with_terms=["boundary"]).terms


def test_term_check_is_generic_contract():
    """Any term factory's ``check(options, augmenter)`` sees the declared pairs; undeclared ones skip it."""
    from dataclasses import dataclass

    from seqcl.interfaces import Augmenter
    from seqcl.registry import Registry

    seen = []

    @dataclass
    class Opts:
        weight: float = 1.0

    class Picky:
        @staticmethod
        def check(options, augmenter):
            seen.append((augmenter.name, augmenter.pairs, options.weight))
            if len(augmenter.pairs) != 3:
                raise ConfigError(f"picky wants 3 pairs, {augmenter.name} has {len(augmenter.pairs)}")

    class Declared(Augmenter):
        default_terms = {"picky": {"weight": 0.5}}
        pairs = [("a", "b")]

    class Undeclared(Augmenter):  # sets its pairs in __init__ only: nothing to check before building
        default_terms = {"picky": {}}

    from seqcl.interfaces import Objective

    @dataclass
    class EncoderOpts:
        hidden_size: int = 8

    reg = Registry()
    reg.add("encoder", "p", "sasrec", object, "", options=EncoderOpts)
    reg.add("objective", "p", "ce", Objective, "")
    reg.add("augmenter", "p", "declared", Declared, "")
    reg.add("augmenter", "p", "undeclared", Undeclared, "")
    reg.add("loss_term", "p", "picky", Picky, "", options=Opts)
    with pytest.raises(ConfigError, match="picky wants 3 pairs, declared has 1"):
        resolve(reg, overrides=[("augmenter", "declared")])
    assert seen == [("declared", [("a", "b")], 0.5)]
    resolve(reg, overrides=[("augmenter", "undeclared")])
    assert len(seen) == 1


def test_dataset_checked_at_resolve(registry, tmp_path):
    with pytest.raises(ConfigError, match=f"dataset '{tmp_path}/missing.txt' not found"):
        resolve(registry, overrides=[("dataset", f"{tmp_path}/missing.txt")])
    with pytest.raises(ConfigError, match="is not a file"):
        resolve(registry, overrides=[("dataset", str(tmp_path))])
    (tmp_path / "seq.txt").write_text("1 2 3 4 5\n")
    assert resolve(registry, overrides=[("dataset", str(tmp_path / "seq.txt"))]).dataset.endswith("seq.txt")
    assert resolve(registry, overrides=[("dataset", "builtin:7")]).dataset == "builtin:7"


def test_tau_is_owned_by_each_term_and_tied_under_aclsrec(registry):
    def taus(*overrides, file_config=None):
        r = resolve(registry, file_config, [("augmenter", "aclsrec"), *map(parse_assignment, overrides)])
        return r.term_options["cl"].tau, r.term_options["align"].tau

    assert taus() == (1.0, 1.0)
    assert taus("loss.cl.tau=0.3") == (0.3, 0.3)  # tied: one flag moves both
    assert taus("loss.align.tau=0.2") == (0.2, 0.2)
    assert taus("loss.cl.tau=0.3", "loss.align.tau=0.5") == (0.3, 0.5)  # set apart: untied
    saved = resolve(registry, overrides=[("augmenter", "aclsrec")]).tree  # a config.yaml lists both
    assert taus("loss.cl.tau=0.2", file_config=saved) == (0.2, 0.2)
    crop = resolve(registry, overrides=[("augmenter", "crop")])
    assert crop.term_options["cl"].tau == 1.0  # CL4SRec's own default
    with pytest.raises(ConfigError, match="loss.cl.tau must be > 0, got 0.0"):
        taus("loss.cl.tau=0")
