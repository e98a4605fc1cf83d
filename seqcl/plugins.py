"""The one plugin manager: discovery through entry points, ``--plugin`` modules.

Built-in plugins are found exactly like third-party ones, through the ``seqcl``
entry-point group. One broken installed plugin must not break every command
(``seqcl --help`` included), so an installed plugin that fails to import, has a
hook pluggy rejects, raises in a ``register_*`` hook, or registers a name another
plugin already owns is reported (one line naming it and the error) and skipped:
its registrations are staged per plugin and committed only if all of them
succeed. ``seqcl plugins`` lists the skipped ones. Explicitly requested plugins
(``--plugin MODULE``, objects passed in tests) fail loudly instead: the user asked
for them and is probably developing them.

``SEQCL_LOAD_PLUGINS`` (as simonw/llm's ``LLM_LOAD_PLUGINS``) restricts discovery
to the named entry points, comma-separated: ``SEQCL_LOAD_PLUGINS=sasrec,contrastive``
loads just those two, ``SEQCL_LOAD_PLUGINS=`` loads no installed plugin at all.
Unset, every installed plugin is loaded. ``--plugin`` modules load regardless.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import os
from dataclasses import dataclass, field
from typing import Any

import pluggy

from seqcl import hookspecs
from seqcl.errors import PluginError, SeqclError
from seqcl.registry import Registry

ENTRY_POINT_GROUP = "seqcl"
LOAD_PLUGINS_ENV = "SEQCL_LOAD_PLUGINS"
#: kind → the hook that registers it
REGISTER_HOOKS = {
    "encoder": "register_encoders",
    "augmenter": "register_augmenters",
    "loss_term": "register_loss_terms",
    "objective": "register_objectives",
    "logger": "register_loggers",
}


@dataclass(frozen=True)
class BrokenPlugin:
    """An installed plugin that was skipped, and why (one line)."""

    name: str
    error: str
    source: str = "entry point"

    def __str__(self) -> str:
        return f"{self.name}: {self.error}"


@dataclass
class LoadedPlugins:
    """The plugin manager after discovery plus the registry it filled."""

    manager: pluggy.PluginManager
    registry: Registry
    broken: list[BrokenPlugin] = field(default_factory=list)  # installed plugins that were skipped
    #: plugin name → "distribution version" (or "module" for --plugin / test objects)
    sources: dict[str, str] = field(default_factory=dict)

    def skip(self, name: str, error: str) -> BrokenPlugin:
        """Drop plugin ``name`` entirely (components, hooks, source) and record why."""
        plugin = BrokenPlugin(name, error, self.sources.pop(name, "entry point"))
        self.registry.drop(name)
        if self.manager.get_plugin(name) is not None:
            self.manager.unregister(name=name)
        self.broken.append(plugin)
        return plugin


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("seqcl")
    pm.add_hookspecs(hookspecs)
    return pm


def one_line(exc: BaseException) -> str:
    """An exception as one line; the type is kept unless it is one of ours (already worded)."""
    text = " ".join(str(exc).split())
    if isinstance(exc, SeqclError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def entry_points() -> list[importlib.metadata.EntryPoint]:
    """The installed ``seqcl`` entry points, by name (the order decides who owns a duplicate)."""
    return sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)


def selected_entry_points() -> tuple[list[importlib.metadata.EntryPoint], list[BrokenPlugin]]:
    """Entry points to load under ``SEQCL_LOAD_PLUGINS``, and a problem per named one not installed."""
    available = entry_points()
    wanted = os.environ.get(LOAD_PLUGINS_ENV)
    if wanted is None:
        return available, []
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    by_name = {ep.name: ep for ep in available}
    missing = []
    for name in names:
        if name not in by_name:
            hint = difflib.get_close_matches(name, list(by_name), n=1)
            did_you_mean = f"did you mean {hint[0]!r}? " if hint else ""
            missing.append(BrokenPlugin(name, f"not installed ({LOAD_PLUGINS_ENV} names it; {did_you_mean}"
                                              f"installed: {', '.join(by_name) or 'none'})", LOAD_PLUGINS_ENV))
    return [ep for ep in available if ep.name in names], missing


def load_plugins(extra_modules: tuple[str, ...] | list[str] = (), *, entry_points: bool = True,
                 extra_objects: tuple[Any, ...] = ()) -> LoadedPlugins:
    """Discover plugins, call the registration hooks, return the filled registry.

    ``extra_modules`` are importable module names (``--plugin``); ``extra_objects``
    are plugin objects registered directly (tests). Installed plugins that fail
    are collected in ``broken`` and skipped; an explicit one that fails is a
    :class:`PluginError`.
    """
    loaded = LoadedPlugins(_new_manager(), Registry())
    pm = loaded.manager
    explicit: set[str] = set()
    if entry_points:
        eps, missing = selected_entry_points()
        loaded.broken.extend(missing)
        for ep in eps:
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            source = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "entry point"
            try:
                module = ep.load()
                pm.register(module, name=ep.name)  # pluggy rejects a hook with a wrong signature here
            except Exception as exc:  # a broken third-party plugin must not break the CLI
                loaded.broken.append(BrokenPlugin(ep.name, one_line(exc), source))
                continue
            loaded.sources[ep.name] = source
    for module_name in extra_modules:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise PluginError(f"--plugin {module_name}: cannot import: {type(exc).__name__}: {exc}") from None
        if pm.get_plugin(module_name) is None and not pm.is_registered(module):  # installed already: once
            try:
                pm.register(module, name=module_name)
            except pluggy.PluginValidationError as exc:
                raise PluginError(f"--plugin {module_name}: {one_line(exc)}") from None
            loaded.sources[module_name] = "--plugin module"
            explicit.add(module_name)
    for obj in extra_objects:
        try:
            name = pm.register(obj) or repr(obj)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {obj!r}: {one_line(exc)}") from None
        loaded.sources[name] = "registered object"
        explicit.add(name)

    for name, plugin in pm.list_name_plugin():  # registration order: the first owner of a name keeps it
        if plugin is None:
            continue
        try:
            _check_hooks(pm, plugin)
            staged: list[tuple[Any, ...]] = []
            for kind, hook_name in REGISTER_HOOKS.items():
                for impl in getattr(pm.hook, hook_name).get_hookimpls():
                    if impl.plugin is plugin:
                        impl.function(register=_stager(staged, kind))
            loaded.registry.add_all(name, staged)  # all or nothing
        except Exception as exc:
            if name in explicit:
                raise PluginError(f"plugin {name}: {one_line(exc)}") from None
            loaded.skip(name, one_line(exc))
    return loaded


def _stager(staged: list[tuple[Any, ...]], kind: str):
    """The ``register`` callback of one hook call: it only records (see ``Registry.add``)."""

    def register(name: str, factory: Any, description: str, options: type | None = None) -> None:
        staged.append((kind, name, factory, description, options))

    return register


def _check_hooks(pm: pluggy.PluginManager, plugin: Any) -> None:
    """pluggy's ``check_pending`` for one plugin: a misspelled hook name is an error, not ignored."""
    for hook in pm.get_hookcallers(plugin) or []:
        if not hook.has_spec() and any(i.plugin is plugin and not i.optionalhook for i in hook.get_hookimpls()):
            raise PluginError(f"unknown hook {hook.name!r}")
