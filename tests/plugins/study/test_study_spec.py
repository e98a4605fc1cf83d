"""Study files: shape checks, per-run config checks before training, run names, the CLI's exit 2."""

import pytest
import yaml

from seqcl.cli import main
from seqcl.errors import ConfigError
from seqcl.plugins import load_plugins
from seqcl_study.plan import build_plan, config_diff
from seqcl_study.spec import load_spec, parse_spec

from study_helpers import EXAMPLES, write_spec


@pytest.fixture(scope="module")
def registry():
    return load_plugins().registry


def spec(**fields):
    data = {"name": "s", "base": {"dataset": "builtin"}, "variants": {"a": {"augmenter": "none"}}}
    data.update(fields)
    return data


@pytest.mark.parametrize("fields, message", [
    ({"variantz": {}}, "unknown key 'variantz' (did you mean 'variants'?)"),
    ({"name": "a b"}, "name must be a name"),
    ({"variants": {}}, "variants must be a non-empty mapping"),
    ({"variants": {"a": 3}}, "variant 'a' must be a mapping"),
    ({"baseline": "b"}, "baseline 'b' is not a variant"),
    ({"grid": {"loss.tau": 0.1}}, "grid.loss.tau must be a non-empty list"),
    ({"grid": {"loss.tau": [0.1, 0.1]}}, "grid.loss.tau repeats a value"),
    ({"seeds": [1, 1]}, "seeds repeats a seed"),
    ({"seeds": ["x"]}, "seeds must be a non-empty list of integers"),
    ({"metric": "auc"}, "metric must look like hr@10"),
    ({"trials": 3}, "trials is only used with search"),
    ({"base": {"train": {"seed": 3}}, "seeds": [1]}, "train.seed is set by the study itself"),
    ({"base": {"run": {"dir": "x"}}}, "run.dir is set by the study itself"),
    ({"variants": {"a": {"loss.tau": 1, "grid": {"loss.tau": [1, 2]}}}}, "variant 'a' sets loss.tau and its grid"),
    ({"grid": {"loss.tau": [1]}, "variants": {"a": {"loss": {"tau": 2}}}}, "which the top-level grid sweeps"),
    ({"search": {"loss.tau": {"type": "float", "low": 1, "high": 0.1}}, "trials": 2}, "low must be < high"),
    ({"search": {"loss.tau": {"type": "float", "low": 0.1, "high": 1}}}, "trials must be an integer"),
    ({"search": {"loss.tau": {"type": "float", "low": 0.1, "high": 1}}, "trials": 2, "grid": {"x": [1]}},
     "search and grid exclude each other"),
    ({"variants": {"a": {}, "b": {"grid": {"loss.tau": [1, 2]}}}, "baseline": "b"}, "the baseline must be one"),
    ({"references": {"z": {"source": "x"}}}, "references: 'z' is not a variant"),
    ({"references": {"a": {"hr@5": 0.1}}}, "references: a: needs a mapping with source:"),
    ({"references": {"a": {"source": "x", "auc": 0.1}}}, "references: a: 'auc' is not a metric"),
    ({"references": {"a": {"source": "x", "hr@5": "high"}}}, "references: a: hr@5 must be a number"),
    ({"split": "train"}, "split must be one of test, valid, test_history_excluded, test_history_kept, got 'train'"),
])
def test_shape_errors_name_the_key(fields, message):
    with pytest.raises(ConfigError) as info:
        parse_spec(spec(**fields), "s.yaml")
    assert message in str(info.value) and str(info.value).startswith("study s.yaml: ")


