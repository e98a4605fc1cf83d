"""Expand a study into runs and check every run's config before anything trains.

A *cell* is one run: (variant, top-level grid point, the variant's own grid
point, seed). Its config is the base, then the variant's overrides, then the
grid values, then ``train.seed`` / ``run.dir`` / ``run.name`` — resolved with
:func:`seqcl.config.resolve`, the same function ``seqcl train`` uses, so a
study accepts exactly what a config file accepts. Any error names the variant
(and grid point), so a typo in row (C) is found before row (A) trains for an
hour.

A run the study launches as a ``torchrun`` job (``launch: {nproc_per_node: N}``,
N > 1) gets ``launch.nproc_per_node`` among its hashed entries: ranks > 0 draw
their own random streams, so an N-process run is not the result of a
one-process run with the same config (one-process runs hash as before).

Run names are deterministic (``<variant>__<key>=<value>…__s<seed>``): they
are the directory names under ``runs/<study>/runs/`` and the keys of the ledger,
which is what lets a stopped study resume and several workers share it.
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqcl.config import Resolved, TrainOptions, resolve
from seqcl.data.loading import is_builtin
from seqcl.errors import ConfigError, SeqclError
from seqcl.registry import Registry

from .confighash import config_hash, hashed_items
from .reuse import finished_runs
from .spec import Launch, Selection, StudySpec, merge_into


@dataclass(frozen=True)
class Cell:
    """One run of a study."""

    run: str  # deterministic directory name and ledger key
    variant: str
    group: dict[str, Any]  # top-level grid point (tables and baselines are per group)
    point: dict[str, Any]  # the variant's own grid point (or a search trial's parameters)
    seed: int
    config: dict[str, Any] = field(repr=False)  # nested config mapping handed to resolve()
    config_hash: str = ""
    #: an earlier run with the identical config (e.g. a sweep point equal to the defaults):
    #: this cell is not trained, its results are that run's
    same_as: str | None = None
    #: a finished run of another study (``reuse:``) with this config hash: copied, not trained
    reuse: str | None = None
    nproc: int = 1  # processes of its torchrun job (1: trained in the worker's process)

    def describe(self) -> str:
        values = {**self.group, **self.point}
        where = "".join(f", {k}={v}" for k, v in values.items())
        return f"variant {self.variant!r}{where}, seed {self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "variant": self.variant, "group": self.group, "point": self.point,
                "seed": self.seed, "config_hash": self.config_hash, "same_as": self.same_as, "reuse": self.reuse,
                "nproc_per_node": self.nproc}


@dataclass
class Plan:
    """The runs of a study and where they go."""

    spec: StudySpec
    study_dir: Path
    cells: list[Cell]  # every run of a grid study; empty for a search (trials are sampled)
    seeds: list[int]
    metric: str  # headline metric, e.g. "mrr@10"
    #: run → its resolved config, flattened, without the UNHASHED keys (stored in the ledger for diffs)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    #: the runs this call trains (``--seeds``/``--variants``); None: every cell. ``cells`` stays whole.
    selected: frozenset[str] | None = None

    @property
    def runs_dir(self) -> Path:
        return self.study_dir / "runs"

    @property
    def trained(self) -> list[Cell]:
        """The cells this call trains: not aliases of an identical earlier run, and selected
        (with the run a selected alias stands for)."""
        if self.selected is None:
            return [c for c in self.cells if c.same_as is None]
        needed = {c.same_as or c.run for c in self.cells if c.run in self.selected}
        return [c for c in self.cells if c.same_as is None and c.run in needed]

    def by_run(self) -> dict[str, Cell]:
        return {c.run: c for c in self.trained}


# ------------------------------------------------------------------ naming


def slug(text: str) -> str:
    """A file-name-safe form of a name or value."""
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "-", text).strip("-") or "x"


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def run_name(variant: str, values: dict[str, Any], seed: int) -> str:
    parts = [slug(variant)] + [slug(f"{k}={format_value(v)}") for k, v in values.items()] + [f"s{seed}"]
    return "__".join(parts)


#: hashed entries that mean something when absent: a run without ``launch.nproc_per_node`` ran in one process
IMPLIED = {"launch.nproc_per_node": 1}


def with_implied(items: dict[str, Any]) -> dict[str, Any]:
    """``items`` with the :data:`IMPLIED` entries it leaves out (for diffs, never for the hash)."""
    return {**IMPLIED, **items}


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``(changed, one_sided)``: keys whose values differ, and keys only one side has.

    A key only one side has is an option added to (or removed from) seqcl or a
    plugin since the run was made; it is not treated as a change of the study,
    or every upgrade would invalidate every finished run. A value that differs
    is a change — including ``launch.nproc_per_node`` against a run without it
    (:data:`IMPLIED`: that run had one process).
    """
    old, new = with_implied(old), with_implied(new)
    changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
    one_sided = sorted(set(old) ^ set(new))
    return changed, one_sided


# ---------------------------------------------------------------- building


def _points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    if not grid:
        return [{}]
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def cell_config(spec: StudySpec, variant: str, values: dict[str, Any], seed: int | None, runs_dir: Path,
                name: str) -> dict[str, Any]:
    """The nested config mapping of one run: base → variant → grid values → seed and run place."""
    tree = copy.deepcopy(spec.base)
    merge_into(tree, spec.variants[variant].overrides)
    merge_into(tree, values)
    merge_into(tree, {"run.dir": str(runs_dir), "run.name": name})
    if seed is not None:
        merge_into(tree, {"train.seed": seed})
    return tree


