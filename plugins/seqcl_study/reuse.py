"""Reuse finished runs of other studies instead of training the same config again.

Why: a tuning study and the main table often train the very same config (the
reading chosen as the default, at seed 1), and a Beauty run to early stopping
takes hours. A study's ``reuse:`` folders (and ``--reuse DIR``) are searched
when it is planned: a run there counts when it is finished — ``summary.json``
in a final run dir (not ``<run>.incomplete``), no ``failed.json`` — and its
saved ``config.yaml`` has the cell's :func:`~seqcl_study.confighash.config_hash`
(the UNHASHED keys such as ``train.threads`` are ignored; the seed and a
torchrun job's process count, its ``world_size``, are not).

Planning only notes the source (``Cell.reuse``); the worker that claims the
cell copies it (:func:`copy_run`, checkpoints included, so ``seqcl.load_run``
opens the copy) and reports it like a trained run, so the ledger, resuming,
the report and its statistics need no second path. ``reused_from.json`` in the
copy says where it came from; the copy's ``config.yaml`` is the source's, as
it was trained (its ``run.*`` keys name the source).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from seqcl.atomic import atomic_write_text
from seqcl.errors import DataError
from seqcl.runs import FAILED, INCOMPLETE

from .files import read_json, read_yaml
from .confighash import config_hash
from .spec import Launch

#: written into a copied run: ``{"source": <run dir>, "study": <its study>, "run": <its run name>}``
REUSED_FROM = "reused_from.json"
_COPYING = ".copying"  # a copy under way; a leftover one (a killed worker) is removed by the next attempt


def finished_runs(study_dirs: Iterable[str | Path]) -> dict[str, Path]:
    """Config hash → a finished run dir with it, over the ``runs/*/`` of ``study_dirs`` (first found wins).

    A run whose ``config.yaml`` cannot be read is skipped: it cannot be shown to be identical.
    """
    found: dict[str, Path] = {}
    for study_dir in study_dirs:
        for summary in sorted(Path(study_dir).glob("runs/*/summary.json")):
            run_dir = summary.parent
            if run_dir.name.endswith((INCOMPLETE, _COPYING)) or (run_dir / FAILED).is_file():
                continue
            try:
                # a torchrun job's runs hash with their process count (summary.json's world_size)
                world_size = read_json(summary).get("world_size", 1)
                digest = config_hash(read_yaml(run_dir / "config.yaml"), Launch(int(world_size)))
            except (DataError, AttributeError, TypeError, ValueError):
                continue
            found.setdefault(digest, run_dir)
    return found


def study_name(study_dir: Path) -> str:
    """The ``name`` in a study folder's ``study.json`` (the folder's name if it has none)."""
    try:
        info = read_json(study_dir / "study.json")
    except DataError:
        info = None
    return str(info.get("name") or study_dir.name) if isinstance(info, dict) else study_dir.name


def copy_run(source: Path, final: Path, log: Callable[[str], None]) -> None:
    """Copy the finished run ``source`` to ``final`` (which must not exist) and write ``reused_from.json``.

    The copy is made under ``<final>.copying`` and renamed, so ``final`` appears
    whole or not at all; a leftover ``<final>.incomplete`` of an earlier attempt
    to train it is removed (the claim makes this worker the run's only owner).
    """
    if not (source / "summary.json").is_file():
        raise FileNotFoundError(f"{source}: the run to reuse is gone (no summary.json)")
    for leftover in (final.with_name(final.name + _COPYING), final.with_name(final.name + INCOMPLETE)):
        if leftover.exists():
            log(f"removing the leftover {leftover} of an earlier attempt")
            shutil.rmtree(leftover)
    staging = final.with_name(final.name + _COPYING)
    shutil.copytree(source, staging)
    origin: dict[str, Any] = {"source": str(source), "study": study_name(source.parent.parent), "run": source.name}
    atomic_write_text(staging / REUSED_FROM, json.dumps(origin, indent=2) + "\n")
    staging.rename(final)
    log(f"reused from {source} (study {origin['study']}): identical config, copied instead of trained")


def reused_from(run_dir: Path) -> dict[str, Any] | None:
    """The ``reused_from.json`` of a run dir; None for a run trained in its own study."""
    path = Path(run_dir) / REUSED_FROM
    if not path.is_file():
        return None
    data = read_json(path)
    return data if isinstance(data, dict) else None
