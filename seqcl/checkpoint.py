"""What ``last.pt`` holds, so that ``seqcl train --resume`` continues a run exactly.

A checkpoint is written after every epoch (after validation, when no random
number is drawn until the next epoch starts). It holds:

* ``model``: every component's ``state_dict()`` by name (weights, buffers and
  the extra state of components that own RNG streams or caches);
* ``optimizer``: the optimizer's ``state_dict()``;
* ``rng``: the global torch CPU state (dropout draws from it), every CUDA
  device's state, and the trainer's own generator (shuffling, sampled
  negatives); seqcl draws nothing from numpy or Python's ``random`` while
  training;
* ``fit``: the epoch, the early-stopping state, the best weights (so a kill
  between writing ``best.pt`` and ``last.pt`` loses nothing), the first step's
  losses and the seconds trained so far;
* ``config`` and ``data_key``: the resolved config and the data's content key,
  so a resume with a changed config or data file is refused;
* ``format``: :data:`FORMAT`;
* ``ranks`` (torchrun jobs only): every rank's random streams
  (:func:`seqcl.distributed.gather_streams`), so each rank continues its own.

Everything is tensors and plain containers, loadable with ``weights_only=True``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from seqcl import distributed
from seqcl.config import flatten
from seqcl.errors import ConfigError

FORMAT = 1


@dataclass
class FitState:
    """The training loop's own state between epochs."""

    epoch: int = 0  # last finished epoch
    best_score: float = -math.inf
    best_epoch: int = 0
    best_valid: dict[str, float] = field(default_factory=dict)
    bad_epochs: int = 0
    stopped: bool = False  # early stopping fired: only the final evaluation is left
    seconds: float = 0.0  # training + validation time of the finished epochs
    first: dict[str, float] = field(default_factory=dict)  # the first step's loss parts
    warned: list[str] = field(default_factory=list)  # warnings already given (not repeated on resume)


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "trainer": generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["trainer"])


def build(model_state: dict[str, Any], optimizer: torch.optim.Optimizer, generator: torch.Generator,
          fit: FitState, best_model: dict[str, Any], config: dict[str, Any], data_key: str) -> dict[str, Any]:
    """The checkpoint dict; under torchrun every rank calls it (it gathers the ranks' streams)."""
    ranks = distributed.gather_streams(model_state)
    return {
        "format": FORMAT,
        "model": model_state,
        "optimizer": optimizer.state_dict(),
        "rng": rng_state(generator),
        "fit": asdict(fit),
        "best_model": best_model,
        "config": config,
        "data_key": data_key,
        **({"ranks": ranks} if ranks is not None else {}),
    }


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint (``weights_only=True``); one-line errors for a foreign or unreadable file."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, foreign or pickled-object file
        raise ConfigError(f"{path}: not a readable seqcl checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ConfigError(f"{path}: checkpoint format {got!r}, this seqcl reads format {FORMAT}")
    return ckpt


def changed_keys(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Config keys whose values differ (``run.*`` ignored: a moved run folder is the same run)."""
    a = {k: v for k, v in flatten(saved).items() if not k.startswith("run.")}
    b = {k: v for k, v in flatten(current).items() if not k.startswith("run.")}
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def fit_state(ckpt: dict[str, Any]) -> FitState:
    return FitState(**ckpt["fit"])