def check_config(registry: Registry, tree: dict[str, Any], where: str, source: str,
                 metric: str | None, launch: Launch = Launch()) -> Resolved:
    """Resolve one run's config; errors become ConfigError naming ``where`` (variant, point, seed)."""
    try:
        resolved = resolve(registry, tree)
    except SeqclError as exc:
        message = str(exc).removeprefix("config file: ")  # the study file is the config file here
        raise ConfigError(f"study {source}: {where}: {message}") from None
    if launch.torchrun:  # what seqcl train refuses under torchrun, found before anything trains
        if resolved.stages:
            raise ConfigError(f"study {source}: {where}: launch.nproc_per_node={launch.nproc_per_node}: "
                              "runs in stages do not run under torchrun yet")
        if ":" in resolved.train.device:
            raise ConfigError(f"study {source}: {where}: launch.nproc_per_node={launch.nproc_per_node}: "
                              f"train.device={resolved.train.device}; under torchrun set "
                              f"train.device={resolved.train.device.partition(':')[0]} (rank r uses device r)")
    dataset = resolved.dataset
    if not is_builtin(dataset) and not Path(dataset).exists():
        raise ConfigError(f"study {source}: {where}: dataset {dataset!r} not found")
    if metric is not None:
        names = [f"{m}@{k}" for k in resolved.eval.ks for m in ("hr", "ndcg", "mrr")]
        if metric not in names:
            raise ConfigError(f"study {source}: {where}: metric {metric!r} is not computed "
                              f"(eval.ks gives {', '.join(names)})")
    return resolved


def build_plan(spec: StudySpec, registry: Registry, runs_root: str | Path = "runs",
               selection: Selection | None = None) -> Plan:
    """Expand ``spec`` into cells and check every run's config (nothing is trained or written);
    ``selection`` narrows what is trained, not the study."""
    study_dir = Path(runs_root) / spec.name
    runs_dir = study_dir / "runs"
    first = next(iter(spec.variants))
    try:  # defaults of seeds: and metric: come from the base; a bad base is reported per run below
        probe = resolve(registry, cell_config(spec, first, {}, None, runs_dir, "probe")).train
    except SeqclError:
        probe = TrainOptions()
    seeds = list(spec.seeds) or [probe.seed]
    metric = spec.metric or probe.metric
    cells: list[Cell] = []
    configs: dict[str, dict[str, Any]] = {}
    if spec.mode == "search":
        _probe_search(spec, registry, runs_dir, seeds[0], metric)
        return Plan(spec, study_dir, [], seeds, metric)
    reusable = finished_runs(spec.reuse)
    seen: dict[str, str] = {}
    by_hash: dict[str, str] = {}
    for seed in seeds:
        for group in _points(spec.grid):
            for vname, variant in spec.variants.items():
                for point in _points(variant.grid):
                    name = run_name(vname, {**group, **point}, seed)
                    where = Cell(name, vname, group, point, seed, {}).describe()
                    if name in seen:
                        raise ConfigError(f"study {spec.source}: {where} and {seen[name]} get the same run "
                                          f"name {name!r}; rename a variant")
                    seen[name] = where
                    tree = cell_config(spec, vname, {**group, **point}, seed, runs_dir, name)
                    launch = spec.launch_of(vname)
                    resolved = check_config(registry, tree, where, spec.source, metric, launch)
                    digest = config_hash(resolved.tree, launch)
                    same_as = by_hash.get(digest)
                    source = reusable.get(digest) if same_as is None else None
                    if source is not None and source.resolve() == (runs_dir / name).resolve():
                        source = None  # this very run, already finished here: nothing to copy
                    cells.append(Cell(name, vname, dict(group), dict(point), seed, tree, digest, same_as,
                                      None if source is None else str(source), launch.nproc_per_node))
                    by_hash.setdefault(digest, name)
                    configs[name] = hashed_items(resolved.tree, launch)
    selected = None if selection is None else frozenset(c.run for c in cells if selection.takes(c.variant, c.seed))
    return Plan(spec, study_dir, cells, seeds, metric, configs, selected)


def _probe_search(spec: StudySpec, registry: Registry, runs_dir: Path, seed: int, metric: str) -> None:
    """Check a search space before it starts: every variant at both bounds and every choice."""
    for vname in spec.variants:
        firsts = {k: p.probe_values()[0] for k, p in spec.search.items()}
        for key, param in spec.search.items():
            for value in param.probe_values():
                values = {**firsts, key: value}
                where = f"variant {vname!r}, search {key}={format_value(value)}"
                check_config(registry, cell_config(spec, vname, values, seed, runs_dir, "probe"), where,
                             spec.source, metric, spec.launch_of(vname))


def search_cell(plan: Plan, registry: Registry, number: int, variant: str, params: dict[str, Any],
                seed: int) -> Cell:
    """The run of search trial ``number`` for one seed (checked like any other run)."""
    name = f"trial-{number:04d}__s{seed}"
    tree = cell_config(plan.spec, variant, params, seed, plan.runs_dir, name)
    where = f"trial {number} ({variant}, {', '.join(f'{k}={format_value(v)}' for k, v in params.items())})"
    launch = plan.spec.launch_of(variant)
    resolved = check_config(registry, tree, where, plan.spec.source, plan.metric, launch)
    return Cell(name, variant, {}, dict(params), seed, tree, config_hash(resolved.tree, launch),
                nproc=launch.nproc_per_node)
