"""Configuration: typed defaults in code → YAML file → ``--set key=value``, then validation.

The resolved config is a nested plain dict (what ``config.yaml`` in a run
directory holds). Sections:

* ``dataset``, ``encoder``, ``augmenter``, ``objective``: names; ``terms``: the
  active loss terms;
* ``data``, ``train``, ``eval``, ``run``: core settings (dataclasses below);
* ``loss``: one sub-section per active term (its options: ``weight``, and
  ``tau`` for a term that has a temperature — each term owns its own);
* one section named after the selected encoder, one after the augmenter and
  one after the objective (their option dataclasses, registered by the plugin).

Every value is converted to its field's type; unknown keys are an error with a
"did you mean". Nothing reads ``sys.argv`` here.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from seqcl.data.options import DataOptions
from seqcl.errors import ConfigError, PluginError
from seqcl.memory import MallocPolicy
from seqcl.registry import AugmenterInfo, Registry, declared_pairs
from seqcl.stagespec import parse_stages

DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?|mps")


@dataclass
class TrainOptions:
    """Optimisation and model selection (SPEC §1–2 defaults)."""

    epochs: int = 300
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10
    metric: str = "mrr@10"
    seed: int = 2026
    device: str = "cpu"
    threads: int = 0  # 0 = torch's default
    malloc: MallocPolicy = "compact"  # glibc malloc: compact (flat RSS) | reuse (wide-batch plugins faster, more RSS)
    group_by_length: bool = False  # batch similar lengths together (faster, NOT exact: changes batches)
    autocast_bf16: bool = False  # bf16 autocast of the forward pass (faster on GPUs, NOT exact)

    def validate(self) -> None:
        _positive(self, "train", "epochs", "batch_size")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if self.patience < 1:
            raise ConfigError(f"train.patience must be >= 1, got {self.patience}")
        if self.threads < 0:
            raise ConfigError(f"train.threads must be >= 0, got {self.threads}")
        check_device(self.device)


@dataclass
class EvalOptions:
    """Full-ranking evaluation (SPEC §1)."""

    ks: list[int] = field(default_factory=lambda: [5, 10])
    exclude_history: bool = True
    batch_size: int = 2048

    def validate(self) -> None:
        if not self.ks or any(k < 1 for k in self.ks):
            raise ConfigError(f"eval.ks must be a non-empty list of integers >= 1, got {self.ks}")
        _positive(self, "eval", "batch_size")


@dataclass
class RunOptions:
    """Where results go."""

    dir: str = "runs"
    name: str = ""  # "" → <time>-<augmenter>-<dataset>
    save_ranks: bool = True
    loggers: list[str] = field(default_factory=list)  # logger plugins to send records to (seqcl.loggers)


CORE_SECTIONS: dict[str, type] = {
    "data": DataOptions,
    "train": TrainOptions,
    "eval": EvalOptions,
    "run": RunOptions,
}
SELECTION_KEYS = ("dataset", "encoder", "augmenter", "objective")
#: Settings that decide how a run executes, not what it learns. A resume may change them
#: (``seqcl train --resume RUN --set train.threads=2``: the run moved to a bigger machine), and a
#: study leaves them out of a run's identity. A run resumed on another ``train.device`` draws from
#: that device's random streams from then on, so it no longer equals an uninterrupted run on one
#: device: each line of ``metrics.jsonl`` records the device that trained that epoch.
EXECUTION_KEYS = ("train.threads", "train.device", "train.malloc", "eval.batch_size", "data.cache_dir")
#: ``objective`` "" = the encoder's ``default_objective``
DEFAULT_SELECTION = {"dataset": "builtin", "encoder": "sasrec", "augmenter": "none", "objective": ""}
#: Keys that moved, and where: a config that uses one gets a one-line error naming the new key.
MOVED_KEYS = {
    "loss.tau": "the temperature belongs to each term that uses it: loss.cl.tau, loss.align.tau "
                "(under aclsrec they are tied: setting one sets both)",
    "loss.main": "the main objective is a plugin now: objective=NAME (ce, sampled, bce, …; see `seqcl plugins`)",
    "loss.negatives": "sampled.negatives (with objective=sampled)",
    "loss.include_pad_logit": "ce.include_pad_logit",
}


def check_device(device: str) -> None:
    """``train.device`` names a device this machine has; checked at resolve time so ``--dry-run`` sees it."""
    if not DEVICE_PATTERN.fullmatch(device):
        raise ConfigError(f"train.device must be cpu, cuda, cuda:N or mps, got {device!r}")
    if device == "cpu":
        return  # no torch import for the common case
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device is {device!r} but CUDA is not available")
        index, count = int(device.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            raise ConfigError(f"train.device is {device!r} but only {count} CUDA device(s) are visible")
    elif not torch.backends.mps.is_available():
        raise ConfigError(f"train.device is {device!r} but MPS is not available")


def check_dataset(source: str) -> None:
    """The dataset is ``builtin[:seed]`` or an existing file; checked at resolve time for ``--dry-run``."""
    from seqcl.data.loading import is_builtin

    if is_builtin(source):
        return
    path = Path(source).expanduser()
    if not path.exists():
        raise ConfigError(f"dataset {source!r} not found")
    if not path.is_file():
        raise ConfigError(f"dataset {source!r} is not a file")


def check_terms(registry: Registry, resolved: "Resolved") -> None:
    """Each active loss term's ``check(options, augmenter)`` against what the augmenter declares.

    A term factory may define ``check`` (raising :class:`ConfigError`); it runs
    only when the augmenter declares its pairs before being built (see
    :func:`seqcl.registry.declared_pairs`), otherwise the term's own build-time
    check is the one that reports.
    """
    augmenter = registry.get("augmenter", resolved.augmenter)
    pairs = declared_pairs(augmenter.factory, resolved.augmenter_options)
    if pairs is None:
        return
    info = AugmenterInfo(augmenter.name, pairs)
    for name in resolved.terms:
        check = getattr(registry.get("loss_term", name).factory, "check", None)
        if callable(check):
            check(resolved.term_options[name], info)


def check_loggers(registry: Registry, names: list[str]) -> None:
    """Every name in ``run.loggers`` is a registered logger, named once (checked for ``--dry-run``)."""
    for name in names:
        try:
            registry.get("logger", name)
        except PluginError as exc:
            raise ConfigError(f"run.loggers: {exc}") from None
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"run.loggers: {', '.join(repeated)} named more than once")


def _positive(obj: Any, section: str, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value < 1:
            raise ConfigError(f"{section}.{name} must be >= 1, got {value}")


# --------------------------------------------------------------------- parsing


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"a.b=1e-3"`` → ``("a.b", "1e-3" parsed by yaml.safe_load)``."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def execution_overrides(assignments: list[tuple[str, Any]], origin: str) -> list[tuple[str, Any]]:
    """``assignments`` when each sets one of :data:`EXECUTION_KEYS`; else one line naming the first that does not."""
    for key, _ in assignments:
        if key not in EXECUTION_KEYS:
            raise ConfigError(f"{origin}: {key} cannot change when a run resumes (it would be another run); "
                              f"a resume takes --set only for {', '.join(EXECUTION_KEYS)}")
    return list(assignments)


def execution_changes(tree: dict[str, Any], saved: dict[str, Any]) -> list[tuple[str, Any]]:
    """``tree``'s values of :data:`EXECUTION_KEYS` where they differ from ``saved`` (a run's config.yaml):
    what a resume of that run is to be given."""
    now, before = flatten(tree), flatten(saved)
    return [(key, now[key]) for key in EXECUTION_KEYS if key in now and before.get(key) != now[key]]


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from a config file; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config file must hold a mapping, got {type(data).__name__}")
    return data


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict → {"a.b": value}; dict values that are sections are descended into."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


# ------------------------------------------------------------------ conversion


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a YAML value to the field's annotated type, or raise ConfigError."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{key} must be one of {allowed}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin in (list, tuple):
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        inner = args[0] if args else Any
        return [coerce(v, inner, key) for v in value]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        try:
            as_float = float(value)
        except ValueError:
            raise ConfigError(f"{key} must be an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return int(as_float)
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return "" if value is None else str(value)
    return value


def build_options(cls: type, values: dict[str, Any], section: str) -> Any:
    """Instantiate dataclass ``cls`` from ``values`` (already checked for unknown keys)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            kwargs[f.name] = coerce(values[f.name], hints[f.name], f"{section}.{f.name}")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


