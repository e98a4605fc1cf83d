"""The Python API: ``seqcl.train(config) -> Run``, ``seqcl.load_run(path) -> Run``.

A :class:`Run` is a finished run folder opened for inference: the encoder is
rebuilt from ``config.yaml`` and ``model.json``, its weights are ``best.pt``'s,
and ids go in and out through ``ids.json`` (:mod:`seqcl.ids`), so loading reads
no data file. Histories are lists of the data's own item ids, oldest first.

Scores are what evaluation computes (SPEC §1): the user representation at the
last of the ``T`` most recent items, dot item embeddings, in fp32. Top-k lists
are ordered by score, highest first; equal scores by internal id (lower first,
i.e. first appearance in the data), by a stable sort — never by ``topk``, whose
order on ties is arbitrary. So an item at position ``p`` of a list has at least
``p`` items scoring at least as high, and a held-out target whose rank (ties
counted against it, ``ranks.pt``) is below ``k`` is always in the top-k list.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from seqcl.config import Resolved, read_yaml, resolve
from seqcl.data.dataset import EvalSet, SequenceData, trim_padding, windows
from seqcl.errors import ConfigError, DataError
from seqcl.evaluation import history_mask
from seqcl.ids import IDS_FILE, IdMap
from seqcl.interfaces import BuildContext, Encoder
from seqcl.plugins import LoadedPlugins, load_plugins
from seqcl.runs import BEST, MODEL_FILE
from seqcl.stages import results_folder

__all__ = ["Run", "UnknownItem", "load_run", "train"]

History = Sequence[Any]


class UnknownItem(DataError):
    """An item id of a history that is not in the run's id map (``row``: which history)."""

    def __init__(self, row: int, item: str, num_items: int) -> None:
        super().__init__(f"history {row}: item {item!r} is not in the run's item id map ({num_items} items)")
        self.row = row
        self.item = item


