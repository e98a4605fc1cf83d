"""On-disk cache of preprocessed data: ``<cache_dir>/<key>.pt``.

The key covers everything that decides the tensors — the file's *content*
(not its path or mtime), every data option except ``cache_dir``, the format
actually used, and :data:`FORMAT_VERSION` — so a stale entry can never be hit.
Components reuse the key (``BuildContext.data_key``) for their own caches,
which is why ``max_len`` is in it although preprocessing ignores it.

Writes are atomic (temporary file + ``os.replace``): a killed run leaves either
no entry or a whole one. Each entry stores a sha256 of its tensors, checked on
load, so an entry edited in place (a changed item id in a still-valid archive)
is rebuilt rather than trained on. An unreadable or mismatching entry is
rebuilt; a cache that cannot be written (disk full, read-only) costs one
warning line on stderr, never the run: the cache is only an optimisation.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from seqcl.atomic import atomic_save
from seqcl.data.dataset import SequenceData
from seqcl.data.notice import load_error, one_line, warn_once
from seqcl.data.options import DataOptions

# Bump whenever preprocessing or the stored layout changes (2: tensor checksum; 3: id maps).
FORMAT_VERSION = 3
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


class ChecksumMismatch(ValueError):
    """A cache entry whose tensors are not the ones it was written with."""


def tensor_digest(fields: dict[str, Any]) -> str:
    """sha256 over named tensors (dtype, shape and bytes) and plain values, independent of order.

    Stored in a cache entry so that an entry altered after writing is caught on load.
    """
    h = hashlib.sha256()
    for name in sorted(fields):
        value = fields[name]
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
            h.update(t.numpy())
        else:
            h.update(f"{name}={value!r}\n".encode())
    return h.hexdigest()


def verify_digest(blob: dict[str, Any], names: tuple[str, ...]) -> None:
    """Raise :class:`ChecksumMismatch` unless ``blob["checksum"]`` is the digest of ``blob``'s ``names``."""
    if blob.get("checksum") != tensor_digest({n: blob[n] for n in names}):
        raise ChecksumMismatch("contents do not match the stored checksum (changed after writing)")


def load_cached(cache_dir: str | Path, key: str) -> SequenceData | None:
    """The cached data for ``key``, or None if absent or unusable (then it is rebuilt)."""
    path = cache_path(cache_dir, key)
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        return _unpack(blob)
    except Exception as e:  # noqa: BLE001 - any unreadable entry is just a cache miss
        what = "does not match its checksum" if isinstance(e, ChecksumMismatch) else f"is unreadable ({load_error(e)})"
        warn_once(f"data cache {path} {what}; rebuilding it", key=f"cache-load:{path}")
        return None


def save_cached(cache_dir: str | Path, key: str, data: SequenceData) -> Path | None:
    """Write atomically; return the path, or None (with a warning) if the cache is not writable.

    Whatever happens — an error, Ctrl-C — the temporary file never outlives
    this call and the final name only ever points at a complete file. Any
    error (``torch.save`` raises RuntimeError on a full disk, not OSError) is
    one warning per cache directory: the cache must never kill a run.
    """
    path = cache_path(cache_dir, key)
    try:
        atomic_save(_pack(data), path)
        return path
    except Exception as e:  # noqa: BLE001 - see above; Ctrl-C still propagates
        warn_once(f"could not write data cache {path} ({one_line(e)}); continuing without it",
                  key=f"cache-save:{Path(cache_dir)}")
        return None


_CHECKED = ("items", "offsets", "num_items", "item_ids", "user_ids")


def _pack(data: SequenceData) -> dict[str, Any]:
    blob: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "items": data.items.contiguous(),
        "offsets": data.offsets.contiguous(),
        "num_items": int(data.num_items),
        "name": data.name,
        "item_ids": data.item_ids,  # original ids (strings), so runs can answer in them
        "user_ids": data.user_ids,
    }
    blob["checksum"] = tensor_digest({n: blob[n] for n in _CHECKED})
    return blob


def _unpack(blob: Any) -> SequenceData:
    """Check the entry thoroughly: a truncated or foreign file must not pass as data."""
    if not isinstance(blob, dict) or blob.get("version") != FORMAT_VERSION:
        raise ValueError("not a seqcl data cache of this version")
    items, offsets, num_items = blob["items"], blob["offsets"], blob["num_items"]
    if not (isinstance(items, torch.Tensor) and isinstance(offsets, torch.Tensor) and isinstance(num_items, int)):
        raise ValueError("wrong field types")
    if items.dtype != torch.long or offsets.dtype != torch.long or items.dim() != 1 or offsets.dim() != 1:
        raise ValueError("wrong tensor dtype or shape")
    verify_digest(blob, _CHECKED)
    if offsets.numel() < 2 or int(offsets[0]) != 0 or int(offsets[-1]) != items.numel():
        raise ValueError("offsets do not span items")
    if bool((offsets[1:] < offsets[:-1]).any()):
        raise ValueError("offsets not sorted")
    if items.numel() and (int(items.min()) < 1 or int(items.max()) > num_items):
        raise ValueError("item ids out of range")
    item_ids, user_ids = blob["item_ids"], blob["user_ids"]
    for ids, size, what in ((item_ids, num_items, "item"), (user_ids, offsets.numel() - 1, "user")):
        if ids is not None and not (isinstance(ids, list) and len(ids) == size and all(isinstance(i, str) for i in ids)):
            raise ValueError(f"{what} id map is not {size} strings")
    return SequenceData(items=items, offsets=offsets, num_items=num_items, name=str(blob.get("name", "data")),
                        item_ids=item_ids, user_ids=user_ids)
