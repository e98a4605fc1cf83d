"""The ``seqcl`` command line: ``train``, ``plugins``, ``data stats``, ``recommend``, ``export`` (+ plugin commands).

Plugins add commands through ``register_commands`` (``seqcl study`` and
``seqcl compare`` come from the shipped ``study`` plugin); a plugin command
that needs the registry calls :func:`load`, which shares this command's discovery.

User mistakes (``SeqclError``) print one line and exit with code 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from seqcl.config import EXECUTION_KEYS
from seqcl.errors import PluginError, SeqclError
from seqcl.memory import enable_thp_env, reexec_with_tunables

enable_thp_env()  # before anything imports torch (seqcl.memory)

if TYPE_CHECKING:
    from seqcl.plugins import LoadedPlugins


#: this command's discovery, by ``--plugin`` modules; ``main`` empties it, so each
#: command discovers once and sees the plugins installed now (tests call ``main`` repeatedly)
_LOADED: dict[tuple[str, ...], LoadedPlugins] = {}


def load(plugin_modules: tuple[str, ...] = ()) -> LoadedPlugins:
    """Discover plugins once per command (per set of ``--plugin`` modules); warn about skipped ones once.

    For plugin commands too: ``seqcl.cli.load(plugin_modules)`` gives the registry
    the command line already discovered instead of discovering again.
    """
    from seqcl.plugins import load_plugins

    key = tuple(plugin_modules)
    if key not in _LOADED:
        loaded = load_plugins(key)
        for problem in loaded.broken:
            click.echo(f"warning: plugin {problem} (skipped)", err=True)
        _LOADED[key] = loaded
    return _LOADED[key]


_load = load  # the former, private name


def _plugin_modules(argv: list[str]) -> tuple[str, ...]:
    """The ``--plugin`` values in ``argv``, in order, so discovery (which adds plugin commands)
    happens before click parses and the command reuses it instead of discovering again."""
    modules: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--plugin" and i + 1 < len(argv):
            modules.append(argv[i + 1])
        elif arg.startswith("--plugin="):
            modules.append(arg.partition("=")[2])
    return tuple(modules)


plugin_option = click.option(
    "--plugin", "plugin_modules", multiple=True, metavar="MODULE",
    help="Import an uninstalled module as a plugin (repeatable).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="seqcl")
def cli(debug: bool) -> None:
    """seqcl: contrastive learning for sequential recommendation, as plugins."""


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file.")
@click.option("--dataset", help="Data file (sequences .txt[.gz], RecBole .inter, raw .csv/.tsv) or 'builtin'.")
@click.option("--augmenter", help="Augmenter name (see `seqcl plugins`); default none.")
@click.option("--encoder", help="Encoder name; default sasrec.")
@click.option("--objective", help="Main objective (ce, sampled, bce, cloze, …); default: the encoder's.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help="Override any config key.")
@click.option("--with", "with_terms", multiple=True, metavar="TERM", help="Add a loss term.")
@click.option("--without", "without_terms", multiple=True, metavar="TERM", help="Remove a loss term.")
@click.option("--epochs", type=int, help="Shortcut for --set train.epochs=N.")
@click.option("--seed", type=int, help="Shortcut for --set train.seed=N.")
@click.option("--device", help="Shortcut for --set train.device=DEVICE (cpu, cuda).")
@click.option("--logger", "loggers", multiple=True, metavar="NAME",
              help="Send records to a logger plugin, e.g. tensorboard (repeatable; --set run.loggers=[...]).")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and exit.")
@click.option("--resume", "resume_dir", metavar="RUN_DIR",
              help="Continue an interrupted run from its last.pt (its config.yaml is used; --set only for "
                   f"{', '.join(EXECUTION_KEYS)}).")
@plugin_option
def train(config_file, dataset, augmenter, encoder, objective, assignments, with_terms, without_terms, epochs, seed, device,
          loggers, dry_run, resume_dir, plugin_modules) -> None:
    """Train a model and print valid/test metrics at the best epoch.

    A checkpoint (last.pt) is written after every epoch; after Ctrl-C, a kill or
    a crash, `seqcl train --resume RUN_DIR` continues where the run stopped and
    ends with exactly the results of an uninterrupted run (on CPU, same threads).
    On a bigger machine: `--resume RUN_DIR --set train.threads=8`; on a GPU:
    `--resume RUN_DIR --device cuda` (from then on its random streams are the GPU's).
    """
    from seqcl.config import parse_assignment, read_yaml, resolve
    from seqcl.errors import ConfigError

    loaded = load(tuple(plugin_modules))
    shortcuts = [("--dataset", "dataset", dataset), ("--augmenter", "augmenter", augmenter),
                 ("--encoder", "encoder", encoder), ("--objective", "objective", objective),
                 ("--epochs", "train.epochs", epochs), ("--seed", "train.seed", seed),
                 ("--device", "train.device", device), ("--logger", "run.loggers", list(loggers) or None)]
    if resume_dir is not None:
        others = [("--config", config_file), ("--with", with_terms), ("--without", without_terms),
                  ("--dry-run", dry_run)]
        given = [flag for flag, key, value in shortcuts if value is not None and key not in EXECUTION_KEYS]
        given += [flag for flag, value in others if value]
        if given:
            raise ConfigError(f"--resume uses the run's own config.yaml; it takes no {', '.join(given)} "
                              f"(--set only for {', '.join(EXECUTION_KEYS)})")
        from seqcl.training import resume

        moved = [(key, value) for flag, key, value in shortcuts if value is not None and key in EXECUTION_KEYS]
        _print_result(resume(resume_dir, loaded, overrides=moved + [parse_assignment(a) for a in assignments]))
        return
    file_config = read_yaml(config_file) if config_file else {}
    overrides = [parse_assignment(a) for a in assignments]
    overrides += [(key, value) for _, key, value in shortcuts if value is not None]
    resolved = resolve(loaded.registry, file_config, overrides, list(with_terms), list(without_terms))
    if dry_run:
        click.echo(resolved.to_yaml(), nl=False)
        return
    from seqcl.training import train as run_training

    _print_result(run_training(resolved, loaded))


def _print_result(result) -> None:
    from seqcl.distributed import is_main_process
    from seqcl.training import format_table

    if not is_main_process():  # under torchrun rank 0 alone reports
        return
    click.echo(f"best epoch {result.best_epoch} of {result.epochs_run} ({result.seconds:.1f}s); run: {result.run_dir}")
    click.echo(format_table(result))


@cli.command("plugins")
@plugin_option
def list_plugins(plugin_modules) -> None:
    """List every registered component: kind, name, plugin, description; skipped plugins as kind ``broken``."""
    loaded = load(tuple(plugin_modules))
    rows = [(c.kind, c.name, f"{c.plugin} ({loaded.sources.get(c.plugin, '?')})", c.description)
            for c in loaded.registry.all()]
    rows += [("broken", b.name, f"{b.name} ({b.source})", f"skipped: {b.error}") for b in loaded.broken]
    widths = [max(len(r[i]) for r in rows + [("kind", "name", "plugin", "")]) for i in range(3)]
    click.echo(f"{'kind':{widths[0]}}  {'name':{widths[1]}}  {'plugin':{widths[2]}}  description")
    for kind, name, plugin, desc in rows:
        click.echo(f"{kind:{widths[0]}}  {name:{widths[1]}}  {plugin:{widths[2]}}  {desc}")


@cli.group()
def data() -> None:
    """Inspect datasets."""


@data.command("stats")
@click.argument("path")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help="Override data.* settings.")
def data_stats(path: str, assignments: tuple[str, ...]) -> None:
    """Print users, items, actions, avg.len and density of PATH (after preprocessing)."""
    from seqcl.config import build_options, parse_assignment
    from seqcl.data.loading import describe, format_stats, load_data
    from seqcl.data.options import DataOptions
    from seqcl.errors import ConfigError

    values: dict[str, Any] = {}
    for key, value in map(parse_assignment, assignments):
        field = key.removeprefix("data.")
        if field not in DataOptions.__dataclass_fields__:
            raise ConfigError(f"--set: unknown key {key!r} (data stats takes data.* keys)")
        values[field] = value
    data_obj, _ = load_data(path, build_options(DataOptions, values, "data"))
    click.echo(format_stats(describe(data_obj)))


@cli.command()
@click.argument("run_dir")
@click.option("--history", help='One history, oldest first, in the data\'s own item ids: "i1 i2 i3".')
@click.option("--users", "users_file", metavar="FILE",
              help="Histories, one per line: user item item … (the training file's format; .gz read).")
@click.option("-k", "k", type=int, default=10, show_default=True, help="How many items per history.")
@click.option("--json", "as_json", is_flag=True, help='One JSON object per line: {"user", "items", "scores"}.')
@click.option("--keep-history", is_flag=True, help="Also recommend items of the history (excluded by default).")
@click.option("--skip-unknown", is_flag=True,
              help="Skip item ids that are not in the run's id map (a warning each) instead of failing.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, …")
@plugin_option
def recommend(run_dir, history, users_file, k, as_json, keep_history, skip_unknown, device, plugin_modules) -> None:
    """Top-k items for histories, from a trained run's best weights (original item ids in and out).

    Plain output: the ids, best first, one line per history (`user id id …` with
    --users). An item id the run never saw is a one-line error (exit 2), or with
    --skip-unknown a warning. Ties: see docs/api.md.
    """
    import json

    from seqcl.api import load_run
    from seqcl.errors import ConfigError

    if (history is None) == (users_file is None):
        raise ConfigError("recommend takes exactly one of --history \"i1 i2 …\" and --users FILE")
    if k < 1:
        raise ConfigError(f"-k must be >= 1, got {k}")
    run = load_run(run_dir, device=device, plugins=load(tuple(plugin_modules)))
    rows = [(None, "--history", history.split())] if history is not None else _user_histories(users_file)
    users, histories = [], []
    for user, where, items in rows:
        unknown = run.ids.unknown(items)
        if unknown and not skip_unknown:
            raise ConfigError(f"{where}: item {unknown[0]!r} is not in the run's item id map "
                              f"({run.num_items} items; --skip-unknown skips such ids)")
        for item in unknown:
            click.echo(f"warning: {where}: item {item!r} is not in the run's item id map; skipped", err=True)
        known = [item for item in items if item not in unknown]
        if not known:
            what = "no known item" if items else "no item"
            if not skip_unknown or not items:
                raise ConfigError(f"{where}: the history has {what}: nothing to recommend from")
            click.echo(f"warning: {where}: {what} left; history skipped", err=True)
            continue
        users.append(user)
        histories.append(known)
    results = run.recommend(histories, k=k, exclude_history=not keep_history, scores=True)
    for user, pairs in zip(users, results):
        ids = [item for item, _ in pairs]
        if as_json:
            click.echo(json.dumps({"user": user, "items": ids, "scores": [round(s, 6) for _, s in pairs]}))
        else:
            click.echo(" ".join(ids if user is None else [user, *ids]))


def _user_histories(path: str) -> list[tuple[str, str, list[str]]]:
    """(user, "FILE:LINE", item ids) per non-blank line of a one-line-per-user file."""
    from seqcl.data.readers import read_lines

    rows = []
    for lineno, line in enumerate(read_lines(path), 1):
        tokens = line.split()
        if tokens:
            rows.append((tokens[0], f"{path}:{lineno}", tokens[1:]))
    return rows


@cli.command("export")
@click.argument("run_dir")
@click.option("--format", "fmt", default="torchscript", show_default=True, help="torchscript or onnx.")
@click.option("--out", metavar="DIR", help="Folder to write to (default RUN_DIR/export).")
@plugin_option
def export_run(run_dir, fmt, out, plugin_modules) -> None:
    """Export a trained run's scorer for serving without seqcl (docs/api.md: layout, id map).

    Writes the model, items.json (item ids in score-column order) and export.json,
    after checking that the exported model's scores equal the run's.
    """
    from seqcl.api import load_run
    from seqcl.export import export

    run = load_run(run_dir, plugins=load(tuple(plugin_modules)))
    path = export(run, fmt, out)
    click.echo(f"wrote {path} (+ items.json, export.json): input (B, {run.max_len}) int64 left-padded item "
               f"indices, output (B, {run.num_items}) float32 scores")


def _add_plugin_commands(plugin_modules: tuple[str, ...] = ()) -> None:
    """Call every plugin's ``register_commands``; one that raises loses its commands and its components."""
    from seqcl.plugins import one_line

    loaded = load(plugin_modules)
    for impl in loaded.manager.hook.register_commands.get_hookimpls():
        name = loaded.manager.get_name(impl.plugin)
        before = dict(cli.commands)
        try:
            impl.function(cli=cli)
        except Exception as exc:
            cli.commands.clear()
            cli.commands.update(before)
            if loaded.sources.get(name) == "--plugin module":  # asked for explicitly: fail loudly
                raise PluginError(f"plugin {name}: register_commands: {one_line(exc)}") from None
            problem = loaded.skip(name, f"register_commands: {one_line(exc)}")
            click.echo(f"warning: plugin {problem} (skipped)", err=True)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    _LOADED.clear()
    try:
        _add_plugin_commands(_plugin_modules(argv))
        result = cli.main(args=argv, prog_name="seqcl", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except SeqclError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130


def entry() -> None:
    reexec_with_tunables()  # glibc reads its tunables at start only (seqcl.memory)
    sys.exit(main())
