"""``seqcl plot RUN_DIR…``: learning curves of several runs in one PNG; errors in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402  (matplotlib depends on Pillow)

from seqcl.cli import main  # noqa: E402

from conftest import TINY  # noqa: E402


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_file) -> list[Path]:
    """A plain run (2 epochs) and a CL4SRec run with its ``cl`` term (3 epochs)."""
    root = tmp_path_factory.mktemp("runs")
    base = ["train", "--dataset", str(tiny_file), *TINY, "--set", f"run.dir={root}"]
    assert main([*base, "--epochs", "2", "--set", "run.name=plain"]) == 0
    assert main([*base, "--epochs", "3", "--augmenter", "crop", "--with", "cl", "--set", "run.name=cl"]) == 0
    return [root / "plain", root / "cl"]


def records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_png_holds_every_run_and_loss_term(two_runs, tmp_path, capsys):
    out = tmp_path / "figs" / "curves.png"
    assert main(["plot", *map(str, two_runs), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    image = Image.open(out)
    assert image.format == "PNG" and image.size[0] > 600
    data = json.loads(image.text["Description"])
    assert data["metric"] == "mrr@10" and data["runs"] == ["plain", "cl"]
    assert list(data["panels"]) == ["valid mrr@10", "loss: main", "loss: cl"]
    for run in two_runs:
        recs = records(run)
        epochs = [r["epoch"] for r in recs]
        assert data["panels"]["valid mrr@10"][run.name] == {"epoch": epochs, "value": [r["valid"]["mrr@10"] for r in recs]}
        assert data["panels"]["loss: main"][run.name]["value"] == [r["loss"]["main"] for r in recs]
    assert data["panels"]["loss: cl"]["cl"]["value"] == [r["loss"]["cl"] for r in records(two_runs[1])]
    assert "plain" not in data["panels"]["loss: cl"]  # no line for a term the run did not have


def test_metric_option(two_runs, tmp_path, capsys):
    out = tmp_path / "hr.png"
    assert main(["plot", str(two_runs[0]), "--metric", "hr@5", "-o", str(out)]) == 0
    data = json.loads(Image.open(out).text["Description"])
    assert data["panels"]["valid hr@5"]["plain"]["value"] == [r["valid"]["hr@5"] for r in records(two_runs[0])]
    assert main(["plot", str(two_runs[0]), "--metric", "hr@50", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: plain: no valid metric 'hr@50'") and len(err.splitlines()) == 1


@pytest.mark.parametrize("content, message", [
    (None, "no metrics.jsonl"),
    ('{"epoch": 1, "loss": {}}\n', "metrics.jsonl:1: not an epoch record"),
])
def test_bad_run_folder_is_one_line(tmp_path, capsys, content, message):
    run = tmp_path / "r"
    run.mkdir()
    if content is not None:
        (run / "metrics.jsonl").write_text(content)
    assert main(["plot", str(run), "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def test_without_matplotlib_names_the_extra(tmp_path):
    code = ("import sys\nsys.modules['matplotlib'] = None\nfrom seqcl.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    done = subprocess.run([sys.executable, "-c", code, "plot", "runs/x"], capture_output=True, text=True,
                          cwd=tmp_path, env=os.environ.copy(), timeout=300)
    assert done.returncode == 2
    assert done.stderr == ("error: `seqcl plot` needs the 'study' extra (matplotlib not installed): "
                           "pip install 'seqcl[study]'\n")
