"""Shared helpers of the study tests (not a test module; imported as ``study_helpers``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "studies"

#: A tiny model for tiny data: what tests/conftest.py's TINY sets, plus one epoch and one thread.
TINY_BASE: dict[str, Any] = {
    "data": {"max_len": 20},
    "sasrec": {"hidden_size": 16, "inner_size": 32},
    "train": {"epochs": 1, "batch_size": 128, "threads": 1},
}


def write_spec(path: Path, dataset: Path | str, **fields: Any) -> Path:
    """A study file on ``dataset`` with the tiny base; ``fields`` are top-level study keys."""
    base = {"dataset": str(dataset), **{k: dict(v) for k, v in TINY_BASE.items()}}
    for key, value in fields.pop("base", {}).items():
        base[key] = value
    spec = {"name": "t", "base": base, **fields}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def ledger_trials(study_dir: Path, name: str) -> list[Any]:
    """Every trial of the study's SQLite ledger."""
    import optuna

    storage = f"sqlite:///{study_dir / 'study.db'}"
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
