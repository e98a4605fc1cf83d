"""Run directories: ``runs/<time>-<augmenter>-<dataset>/``.

While a run trains its directory is ``<name>.incomplete``; it is renamed to
``<name>`` only after ``summary.json`` is written, so nothing partial ever looks
like a finished run.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INCOMPLETE = ".incomplete"


def _slug(text: str) -> str:
    stem = Path(text).name
    for suffix in (".gz", ".txt", ".csv", ".tsv", ".inter"):
        stem = stem.removesuffix(suffix)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem) or "data"


@dataclass
class RunDir:
    """A run directory being written."""

    final: Path

    @property
    def path(self) -> Path:
        return self.final.with_name(self.final.name + INCOMPLETE)

    @classmethod
    def create(cls, root: str | Path, name: str, augmenter: str, dataset: str) -> "RunDir":
        root = Path(root)
        if not name:
            name = f"{time.strftime('%Y%m%d-%H%M%S')}-{augmenter}-{_slug(dataset)}"
        final = root / name
        n = 1
        while final.exists() or final.with_name(final.name + INCOMPLETE).exists():
            n += 1
            final = root / f"{name}-{n}"
        run = cls(final)
        run.path.mkdir(parents=True)
        return run

    def write_text(self, filename: str, text: str) -> None:
        (self.path / filename).write_text(text)

    def write_json(self, filename: str, obj: Any) -> None:
        self.write_text(filename, json.dumps(obj, indent=2) + "\n")

    def append_jsonl(self, filename: str, obj: Any) -> None:
        with open(self.path / filename, "a") as fh:
            fh.write(json.dumps(obj) + "\n")

    def finish(self) -> Path:
        os.replace(self.path, self.final)
        return self.final
