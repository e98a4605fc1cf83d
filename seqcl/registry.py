"""Name → factory registry for encoders, augmenters, loss terms, objectives and loggers (timm-style).

Filled once by the plugin manager from the ``register_*`` hooks, one plugin at a
time and all or nothing (:meth:`Registry.add_all`), so a plugin that fails half
way leaves no trace; a run looks up the components it selected by name and
builds them with their options.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Callable

from seqcl.errors import PluginError

KINDS = ("encoder", "augmenter", "loss_term", "objective", "logger")


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


@dataclass(frozen=True)
class AugmenterInfo:
    """What a loss term's ``check(options, augmenter)`` sees of the selected augmenter.

    Resolve time knows the augmenter's name and options but has built nothing, so
    a term that cannot work with it (``align`` needs two view pairs) is reported
    by ``--dry-run`` instead of once training starts.
    """

    name: str
    pairs: list[tuple[str, str]]


def declared_pairs(factory: Callable[..., Any], options: Any) -> list[tuple[str, str]] | None:
    """The view pairs an augmenter factory declares before it is built; None if it declares none.

    A class method ``pairs_for(options)`` wins (pairs that depend on options);
    otherwise a ``pairs`` class attribute of the factory class itself or of a
    base class below :class:`seqcl.interfaces.Augmenter`. The base class's empty
    default is no declaration: an augmenter may still set ``pairs`` in ``__init__``.
    """
    pairs_for = getattr(factory, "pairs_for", None)
    if callable(pairs_for):
        return [(a, b) for a, b in pairs_for(options)]
    if not isinstance(factory, type):
        return None
    from seqcl.interfaces import Augmenter  # torch: loaded by then (every augmenter needs it)

    for klass in factory.__mro__:
        if klass is Augmenter:
            return None
        pairs = vars(klass).get("pairs")
        if isinstance(pairs, (list, tuple)):
            return [(a, b) for a, b in pairs]
    return None


def _check_contract(kind: str, name: str, factory: Callable[..., Any], options: type | None) -> None:
    """What the core reads before building a component must be declared, not guessed.

    An encoder's options name ``hidden_size`` (d: the width of every view); an
    augmenter's or objective's factory is its class (the core reads
    ``default_terms``, ``tied_options``, ``pairs``, ``uses_main_pass`` off it, and
    a function would silently lose them).
    """
    if kind == "encoder" and (options is None or "hidden_size" not in {f.name for f in dataclasses.fields(options)}):
        raise PluginError(f"encoder {name!r}: its options dataclass must have a 'hidden_size' field")
    bases = {"augmenter": "Augmenter", "objective": "Objective"}
    if kind in bases:
        from seqcl import interfaces  # torch: every augmenter and objective needs it anyway

        base = getattr(interfaces, bases[kind])
        if not (isinstance(factory, type) and issubclass(factory, base)):
            raise PluginError(f"{kind} {name!r}: the factory must be a subclass of "
                              f"seqcl.interfaces.{bases[kind]}, got {factory!r}")


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
        """Register ``name``; a name already taken is an error naming both plugins.

        Messages do not repeat the registering plugin's name (the caller prefixes
        it), except for a duplicate, which names both owners.
        """
        if kind not in self._items:
            raise PluginError(f"unknown component kind {kind!r}")
        if not isinstance(name, str) or not name.isidentifier():
            raise PluginError(f"{kind} name must be an identifier, got {name!r}")
        if options is not None and not dataclasses.is_dataclass(options):
            raise PluginError(f"options of {kind} {name!r} must be a dataclass")
        _check_contract(kind, name, factory, options)
        existing = self._items[kind].get(name)
        if existing is not None:
            raise PluginError(
                f"{kind} {name!r} is registered twice: by plugin {existing.plugin} "
                f"and by plugin {plugin}"
            )
        self._items[kind][name] = Component(kind, name, factory, description, options, plugin)

    def add_all(self, plugin: str, items: list[tuple[Any, ...]]) -> None:
        """Register ``(kind, name, factory, description, options)`` items of one plugin: all or none."""
        trial = Registry()
        trial._items = {kind: dict(components) for kind, components in self._items.items()}
        for kind, *rest in items:
            trial.add(kind, plugin, *rest)
        self._items = trial._items

    def drop(self, plugin: str) -> None:
        """Forget every component of ``plugin`` (a plugin skipped after registering)."""
        for components in self._items.values():
            for name in [n for n, c in components.items() if c.plugin == plugin]:
                del components[name]

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