# ------------------------------------------------------------------- resolving


@dataclass
class Resolved:
    """The resolved config (plain dict) and the typed option objects built from it."""

    tree: dict[str, Any]
    data: DataOptions
    train: TrainOptions
    eval: EvalOptions
    run: RunOptions
    encoder_options: Any
    augmenter_options: Any
    objective_options: Any
    term_options: dict[str, Any]

    @property
    def dataset(self) -> str:
        return self.tree["dataset"]

    @property
    def encoder(self) -> str:
        return self.tree["encoder"]

    @property
    def augmenter(self) -> str:
        return self.tree["augmenter"]

    @property
    def objective(self) -> str:
        return self.tree["objective"]

    @property
    def terms(self) -> list[str]:
        return list(self.tree["terms"])

    @property
    def stages(self) -> list[dict[str, Any]]:
        """The run's stages (``seqcl.stagespec``); empty: one plain run."""
        return list(self.tree.get("stages") or [])

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.tree, sort_keys=False)


def _defaults_of(cls: type | None) -> dict[str, Any]:
    return dataclasses.asdict(cls()) if cls is not None else {}


def resolve(
    registry: Registry,
    file_config: dict[str, Any] | None = None,
    overrides: list[tuple[str, Any]] | None = None,
    with_terms: list[str] | None = None,
    without_terms: list[str] | None = None,
    check_data: bool = True,
) -> Resolved:
    """Merge defaults, a config file's mapping and ``--set`` overrides; validate.

    Order: component defaults (the augmenter's term defaults included) → file →
    overrides. Selection keys (``dataset``, ``encoder``, ``augmenter``, ``with``,
    ``without``) are read first, because they decide which sections exist.
    Everything knowable without data is checked here, so ``--dry-run`` fails
    like a real run would: values, ``train.device``, the dataset's existence and
    each loss term against the augmenter (:func:`check_terms`). ``check_data=False``
    (loading a trained run, which needs no data) skips the dataset's existence.
    """
    file_config = copy.deepcopy(file_config or {})
    overrides = list(overrides or [])
    for key, _ in [*flatten(file_config).items(), *overrides]:
        moved = next((m for m in MOVED_KEYS if key == m or key.startswith(m + ".")), None)
        if moved:
            raise ConfigError(f"{key} is gone: {MOVED_KEYS[moved]}")
    selection = dict(DEFAULT_SELECTION)
    adds = list(file_config.pop("with", None) or [])
    removes = list(file_config.pop("without", None) or [])
    explicit_terms = file_config.pop("terms", None)  # a saved config.yaml lists them
    given_stages = file_config.pop("stages", None)  # None: the encoder's default_stages
    if explicit_terms is not None and not isinstance(explicit_terms, list):
        raise ConfigError(f"config file: terms must be a list of loss-term names, got {explicit_terms!r}")
    for key in SELECTION_KEYS:
        if key in file_config:
            selection[key] = str(file_config.pop(key))
    rest: list[tuple[str, Any]] = []
    for key, value in overrides:
        if key in SELECTION_KEYS:
            selection[key] = str(value)
        elif key == "stages":
            given_stages = value
        elif key in ("with", "without"):
            (adds if key == "with" else removes).extend(value if isinstance(value, list) else [value])
        else:
            rest.append((key, value))
    adds += list(with_terms or [])
    removes += list(without_terms or [])

    encoder = registry.get("encoder", selection["encoder"])
    augmenter = registry.get("augmenter", selection["augmenter"])
    selection["objective"] = selection["objective"] or str(getattr(encoder.factory, "default_objective", "ce"))
    objective = registry.get("objective", selection["objective"])
    default_terms: dict[str, dict[str, Any]] = dict(getattr(augmenter.factory, "default_terms", {}) or {})
    terms = list(default_terms) if explicit_terms is None else list(explicit_terms)
    for name in adds:
        registry.get("loss_term", name)
        if name not in terms:
            terms.append(name)
    for name in removes:
        if name not in terms:
            active = ", ".join(terms) or "none"
            raise ConfigError(f"--without {name}: not an active loss term (active: {active})")
        terms.remove(name)

    tree: dict[str, Any] = {**selection, "terms": terms}
    stages = given_stages if given_stages is not None else list(getattr(encoder.factory, "default_stages", []))
    if given_stages is not None or stages:  # absent from the configs of runs without stages
        tree["stages"] = parse_stages(stages)
    for section, cls in CORE_SECTIONS.items():
        tree[section] = _defaults_of(cls)
    tree["loss"] = {}
    term_components = {name: registry.get("loss_term", name) for name in terms}
    for name, comp in term_components.items():
        section = comp.default_options()
        section.update(default_terms.get(name, {}))
        tree["loss"][name] = section
    components = [encoder, augmenter, objective]
    for comp in components:
        if comp.name in tree and comp.name not in (c.name for c in components if c is not comp):
            raise ConfigError(f"{comp.kind} {comp.name!r} (plugin {comp.plugin}): its name collides with the "
                              f"config section {comp.name!r}")
        tree.setdefault(comp.name, comp.default_options())

    ties = [tuple(group) for group in getattr(augmenter.factory, "tied_options", [])]
    for origin, assignments in (("config file", list(flatten(file_config).items())), ("--set", rest)):
        for key, value in assignments:
            _assign(tree, key, value, origin=origin)
        _propagate_ties(tree, ties, [key for key, _ in assignments])

    term_options = {
        name: build_options(comp.options, tree["loss"][name], f"loss.{name}") if comp.options else None
        for name, comp in term_components.items()
    }
    for name, opts in term_options.items():
        if opts is not None and not hasattr(opts, "weight"):
            raise ConfigError(f"loss term {name}: its options have no 'weight' field (plugin {term_components[name].plugin})")

    def options_of(comp: Any) -> Any:
        return build_options(comp.options, tree[comp.name], comp.name) if comp.options else None

    resolved = Resolved(
        tree=tree,
        data=build_options(DataOptions, tree["data"], "data"),
        train=build_options(TrainOptions, tree["train"], "train"),
        eval=build_options(EvalOptions, tree["eval"], "eval"),
        run=build_options(RunOptions, tree["run"], "run"),
        encoder_options=options_of(encoder),
        augmenter_options=options_of(augmenter),
        objective_options=options_of(objective),
        term_options=term_options,
    )
    # write the converted values back so config.yaml holds typed values
    for section in ("data", "train", "eval", "run"):
        tree[section] = dataclasses.asdict(getattr(resolved, section))
    for name, opts in term_options.items():
        if opts is not None:
            tree["loss"][name] = dataclasses.asdict(opts)
    for comp, opts in zip(components, (resolved.encoder_options, resolved.augmenter_options,
                                       resolved.objective_options)):
        if opts is not None:
            tree[comp.name] = dataclasses.asdict(opts)
    check_terms(registry, resolved)
    check_loggers(registry, resolved.run.loggers)
    check_encoder(encoder, augmenter.name, resolved.augmenter_options,
                  tuple(getattr(augmenter.factory, "encoder_methods", ())))
    if check_data:
        check_dataset(resolved.dataset)
    return resolved


