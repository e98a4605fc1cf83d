"""One entry point from a data source string to clean data and its cache key.

``source`` is a file path, or ``builtin`` / ``builtin:<seed>`` for the
synthetic data (no files, no network). The key identifies the data for every
cache downstream (``BuildContext.data_key``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from seqcl.data import cache, readers
from seqcl.data.dataset import SequenceData
from seqcl.data.options import DataOptions
from seqcl.data.preprocess import drop_short_users, preprocess_interactions, preprocess_sequences
from seqcl.data.readers import RawSequences
from seqcl.data.synthetic import GENERATOR_VERSION, SYNTHETIC_NAME, generate
from seqcl.errors import DataError

log = logging.getLogger("seqcl.data")


def load_data(source: str, options: DataOptions) -> tuple[SequenceData, str]:
    """Load ``source`` (path or ``builtin[:seed]``) under ``options``; return (data, cache key).

    Files go through the cache: a second load of the same content with the same
    options skips reading and preprocessing altogether.
    """
    options.validate()
    source = str(source)
    if is_builtin(source):
        return _load_builtin(source, options)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{source}: file not found")
    if not path.is_file():
        raise DataError(f"{source}: not a regular file")
    fmt = readers.resolve_format(path, options.format)
    key = cache.cache_key(cache.file_hash(path), options, fmt)
    cache_dir = options.resolved_cache_dir()
    name = dataset_name(path)

    cached = cache.load_cached(cache_dir, key)
    if cached is not None:
        cached.name = name  # same content may live under another name
        log.info("%s: loaded from cache %s", source, cache.cache_path(cache_dir, key))
        return cached, key

    start = time.perf_counter()
    data = _parse(str(path), fmt, options, name)
    log.info("%s: parsed as %s in %.2fs", source, fmt, time.perf_counter() - start)
    cache.save_cached(cache_dir, key, data)
    return data, key


def _parse(source: str, fmt: str, options: DataOptions, name: str) -> SequenceData:
    raw = readers.read(source, fmt)
    if isinstance(raw, RawSequences):
        return preprocess_sequences(raw, options, name)
    return preprocess_interactions(raw, options, name)


def is_builtin(source: str) -> bool:
    return source == SYNTHETIC_NAME or source.startswith(SYNTHETIC_NAME + ":")


def _load_builtin(source: str, options: DataOptions) -> tuple[SequenceData, str]:
    """Generated in well under a second, so never cached on disk."""
    _, _, seed_text = source.partition(":")
    try:
        seed = int(seed_text) if seed_text else 0
    except ValueError:
        raise DataError(f"{source}: the seed after '{SYNTHETIC_NAME}:' must be an integer, got {seed_text!r}") from None
    # Treated like any sequence file: only users too short to split are dropped.
    data = drop_short_users(generate(seed), options.min_user_items)
    if data.num_users == 0:
        raise DataError(f"{source}: no user has at least {options.min_user_items} items (data.min_user_items)")
    key = cache.hash_payload(
        {"generator": GENERATOR_VERSION, "seed": seed, "options": options.key_fields(), "version": cache.FORMAT_VERSION}
    )
    return data, key


def dataset_name(path: str | Path) -> str:
    """``Beauty.txt`` → ``Beauty``, ``ml-1m.txt.gz`` → ``ml-1m``, ``x.inter`` → ``x``."""
    p = Path(path)
    if p.suffix.lower() == ".gz":
        p = Path(p.stem)
    return p.stem or p.name


def describe(data: SequenceData) -> dict[str, Any]:
    """Headline statistics: users, items, actions, avg_len, min_len, max_len, density (a fraction)."""
    users, items, actions = data.num_users, data.num_items, data.num_actions
    lengths = data.lengths()
    return {
        "name": data.name,
        "users": users,
        "items": items,
        "actions": actions,
        "avg_len": actions / users if users else 0.0,
        "min_len": int(lengths.min()) if users else 0,
        "max_len": int(lengths.max()) if users else 0,
        "density": actions / (users * items) if users and items else 0.0,
    }


def format_stats(d: dict[str, Any] | SequenceData) -> str:
    """``users 22363 | items 12101 | actions 198502 | avg.len 8.9 | density 0.07%``."""
    if isinstance(d, SequenceData):
        d = describe(d)
    return (
        f"users {d['users']} | items {d['items']} | actions {d['actions']} | "
        f"avg.len {d['avg_len']:.1f} | density {100 * d['density']:.2f}%"
    )
