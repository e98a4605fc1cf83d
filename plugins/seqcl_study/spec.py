"""Study files: parse and check the YAML structure of a study.

Only the *shape* is checked here (keys, types, names); whether each run's config
is valid is decided by :func:`seqcl.config.resolve` in :mod:`seqcl_study.plan`,
with the variant named in the error. Keeping the two apart means a study file
accepts exactly the keys a ``--config`` file accepts, no second schema.

Layout::

    name: aclsrec-ablation        # the study directory runs/<name>/ and the ledger's study name
    base: {dataset: …, train: {epochs: 50}}   # a --config mapping
    variants:                     # named overrides: dotted or nested keys, augmenter, with/without
      full: {augmenter: aclsrec}
      no_boundary: {augmenter: aclsrec, without: [boundary]}
      lambda: {augmenter: aclsrec, grid: {loss.cl.weight: [0.01, 0.1]}}   # a variant's own sweep
    grid: {objective: [ce, sampled]}   # optional: crossed with every variant (tables per point)
    search: {loss.cl.tau: {type: float, low: 0.05, high: 1, log: true}}   # or an Optuna search…
    trials: 20                         # …with this many trials (instead of a grid)
    launch: {nproc_per_node: 2}        # optional: each run a torchrun job of 2 processes (also per variant)
    seeds: [1, 2, 3]
    baseline: sasrec                   # the row of the Improve column and of the significance tests
    metric: mrr@10                     # headline metric (Improve column, search objective)
    split: valid                       # the split the report reads (default test; valid: a tuning study never reads test)
    reuse: [../results/beauty-search]  # other study folders whose finished runs of an identical config are copied
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from seqcl.config import parse_assignment, read_yaml
from seqcl.errors import ConfigError

from .splits import REPORT_SPLITS

TOP_KEYS = ("name", "description", "base", "variants", "grid", "search", "trials", "seeds", "baseline", "metric",
            "references", "reuse", "launch", "split")
LAUNCH_KEYS = ("nproc_per_node",)
SEARCH_TYPES = ("float", "int", "categorical")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
#: Keys a study sets itself for every run; a study file may not set them.
RESERVED = ("train.seed", "run.dir", "run.name")
METRIC_RE = re.compile(r"^(hr|ndcg|mrr)@([1-9][0-9]*)$")


@dataclass(frozen=True)
class SearchParam:
    """One dimension of an Optuna search space (``search:`` entry)."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def distribution(self) -> Any:
        """The matching ``optuna.distributions`` object (imports optuna)."""
        from optuna import distributions as d

        if self.type == "float":
            return d.FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return d.IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return d.CategoricalDistribution(list(self.choices))

    def probe_values(self) -> list[Any]:
        """Values that are validated before the search starts: both bounds or every choice."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            return [int(self.low), int(self.high)]
        return [float(self.low), float(self.high)]


@dataclass(frozen=True)
class Launch:
    """How each run is started: in the worker's own process, or as a ``torchrun`` job on this machine.

    Not a config key: the launcher is the study's business (``seqcl train`` is
    told by ``torchrun`` itself). It changes results — ranks > 0 draw their own
    random streams — so it enters the run's config hash (:mod:`seqcl_study.plan`).
    """

    nproc_per_node: int = 1  # 1: in-process; N > 1: ``torchrun --standalone --nproc-per-node N``

    @property
    def torchrun(self) -> bool:
        return self.nproc_per_node > 1


@dataclass(frozen=True)
class Variant:
    """A named set of overrides on the base config, optionally with its own grid."""

    name: str
    overrides: dict[str, Any]  # dotted key → value; ``with``/``without`` → list of term names
    grid: dict[str, list[Any]] = field(default_factory=dict)
    launch: Launch | None = None  # None: the study's top-level ``launch``


@dataclass
class StudySpec:
    """A parsed, shape-checked study file."""

    name: str
    base: dict[str, Any]  # nested, exactly like a --config mapping (with --set applied)
    variants: dict[str, Variant]
    grid: dict[str, list[Any]] = field(default_factory=dict)
    search: dict[str, SearchParam] = field(default_factory=dict)
    trials: int = 0
    seeds: list[int] = field(default_factory=list)  # empty → the base's train.seed
    baseline: str | None = None
    metric: str | None = None  # None → the base's train.metric
    description: str = ""
    source: str = "<study>"
    #: variant → published numbers shown beside its row (e.g. the paper's Table 2): ``{"source": str, "hr@5": 0.05, …}``
    references: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: absolute paths of other study folders (``reuse:`` then ``--reuse``) whose finished runs
    #: with this study's config hash are copied instead of trained (:mod:`seqcl_study.reuse`)
    reuse: list[str] = field(default_factory=list)
    launch: Launch = field(default_factory=Launch)  # every variant's, unless it sets its own
    split: str = "test"  # the split the report reads (its end-of-study report and ``seqcl study report``)

    def launch_of(self, variant: str) -> Launch:
        """The launcher of ``variant``'s runs: its own ``launch:`` or the study's."""
        return self.variants[variant].launch or self.launch

    @property
    def mode(self) -> str:
        """``grid`` (every run known in advance) or ``search`` (Optuna samples trials)."""
        return "search" if self.search else "grid"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy (saved as ``study.json`` beside the runs)."""
        out = asdict(self)
        out["variants"] = {n: {"overrides": v.overrides, "grid": v.grid,
                               "launch": None if v.launch is None else asdict(v.launch)}
                           for n, v in self.variants.items()}
        out["search"] = {k: asdict(p) | {"choices": list(p.choices)} for k, p in self.search.items()}
        return out


