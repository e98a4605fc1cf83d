"""The built-in dataset (``builtin``): seeded synthetic sequences with real structure.

Used when no data file is given, so that every command runs offline and a
model has something learnable to learn. The generative story:

- items are split into *intents* (clusters); intents and items within an
  intent have Zipf-like popularity;
- each item has a few likely successors inside its intent (a sparse
  transition graph: a preferred "next" item on a cycle through the intent,
  plus three popularity-drawn alternatives);
- a user follows one intent, or two with occasional switches, walking the
  transition graph without repeating an item; now and then a noise item
  (global popularity) interrupts the walk, which then resumes where it was.

So the next item is predictable from the last few items (far better than
from popularity), but not from the very last one alone. With the defaults a
bigram counter gets HR@1/10 ≈ 0.38/0.75 on the last item, popularity ≈ 0.01/0.09.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

import numpy as np
import torch

from seqcl.data.dataset import SequenceData
from seqcl.data.preprocess import renumber_by_first_appearance

SYNTHETIC_NAME = "builtin"
# Bump when the generator's output for a given seed changes (it is in cache keys).
GENERATOR_VERSION = 3


@dataclass(frozen=True)
class SyntheticConfig:
    """Shape of the generated data; the defaults give 1,000 users, 300 items, mean length ~10.

    Sized so that the default ``seqcl train`` (SASRec, SPEC defaults, early
    stopping) finishes in about a minute or two on two CPU cores.
    """

    num_users: int = 1000
    num_intents: int = 10
    items_per_intent: int = 30
    successor_probs: tuple[float, ...] = (0.6, 0.25, 0.15)
    noise: float = 0.08  # per step: a popular item from anywhere
    two_intents: float = 0.35  # share of users with a second intent
    switch: float = 0.15  # per step, for two-intent users: change intent
    zipf: float = 1.0  # popularity exponent inside an intent
    min_len: int = 5
    max_len: int = 20
    mean_extra_len: float = 6.0  # geometric length above min_len, before clipping


def generate(seed: int = 0, config: SyntheticConfig | None = None) -> SequenceData:
    """Deterministic data for ``seed``: every user has >= 5 items, items 1..num_items all used."""
    cfg = config or SyntheticConfig()
    if not cfg.min_len <= cfg.max_len <= cfg.items_per_intent:
        # a walk never repeats an item, so one intent must hold a whole sequence
        raise ValueError(f"need min_len <= max_len <= items_per_intent, got {cfg}")
    rng = np.random.default_rng([GENERATOR_VERSION, seed])
    world = _World(cfg, rng)
    seqs = [world.user_sequence(rng) for _ in range(cfg.num_users)]
    return _to_data(seqs)


class _World:
    """Intents, item popularity and the successor graph (0-based item ids)."""

    def __init__(self, cfg: SyntheticConfig, rng: np.random.Generator) -> None:
        self.cfg = cfg
        m = cfg.items_per_intent
        n_items = cfg.num_intents * m
        perm = rng.permutation(n_items)
        members = perm.reshape(cfg.num_intents, m)  # intent → its items
        self.intent_pop = _zipf(cfg.num_intents, 0.7, rng)
        self.item_pop = np.stack([_zipf(m, cfg.zipf, rng) for _ in range(cfg.num_intents)])  # (I, m)
        succ = self._successor_graph(members, rng)  # (n_items, k) item ids
        # Python lists + bisect: the per-step draws below are scalar, where
        # numpy's per-call overhead would dominate.
        self.members = [row.tolist() for row in members]
        self.intent_cdf = [np.cumsum(p).tolist() for p in self.item_pop]
        self.global_items = members.ravel().tolist()
        self.global_cdf = np.cumsum((self.item_pop * self.intent_pop[:, None]).ravel()).tolist()
        self.successors = succ.tolist()
        self.succ_cdf = np.cumsum(cfg.successor_probs).tolist()[:-1]

    def _successor_graph(self, members: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cfg = self.cfg
        m, k = cfg.items_per_intent, len(cfg.successor_probs)
        succ = np.empty((cfg.num_intents * m, k), dtype=np.int64)
        for c, items in enumerate(members):
            cycle = rng.permutation(m)  # the preferred successor walks this cycle
            for pos in range(m):
                j, nxt = cycle[pos], cycle[(pos + 1) % m]
                p = self.item_pop[c].copy()
                p[[j, nxt]] = 0.0
                others = rng.choice(m, size=k - 1, replace=False, p=p / p.sum())
                succ[items[j]] = items[np.concatenate(([nxt], others))]
        return succ

    def user_sequence(self, rng: np.random.Generator) -> list[int]:
        cfg = self.cfg
        length = min(cfg.max_len, cfg.min_len + int(rng.geometric(1.0 / (cfg.mean_extra_len + 1))) - 1)
        n_intents = 2 if rng.random() < cfg.two_intents else 1
        intents = rng.choice(cfg.num_intents, size=n_intents, replace=False, p=self.intent_pop).tolist()
        current = 0
        last: dict[int, int] = {}  # intent → last item of its walk
        seen: set[int] = set()
        seq: list[int] = []
        while len(seq) < length:
            r = rng.random()
            if seq and r < cfg.noise:
                item = self._noise_item(rng, seen)
            else:
                if n_intents == 2 and seq and r < cfg.noise + cfg.switch:
                    current = 1 - current
                c = intents[current]
                item = self._walk(c, last.get(c), rng, seen)
                last[c] = item
            seen.add(item)
            seq.append(item)
        return seq

    def _walk(self, c: int, prev: int | None, rng: np.random.Generator, seen: set[int]) -> int:
        if prev is not None:
            succ = self.successors[prev]
            first = bisect_right(self.succ_cdf, rng.random())
            for s in (succ[first], *succ[:first], *succ[first + 1 :]):
                if s not in seen:
                    return s
        return self._popular_unseen(self.members[c], self.intent_cdf[c], rng, seen)

    def _noise_item(self, rng: np.random.Generator, seen: set[int]) -> int:
        return self._popular_unseen(self.global_items, self.global_cdf, rng, seen)

    @staticmethod
    def _popular_unseen(items: list[int], cdf: list[float], rng: np.random.Generator, seen: set[int]) -> int:
        """A popularity draw, redrawn while it repeats an item of this user."""
        for _ in range(64):  # sequences are short next to the pools: this nearly always ends in 1-2 draws
            item = items[min(bisect_right(cdf, rng.random()), len(items) - 1)]
            if item not in seen:
                return item
        return next(i for i in items if i not in seen)  # never exhausted: max_len <= items_per_intent


def _zipf(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf weights over ``n`` entries in random order, summing to 1."""
    w = 1.0 / np.arange(1, n + 1) ** exponent
    w = w[rng.permutation(n)]
    return w / w.sum()


def _to_data(seqs: list[list[int]]) -> SequenceData:
    """Renumber the items used to 1..N by first appearance (as the benchmark files are)."""
    flat = np.fromiter((i for s in seqs for i in s), dtype=np.int64)
    items = renumber_by_first_appearance(flat)
    offsets = np.concatenate(([0], np.cumsum([len(s) for s in seqs]))).astype(np.int64)
    return SequenceData(
        items=torch.from_numpy(items),
        offsets=torch.from_numpy(offsets),
        num_items=int(items.max()),
        name=SYNTHETIC_NAME,
        # no ids outside the generator: the original ids are the numbers themselves
        item_ids=[str(i) for i in range(1, int(items.max()) + 1)],
        user_ids=[str(u) for u in range(1, len(seqs) + 1)],
    )
