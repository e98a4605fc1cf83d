"""Studies: many runs of one experiment (ablation, sweep, comparison), with a report.

A study file (YAML, :mod:`seqcl.study.spec`) names a base config, variants, an
optional grid or Optuna search space and seeds. :mod:`seqcl.study.plan` expands
it into runs and checks every run's config before anything trains;
:mod:`seqcl.study.ledger` keeps the runs in an Optuna storage (SQLite by
default, any SQLAlchemy URL) so that several processes or machines share one
study without running a finished run twice; :mod:`seqcl.study.runner` trains;
:mod:`seqcl.study.report` and :mod:`seqcl.study.compare` turn run directories
into tables, plots and paired significance tests (:mod:`seqcl.study.stats`).

Nothing is imported here: ``seqcl.cli`` imports :mod:`seqcl.study.cli` at
start-up, and Optuna, SQLAlchemy, SciPy, matplotlib and torch are imported only
inside the commands that need them, so ``seqcl --help`` stays fast.
"""
