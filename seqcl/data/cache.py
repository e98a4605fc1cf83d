"""On-disk cache of preprocessed data: ``<cache_dir>/<key>.pt``.

The key covers everything that decides the tensors — the file's *content*
(not its path or mtime), every data option except ``cache_dir``, the format
actually used, and :data:`FORMAT_VERSION` — so a stale entry can never be hit.
Components reuse the key (``BuildContext.data_key``) for their own caches,
which is why ``max_len`` is in it although preprocessing ignores it.

Writes are atomic (temporary file + ``os.replace``): a killed run leaves either
no entry or a whole one. An unreadable entry is ignored and rebuilt; a cache
that cannot be written costs a warning, never the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from seqcl.data.dataset import SequenceData
from seqcl.data.options import DataOptions

log = logging.getLogger("seqcl.data")

# Bump whenever preprocessing or the stored layout changes.
FORMAT_VERSION = 1
_HASH_CHUNK = 1 << 20


def file_hash(path: str | Path) -> str:
    """sha256 of the file's bytes (as stored, i.e. compressed for ``.gz``)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def hash_payload(payload: dict[str, Any]) -> str:
    """sha256 of a JSON-able dict, independent of key order."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def cache_key(content_hash: str, options: DataOptions, fmt: str) -> str:
    """The key for a file with ``content_hash`` read as ``fmt`` under ``options``."""
    return hash_payload(
        {"content": content_hash, "options": options.key_fields(), "format": fmt, "version": FORMAT_VERSION}
    )


def cache_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / f"{key}.pt"


def load_cached(cache_dir: str | Path, key: str) -> SequenceData | None:
    """The cached data for ``key``, or None if absent or unusable (then it is rebuilt)."""
    path = cache_path(cache_dir, key)
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        return _unpack(blob)
    except Exception as e:  # noqa: BLE001 - any unreadable entry is just a cache miss
        log.warning("ignoring unreadable cache file %s (%s); rebuilding", path, e)
        return None


def save_cached(cache_dir: str | Path, key: str, data: SequenceData) -> Path | None:
    """Write atomically; return the path, or None (with a warning) if the cache is not writable.

    Whatever happens — an error, Ctrl-C — the temporary file never outlives
    this call and the final name only ever points at a complete file.
    """
    path = cache_path(cache_dir, key)
    try:
        atomic_save(_pack(data), path)
        return path
    except OSError as e:
        log.warning("could not write data cache %s (%s); continuing without it", path, e)
        return None


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then ``os.replace``.

    A killed process never leaves a half-written cache file; raises OSError.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _pack(data: SequenceData) -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "items": data.items.contiguous(),
        "offsets": data.offsets.contiguous(),
        "num_items": int(data.num_items),
        "name": data.name,
    }


def _unpack(blob: Any) -> SequenceData:
    """Check the entry thoroughly: a truncated or foreign file must not pass as data."""
    if not isinstance(blob, dict) or blob.get("version") != FORMAT_VERSION:
        raise ValueError("not a seqcl data cache of this version")
    items, offsets, num_items = blob["items"], blob["offsets"], blob["num_items"]
    if not (isinstance(items, torch.Tensor) and isinstance(offsets, torch.Tensor) and isinstance(num_items, int)):
        raise ValueError("wrong field types")
    if items.dtype != torch.long or offsets.dtype != torch.long or items.dim() != 1 or offsets.dim() != 1:
        raise ValueError("wrong tensor dtype or shape")
    if offsets.numel() < 2 or int(offsets[0]) != 0 or int(offsets[-1]) != items.numel():
        raise ValueError("offsets do not span items")
    if bool((offsets[1:] < offsets[:-1]).any()):
        raise ValueError("offsets not sorted")
    if items.numel() and (int(items.min()) < 1 or int(items.max()) > num_items):
        raise ValueError("item ids out of range")
    return SequenceData(items=items, offsets=offsets, num_items=num_items, name=str(blob.get("name", "data")))