@pytest.mark.parametrize("fields, message", [
    ({"variants": {"a": {"augmenter": "none"}, "b": {"augmenter": "aclsrec", "loss.cl.simm": "cos"}}},
     "variant 'b', seed 2026: unknown key 'loss.cl.simm' (did you mean 'loss.cl.sim'?)"),
    ({"variants": {"b": {"augmenter": "aclsrec", "without": ["nope"]}}}, "variant 'b', seed 2026: --without nope"),
    ({"variants": {"b": {"augmenter": "nope"}}}, "variant 'b', seed 2026: unknown augmenter 'nope'"),
    ({"variants": {"b": {"augmenter": "aclsrec", "grid": {"loss.cl.weight": [0.1, "x"]}}}},
     "variant 'b', loss.cl.weight=x, seed 2026: loss.cl.weight must be a number"),
    ({"grid": {"objective": ["ce", "nce"]}}, "variant 'a', objective=nce, seed 2026: unknown objective 'nce'"),
    ({"base": {"dataset": "/no/such/file.txt"}}, "dataset '/no/such/file.txt' not found"),
    ({"metric": "hr@20"}, "metric 'hr@20' is not computed"),
])
def test_every_run_config_is_checked_before_training(registry, tmp_path, fields, message):
    with pytest.raises(ConfigError) as info:
        build_plan(parse_spec(spec(**fields), "s.yaml"), registry, tmp_path)
    assert message in str(info.value)
    assert not (tmp_path / "s").exists()  # nothing written, nothing trained


def test_cells_names_order_aliases_and_overrides(registry, tmp_path):
    data = spec(variants={
        "full": {"augmenter": "aclsrec"},
        "lam": {"augmenter": "aclsrec", "grid": {"loss.cl.weight": [0.05, 0.1]}},
        "nob": {"augmenter": "aclsrec", "without": "boundary", "loss": {"cl": {"sim": "cos"}}},
    }, grid={"objective": ["ce", "sampled"]}, seeds=[1, 2])
    plan = build_plan(parse_spec(data, "s.yaml", overrides=[("train.epochs", 3)]), registry, tmp_path)
    assert len(plan.cells) == 2 * 2 * 4
    first = plan.cells[:4]
    assert [c.run for c in first] == ["full__objective=ce__s1", "lam__objective=ce__loss.cl.weight=0.05__s1",
                                      "lam__objective=ce__loss.cl.weight=0.1__s1", "nob__objective=ce__s1"]
    assert plan.cells[4].group == {"objective": "sampled"} and plan.cells[-1].seed == 2
    # λ = 0.1 is the default: same config as `full`, trained once
    assert first[2].same_as == "full__objective=ce__s1" and first[2].config_hash == first[0].config_hash
    assert len(plan.trained) == 12
    cfg = first[3].config
    assert cfg["without"] == ["boundary"] and cfg["loss"]["cl"]["sim"] == "cos" and cfg["train"]["epochs"] == 3
    assert cfg["run"] == {"dir": str(tmp_path / "s" / "runs"), "name": "nob__objective=ce__s1"}
    assert cfg["train"]["seed"] == 1 and cfg["objective"] == "ce"
    again = build_plan(parse_spec(data, "s.yaml", overrides=[("train.epochs", 3)]), registry, tmp_path)
    assert [c.config_hash for c in again.cells] == [c.config_hash for c in plan.cells]  # deterministic


EXAMPLE_COUNTS = [  # study file, runs, runs trained
    ("aclsrec-ablation.yaml", 18, 18), ("aclsrec-ablation-bpr.yaml", 18, 18), ("aclsrec-sensitivity.yaml", 69, 57), ("compare-augmenters.yaml", 21, 21),
    ("tiny.yaml", 8, 8), ("beauty-search-coarse.yaml", 16, 16), ("beauty-main.yaml", 18, 18),
    ("table2-beauty.yaml", 27, 27), ("beauty-search-fine.yaml", 7, 7), ("baselines-beauty-smoke.yaml", 5, 5),
]
EXAMPLE_STUDIES = [name for name, _, _ in EXAMPLE_COUNTS]


def test_every_example_study_is_validated():
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted(EXAMPLE_STUDIES)


@pytest.mark.parametrize("name, runs, trained", EXAMPLE_COUNTS)
def test_example_studies_validate(registry, tmp_path, name, runs, trained):
    plan = build_plan(load_spec(EXAMPLES / name, ["dataset=builtin"]), registry, tmp_path)
    assert (len(plan.cells), len(plan.trained)) == (runs, trained)
    raw = yaml.safe_load((EXAMPLES / name).read_text())
    if name != "tiny.yaml":
        assert raw["base"]["dataset"] == "../shared/data/Beauty.txt"


