"""Component lifecycle callbacks: fit start, epoch start, after each optimiser step.

A component opts in by defining the method (see ``seqcl.interfaces``,
"Training-loop hooks"); :meth:`Callbacks.of` collects the bound methods once,
when the model is built, so the loop calls only what exists: with no callback
the per-step cost is one test of an empty tuple.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch

from seqcl.interfaces import Batch, FitContext

FIT_START, EPOCH_START, AFTER_STEP = "on_fit_start", "on_epoch_start", "after_optimizer_step"


@dataclass(frozen=True)
class Callbacks:
    """The components' bound callbacks, in component order (encoder, augmenter, objective, terms)."""

    fit_start: tuple[Callable[[FitContext], None], ...] = ()
    epoch_start: tuple[Callable[[int], None], ...] = ()
    after_step: tuple[Callable[[], None], ...] = ()

    @classmethod
    def of(cls, components: Iterable[Any]) -> "Callbacks":
        components = list(components)

        def bound(name: str) -> tuple[Callable[..., None], ...]:
            found = (getattr(c, name, None) for c in components)
            return tuple(f for f in found if callable(f))

        return cls(bound(FIT_START), bound(EPOCH_START), bound(AFTER_STEP))

    def on_fit_start(self, fit: FitContext) -> None:
        for callback in self.fit_start:
            callback(fit)

    def on_epoch_start(self, epoch: int) -> None:
        for callback in self.epoch_start:
            callback(epoch)

    def after_optimizer_step(self) -> None:
        for callback in self.after_step:
            callback()


def fit_context(encoder: Any, samples: Any, batch_size: int, max_len: int, device: Any, epoch: int) -> FitContext:
    """The :class:`FitContext` of a fit that starts after ``epoch`` finished epochs (0: a new run)."""

    def batches() -> Iterator[Batch]:
        for start in range(0, len(samples), batch_size):
            ids = torch.arange(start, min(start + batch_size, len(samples)))
            yield Batch(samples.windows(ids, max_len).to(device), samples.targets[ids].to(device), ids.to(device))

    return FitContext(encoder, samples, torch.device(device), epoch > 0, epoch, batches)