# ------------------------------------------------------------------- helpers


def _err(source: str, msg: str) -> ConfigError:
    return ConfigError(f"study {source}: {msg}")


def flatten_overrides(mapping: Any, where: str, source: str, prefix: str = "") -> dict[str, Any]:
    """Nested and/or dotted mapping → ``{"a.b.c": value}``; ``with``/``without`` kept as lists.

    A value that is a mapping is descended into; lists and scalars are leaves.
    Both ``loss.cl.sim: cos`` and ``loss: {cl: {sim: cos}}`` give ``loss.cl.sim``.
    """
    if not isinstance(mapping, dict):
        raise _err(source, f"{where} must be a mapping of config keys, got {type(mapping).__name__}")
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            raise _err(source, f"{where}: invalid key {key!r}")
        path = f"{prefix}{key}"
        if path in ("with", "without"):
            names = value if isinstance(value, list) else [value]
            if not all(isinstance(n, str) and n for n in names):
                raise _err(source, f"{where}.{path} must be a list of loss-term names, got {value!r}")
            out[path] = list(names)
        elif isinstance(value, dict) and value:
            out.update(flatten_overrides(value, where, source, path + "."))
        else:
            out[path] = value
    return out


def merge_into(tree: dict[str, Any], dotted: dict[str, Any]) -> dict[str, Any]:
    """Apply dotted overrides to a nested config mapping (in place; returns it).

    ``with``/``without`` lists are appended to the ones already there (a variant
    removes a term *in addition* to what the base removes); any other key
    replaces the value at its path.
    """
    for key, value in dotted.items():
        if key in ("with", "without"):
            tree[key] = list(tree.get(key) or []) + [n for n in value if n not in (tree.get(key) or [])]
            continue
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = copy.deepcopy(value)
    return tree


def _check_grid(grid: Any, where: str, source: str) -> dict[str, list[Any]]:
    if grid is None:
        return {}
    if not isinstance(grid, dict) or not grid:
        raise _err(source, f"{where} must be a non-empty mapping of dotted keys to lists of values")
    out: dict[str, list[Any]] = {}
    for key, values in grid.items():
        if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
            raise _err(source, f"{where}: invalid key {key!r}")
        if key in RESERVED:
            raise _err(source, f"{where}.{key}: set by the study itself (use seeds:)")
        if not isinstance(values, list) or not values:
            raise _err(source, f"{where}.{key} must be a non-empty list of values, got {values!r}")
        for v in values:
            if not isinstance(v, (str, int, float, bool)) or (isinstance(v, float) and not math.isfinite(v)):
                raise _err(source, f"{where}.{key}: grid values must be finite numbers, strings or booleans, got {v!r}")
        if len({repr(v) for v in values}) != len(values):
            raise _err(source, f"{where}.{key} repeats a value: {values!r}")
        out[key] = list(values)
    return out


