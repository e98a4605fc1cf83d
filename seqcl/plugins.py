"""The one plugin manager: discovery through entry points, ``--plugin`` modules.

Built-in plugins are found exactly like third-party ones, through the ``seqcl``
entry-point group. A plugin that fails to import is reported (with its name)
and skipped, so one broken package cannot break ``seqcl --help``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pluggy

from seqcl import hookspecs
from seqcl.errors import PluginError
from seqcl.registry import Registry

ENTRY_POINT_GROUP = "seqcl"


@dataclass
class LoadedPlugins:
    """The plugin manager after discovery plus the registry it filled."""

    manager: pluggy.PluginManager
    registry: Registry
    broken: list[str] = field(default_factory=list)  # "name: error" per failed plugin
    #: plugin name → "distribution version" (or "module" for --plugin / test objects)
    sources: dict[str, str] = field(default_factory=dict)


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("seqcl")
    pm.add_hookspecs(hookspecs)
    return pm


def load_plugins(extra_modules: tuple[str, ...] | list[str] = (), *, entry_points: bool = True,
                 extra_objects: tuple[Any, ...] = ()) -> LoadedPlugins:
    """Discover plugins, call the registration hooks, return the filled registry.

    ``extra_modules`` are importable module names (``--plugin``); ``extra_objects``
    are plugin objects registered directly (tests). Import errors of installed
    plugins are collected in ``broken``; an ``--plugin`` module that cannot be
    imported is a user error.
    """
    pm = _new_manager()
    broken: list[str] = []
    sources: dict[str, str] = {}
    if entry_points:
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            try:
                module = ep.load()
            except Exception as exc:  # a broken third-party plugin must not break the CLI
                broken.append(f"{ep.name}: {type(exc).__name__}: {exc}")
                continue
            pm.register(module, name=ep.name)
            sources[ep.name] = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "entry point"
    for module_name in extra_modules:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise PluginError(f"--plugin {module_name}: cannot import: {type(exc).__name__}: {exc}") from None
        if pm.get_plugin(module_name) is None and not pm.is_registered(module):  # installed already: once
            pm.register(module, name=module_name)
            sources[module_name] = "--plugin module"
    for obj in extra_objects:
        sources[pm.register(obj) or repr(obj)] = "registered object"
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {exc.plugin}: {exc}") from None
    registry = Registry()
    hooks = {
        "encoder": "register_encoders",
        "augmenter": "register_augmenters",
        "loss_term": "register_loss_terms",
    }
    for kind, hook_name in hooks.items():
        for impl in pm.hook.__dict__[hook_name].get_hookimpls():
            plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)
            impl.function(register=partial(registry.add, kind, plugin_name))
    return LoadedPlugins(pm, registry, broken, sources)