@pytest.mark.parametrize("name, main_loss", [("aclsrec-ablation.yaml", "ce"), ("aclsrec-ablation-bpr.yaml", "sampled")])
def test_ablation_rows_are_the_papers(registry, tmp_path, name, main_loss):
    plan = build_plan(load_spec(EXAMPLES / name, ["dataset=builtin"]), registry, tmp_path)
    from seqcl.config import resolve

    terms = {}
    for cell in plan.cells:
        r = resolve(registry, cell.config)
        assert r.objective == main_loss
        negatives = r.objective_options.negatives if r.objective == "sampled" else 1
        cl = r.tree["loss"].get("cl", {})
        terms[cell.variant] = (r.augmenter, r.terms, negatives, cl.get("sim"), cl.get("tau"))
    assert terms["A-full"] == ("aclsrec", ["cl", "align", "boundary"], 1, "cos", 1.0)
    assert terms["B-no-boundary"][1] == ["cl", "align"]
    assert terms["C-no-align"][1] == ["cl", "boundary"]
    assert terms["D-no-cl"][1] == ["align", "boundary"]
    assert terms["E-sasrec"][:2] == ("none", [])
    assert terms["A-full-spec"][3:] == ("dot", 0.1)


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    bad = write_spec(tmp_path / "bad.yaml", "builtin", variants={"x": {"augmenter": "none", "sasrec.hiden_size": 8}})
    code = main(["study", str(bad), "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "variant 'x'" in err and "sasrec.hiden_size" in err
    code = main(["study", str(tmp_path / "missing.yaml")])
    assert code == 2 and "config file not found" in capsys.readouterr().err
    ok = write_spec(tmp_path / "ok.yaml", "builtin", variants={"x": {"augmenter": "none"}}, seeds=[1, 2])
    code = main(["study", str(ok), "--dry-run", "--runs-dir", str(tmp_path), "--set", "train.epochs=2"])
    out = capsys.readouterr().out
    assert code == 0 and "x__s1" in out and "x__s2" in out and not (tmp_path / "t").exists()
    code = main(["study", str(ok), "--runs-dir", str(tmp_path), "--set", "train.epochz=2"])
    assert code == 2 and "unknown key 'train.epochz'" in capsys.readouterr().err


def test_seeds_and_variants_options_select_what_is_trained(tmp_path, capsys):
    ok = write_spec(tmp_path / "ok.yaml", "builtin", seeds=[1, 2, 3],
                    variants={"x": {"augmenter": "none"}, "y": {"augmenter": "crop"}})
    code = main(["study", str(ok), "--dry-run", "--runs-dir", str(tmp_path), "--seeds", "3,1", "--variants", "y"])
    out = capsys.readouterr().out
    assert code == 0 and "2 runs to train (6 table cells)" in out
    chosen = {line.split()[0] for line in out.splitlines()[1:] if "not selected" not in line}
    assert chosen == {"y__s1", "y__s3"}
    for flag, bad, says in (("--seeds", "4", "--seeds 4: 4 not among the file's seeds 1, 2, 3"),
                            ("--seeds", "1,b", "--seeds 1,b: not a comma-separated list of integers"),
                            ("--variants", "x,yy", "--variants x,yy: no variant 'yy' (did you mean 'y'?)")):
        code = main(["study", str(ok), "--dry-run", "--runs-dir", str(tmp_path), flag, bad])
        err = capsys.readouterr().err
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1


def test_config_diff_separates_changes_from_new_options():
    assert config_diff({"a": 1, "b": 2, "old": 0}, {"a": 1, "b": 3, "new": 0}) == (["b"], ["new", "old"])
    assert config_diff({"a": 1}, {"a": 1}) == ([], [])


def test_references_are_kept_in_the_saved_spec():
    parsed = parse_spec(spec(references={"a": {"source": "paper, Table 2", "hr@5": 0.0582}}), "s.yaml")
    assert parsed.to_dict()["references"] == {"a": {"source": "paper, Table 2", "hr@5": 0.0582}}


def test_split_is_kept_in_the_saved_spec():
    assert parse_spec(spec(), "s.yaml").to_dict()["split"] == "test"
    assert parse_spec(spec(split="valid"), "s.yaml").to_dict()["split"] == "valid"
