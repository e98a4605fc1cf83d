"""Discovery: shipped plugins come through entry points; --plugin modules; duplicates; broken plugins."""

import importlib.metadata
import sys
import types

import pytest

from seqcl.errors import PluginError
from seqcl.hookspecs import hookimpl
from seqcl.interfaces import Augmenter
from seqcl.plugins import ENTRY_POINT_GROUP, load_plugins

SHIPPED = {"sasrec", "contrastive", "aclsrec"}


def test_shipped_plugins_are_entry_points():
    names = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert SHIPPED <= names
    loaded = load_plugins()
    assert loaded.broken == []
    assert "sasrec" in loaded.registry.names("encoder")
    assert {"none", "aclsrec"} <= set(loaded.registry.names("augmenter"))
    assert {"cl", "align", "boundary"} <= set(loaded.registry.names("loss_term"))
    assert loaded.registry.get("encoder", "sasrec").plugin == "sasrec"


def test_core_never_imports_a_plugin_by_name():
    import pathlib

    core = pathlib.Path(__file__).resolve().parents[1] / "seqcl"
    for path in core.rglob("*.py"):
        text = path.read_text()
        assert "seqcl_" not in text.replace("seqcl_error", ""), f"{path} names a plugin package"


class _Extra:
    @hookimpl
    def register_augmenters(self, register):
        register("extra_aug", Augmenter, "an extra augmenter")


def test_register_object_then_unregister():
    loaded = load_plugins(extra_objects=(_Extra(),))
    assert "extra_aug" in loaded.registry.names("augmenter")
    assert "extra_aug" not in load_plugins().registry.names("augmenter")


def test_duplicate_across_plugins_is_an_error():
    class Dup:
        @hookimpl
        def register_augmenters(self, register):
            register("aclsrec", Augmenter, "a clash")

    with pytest.raises(PluginError, match="registered twice.*aclsrec"):
        load_plugins(extra_objects=(Dup(),))


def test_plugin_module_option(monkeypatch):
    module = types.ModuleType("my_quick_plugin")

    @hookimpl
    def register_augmenters(register):
        register("quick", Augmenter, "quick experiment")

    module.register_augmenters = register_augmenters
    monkeypatch.setitem(sys.modules, "my_quick_plugin", module)
    loaded = load_plugins(["my_quick_plugin"])
    assert loaded.registry.get("augmenter", "quick").plugin == "my_quick_plugin"


def test_missing_plugin_module_is_user_error():
    with pytest.raises(PluginError, match="no_such_module_xyz"):
        load_plugins(["no_such_module_xyz"])


def test_misspelled_hook_fails_loudly():
    class Typo:
        @hookimpl
        def register_augmentrs(self, register):  # noqa: D401 - deliberate typo
            pass

    with pytest.raises(PluginError, match="register_augmentrs"):
        load_plugins(extra_objects=(Typo(),))


def test_broken_entry_point_is_reported_not_fatal(monkeypatch):
    real = importlib.metadata.entry_points

    broken = importlib.metadata.EntryPoint("broken", "no_such_pkg_for_seqcl", ENTRY_POINT_GROUP)

    def fake(**kwargs):
        eps = list(real(**kwargs))
        return eps + [broken] if kwargs.get("group") == ENTRY_POINT_GROUP else eps

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    loaded = load_plugins()
    assert any(str(b).startswith("broken: ModuleNotFoundError") for b in loaded.broken)
    assert "aclsrec" in loaded.registry.names("augmenter")


def test_plugin_option_for_an_installed_plugin_is_not_registered_twice():
    loaded = load_plugins(["seqcl_aclsrec"])  # also found through its entry point
    assert loaded.registry.get("augmenter", "aclsrec").plugin == "aclsrec"