class Scorer(nn.Module):
    """(B, W) left-padded internal item ids → (B, N) fp32 scores; column j is item j + 1.

    The one scoring path: :meth:`Run.score` calls it and ``seqcl export`` traces it.
    Computed as evaluation does (all N + 1 columns, padding then dropped).
    """

    def __init__(self, encoder: Encoder, num_items: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.num_items = num_items

    def forward(self, items: Tensor) -> Tensor:
        h = self.encoder.encode(items).float()
        table = self.encoder.item_table()[: self.num_items + 1].float()
        return (h @ table.T)[:, 1:]


@dataclass
class Run:
    """A trained run, ready for inference. Build it with :func:`load_run` or :func:`train`.

    path:    the run folder.
    config:  the resolved config (``config.yaml``) as a plain dict.
    metrics: ``{"valid": {...}, "test": {...}}`` at the best epoch (``summary.json``).
    summary: all of ``summary.json`` (best epoch, seconds, seed, …); ``{}`` if the run is unfinished.
    history: one dict per epoch (``metrics.jsonl``: losses, validation metrics, seconds).
    ids:     the :class:`~seqcl.ids.IdMap` (``ids.items``: item ids in column order of :meth:`score`).
    """

    path: Path
    config: dict[str, Any]
    metrics: dict[str, dict[str, float]]
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    ids: IdMap
    encoder: Encoder = field(repr=False)
    max_len: int = 50
    batch_size: int = 2048
    device: torch.device = torch.device("cpu")

    @property
    def num_items(self) -> int:
        return self.ids.num_items

    @property
    def scorer(self) -> Scorer:
        return Scorer(self.encoder, self.num_items)

    # ------------------------------------------------------------ inputs

    def internal_ids(self, histories: Sequence[History], skip_unknown: bool = False) -> list[list[int]]:
        """Original ids → internal ids, per history. An unknown id raises :class:`UnknownItem`, or
        with ``skip_unknown`` is dropped (one warning); a history left empty raises :class:`DataError`."""
        if isinstance(histories, (str, bytes)) or not isinstance(histories, Sequence):
            raise DataError(f"histories must be a list of item-id lists, got {type(histories).__name__}")
        index = self.ids.index()
        out: list[list[int]] = []
        skipped: list[tuple[int, str]] = []
        for row, history in enumerate(histories):
            if isinstance(history, (str, bytes)) or not isinstance(history, Sequence):
                raise DataError(f"history {row}: a history is a list of item ids, got {type(history).__name__} "
                                f"{str(history)[:40]!r}")
            ids = []
            for item in history:
                internal = index.get(str(item))
                if internal is None:
                    if not skip_unknown:
                        raise UnknownItem(row, str(item), self.num_items)
                    skipped.append((row, str(item)))
                    continue
                ids.append(internal)
            if not ids:
                raise DataError(f"history {row} is empty" + (" after skipping unknown items" if history else ""))
            out.append(ids)
        if skipped:
            warnings.warn(f"skipped {len(skipped)} unknown item id(s), first {skipped[0][1]!r} in history "
                          f"{skipped[0][0]}", stacklevel=3)
        return out

    def _batches(self, histories: Sequence[History], skip_unknown: bool):
        """(batch of histories as a CSR SequenceData, its (B, W) input window on the device), in order."""
        internal = self.internal_ids(histories, skip_unknown)
        for start in range(0, len(internal), self.batch_size):
            chunk = internal[start:start + self.batch_size]
            flat = torch.tensor([i for h in chunk for i in h], dtype=torch.long)
            lengths = torch.tensor([len(h) for h in chunk], dtype=torch.long)
            offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
            data = SequenceData(flat, offsets, self.num_items)
            items = trim_padding(windows(flat, offsets[:-1], offsets[1:], self.max_len))
            yield data, items.to(self.device)

    # ------------------------------------------------------------ outputs

    def embed(self, histories: Sequence[History], skip_unknown: bool = False) -> Tensor:
        """(B, d) fp32 user representations of ``histories`` (the last ``max_len`` items of each)."""
        return _outside_inference(self._apply(self.encoder.encode, histories, skip_unknown, self.encoder.hidden_size))

    def score(self, histories: Sequence[History], skip_unknown: bool = False) -> Tensor:
        """(B, N) fp32 scores; column j is item ``run.ids.items[j]``. Nothing is excluded."""
        return _outside_inference(self._apply(self.scorer, histories, skip_unknown, self.num_items))

    def item_embeddings(self) -> Tensor:
        """(N, d) fp32 item embeddings; row j is item ``run.ids.items[j]`` (the output layer)."""
        with torch.inference_mode():
            table = self.encoder.item_table()[1: self.num_items + 1].float().cpu()
        return _outside_inference(table)

    @torch.inference_mode()
    def _apply(self, fn: Callable[[Tensor], Tensor], histories: Sequence[History], skip_unknown: bool,
               width: int) -> Tensor:
        """``fn`` on the input windows of ``histories``, batch by batch → (B, width) fp32 on the CPU."""
        self.encoder.eval()
        parts = [fn(items).float().cpu() for _, items in self._batches(histories, skip_unknown)]
        return torch.cat(parts) if parts else torch.zeros(0, width)

    @torch.inference_mode()
    def recommend(self, histories: Sequence[History], k: int = 10, exclude_history: bool = True,
                  skip_unknown: bool = False, scores: bool = False) -> list[list[Any]]:
        """The top ``k`` original item ids for each history, best first (ties: see the module doc).

        ``exclude_history`` leaves out every item of the history (all of it, even beyond
        ``max_len``), as evaluation does; fewer than ``k`` ids come back only when fewer
        items are left. ``scores=True`` gives ``(id, score)`` pairs instead of ids.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        self.encoder.eval()
        scorer = self.scorer
        out: list[list[Any]] = []
        for data, items in self._batches(histories, skip_unknown):
            full = torch.nn.functional.pad(scorer(items), (1, 0))  # (B, N + 1): column = internal id
            rows = torch.arange(data.num_users)
            excluded = history_mask(torch.zeros_like(full, dtype=torch.bool), _as_eval_set(data), rows,
                                    self.num_items, exclude_history=exclude_history, value=True)
            top, values = top_k(full, excluded, k)
            for ids, vals in zip(top.tolist(), values.tolist()):
                names = [self.ids.items[i - 1] for i in ids if i > 0]
                out.append(list(zip(names, vals)) if scores else names)
        return out

    def ranks(self, split: str = "test") -> dict[str, int]:
        """Original user id → 0-based rank of the held-out item in ``split`` (``ranks.pt``; row u = user u)."""
        path = self.path / "ranks.pt"
        if not path.is_file():
            raise ConfigError(f"{path}: no ranks (run.save_ranks was off, or the run is unfinished)")
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if split not in saved:
            raise ConfigError(f"{path}: no split {split!r}; it holds {', '.join(sorted(saved))}")
        return dict(zip(self.ids.users, saved[split].tolist()))


def _outside_inference(t: Tensor) -> Tensor:
    """A normal tensor (an inference-mode tensor cannot enter autograd later)."""
    return t.clone()


def top_k(scores: Tensor, excluded: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top ``k`` columns of each row of ``scores`` (B, C), best first, never an excluded one.

    Order: score descending, equal scores by lower column; a NaN score ranks
    below every number (with -inf). Returns (B, k') columns and their scores,
    k' = min(k, C); a row with fewer than k' candidates is padded with column 0
    and -inf. Exact without sorting whole rows: ``topk`` finds the k'-th best
    key, every column above it is in, the columns tied with it are taken lowest
    first, and only the k' chosen ones are sorted (stable, so ties stay by column).
    """
    b, c = scores.shape
    kk = min(k, c)
    neg_inf = torch.full((), float("-inf"), dtype=scores.dtype, device=scores.device)
    keys = torch.where(torch.isnan(scores) | excluded, neg_inf, scores)
    kth = torch.topk(keys, kk, dim=1).values[:, -1:]  # (B, 1)
    above = keys > kth
    tied = (keys == kth) & ~excluded
    need = kk - above.sum(dim=1, keepdim=True)
    chosen = above | (tied & (tied.cumsum(dim=1, dtype=torch.int32) <= need))
    rows, cols = chosen.nonzero(as_tuple=True)  # row-major: each row's columns ascending
    counts = chosen.sum(dim=1)
    pos = torch.arange(rows.numel(), device=rows.device) - (counts.cumsum(0) - counts)[rows]
    top = torch.zeros(b, kk, dtype=torch.long, device=scores.device)
    top[rows, pos] = cols
    valid = torch.arange(kk, device=scores.device).unsqueeze(0) < counts.unsqueeze(1)
    order = torch.sort(keys.gather(1, top).where(valid, neg_inf), dim=1, descending=True, stable=True).indices
    top, valid = top.gather(1, order), valid.gather(1, order)
    return top.where(valid, 0), scores.gather(1, top).where(valid, neg_inf)


def _as_eval_set(data: SequenceData) -> EvalSet:
    """Histories as an evaluation set without targets (0 is never an item), for the history mask."""
    starts, ends = data.offsets[:-1], data.offsets[1:]
    return EvalSet(data, starts, ends, torch.zeros_like(starts))


# ---------------------------------------------------------------- loading


def load_run(path: str | Path, device: str = "cpu", plugins: Sequence[str] | LoadedPlugins = ()) -> Run:
    """Open a trained run folder for inference: no data file is read.

    Needs the encoder's plugin installed (or named in ``plugins``, as ``--plugin``).
    """
    loaded = plugins if isinstance(plugins, LoadedPlugins) else _load_plugins(tuple(plugins))
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path}: no such run folder")
    path = results_folder(path)  # a run in stages: the model is its last stage's
    for name in ("config.yaml", BEST, IDS_FILE, MODEL_FILE):
        if not (path / name).is_file():
            older = "; runs trained before seqcl saved it cannot be loaded, retrain" if name in (IDS_FILE, MODEL_FILE) else ""
            raise ConfigError(f"{path}: not a trained run folder ({name} missing{older})")
    tree = read_yaml(path / "config.yaml")
    tree.setdefault("train", {})["device"] = str(device)
    resolved = resolve(loaded.registry, tree, check_data=False)
    sizes = json.loads((path / MODEL_FILE).read_text())
    ids = IdMap.read(path / IDS_FILE)
    if sizes["num_items"] != ids.num_items:
        raise ConfigError(f"{path}: {MODEL_FILE} says {sizes['num_items']} items, {IDS_FILE} lists {ids.num_items}")
    encoder = _build_encoder(resolved, loaded, sizes, torch.device(device))
    state = _load_weights(path / BEST)
    encoder.load_state_dict(state["encoder"])
    encoder.eval()
    summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").is_file() else {}
    history = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()] \
        if (path / "metrics.jsonl").is_file() else []
    return Run(path=path, config=resolved.tree, metrics={s: summary[s] for s in ("valid", "test") if s in summary},
               summary=summary, history=history, ids=ids, encoder=encoder, max_len=resolved.data.max_len,
               batch_size=resolved.eval.batch_size, device=torch.device(device))


