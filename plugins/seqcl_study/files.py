"""Reading a run's result files (``summary.json``, ``config.yaml``, ``ranks.pt``), writing reports atomically.

Why a module: a run killed while writing, or a copy cut short between
machines, leaves a truncated file, and ``seqcl compare`` / ``seqcl study
report`` must then say which file in one line (a :class:`DataError`, exit 2),
not print a JSON or zip traceback. ``ranks.pt`` is loaded with
``weights_only=True``: a results file from elsewhere must not run code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from seqcl.data.notice import load_error, one_line
from seqcl.errors import DataError

_HINT = "truncated or not written by seqcl? rerun the run or copy the file again"


def read_json(path: str | Path) -> Any:
    """The parsed JSON file; a DataError naming it if it cannot be read or parsed."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({one_line(exc)}; {_HINT})") from None


def read_json_dict(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """:func:`read_json` that must give an object holding ``required`` keys."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(data).__name__} ({_HINT})")
    missing = [k for k in required if k not in data]
    if missing:
        raise DataError(f"{path}: no {', '.join(missing)} ({_HINT})")
    return data


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a ``.jsonl`` file, one a line; a DataError naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({one_line(exc)}; {_HINT})") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {n}: not JSON ({exc.msg}; {_HINT})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}, line {n}: expected a JSON object, got {type(record).__name__} ({_HINT})")
        out.append(record)
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The parsed YAML mapping (an empty file is an empty mapping); a DataError if unreadable."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: cannot read ({one_line(exc)}; {_HINT})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping, got {type(data).__name__} ({_HINT})")
    return data


def load_ranks(path: str | Path, split: str) -> np.ndarray:
    """(users,) ranks of ``split`` from a ``ranks.pt``; a DataError naming the file if it is unusable.

    A missing file is FileNotFoundError (callers treat it as "no ranks saved").
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - zip, pickle and EOF errors alike: the file is unusable
        raise DataError(f"{path}: cannot read ({load_error(exc)}; {_HINT})") from None
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise DataError(f"{path}: not a seqcl ranks file ({_HINT})")
    if split not in blob:
        raise DataError(f"{path}: no ranks of the {split} split (has {', '.join(map(str, blob)) or 'none'})")
    ranks = blob[split]
    if ranks.dim() != 1 or ranks.dtype.is_floating_point or ranks.dtype == torch.bool:
        raise DataError(f"{path}: {split} ranks are not a 1-D integer tensor ({_HINT})")
    return ranks.numpy()


