import pytest
import yaml

from seqcl.config import parse_assignment, read_yaml, resolve
from seqcl.errors import ConfigError
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
    assert r.loss.tau == 0.1
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
        ("loss.main=foo", "loss.main must be one of 'ce', 'sampled', 'bce', got 'foo'"),
        ("eval.exclude_history=maybe", "eval.exclude_history must be true or false"),
        ("train=3", "train is a section"),
        ("loss.tau=0", "loss.tau must be > 0"),
    ],
)
def test_bad_values_name_key_and_value(registry, assignment, message):
    with pytest.raises(ConfigError, match=message):
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
