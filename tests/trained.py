"""A tiny trained run on a CSV with its own (string) user and item ids, for the inference tests.

Each test module trains it once (module-scoped fixture, ~5 s on one core) and
then deletes the CSV, so everything downstream proves it needs no data file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seqcl.data.synthetic import SyntheticConfig, generate

from conftest import TINY

#: the CSV's ids: sparse, non-numeric, so a lost or shifted map cannot go unnoticed
def item_token(i: int) -> str:
    return f"sku-{7 * i + 3}"


def user_token(u: int) -> str:
    return f"user{u:04d}"


@dataclass
class TinyRun:
    path: Path
    sequences: dict[str, list[str]]  # user token → the CSV's item tokens in time order


def write_csv(path: Path, num_users: int = 200) -> dict[str, list[str]]:
    """Synthetic sequences as a raw interaction table (user, item, timestamp); users written in reverse."""
    data = generate(seed=3, config=SyntheticConfig(num_users=num_users))
    sequences = {}
    rows = ["user_id,item_id,timestamp"]
    for u in reversed(range(data.num_users)):
        items = [item_token(int(i)) for i in data.items[data.offsets[u]:data.offsets[u + 1]]]
        sequences[user_token(u)] = items
        rows += [f"{user_token(u)},{item},{1000 + t}" for t, item in enumerate(items)]
    path.write_text("\n".join(rows) + "\n")
    return sequences


def train_tiny(tmp: Path, epochs: int = 2) -> TinyRun:
    """Train SASRec (TINY sizes) on the CSV through the Python API; the CSV is deleted afterwards."""
    import seqcl

    csv = tmp / "shop.csv"
    sequences = write_csv(csv)
    config = {key: value for key, value in (a.split("=", 1) for a in TINY[1::2])}
    config.update({"dataset": str(csv), "train.epochs": epochs, "run.dir": str(tmp / "runs"),
                   "data.k_core": 1, "data.cache_dir": str(tmp / "cache")})
    run = seqcl.train(config, log=lambda message: None)
    csv.unlink()
    return TinyRun(run.path, sequences)