def _build_encoder(resolved: Resolved, loaded: LoadedPlugins, sizes: dict[str, Any], device: torch.device) -> Encoder:
    """The run's encoder with the sizes it trained with; weights are loaded by the caller."""
    context = BuildContext(num_items=int(sizes["num_items"]), max_len=resolved.data.max_len,
                           hidden_size=int(resolved.encoder_options.hidden_size),
                           extra_rows=int(sizes.get("extra_rows", 0)), device=device, seed=resolved.train.seed)
    encoder = loaded.registry.get("encoder", resolved.encoder).factory(resolved.encoder_options, context)
    return encoder.to(device)


def _load_weights(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated or foreign file
        raise ConfigError(f"{path}: not readable weights ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or "encoder" not in state:
        raise ConfigError(f"{path}: no encoder weights in it")
    return state


def _load_plugins(modules: tuple[str, ...]) -> LoadedPlugins:
    loaded = load_plugins(modules)
    for problem in loaded.broken:
        warnings.warn(f"plugin {problem} (skipped)", stacklevel=3)
    return loaded


# ---------------------------------------------------------------- training


def train(config: Mapping[str, Any] | str | Path | None = None, *, plugins: Sequence[str] = (),
          log: Callable[[str], None] | None = None) -> Run:
    """Train a run and open it: ``seqcl.train({"dataset": "Beauty.txt", "augmenter": "aclsrec"})``.

    ``config`` is a YAML file's path, or a mapping with the same shape (nested
    sections or dotted keys: ``{"train.epochs": 5}`` = ``{"train": {"epochs": 5}}``;
    ``with``/``without`` lists add or remove loss terms), or None for the defaults.
    Progress goes to ``log`` (default: stderr). As ``seqcl train --config``.
    """
    from seqcl.training import train as run_training

    loaded = _load_plugins(tuple(plugins))
    if config is None:
        file_config: dict[str, Any] = {}
    elif isinstance(config, (str, Path)):
        file_config = read_yaml(config)
    elif isinstance(config, Mapping):
        file_config = nest(config)
    else:
        raise ConfigError(f"config must be a mapping or a YAML file's path, got {type(config).__name__}")
    resolved = resolve(loaded.registry, file_config)
    result = run_training(resolved, loaded, log)
    return load_run(result.run_dir, device=resolved.train.device, plugins=loaded)


def nest(config: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys → nested sections: ``{"a.b": 1, "a": {"c": 2}}`` → ``{"a": {"b": 1, "c": 2}}``."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if not isinstance(key, str):
            raise ConfigError(f"config keys must be strings, got {key!r}")
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key {key!r}: {part!r} is not a section")
        if isinstance(value, Mapping):
            value = nest(value)
            if isinstance(node.get(last), dict):
                node[last].update(value)
                continue
        node[last] = value
    return out
