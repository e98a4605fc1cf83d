"""Original ids ↔ seqcl's internal ids: ``ids.json`` in every run folder.

Inside seqcl items are numbered ``1..N`` (0 is padding) and users are the rows
``0..U-1`` of the loaded data; preprocessing renumbers raw ``.csv``/``.inter``
ids (and sparse ids of one-line-per-user files) by first appearance. The map
back is saved with the data cache and in every run folder, for every input
format; for files that are already numbered ``1..N`` it is the identity, still
written, so a consumer never has to guess.

``ids.json``::

    {"format": 1,
     "items": ["B0001", "B0042", ...],   # items[i - 1] is the original id of item i
     "users": ["A17", "A3", ...]}        # users[u] is the original id of user row u

Original ids are strings, exactly as the data file wrote them (for numbered
files, the integer as read: ``"007"`` was read as 7 and is ``"7"``). User row
``u`` is row ``u`` of ``ranks.pt``'s ``valid`` and ``test`` tensors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqcl.data.dataset import SequenceData
from seqcl.errors import ConfigError

IDS_FILE = "ids.json"
FORMAT = 1


@dataclass
class IdMap:
    """items[i - 1]: original id of internal item i; users[u]: original id of user row u."""

    items: list[str]
    users: list[str]
    _index: dict[str, int] | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        return f"IdMap({len(self.items)} items, {len(self.users)} users)"

    @classmethod
    def of(cls, data: SequenceData) -> IdMap:
        """The data's maps; data built without maps (tests, synthetic tensors) gets identity ones."""
        items = data.item_ids if data.item_ids is not None else [str(i) for i in range(1, data.num_items + 1)]
        users = data.user_ids if data.user_ids is not None else [str(u) for u in range(1, data.num_users + 1)]
        return cls(list(items), list(users))

    @property
    def num_items(self) -> int:
        return len(self.items)

    def index(self) -> dict[str, int]:
        """Original item id → internal id (built once)."""
        if self._index is None:
            self._index = {item: i for i, item in enumerate(self.items, 1)}
        return self._index

    def internal(self, item: Any) -> int | None:
        """The internal id of an original id (a string, or an int for numbered data); None if unknown."""
        return self.index().get(str(item))

    def unknown(self, history: Iterable[Any]) -> list[str]:
        """The ids of ``history`` that are not in the map, in order."""
        index = self.index()
        return [str(item) for item in history if str(item) not in index]

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "items": self.items, "users": self.users}

    @classmethod
    def read(cls, path: str | Path) -> IdMap:
        """Read ``ids.json``; one-line errors for a missing or malformed file."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no id map (runs trained before seqcl saved one have none; retrain)")
        try:
            blob = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: not a readable id map ({exc})") from None
        ok = isinstance(blob, dict) and blob.get("format") == FORMAT and all(
            isinstance(blob.get(k), list) and all(isinstance(x, str) for x in blob[k]) for k in ("items", "users"))
        if not ok:
            raise ConfigError(f"{path}: not a seqcl id map of format {FORMAT}")
        return cls(blob["items"], blob["users"])
