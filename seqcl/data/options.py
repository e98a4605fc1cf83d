"""Data settings: file format, preprocessing thresholds, window length, cache place.

Every field except ``cache_dir`` changes the loaded data (or what is derived
from it), so every field except ``cache_dir`` is part of the cache key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from seqcl.errors import ConfigError

FORMATS = ("auto", "sequences", "inter", "csv")
CACHE_ENV = "SEQCL_CACHE_DIR"


@dataclass
class DataOptions:
    """How to read and preprocess a dataset (config section ``data``).

    format:         auto | sequences | inter | csv (``auto`` goes by file suffix).
    k_core:         iterative k-core threshold for raw interactions (SPEC §1).
    min_user_items: users with fewer items are dropped; 3 is the minimum that
                    leaves one training, one validation and one test item.
    max_len:        T, the window length (a data setting: it shapes every input).
    cache_dir:      where preprocessed tensors go; empty → ``$SEQCL_CACHE_DIR``
                    or ``~/.cache/seqcl``.
    """

    format: str = "auto"
    k_core: int = 5
    min_user_items: int = 3
    max_len: int = 50
    cache_dir: str = ""

    def validate(self) -> DataOptions:
        """Raise :class:`ConfigError` naming the key and the bad value; return self."""
        if not isinstance(self.format, str) or self.format not in FORMATS:
            raise ConfigError(f"data.format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        _check_int("k_core", self.k_core, 1)
        _check_int("min_user_items", self.min_user_items, 3, "(a user needs a training, a validation and a test item)")
        _check_int("max_len", self.max_len, 1)
        if not isinstance(self.cache_dir, (str, os.PathLike)):
            raise ConfigError(f"data.cache_dir must be a path string, got {self.cache_dir!r}")
        return self

    def key_fields(self) -> dict[str, Any]:
        """The fields that define the data (all but ``cache_dir``), for hashing."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "cache_dir"}

    def resolved_cache_dir(self) -> Path:
        """``cache_dir``, else ``$SEQCL_CACHE_DIR``, else ``~/.cache/seqcl``."""
        chosen = str(self.cache_dir) or os.environ.get(CACHE_ENV, "") or "~/.cache/seqcl"
        return Path(chosen).expanduser()


def _check_int(name: str, value: Any, minimum: int, why: str = "") -> None:
    # bool is an int subclass; `k_core: true` in YAML is a mistake, not 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"data.{name} must be an integer, got {value!r}")
    if value < minimum:
        suffix = f" {why}" if why else ""
        raise ConfigError(f"data.{name} must be >= {minimum}, got {value}{suffix}")
