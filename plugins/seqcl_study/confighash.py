"""A run's identity in a study: the hash of its resolved config, without what does not change results.

Its own module because the plan (which names runs by it) and :mod:`seqcl_study.reuse`
(which finds finished runs of other studies by it) both need it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from seqcl.config import EXECUTION_KEYS, flatten

from .spec import Launch

#: Config keys that do not change a run's results; left out of the config hash,
#: so moving a study to a GPU or changing thread counts does not invalidate it.
UNHASHED = ("run.", *EXECUTION_KEYS)


def config_hash(tree: dict[str, Any], launch: Launch = Launch()) -> str:
    """Hash of the resolved config without the keys in :data:`UNHASHED`, and of a torchrun launch."""
    flat = hashed_items(tree, launch)
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]


def hashed_items(tree: dict[str, Any], launch: Launch = Launch()) -> dict[str, Any]:
    """The flattened config entries that enter :func:`config_hash` (stored for diffs).

    ``launch.nproc_per_node`` only for a torchrun job: a one-process run's
    entries (and hash) are those of its config alone.
    """
    flat = {k: v for k, v in flatten(tree).items() if not k.startswith(UNHASHED)}
    if launch.torchrun:
        flat["launch.nproc_per_node"] = launch.nproc_per_node
    return flat