def _check_search(search: Any, source: str) -> dict[str, SearchParam]:
    if not isinstance(search, dict) or not search:
        raise _err(source, "search must be a non-empty mapping of dotted keys to distributions")
    out: dict[str, SearchParam] = {}
    for key, spec in search.items():
        where = f"search.{key}"
        if key in RESERVED:
            raise _err(source, f"{where}: set by the study itself")
        if isinstance(spec, list):
            spec = {"type": "categorical", "choices": spec}
        if not isinstance(spec, dict):
            raise _err(source, f"{where} must be a mapping like {{type: float, low: 0.01, high: 1, log: true}}")
        unknown = set(spec) - {"type", "low", "high", "log", "step", "choices"}
        if unknown:
            raise _err(source, f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        kind = spec.get("type", "categorical" if "choices" in spec else "float")
        if kind not in SEARCH_TYPES:
            raise _err(source, f"{where}.type must be one of {', '.join(SEARCH_TYPES)}, got {kind!r}")
        if kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                raise _err(source, f"{where}.choices must be a non-empty list")
            out[key] = SearchParam(key, kind, choices=tuple(choices))
            continue
        low, high = spec.get("low"), spec.get("high")
        for bound_name, bound in (("low", low), ("high", high)):
            if isinstance(bound, bool) or not isinstance(bound, (int, float)):
                raise _err(source, f"{where}.{bound_name} must be a number, got {bound!r}")
        if not low < high:
            raise _err(source, f"{where}: low must be < high, got {low} and {high}")
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise _err(source, f"{where}.log must be true or false, got {log!r}")
        if log and low <= 0:
            raise _err(source, f"{where}: log scale needs low > 0, got {low}")
        step = spec.get("step")
        if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0):
            raise _err(source, f"{where}.step must be a positive number, got {step!r}")
        if kind == "int" and not all(float(x).is_integer() for x in (low, high)):
            raise _err(source, f"{where}: int bounds must be integers, got {low} and {high}")
        out[key] = SearchParam(key, kind, float(low), float(high), log, None if step is None else float(step))
    return out


def _check_launch(launch: Any, where: str, source: str) -> Launch | None:
    """``launch: {nproc_per_node: N}`` → :class:`Launch` (None when absent)."""
    if launch is None:
        return None
    if not isinstance(launch, dict):
        raise _err(source, f"{where} must be a mapping like {{nproc_per_node: 2}}, got {launch!r}")
    unknown = [k for k in launch if k not in LAUNCH_KEYS]
    if unknown:
        raise _err(source, f"{where}: unknown key {unknown[0]!r}; launch has {', '.join(LAUNCH_KEYS)} "
                           "(runs are single-machine torchrun jobs)")
    nproc = launch.get("nproc_per_node", 1)
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise _err(source, f"{where}.nproc_per_node must be an integer >= 1, got {nproc!r}")
    return Launch(nproc)


