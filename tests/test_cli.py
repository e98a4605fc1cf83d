"""The command line as a user meets it: exit codes, one-line errors, tables, dry runs."""

import pytest
import yaml

from seqcl.cli import main

from conftest import TINY


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_plugins_lists_every_component(capsys):
    code, out, _ = run(capsys, "plugins")
    assert code == 0
    header, *rows = out.strip().splitlines()
    assert header.split()[:4] == ["kind", "name", "plugin", "description"]
    names = {(r.split()[0], r.split()[1]) for r in rows}
    assert {("encoder", "sasrec"), ("augmenter", "none"), ("augmenter", "aclsrec"), ("loss_term", "cl"),
            ("loss_term", "align"), ("loss_term", "boundary")} <= names
    assert "seqcl 0.1.0" in out  # the distribution that provides the plugin


def test_unknown_augmenter_exit_2_lists_names(capsys):
    code, out, err = run(capsys, "train", "--augmenter", "nope")
    assert code == 2
    assert err.startswith("error: unknown augmenter 'nope'") and "aclsrec" in err and "none" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_dry_run_prints_resolved_config(capsys):
    code, out, _ = run(capsys, "train", "--augmenter", "aclsrec", "--without", "boundary",
                       "--set", "loss.cl.tau=0.2", "--dry-run")
    assert code == 0
    cfg = yaml.safe_load(out)
    assert cfg["augmenter"] == "aclsrec" and cfg["terms"] == ["cl", "align"]
    assert cfg["loss"]["cl"]["tau"] == cfg["loss"]["align"]["tau"] == 0.2 and "boundary" not in cfg["loss"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--set", "train.lr=-1"], "train.lr must be > 0, got -1.0"),
        (["--set", "trian.lr=1"], "unknown key 'trian.lr'"),
        (["--dataset", "/nonexistent/file.txt"], "/nonexistent/file.txt"),
        (["--config", "/nonexistent.yaml"], "/nonexistent.yaml: config file not found"),
        (["--augmenter", "none", "--without", "cl"], "--without cl: not an active loss term"),
        (["--augmenter", "none", "--with", "align"], "needs exactly 2 view pairs"),
    ],
)
def test_user_mistakes_one_line_exit_2(capsys, tmp_path, args, needle):
    code, out, err = run(capsys, "train", *args, "--set", f"run.dir={tmp_path}")
    assert code == 2, err
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing that looks like a run


def test_malformed_data_file_names_file_line_value(capsys, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3 4 5\n2 3 x7 5 6\n")
    code, _, err = run(capsys, "train", "--dataset", str(bad), "--set", f"run.dir={tmp_path}/runs")
    assert code == 2 and "bad.txt:2" in err and "x7" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, _, err = run(capsys, "data", "stats", str(empty))
    assert code == 2 and "empty.txt" in err


def test_debug_shows_traceback(tmp_path):
    from seqcl.errors import ConfigError

    with pytest.raises(ConfigError):
        main(["--debug", "train", "--set", "train.lr=-1"])


def test_train_prints_metrics_table(capsys, tmp_path, tiny_file):
    code, out, err = run(capsys, "train", "--dataset", str(tiny_file), "--epochs", "1", *TINY,
                         "--set", f"run.dir={tmp_path}")
    assert code == 0, err
    assert "hr@5" in out and "ndcg@10" in out and out.count("\n") >= 4
    assert "valid" in out and "test" in out
    assert "epoch   1" in err


def test_data_stats_beauty(capsys, beauty):
    code, out, _ = run(capsys, "data", "stats", str(beauty))
    assert code == 0
    assert out.strip() == "users 22363 | items 12101 | actions 198502 | avg.len 8.9 | density 0.07%"


def test_plugin_option_loads_module(capsys, tmp_path, monkeypatch):
    pkg = tmp_path / "quick_aug_mod.py"
    pkg.write_text(
        "from seqcl.hookspecs import hookimpl\n"
        "from seqcl.interfaces import Augmenter\n"
        "class Quick(Augmenter):\n"
        "    def __init__(self, options, context):\n"
        "        super().__init__()\n"
        "@hookimpl\n"
        "def register_augmenters(register):\n"
        "    register('quick', Quick, 'a quick experiment')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, _ = run(capsys, "plugins", "--plugin", "quick_aug_mod")
    assert code == 0 and "quick" in out and "quick_aug_mod" in out
    code, out, err = run(capsys, "plugins", "--plugin", "not_a_module_xyz")
    assert code == 2 and "not_a_module_xyz" in err


@pytest.mark.parametrize(
    "args, line",
    [
        (["--device", "gpu"], "error: train.device must be cpu, cuda, cuda:N or mps, got 'gpu'"),
        (["--augmenter", "crop", "--with", "align"],
         "error: loss term align needs exactly 2 view pairs (anchor, restored), (perturbed, perturbed'); "
         "augmenter 'crop' provides 1: (v1, v2)"),
        (["--dataset", "/nonexistent/file.txt"], "error: dataset '/nonexistent/file.txt' not found"),
    ],
)
def test_dry_run_catches_what_training_would(capsys, args, line):
    code, out, err = run(capsys, "train", *args, "--dry-run")
    assert (code, out, err.strip()) == (2, "", line)
