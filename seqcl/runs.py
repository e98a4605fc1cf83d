"""Run directories: ``runs/<time>-<augmenter>-<dataset>/``.

While a run trains its directory is ``<name>.incomplete``; it is renamed to
``<name>`` only after ``summary.json`` is written, so nothing partial ever looks
like a finished run. Every file is written atomically (a temporary file in the
same folder, fsync, rename): a kill or a full disk leaves the previous version
of a file, never a truncated one under its final name. A run that failed (a
non-finite loss) keeps its folder, checkpoints included, and gets ``failed.json``.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from seqcl.atomic import atomic_write
from seqcl.errors import ConfigError, StorageError

INCOMPLETE = ".incomplete"
FAILED = "failed.json"
LAST = "last.pt"
BEST = "best.pt"
MODEL_FILE = "model.json"  # the encoder's build sizes, for seqcl.load_run


def _slug(text: str) -> str:
    stem = Path(text).name
    for suffix in (".gz", ".txt", ".csv", ".tsv", ".inter"):
        stem = stem.removesuffix(suffix)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem) or "data"


def stage_folder_name(index: int, stage: dict[str, Any]) -> str:
    """The folder of a run's ``index``-th stage (from 1) inside the run's folder: ``"1-pretrain"``."""
    return f"{index}-{stage['name']}"


@dataclass
class RunDir:
    """A run directory being written."""

    final: Path

    @property
    def path(self) -> Path:
        return self.final.with_name(self.final.name + INCOMPLETE)

    @classmethod
    def create(cls, root: str | Path, name: str, augmenter: str, dataset: str) -> "RunDir":
        """Claim a new, unique run directory (safe against other processes doing the same).

        The claim is one ``mkdir`` of ``<name>.incomplete``, which fails if another
        process took the name first; then the next suffix is tried. A folder that
        cannot be created or written is a one-line error before anything trains.
        """
        root = Path(root)
        if not name:
            name = f"{time.strftime('%Y%m%d-%H%M%S')}-{augmenter}-{_slug(dataset)}"
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"run.dir {root}: cannot create it ({exc.strerror or exc})") from None
        n = 1
        while True:
            final = root / (name if n == 1 else f"{name}-{n}")
            n += 1
            if final.exists():
                continue
            run = cls(final)
            try:
                run.path.mkdir()
            except FileExistsError:
                continue
            except OSError as exc:
                raise ConfigError(f"run.dir {root}: cannot create a run directory in it "
                                  f"({exc.strerror or exc})") from None
            if final.exists():  # finished by another process between our check and mkdir
                run.path.rmdir()
                continue
            return run

    @classmethod
    def open(cls, path: str | Path, checkpoint: bool = True) -> "RunDir":
        """An interrupted run to resume: ``runs/<name>.incomplete`` (or ``runs/<name>``).

        ``checkpoint`` False: a run in stages, whose checkpoints are in its stages' folders.
        """
        path = Path(path)
        final = path.with_name(path.name.removesuffix(INCOMPLETE))
        run = cls(final)
        if (final / "summary.json").is_file():
            raise ConfigError(f"--resume {path}: the run is finished (summary.json exists); nothing to resume")
        if not run.path.is_dir():
            raise ConfigError(f"--resume {path}: no such run directory ({run.path} not found)")
        if (run.path / FAILED).is_file():
            reason = json.loads((run.path / FAILED).read_text()).get("reason", "?")
            raise ConfigError(f"--resume {path}: the run failed ({reason}); resuming would repeat it")
        if checkpoint and not (run.path / LAST).is_file():
            raise ConfigError(f"--resume {path}: no checkpoint ({LAST}) to resume from; "
                              "the run stopped before its first epoch ended")
        return run

    def write_text(self, filename: str, text: str) -> None:
        self._write(filename, lambda fh: fh.write(text))

    def write_json(self, filename: str, obj: Any) -> None:
        self.write_text(filename, json.dumps(obj, indent=2) + "\n")

    def write_jsonl(self, filename: str, records: list[Any]) -> None:
        """The whole file at once (atomic), so a full disk never leaves half a line."""
        self.write_text(filename, "".join(json.dumps(r) + "\n" for r in records))

    def read_jsonl(self, filename: str) -> list[Any]:
        path = self.path / filename
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def save(self, filename: str, obj: Any) -> None:
        """``torch.save`` atomically (checkpoints, ranks)."""
        import torch

        self._write(filename, lambda fh: torch.save(obj, fh), mode="wb")

    def _write(self, filename: str, write: Callable[[Any], None], mode: str = "w") -> None:
        target = self.path / filename
        try:
            atomic_write(target, write, mode)
        except OSError as exc:
            raise StorageError(f"cannot write {target} ({exc.strerror or exc}); "
                               f"files written before are intact") from None

    def mark_failed(self, reason: str) -> None:
        self.write_json(FAILED, {"reason": reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def finish(self) -> Path:
        os.replace(self.path, self.final)
        return self.final


class SilentRunDir(RunDir):
    """The run directory as seen by ranks > 0 of a torchrun job: rank 0 writes it, they write nothing."""

    def _write(self, filename: str, write: Callable[[Any], None], mode: str = "w") -> None:
        pass

    def read_jsonl(self, filename: str) -> list[Any]:
        return []

    def finish(self) -> Path:
        return self.final
