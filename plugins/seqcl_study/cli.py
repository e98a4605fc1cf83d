"""``seqcl study FILE``, ``seqcl study report DIR`` and ``seqcl compare A B``.

``study`` is a group whose default subcommand is ``run``: ``seqcl study
FILE.yaml …`` and ``seqcl study run FILE.yaml …`` are the same, and ``seqcl
study report runs/<study>`` reports, ``seqcl study status runs/<study>`` shows where each run stands. Heavy imports (Optuna, SciPy, matplotlib,
torch) happen inside the commands, so ``seqcl --help`` does not pay for them;
each command first checks that the ``study`` extra it needs is installed
(:func:`require_extra`).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import click

from seqcl.errors import SeqclError

from .splits import REPORT_SPLITS

#: the import names of the ``study`` extra (pyproject.toml), and what each command needs of it
EXTRA = "study"
NEEDS = {
    "study": ("optuna", "sqlalchemy", "scipy", "matplotlib"),  # the ledger, then the report
    "study report": ("scipy", "matplotlib"),
    "compare": ("scipy",),
    "plot": ("matplotlib",),
}


class MissingExtra(SeqclError):
    """A command of this plugin run without the packages of the ``study`` extra (exit code 2)."""


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a finder that refuses it, a half-imported module
        return False


def require_extra(command: str) -> None:
    """Raise :class:`MissingExtra`, naming the extra, if a package ``seqcl COMMAND`` needs is not installed.

    Only looks the packages up (nothing is imported), so the check costs nothing.
    """
    missing = [name for name in NEEDS[command] if not _installed(name)]
    if missing:
        raise MissingExtra(f"`seqcl {command}` needs the '{EXTRA}' extra ({', '.join(missing)} not installed): "
                           f"pip install 'seqcl[{EXTRA}]'")


class _DefaultGroup(click.Group):
    """A group that runs ``run`` when the first argument is not a subcommand name."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def _echo_err(msg: str) -> None:
    click.echo(msg, err=True)


SPLIT_HELP = "Which split's metrics and ranks (test_history_*: the test split under either protocol)"
report_options = [
    click.option("--test", "test", type=click.Choice(["ttest", "wilcoxon"]), default="ttest", show_default=True,
                 help="Paired test over users."),
    click.option("--bootstrap", "n_boot", type=click.IntRange(min=0), default=2000, show_default=True,
                 help="Bootstrap resamples for the CI of each difference (0: none)."),
    click.option("--bootstrap-seed", "boot_seed", type=int, default=0, show_default=True,
                 help="Seed of the bootstrap (same seed, same interval)."),
]


def _with(options: list[Any]):
    def wrap(f):
        for option in reversed(options):
            f = option(f)
        return f

    return wrap


@click.group(cls=_DefaultGroup)
def study() -> None:
    """Run a study file (`seqcl study FILE.yaml`) or report on one (`seqcl study report runs/<study>`).

    A study is many runs of one experiment: variants (ablation rows, augmenters),
    grids or an Optuna search, several seeds. Runs are kept in an Optuna ledger
    (runs/<study>/study.db, or --storage URL shared by many machines); stopping
    and rerunning resumes: finished runs are skipped, failed ones retried.
    """


@study.command("run")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Override a key of the study's base config (variants still override it).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes on this machine.")
@click.option("--storage", metavar="URL",
              help="SQLAlchemy URL of the ledger (postgresql://…); default sqlite in runs/<study>/study.db.")
@click.option("--runs-dir", default="runs", show_default=True, help="Root of study directories.")
@click.option("--name", help="Study name (default: the file's name:).")
@click.option("--reuse", "reuse_dirs", multiple=True, metavar="DIR",
              help="Another study folder (runs/<study>) whose finished runs with an identical config are copied "
                   "instead of trained (repeatable; added to the file's reuse:).")
@click.option("--seeds", "only_seeds", metavar="S[,S…]",
              help="Train only these of the file's seeds now (e.g. 1: one seed of every arm first); "
                   "a later call without it trains the rest.")
@click.option("--variants", "only_variants", metavar="NAME[,NAME…]",
              help="Train only these variants now; the study (report) stays the whole file.")
@click.option("--dry-run", is_flag=True, help="Check every run's config and list the runs; train nothing.")
@click.option("--no-report", is_flag=True, help="Do not write the report at the end.")
@click.option("--heartbeat", "heartbeat_s", type=click.IntRange(min=1), default=30, show_default=True,
              help="Seconds between a running trial's heartbeats (a run silent for 4× this is retried).")
@click.option("--plugin", "plugin_modules", multiple=True, metavar="MODULE",
              help="Import an uninstalled module as a plugin (repeatable).")
