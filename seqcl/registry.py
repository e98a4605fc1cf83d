"""Name → factory registry for encoders, augmenters and loss terms (timm-style).

Filled once by the plugin manager from the ``register_*`` hooks; a run looks up
the components it selected by name and builds them with their options.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Callable

from seqcl.errors import PluginError

KINDS = ("encoder", "augmenter", "loss_term")


@dataclass(frozen=True)
class Component:
    """One registered component."""

    kind: str
    name: str
    factory: Callable[..., Any]
    description: str
    options: type | None  # a dataclass of the component's settings, or None
    plugin: str  # name of the plugin (module or distribution) that registered it

    def default_options(self) -> dict[str, Any]:
        """The component's option defaults as a plain dict."""
        if self.options is None:
            return {}
        return dataclasses.asdict(self.options())


class Registry:
    """All components of all loaded plugins, by kind and name."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}

    def add(
        self,
        kind: str,
        plugin: str,
        name: str,
        factory: Callable[..., Any],
        description: str,
        options: type | None = None,
    ) -> None:
        """Register ``name``; a name already taken is an error naming both plugins."""
        if kind not in self._items:
            raise PluginError(f"plugin {plugin}: unknown component kind {kind!r}")
        if not isinstance(name, str) or not name.isidentifier():
            raise PluginError(f"plugin {plugin}: {kind} name must be an identifier, got {name!r}")
        if options is not None and not dataclasses.is_dataclass(options):
            raise PluginError(f"plugin {plugin}: options of {kind} {name!r} must be a dataclass")
        existing = self._items[kind].get(name)
        if existing is not None:
            raise PluginError(
                f"{kind} {name!r} is registered twice: by plugin {existing.plugin} "
                f"and by plugin {plugin}"
            )
        self._items[kind][name] = Component(kind, name, factory, description, options, plugin)

    def names(self, kind: str) -> list[str]:
        return sorted(self._items[kind])

    def all(self) -> list[Component]:
        return [c for kind in KINDS for _, c in sorted(self._items[kind].items())]

    def get(self, kind: str, name: str) -> Component:
        """Look up a component; an unknown name lists the valid ones."""
        try:
            return self._items[kind][name]
        except KeyError:
            names = self.names(kind)
            hint = difflib.get_close_matches(name, names, n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            label = kind.replace("_", " ")
            raise PluginError(
                f"unknown {label} {name!r}{did_you_mean}; available: {', '.join(names) or 'none'}"
            ) from None