def _propagate_ties(tree: dict[str, Any], ties: list[tuple[str, ...]], assigned: list[str]) -> None:
    """Options an augmenter ties together (ACLSRec: ``loss.cl.tau`` and ``loss.align.tau``) move as one.

    Per source (file, then ``--set``): if the keys of a group that this source
    set agree, every key of the group gets that value; a source that sets them
    to different values unties them.
    """
    for group in ties:
        present = [key for key in group if _lookup(tree, key) is not _MISSING]
        values = {repr(_lookup(tree, key)) for key in present if key in assigned}
        if len(values) == 1:
            value = _lookup(tree, next(key for key in present if key in assigned))
            for key in present:
                _assign(tree, key, value, origin="tied option")


_MISSING = object()


def _lookup(tree: dict[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def check_encoder(encoder: Any, augmenter: str, options: Any, methods: tuple[str, ...] = ()) -> None:
    """An encoder may refuse an augmenter it cannot serve (``check_augmenter`` raising ConfigError);
    one that lacks an optional method the augmenter calls (``Augmenter.encoder_methods``) is refused."""
    for name in methods:
        method = getattr(encoder.factory, name, None)
        if method is None or getattr(method, "optional", False):
            raise ConfigError(f"encoder {encoder.name} cannot serve augmenter {augmenter}: "
                              f"it has no {name}() (see seqcl.interfaces.Encoder)")
    check = getattr(encoder.factory, "check_augmenter", None)
    if callable(check):
        check(augmenter, options)


def _assign(tree: dict[str, Any], key: str, value: Any, origin: str) -> None:
    """Set dotted ``key`` in ``tree``; only keys that exist (or a whole section) are accepted."""
    parts = key.split(".")
    node: Any = tree
    for i, part in enumerate(parts):
        known = list(node) if isinstance(node, dict) else []
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:i])
            candidates = [f"{where}.{k}" if where else k for k in known]
            hint = difflib.get_close_matches(key, candidates, n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{origin}: unknown key {key!r}{did_you_mean}")
        if i == len(parts) - 1:
            if isinstance(node[part], dict) and node[part] and not isinstance(value, dict):
                raise ConfigError(f"{origin}: {key} is a section; set one of its keys, e.g. {key}.{next(iter(node[part]))}")
            if isinstance(node[part], dict) and isinstance(value, dict):
                for sub, v in value.items():
                    _assign(tree, f"{key}.{sub}", v, origin)
            else:
                node[part] = value
        else:
            node = node[part]
