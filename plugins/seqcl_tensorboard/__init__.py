"""Shipped plugin: the ``tensorboard`` logger (``pip install 'seqcl[tensorboard]'``, ``--logger tensorboard``).

Writes TensorBoard event files to ``<run folder>/tensorboard/`` with
:class:`torch.utils.tensorboard.SummaryWriter`, so ``tensorboard --logdir runs``
shows every run (a run that is still training is listed as
``<name>.incomplete/tensorboard``). Scalars, all against the global step (see
:mod:`seqcl.loggers`):

* ``step/loss/<name>`` and ``step/loss/total``: every optimizer step;
* ``epoch/loss/<name>``: each epoch's mean losses (``main`` and every term);
* ``valid/<metric>``: each epoch's validation metrics (``hr@10``, ``mrr@10`` …);
* ``epoch/seconds``, ``epoch/epoch``: time per epoch, and the epoch number (to read epochs off the step axis);
* ``test/<metric>``: the test metrics at the best epoch, at the last step.

After ``--resume``, events of steps after the resumed epoch (the interrupted
epoch's) are dropped with the writer's ``purge_step``, so no curve doubles back.
"""

from __future__ import annotations

from typing import Any

from seqcl.errors import PluginError
from seqcl.hookspecs import hookimpl
from seqcl.loggers import Logger, LoggerContext

#: the subfolder of the run folder that holds the event files
SUBDIR = "tensorboard"


class TensorBoardLogger(Logger):
    """One ``SummaryWriter`` per run."""

    def __init__(self, context: LoggerContext) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise PluginError("logger tensorboard needs the 'tensorboard' package: "
                              "pip install 'seqcl[tensorboard]'") from None
        purge = context.start_step + 1 if context.resumed else None
        self.writer = SummaryWriter(log_dir=str(context.run_dir / SUBDIR), purge_step=purge)
        self.last_step = context.start_step
        if not context.resumed:
            import yaml

            self.writer.add_text("config", "```\n" + yaml.safe_dump(context.config, sort_keys=False) + "```")

    def log_step(self, record: dict[str, Any]) -> None:
        step = record["step"]
        for name, value in record["loss"].items():
            self.writer.add_scalar(f"step/loss/{name}", value, step)
        self.writer.add_scalar("step/loss/total", record["total"], step)
        self.last_step = step

    def log_epoch(self, record: dict[str, Any]) -> None:
        step = record["step"]
        for name, value in record["loss"].items():
            self.writer.add_scalar(f"epoch/loss/{name}", value, step)
        for name, value in record["valid"].items():
            self.writer.add_scalar(f"valid/{name}", value, step)
        self.writer.add_scalar("epoch/seconds", record["seconds"], step)
        self.writer.add_scalar("epoch/epoch", record["epoch"], step)
        self.last_step = max(self.last_step, step)
        self.writer.flush()  # an epoch is a natural point to show up in the dashboard

    def close(self, status: str, summary: dict[str, Any] | None) -> None:
        if summary is not None:
            for name, value in summary.get("test", {}).items():
                self.writer.add_scalar(f"test/{name}", value, self.last_step)
        self.writer.close()


@hookimpl
def register_loggers(register):
    register("tensorboard", TensorBoardLogger, "TensorBoard event files in <run>/tensorboard/ (torch.utils.tensorboard)")
