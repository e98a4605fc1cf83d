"""The example third-party plugin (examples/seqcl-embnoise), used the way its README tells a user to.

Its directory goes on ``sys.path`` (as ``pip install -e`` would) and it is
loaded as a ``--plugin`` module; then ``seqcl train --augmenter embnoise``
trains one epoch on the built-in data with a tiny model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seqcl.cli import main
from seqcl.plugins import load_plugins

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "seqcl-embnoise"


@pytest.fixture
def example_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))


def test_example_registers_its_augmenter(example_on_path):
    loaded = load_plugins(["seqcl_embnoise"])
    assert "embnoise" in loaded.registry.names("augmenter")
    assert loaded.registry.get("augmenter", "embnoise").plugin == "seqcl_embnoise"
    assert loaded.sources["seqcl_embnoise"] == "--plugin module"


def test_example_plugin_is_listed(example_on_path, capsys):
    assert main(["plugins", "--plugin", "seqcl_embnoise"]) == 0
    assert any(line.split()[:2] == ["augmenter", "embnoise"] for line in capsys.readouterr().out.splitlines())


def test_example_plugin_trains_one_epoch(example_on_path, tmp_path, capsys):
    code = main([
        "train", "--plugin", "seqcl_embnoise", "--augmenter", "embnoise", "--epochs", "1",
        "--set", "data.max_len=20", "--set", "sasrec.hidden_size=16", "--set", "sasrec.layers=1",
        "--set", "sasrec.inner_size=32", "--set", "train.batch_size=512",
        "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", f"run.dir={tmp_path / 'runs'}",
    ])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "best epoch 1 of 1" in out
    (run,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["augmenter"] == "embnoise" and summary["terms"] == ["cl"]
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert set(record["loss"]) == {"main", "cl"} and record["loss"]["cl"] > 0
    assert "seqcl_embnoise" in json.loads((run / "plugins.json").read_text())
