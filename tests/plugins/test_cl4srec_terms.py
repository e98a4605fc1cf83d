"""CL4SRec's views reuse the generic terms: ``--with boundary`` works, ``--with align`` is refused."""

from __future__ import annotations

import torch
import yaml

from seqcl.cli import main
from seqcl.config import resolve
from seqcl.data.dataset import SequenceData, training_samples, trim_padding
from seqcl.interfaces import Batch, BuildContext
from seqcl.plugins import load_plugins
from seqcl.training import build_model, training_step


def _tiny(tmp_path) -> list[str]:
    return ["--set", "data.max_len=10", "--set", "sasrec.hidden_size=8", "--set", "sasrec.layers=1",
            "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", f"run.dir={tmp_path / 'runs'}"]


def test_crop_with_boundary_resolves_with_cl4srec_defaults(tmp_path, capsys):
    assert main(["train", "--augmenter", "crop", "--with", "boundary", "--dry-run", *_tiny(tmp_path)]) == 0
    tree = yaml.safe_load(capsys.readouterr().out)
    assert tree["terms"] == ["cl", "boundary"]
    assert tree["loss"]["cl"]["tau"] == 1.0 and tree["loss"]["cl"]["weight"] == 0.1 and tree["loss"]["cl"]["sim"] == "dot"
    assert tree["crop"] == {"crop_ratio": 0.6}


def test_crop_with_boundary_trains_a_step():
    registry = load_plugins().registry
    resolved = resolve(registry, overrides=[("augmenter", "crop"), ("with", "boundary"), ("data.max_len", 10),
                                            ("sasrec.hidden_size", 8)])
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(4, 12, (20,), generator=g)
    data = SequenceData(torch.randint(1, 30, (int(lengths.sum()),), generator=g),
                        torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lengths, 0)]), 30)
    samples = training_samples(data)
    ctx = BuildContext(num_items=30, max_len=10, hidden_size=8, train=samples)
    model = build_model(resolved, registry, ctx)
    ids = torch.arange(len(samples))[:32]
    batch = Batch(trim_padding(samples.windows(ids, 10)), samples.targets[ids], ids)
    out = training_step(model, batch)
    assert set(out.parts) == {"main", "cl", "boundary"}
    assert out.parts["boundary"] > 0  # R on (v1, v2), read as printed
    out.total.backward()


def test_crop_with_align_is_a_one_line_error(tmp_path, capsys):
    code = main(["train", "--augmenter", "crop", "--with", "align", "--epochs", "1", *_tiny(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "align needs exactly 2 view pairs" in err[0] and "'crop' provides 1: (v1, v2)" in err[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
