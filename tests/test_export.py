"""seqcl export: the exported model scores as the run does, loads without seqcl, refuses what it cannot export."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from seqcl.api import Run, load_run
from seqcl.cli import main
from seqcl.errors import SeqclError
from seqcl.export import ATOL, RTOL, export
from seqcl.ids import IdMap
from seqcl.interfaces import BuildContext

from trained import train_tiny

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # TorchScript is deprecated in torch


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("export"))


def padded(run_or_ids: list[str], histories: list[list[str]], max_len: int) -> torch.Tensor:
    """What a serving consumer does with items.json: ids → index + 1, last T, left-padded with 0."""
    index = {item: j + 1 for j, item in enumerate(run_or_ids)}
    rows = [[index[i] for i in h][-max_len:] for h in histories]
    return torch.tensor([[0] * (max_len - len(r)) + r for r in rows])


def histories_of(tiny, count: int) -> list[list[str]]:
    users = sorted(tiny.sequences)[:count]
    return [tiny.sequences[u][: 1 + i % len(tiny.sequences[u])] for i, u in enumerate(users)]  # lengths vary


def test_torchscript_scores_equal_the_runs_and_load_without_seqcl(tiny, tmp_path):
    run = load_run(tiny.path)
    path = export(run, "torchscript", tmp_path / "out")
    items_json = json.loads((tmp_path / "out" / "items.json").read_text())
    meta = json.loads((tmp_path / "out" / "export.json").read_text())
    assert items_json == run.ids.items and meta["max_len"] == run.max_len == 20 and meta["num_items"] == run.num_items
    histories = histories_of(tiny, 37)
    items = padded(items_json, histories, run.max_len)
    torch.save(items, tmp_path / "items.pt")
    script = (
        "import sys, torch\n"
        f"model = torch.jit.load({str(path)!r})\n"
        f"torch.save(model(torch.load({str(tmp_path / 'items.pt')!r})), {str(tmp_path / 'scores.pt')!r})\n"
        "assert not [m for m in sys.modules if m.split('.')[0].startswith('seqcl')], 'seqcl was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    exported = torch.load(tmp_path / "scores.pt")
    assert not exported.requires_grad
    expected = run.score(histories)
    assert exported.shape == expected.shape == (37, run.num_items)
    assert torch.allclose(exported, expected, atol=ATOL, rtol=RTOL)
    assert (exported - expected).abs().max() < 1e-5  # what we measured; the check's tolerance is 1e-4


def test_onnx_scores_equal_the_runs(tiny, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    run = load_run(tiny.path)
    path = export(run, "onnx", tmp_path)
    histories = histories_of(tiny, 11)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(["scores"], {"items": padded(run.ids.items, histories, run.max_len).numpy()})[0])
    assert torch.allclose(got, run.score(histories), atol=ATOL, rtol=RTOL)


def test_cli_export_writes_model_and_id_map(tiny, capsys):
    code = main(["export", str(tiny.path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "model.torchscript.pt" in out and "(B, 20) int64" in out
    assert sorted(p.name for p in (tiny.path / "export").iterdir()) == ["export.json", "items.json",
                                                                        "model.torchscript.pt"]


def test_cli_export_errors_are_one_line(tiny, capsys, monkeypatch):
    assert main(["export", str(tiny.path), "--format", "pickle"]) == 2
    assert capsys.readouterr().err.strip() == "error: --format must be one of torchscript, onnx, got 'pickle'"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the onnx extra were not installed
    assert main(["export", str(tiny.path), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip install 'seqcl[onnx]'" in err


def _untrained_run(encoder, name: str, num_items: int = 30, max_len: int = 10) -> Run:
    ids = IdMap([str(i) for i in range(1, num_items + 1)], [])
    return Run(path=Path(tempfile.mkdtemp()), config={"encoder": name}, metrics={}, summary={}, history=[],
               ids=ids, encoder=encoder.eval(), max_len=max_len)


def test_other_encoders_export_or_refuse_in_one_line():
    """BERT4Rec exports to both; GRU4Rec to TorchScript (checked on other lengths), not to ONNX."""
    from seqcl_bert4rec.encoder import BERT4Rec, BERT4RecOptions
    from seqcl_gru4rec.encoder import GRU4Rec, GRU4RecOptions

    ctx = BuildContext(num_items=30, max_len=10, hidden_size=16)
    bert = _untrained_run(BERT4Rec(BERT4RecOptions(hidden_size=16, inner_size=32), ctx), "bert4rec")
    gru = _untrained_run(GRU4Rec(GRU4RecOptions(hidden_size=16), ctx), "gru4rec")
    for run in (bert, gru):
        path = export(run, "torchscript")
        model = torch.jit.load(str(path))
        items = torch.randint(1, 31, (6, 10)).where(torch.arange(10) >= torch.tensor([[9], [7], [5], [3], [8], [6]]), 0)
        assert torch.allclose(model(items), run.score([[str(int(i)) for i in row if i] for row in items]),
                              atol=ATOL, rtol=RTOL)
    if pytest.importorskip("onnxruntime"):
        export(bert, "onnx")
        with pytest.raises(SeqclError, match=r"^onnx export failed: .*cummax") as info:
            export(gru, "onnx")
        assert "\n" not in str(info.value)
