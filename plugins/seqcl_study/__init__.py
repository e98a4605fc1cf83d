"""Shipped plugin: the ``seqcl study``, ``seqcl compare`` and ``seqcl plot`` commands (``pip install 'seqcl[study]'``).

Studies are many runs of one experiment (ablation, sweep, comparison), with a report.
A study file (YAML, :mod:`seqcl_study.spec`) names a base config, variants, an
optional grid or Optuna search space and seeds. :mod:`seqcl_study.plan` expands
it into runs and checks every run's config before anything trains;
:mod:`seqcl_study.ledger` keeps the runs in an Optuna storage (SQLite by
default, any SQLAlchemy URL) so that several processes or machines share one
study without running a finished run twice; :mod:`seqcl_study.runner` trains;
:mod:`seqcl_study.report` and :mod:`seqcl_study.compare` turn run directories
into tables, plots and paired significance tests (:mod:`seqcl_study.stats`);
:mod:`seqcl_study.curves` draws learning curves of run folders (``seqcl plot``).

The plugin adds its commands through ``register_commands``; the core never
imports it. Its dependencies (Optuna, SQLAlchemy, SciPy, matplotlib) are the
``study`` extra, imported only inside the commands that need them, so
``seqcl --help`` stays fast and ``seqcl train`` works without them; a command
run without them says, in one line, to ``pip install 'seqcl[study]'``.
"""

from __future__ import annotations

from seqcl.hookspecs import hookimpl

from . import cli as commands  # not ``from .cli import compare``: the submodule compare would replace it


@hookimpl
def register_commands(cli):
    cli.add_command(commands.study)
    cli.add_command(commands.compare)
    cli.add_command(commands.plot)