@click.pass_context
def run_cmd(ctx: click.Context, file: str, assignments: tuple[str, ...], workers: int, storage: str | None,
            runs_dir: str, name: str | None, reuse_dirs: tuple[str, ...], only_seeds: str | None,
            only_variants: str | None, dry_run: bool, no_report: bool, heartbeat_s: int,
            plugin_modules: tuple[str, ...]) -> None:
    """Run every run of the study FILE that is not finished yet, then write the report."""
    require_extra("study")
    from seqcl.cli import load

    from .plan import build_plan
    from .spec import load_spec, parse_selection

    spec = load_spec(file, assignments, name, reuse_dirs)
    selection = None
    if only_seeds is not None or only_variants is not None:
        selection = parse_selection(spec, only_seeds, only_variants)
    loaded = load(tuple(plugin_modules))
    plan = build_plan(spec, loaded.registry, runs_dir, selection)
    if dry_run:
        if spec.mode == "search":
            click.echo(f"study {spec.name}: search, {spec.trials} trials × {len(plan.seeds)} seeds, "
                       f"variants {', '.join(spec.variants)}; space: " + ", ".join(
                           f"{k} {p.type} {list(p.choices) or [p.low, p.high]}" for k, p in spec.search.items()))
        else:
            reused = sum(c.reuse is not None for c in plan.trained)
            todo = f"{len(plan.trained) - reused} runs to train" + (f", {reused} to reuse" if reused else "")
            click.echo(f"study {spec.name}: {todo} ({len(plan.cells)} table cells), every config checked")
            for cell in plan.cells:
                if plan.selected is not None and cell.run not in plan.selected:
                    click.echo(f"  {cell.run}  {cell.config_hash}  (not selected now)")
                    continue
                same = f"  (same config as {cell.same_as})" if cell.same_as else ""
                same += f"  (reused from {cell.reuse})" if cell.reuse else ""
                job = f"  (torchrun, {cell.nproc} processes)" if cell.nproc > 1 else ""
                click.echo(f"  {cell.run}  {cell.config_hash}{job}{same}")
        return
    from .runner import run_study

    outcome = run_study(plan, loaded, storage=storage, workers=workers, plugin_modules=tuple(plugin_modules),
                        log=_echo_err, heartbeat_s=heartbeat_s)
    progress = outcome.progress
    if progress is not None:
        _echo_err(progress.line(spec.name) + f" | {outcome.seconds:.1f}s")
    for run, error in outcome.failed:
        _echo_err(f"  failed: {run}: {error}")
    if outcome.failed:
        _echo_err("  (run the same command again to retry the failed runs)")
    if not no_report and progress is not None and progress.done:
        from .report import build_report, markdown, write_report

        report = build_report(plan.study_dir)
        paths = write_report(report)
        click.echo(markdown(report), nl=False)
        _echo_err("report: " + ", ".join(str(p) for p in paths))
    if progress is not None and progress.done < progress.total:
        _echo_err("  " + _not_done(progress.total - progress.done, progress.total, outcome))
    ctx.exit(1 if outcome.failed or progress is None or progress.done < progress.total else 0)


def _not_done(missing: int, total: int, outcome: Any) -> str:
    """One line: how many runs are not done and why, so a non-zero exit is never a mystery."""
    parts = []
    if outcome.failed:
        parts.append(f"{len(outcome.failed)} failed")
    if outcome.running:
        more = f" (+{len(outcome.running) - 3} more)" if len(outcome.running) > 3 else ""
        shown = ", ".join(outcome.running[:3]) + more
        parts.append(f"{len(outcome.running)} still marked running: {shown}")
    rest = missing - len(outcome.failed) - len(outcome.running)
    if rest > 0:
        parts.append(f"{rest} not started")
    return (f"not done: {missing} of {total} runs ({'; '.join(parts) or 'unknown'}); rerun the same command to "
            "finish them (a run whose worker died is retried once its heartbeat has stopped)")


@study.command("status")
@click.argument("study_dir", type=click.Path(file_okay=False))
def status_cmd(study_dir: str) -> None:
    """Where each run of STUDY_DIR (runs/<study>) stands: finished, in progress (epochs, best valid
    metric, epochs since it against the patience, s / epoch, RSS) or not started. Safe while it runs."""
    from .status import format_status, study_status

    click.echo(format_status(*study_status(study_dir)), nl=False)


@study.command("report")
@click.argument("study_dir", type=click.Path(file_okay=False))
@click.option("--split", type=click.Choice(REPORT_SPLITS), default=None,
              help=f"{SPLIT_HELP}; a split other than test writes report-<split>.md/.csv. "
                   "[default: the study file's split:, else test]")
@_with(report_options)
@click.option("--no-plots", is_flag=True, help="Tables only.")
def report_cmd(study_dir: str, split: str | None, test: str, n_boot: int, boot_seed: int, no_plots: bool) -> None:
    """Write report.md, report.csv and plot PNGs into STUDY_DIR (runs/<study>) and print the table.

    Another split than the default writes report-<split>.md and report-<split>.csv beside them."""
    require_extra("study report")
    from .report import build_report, markdown, write_report

    report = build_report(study_dir, split=split, test=test, n_boot=n_boot, boot_seed=boot_seed)
    paths = write_report(report, plots=not no_plots)
    click.echo(markdown(report), nl=False)
    _echo_err("report: " + ", ".join(str(p) for p in paths))


@click.command("compare")
@click.argument("run_a", type=click.Path(file_okay=False))
@click.argument("run_b", type=click.Path(file_okay=False))
@click.option("--split", type=click.Choice(REPORT_SPLITS), default="test", show_default=True, help=SPLIT_HELP + ".")
@_with(report_options)
def compare(run_a: str, run_b: str, split: str, test: str, n_boot: int, boot_seed: int) -> None:
    """Metric deltas of run RUN_B against run RUN_A, paired over users, with bootstrap CIs."""
    require_extra("compare")
    from .compare import compare_runs, format_comparison

    ra, rb, rows = compare_runs(run_a, run_b, split=split, test=test, n_boot=n_boot, seed=boot_seed)
    click.echo(format_comparison(ra, rb, rows, split, n_boot, boot_seed))



@click.command("plot")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("-o", "--output", default="curves.png", show_default=True, type=click.Path(dir_okay=False),
              help="The PNG to write.")
@click.option("--metric", help="Validation metric to draw (default: the first run's train.metric).")
def plot(run_dirs: tuple[str, ...], output: str, metric: str | None) -> None:
    """Learning curves of RUN_DIR… (valid metric and each loss term per epoch, runs overlaid) to a PNG."""
    require_extra("plot")
    from .curves import plot_curves, read_curves

    path = plot_curves([read_curves(d) for d in run_dirs], output, metric)
    click.echo(str(path))
