"""Run loggers: the trainer's records sent to TensorBoard, W&B, MLflow … besides ``metrics.jsonl``.

A plugin registers a logger factory with the ``register_loggers`` hook (kind
``logger``); a run enables loggers by name with ``run.loggers`` (``--logger
NAME``) and only those are built. ``metrics.jsonl`` stays the record a run is
judged by; a logger is a view of the same numbers.

The trainer calls one :class:`Loggers` fan-out: :meth:`Loggers.start` when the
run starts (each factory gets a :class:`LoggerContext`), :meth:`Loggers.step`
after every optimizer step (only if some logger wants steps: turning a loss into
a float is a host sync on a GPU), :meth:`Loggers.epoch` after each epoch's
checkpoint, and :meth:`Loggers.close` at the end, whatever the end.

Errors: a logger that cannot start (a missing package, an unknown name) is a
one-line error before anything trains; one that fails later is disabled with one
warning line, because a dashboard must never cost a run its results.

Records (plain dicts, floats): a step record is ``{"step", "epoch", "loss":
{name: value}, "total"}`` (``loss`` holds ``main`` and each term, unweighted;
``total`` is the weighted sum that was minimised); an epoch record is the
``metrics.jsonl`` line (``epoch``, ``loss``, ``skipped``, ``valid``,
``train_seconds``, ``seconds``, ``world_size``: the number of torchrun ranks, 1 without;
``device``: the one that trained the epoch;
``rss_mb``, ``peak_rss_mb``: resident memory at the epoch's end and its peak so far,
MiB, None off Linux) plus ``step``, the global step at the epoch's
end, so step and epoch curves share one x-axis. Steps are numbered from 1 over
the whole run: epoch ``e``'s ``b``-th batch is step ``(e - 1) * batches_per_epoch + b``,
the same after a resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from seqcl.errors import PluginError, SeqclError
from seqcl.plugins import one_line
from seqcl.registry import Registry


@dataclass(frozen=True)
class LoggerContext:
    """What a logger factory is told when a run starts.

    run_dir:    the folder being written (``<name>.incomplete`` until the run ends;
                a logger closes its files before it is renamed to ``<name>``).
    name:       the run's final folder name (a good run label for a dashboard).
    config:     the resolved config tree (what ``config.yaml`` holds).
    start_step: the last global step already logged; 0 for a new run, the resumed
                epoch's last step after ``--resume`` (steps above it are logged again).
    resumed:    whether this is a ``--resume``.
    """

    run_dir: Path
    name: str
    config: dict[str, Any]
    start_step: int = 0
    resumed: bool = False


class Logger:
    """Base class of a logger: override what you need; every method may be left as is.

    ``wants_steps = False`` spares the per-step records (and their host syncs).
    """

    wants_steps: bool = True

    def log_step(self, record: dict[str, Any]) -> None:
        """One optimizer step's losses (see the module doc for the record)."""

    def log_epoch(self, record: dict[str, Any]) -> None:
        """One finished epoch: its ``metrics.jsonl`` line plus ``step``."""

    def close(self, status: str, summary: dict[str, Any] | None) -> None:
        """The run ended: ``status`` is ``finished`` (then ``summary`` is ``summary.json``),
        ``failed`` or ``interrupted``. Flush and close files here."""


class Loggers:
    """The enabled loggers of one run; a call to one that raises disables it (one warning)."""

    def __init__(self, active: list[tuple[str, Logger]], warn: Callable[[str], None]) -> None:
        self._active = list(active)
        self._warn = warn

    @classmethod
    def start(cls, names: list[str], registry: Registry, context: LoggerContext,
              warn: Callable[[str], None]) -> "Loggers":
        """Build the loggers named in ``run.loggers``; one that cannot start is a :class:`PluginError`."""
        built: list[tuple[str, Logger]] = []
        for name in names:
            try:
                component = registry.get("logger", name)
                built.append((name, component.factory(context)))
            except Exception as exc:
                cls(built, warn).close("failed", None)  # the ones already started
                if isinstance(exc, SeqclError):
                    raise
                raise PluginError(f"logger {name} (plugin {component.plugin}) cannot start: {one_line(exc)}") from None
        return cls(built, warn)

    @property
    def wants_steps(self) -> bool:
        return any(getattr(logger, "wants_steps", True) for _, logger in self._active)

    def step(self, record: dict[str, Any]) -> None:
        self._each("log_step", lambda logger: getattr(logger, "wants_steps", True) and logger.log_step(record))

    def epoch(self, record: dict[str, Any]) -> None:
        self._each("log_epoch", lambda logger: logger.log_epoch(record))

    def close(self, status: str, summary: dict[str, Any] | None = None) -> None:
        """Close every logger once (later calls do nothing)."""
        active, self._active = self._active, []
        for name, logger in active:
            try:
                logger.close(status, summary)
            except Exception as exc:
                self._warn(f"warning: logger {name}: close failed ({one_line(exc)})")

    def _each(self, what: str, call: Callable[[Logger], Any]) -> None:
        for name, logger in list(self._active):
            try:
                call(logger)
            except Exception as exc:
                self._active.remove((name, logger))
                self._warn(f"warning: logger {name}: {what} failed ({one_line(exc)}); "
                           "it is disabled for the rest of the run (metrics.jsonl is unaffected)")
                try:
                    logger.close("failed", None)
                except Exception:
                    pass
