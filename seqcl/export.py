"""``seqcl export``: a trained run as one file that serves without seqcl.

The exported module is :class:`seqcl.api.Scorer` on the run's encoder:

* input ``items``: (B, T) int64, internal item ids, **left**-padded with 0,
  the most recent item in the last column; ``T`` is the run's ``data.max_len``
  (fixed; keep the last ``T`` items of a longer history); B is free.
* output ``scores``: (B, N) float32, column j is the item ``items.json[j]``
  (internal id j + 1). Nothing is excluded: mask the history yourself if wanted.

Beside it, ``items.json`` (the original item ids, in column order; the
internal id of ``items.json[j]`` is j + 1) and ``export.json`` (format, T, N,
this layout). The encoder is traced with the layout that has no host-side
work (:meth:`Encoder.request_full_width`), then the traced module is checked
against the run on histories of other lengths and another batch size: an
encoder whose graph depends on its input's lengths (GRU4Rec's packing) is a
one-line error, not a wrong model.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import sys
import warnings
from pathlib import Path

import torch

from seqcl.api import Run, Scorer
from seqcl.atomic import atomic_write_text
from seqcl.errors import ConfigError, SeqclError

FORMATS = ("torchscript", "onnx")
FILES = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
#: exported scores match the run's within this (fp32 rounding of a different kernel order)
ATOL = 1e-4
RTOL = 1e-4


def example_items(batch: int, max_len: int, num_items: int, seed: int = 0, longest: int | None = None) -> torch.Tensor:
    """(batch, T) left-padded windows of lengths spread over 1..longest (default T), random real items."""
    gen = torch.Generator().manual_seed(seed)
    items = torch.randint(1, num_items + 1, (batch, max_len), generator=gen)
    lengths = torch.linspace(1, longest or max_len, batch).round().long()
    keep = torch.arange(max_len).unsqueeze(0) >= (max_len - lengths).unsqueeze(1)
    return items.where(keep, 0)


def export(run: Run, fmt: str, out: str | Path | None = None) -> Path:
    """Write the exported model, ``items.json`` and ``export.json`` to ``out`` (default ``RUN/export``)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out) if out is not None else run.path / "export"
    out.mkdir(parents=True, exist_ok=True)
    encoder = copy.deepcopy(run.encoder).cpu().eval()
    encoder.request_full_width()  # the layout without host-side shape work: traceable
    encoder.requires_grad_(False)  # a serving model: its scores need no autograd graph
    module = Scorer(encoder, run.num_items).eval()
    example = example_items(8, run.max_len, run.num_items)
    # other batch sizes, and a batch whose rows are all shorter than the example's longest
    checks = [example_items(5, run.max_len, run.num_items, seed=1, longest=max(1, run.max_len // 2)),
              example_items(3, run.max_len, run.num_items, seed=2)]
    with torch.inference_mode():
        reference = Scorer(run.encoder, run.num_items).cpu().eval()
        expected = [reference(check) for check in checks]
    path = out / FILES[fmt]
    if fmt == "torchscript":
        got = _torchscript(module, example, checks, path)
    else:
        got = _onnx(module, example, checks, path)
    if not all(g.shape == e.shape and torch.allclose(g, e, atol=ATOL, rtol=RTOL) for g, e in zip(got, expected)):
        path.unlink(missing_ok=True)
        raise SeqclError(f"encoder {run.config['encoder']!r} cannot be exported to {fmt}: the exported model's "
                         f"scores differ from the run's on other inputs (its graph depends on the input's "
                         f"lengths); serve it with seqcl.load_run instead")
    atomic_write_text(out / "items.json", json.dumps(run.ids.items) + "\n")
    meta = {"format": fmt, "file": path.name, "max_len": run.max_len, "num_items": run.num_items,
            "input": "items: (B, max_len) int64, internal item ids (items.json index + 1), left-padded with 0",
            "output": "scores: (B, num_items) float32, column j = items.json[j]",
            "run": str(run.path), "atol": ATOL, "rtol": RTOL}
    atomic_write_text(out / "export.json", json.dumps(meta, indent=2) + "\n")
    return path


def _torchscript(module: Scorer, example: torch.Tensor, checks: list[torch.Tensor], path: Path) -> list[torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarning (checked by the caller instead), TorchScript's deprecation
        with torch.no_grad():
            traced = torch.jit.trace(module, (example,), check_trace=False)
        traced.save(str(path))
        loaded = torch.jit.load(str(path))
        with torch.no_grad():
            return [loaded(check) for check in checks]


def _onnx(module: Scorer, example: torch.Tensor, checks: list[torch.Tensor], path: Path) -> list[torch.Tensor]:
    try:
        import onnx  # noqa: F401  (the exporter's own dependency)
        import onnxruntime
    except ImportError as exc:
        raise SeqclError(f"--format onnx needs the onnx extra ({exc.name} is missing): "
                         "pip install 'seqcl[onnx]'") from None
    with warnings.catch_warnings(), _stdout_silenced():  # on failure the exporter prints its whole graph
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (example,), str(path), input_names=["items"], output_names=["scores"],
                              dynamic_axes={"items": {0: "batch"}, "scores": {0: "batch"}}, dynamo=False)
        except Exception as exc:  # noqa: BLE001 - an operator the exporter lacks
            path.unlink(missing_ok=True)
            raise SeqclError(f"onnx export failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [torch.from_numpy(session.run(["scores"], {"items": check.numpy()})[0]) for check in checks]


@contextlib.contextmanager
def _stdout_silenced():
    """File descriptor 1 to /dev/null (the ONNX exporter writes from C++, past ``sys.stdout``)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