def _check_name(value: Any, where: str, source: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise _err(source, f"{where} must be a name of letters, digits and _ . + - (starting with a letter "
                           f"or digit), got {value!r}")
    return value


# ------------------------------------------------------------------- parsing


def parse_spec(data: Any, source: str = "<study>", overrides: list[tuple[str, Any]] | None = None,
               name: str | None = None, reuse: Sequence[str] = (), folder: str | Path = ".") -> StudySpec:
    """Check a study mapping and return a :class:`StudySpec`.

    ``overrides`` are ``--set`` pairs applied to the base; ``name`` replaces the
    file's ``name`` (``seqcl study --name``); ``reuse`` are ``--reuse`` folders
    (relative to the working directory), added after the file's ``reuse:``
    entries, which are relative to ``folder`` (the study file's directory).
    """
    if not isinstance(data, dict):
        raise _err(source, f"a study file must hold a mapping, got {type(data).__name__}")
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        hint = difflib.get_close_matches(str(unknown[0]), TOP_KEYS, n=1)
        did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise _err(source, f"unknown key {unknown[0]!r}{did_you_mean}; a study has {', '.join(TOP_KEYS)}")
    study_name = _check_name(name if name is not None else data.get("name"), "name", source)

    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise _err(source, f"base must be a config mapping (like a --config file), got {type(base).__name__}")
    base_flat = flatten_overrides(base, "base", source)
    for key, value in overrides or []:
        base_flat.update(flatten_overrides({key: value}, "--set", source))
    if "train.seed" in base_flat and data.get("seeds") is not None:
        raise _err(source, "base: train.seed is set by the study itself from seeds:")
    for key in ("run.dir", "run.name"):
        if key in base_flat:
            raise _err(source, f"base: {key} is set by the study itself (runs go to runs/<study>/runs/<run>)")
    base_tree = merge_into({}, base_flat)

    raw_variants = data.get("variants")
    if not isinstance(raw_variants, dict) or not raw_variants:
        raise _err(source, "variants must be a non-empty mapping: name → overrides (may be {} for the base itself)")
    variants: dict[str, Variant] = {}
    for vname, body in raw_variants.items():
        _check_name(vname, "variant name", source)
        body = {} if body is None else body
        if not isinstance(body, dict):
            raise _err(source, f"variant {vname!r} must be a mapping of overrides, got {type(body).__name__}")
        body = dict(body)
        vgrid = _check_grid(body.pop("grid", None), f"variant {vname!r}: grid", source)
        vlaunch = _check_launch(body.pop("launch", None), f"variant {vname!r}: launch", source)
        flat = flatten_overrides(body, f"variant {vname!r}", source)
        for key in RESERVED:
            if key in flat:
                raise _err(source, f"variant {vname!r}: {key} is set by the study itself")
        if any(key.startswith("launch.") for key in flat):
            raise _err(source, f"variant {vname!r}: write launch: {{nproc_per_node: N}} (a mapping, not a dotted key)")
        clash = sorted(set(flat) & set(vgrid))
        if clash:
            raise _err(source, f"variant {vname!r} sets {clash[0]} and its grid sweeps it; keep one")
        variants[vname] = Variant(vname, flat, vgrid, vlaunch)

    grid = _check_grid(data.get("grid"), "grid", source)
    for v in variants.values():
        clash = sorted((set(v.overrides) | set(v.grid)) & set(grid))
        if clash:
            raise _err(source, f"variant {v.name!r} sets {clash[0]}, which the top-level grid sweeps; keep one")

    search: dict[str, SearchParam] = {}
    trials = 0
    if data.get("search") is not None:
        if grid or any(v.grid for v in variants.values()):
            raise _err(source, "search and grid exclude each other: a study is either a grid or an Optuna search")
        search = _check_search(data["search"], source)
        trials = data.get("trials")
        if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
            raise _err(source, f"trials must be an integer >= 1 with search:, got {trials!r}")
        for v in variants.values():
            clash = sorted(set(v.overrides) & set(search))
            if clash:
                raise _err(source, f"variant {v.name!r} sets {clash[0]}, which search: samples; keep one")
    elif data.get("trials") is not None:
        raise _err(source, "trials is only used with search:")

    seeds = data.get("seeds")
    if seeds is None:
        seeds = []
    else:
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            seeds = [seeds]
        if (not isinstance(seeds, list) or not seeds
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
            raise _err(source, f"seeds must be a non-empty list of integers >= 0, got {data.get('seeds')!r}")
        if len(set(seeds)) != len(seeds):
            raise _err(source, f"seeds repeats a seed: {seeds!r}")

    baseline = data.get("baseline")
    if baseline is not None:
        if search:
            raise _err(source, "baseline is for grid studies (a search ranks its trials instead)")
        if baseline not in variants:
            hint = difflib.get_close_matches(str(baseline), list(variants), n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise _err(source, f"baseline {baseline!r} is not a variant{did_you_mean}; variants: {', '.join(variants)}")
        if variants[baseline].grid:
            raise _err(source, f"baseline {baseline!r} has its own grid; the baseline must be one configuration")

    metric = data.get("metric")
    if metric is not None and (not isinstance(metric, str) or not METRIC_RE.match(metric)):
        raise _err(source, f"metric must look like hr@10, ndcg@5 or mrr@10, got {metric!r}")
    description = data.get("description") or ""
    references = _check_references(data.get("references"), variants, source)
    reuse_dirs = _check_reuse(data.get("reuse"), reuse, Path(folder), source)
    if reuse_dirs and search:
        raise _err(source, "reuse is for grid studies (a search samples its trials as it goes)")
    launch = _check_launch(data.get("launch"), "launch", source) or Launch()
    split = data.get("split", "test")
    if split not in REPORT_SPLITS:
        raise _err(source, f"split must be one of {', '.join(REPORT_SPLITS)}, got {split!r}")
    return StudySpec(study_name, base_tree, variants, grid, search, trials, list(seeds), baseline, metric,
                     str(description), source, references, reuse_dirs, launch, split)


def _check_reuse(listed: Any, flags: Sequence[str], folder: Path, source: str) -> list[str]:
    """The absolute study folders of ``reuse:`` (relative to ``folder``) and ``--reuse`` (relative to the cwd).

    Each must exist and hold ``study.json`` (what ``seqcl study`` writes first), so a
    typo is an error, never a study that silently trains everything again.
    """
    if listed is None:
        listed = []
    if isinstance(listed, str):
        listed = [listed]
    if not isinstance(listed, list) or not all(isinstance(d, str) and d for d in listed):
        raise _err(source, f"reuse must be a list of study folders, got {listed!r}")
    out: list[str] = []
    for where, base, dirs in (("reuse", folder, listed), ("--reuse", Path.cwd(), list(flags))):
        for given in dirs:
            path = (base / Path(given).expanduser()).resolve()
            if not path.is_dir():
                raise _err(source, f"{where}: {given}: no such folder")
            if not (path / "study.json").is_file():
                raise _err(source, f"{where}: {given}: not a study folder (no study.json; "
                                   "give the folder `seqcl study --runs-dir` made, e.g. runs/<study>)")
            if str(path) not in out:
                out.append(str(path))
    return out


def _check_references(refs: Any, variants: dict[str, Variant], source: str) -> dict[str, dict[str, Any]]:
    """``references: {variant: {source: "paper, Table 2", hr@5: 0.0582, …}}``: published numbers, shown, never used."""
    if refs is None:
        return {}
    if not isinstance(refs, dict):
        raise _err(source, f"references must be a mapping variant → {{source: ..., metric: value}}, got {type(refs).__name__}")
    out: dict[str, dict[str, Any]] = {}
    for vname, body in refs.items():
        if vname not in variants:
            raise _err(source, f"references: {vname!r} is not a variant; variants: {', '.join(variants)}")
        if not isinstance(body, dict) or not isinstance(body.get("source"), str):
            raise _err(source, f"references: {vname}: needs a mapping with source: (a string) and metric values")
        for key, value in body.items():
            if key == "source":
                continue
            if not isinstance(key, str) or not METRIC_RE.match(key):
                raise _err(source, f"references: {vname}: {key!r} is not a metric like hr@5, ndcg@10 or mrr@10")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _err(source, f"references: {vname}: {key} must be a number, got {value!r}")
        out[str(vname)] = {k: (v if k == "source" else float(v)) for k, v in body.items()}
    return out


@dataclass(frozen=True)
class Selection:
    """The runs one call trains (``--seeds``, ``--variants``); None: all of them."""

    seeds: tuple[int, ...] | None = None
    variants: tuple[str, ...] | None = None

    def takes(self, variant: str, seed: int) -> bool:
        return (self.seeds is None or seed in self.seeds) and (self.variants is None or variant in self.variants)


def parse_selection(spec: StudySpec, seeds: str | None = None, variants: str | None = None) -> Selection:
    """Check ``--seeds 1,3`` against the file's ``seeds:`` and ``--variants a,b`` against its variants.

    Why: a study that takes days is best run one seed of every arm first (a whole preliminary
    table), and a costly arm may get fewer seeds or wait for a faster machine. The study stays
    the whole file (``study.json``, the report); only what this call trains is narrowed, and a
    later call without the options trains the rest.
    """
    if spec.mode == "search" and (seeds is not None or variants is not None):
        raise ConfigError(f"study {spec.source}: --seeds/--variants select runs of a grid study; a search "
                          "samples its trials (narrow seeds: or variants: in the file)")
    chosen_seeds = chosen_variants = None
    if seeds is not None:
        where = f"study {spec.source}: --seeds {seeds}"
        try:
            chosen_seeds = tuple(int(part) for part in seeds.split(","))
        except ValueError:
            raise ConfigError(f"{where}: not a comma-separated list of integers") from None
        if not spec.seeds:
            raise ConfigError(f"{where}: the file has no seeds: list to choose from")
        missing = [str(s) for s in chosen_seeds if s not in spec.seeds]
        if missing:
            raise ConfigError(f"{where}: {', '.join(missing)} not among the file's seeds "
                              f"{', '.join(map(str, spec.seeds))}")
    if variants is not None:
        chosen_variants = tuple(part.strip() for part in variants.split(","))
        for name in chosen_variants:
            if name not in spec.variants:
                hint = difflib.get_close_matches(name, list(spec.variants), n=1)
                did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ConfigError(f"study {spec.source}: --variants {variants}: no variant {name!r}{did_you_mean}; "
                                  f"the file has {', '.join(spec.variants)}")
    return Selection(chosen_seeds, chosen_variants)


def load_spec(path: str | Path, assignments: list[str] | tuple[str, ...] = (), name: str | None = None,
              reuse: Sequence[str] = ()) -> StudySpec:
    """Read and check a study file; ``assignments`` are ``--set KEY=VALUE`` strings for the base,
    ``reuse`` the ``--reuse`` folders."""
    data = read_yaml(path)
    return parse_spec(data, str(path), [parse_assignment(a) for a in assignments], name, reuse, Path(path).parent)
