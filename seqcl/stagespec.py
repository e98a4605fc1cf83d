"""What a stage is, as the config writes it (``stages:``), checked into one shape.

A run with stages trains them in order (:mod:`seqcl.stages`); each stage is::

    name:          pretrain            # [A-Za-z0-9_-]+, unique; names the stage's folder
    objective:     mip                 # optional: the stage's objective (else the run's)
    epochs:        150                 # optional: the stage's train.epochs (else the run's)
    set:           {s3rec.attention: bidirectional, data.max_len: 50}   # any other config keys
    handoff:       [encoder]           # components handed to the next stage (default: the encoder)
    handoff_from:  last                # best (default: the best validation epoch) or last

Kept apart from :mod:`seqcl.stages` so the config can check stages without
importing the code that runs them.
"""

from __future__ import annotations

import re
from typing import Any

from seqcl.errors import ConfigError

FIELDS = ("name", "objective", "epochs", "set", "handoff", "handoff_from")
NAME = re.compile(r"[A-Za-z0-9_-]+")
#: keys a stage sets with its own field, not through ``set`` (one way to set each)
OWN_FIELDS = {"objective": "objective", "train.epochs": "epochs"}


def _flat(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, full + "."))
        else:
            out[full] = value
    return out


def parse_stages(raw: Any) -> list[dict[str, Any]]:
    """Config ``stages`` (a list of mappings) → normalised stage dicts; ConfigError names the bad key."""
    if not isinstance(raw, list):
        raise ConfigError(f"stages must be a list of stage mappings, got {raw!r}")
    out: list[dict[str, Any]] = []
    for i, stage in enumerate(raw):
        where = f"stages[{i}]"
        if not isinstance(stage, dict):
            raise ConfigError(f"{where} must be a mapping with a name, got {stage!r}")
        unknown = [k for k in stage if k not in FIELDS]
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r} (keys: {', '.join(FIELDS)})")
        name = str(stage.get("name", ""))
        if not NAME.fullmatch(name) or name in (s["name"] for s in out):
            raise ConfigError(f"{where}.name must be a unique [A-Za-z0-9_-]+ name, got {stage.get('name')!r}")
        epochs = stage.get("epochs")
        if epochs is not None and (not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1):
            raise ConfigError(f"{where}.epochs must be an integer >= 1, got {epochs!r}")
        overrides = stage.get("set") or {}
        if not isinstance(overrides, dict):
            raise ConfigError(f"{where}.set must be a mapping of config keys, got {overrides!r}")
        overrides = _flat(overrides)
        for key, field in OWN_FIELDS.items():
            if key in overrides:
                raise ConfigError(f"{where}.set: {key} is the stage's own field; write {field}: ... instead")
        handoff = stage.get("handoff", ["encoder"])
        if not isinstance(handoff, list) or not all(isinstance(h, str) for h in handoff):
            raise ConfigError(f"{where}.handoff must be a list of component names (encoder, objective, …), "
                              f"got {handoff!r}")
        source = stage.get("handoff_from", "best")
        if source not in ("best", "last"):
            raise ConfigError(f"{where}.handoff_from must be best or last, got {source!r}")
        objective = stage.get("objective")
        out.append({"name": name, "objective": None if objective is None else str(objective),
                    "epochs": epochs, "set": overrides, "handoff": list(handoff), "handoff_from": source})
    return out
