import pytest

from dataclasses import dataclass

from seqcl.errors import PluginError
from seqcl.interfaces import Augmenter, Objective
from seqcl.registry import Registry


def test_duplicate_name_names_both_plugins():
    reg = Registry()
    reg.add("augmenter", "plugin_a", "crop", Augmenter, "one")
    with pytest.raises(PluginError, match="plugin_a.*plugin_b"):
        reg.add("augmenter", "plugin_b", "crop", Augmenter, "two")


def test_unknown_name_lists_available_and_suggests():
    reg = Registry()
    for name in ("crop", "mask", "reorder"):
        reg.add("augmenter", "p", name, Augmenter, name)
    with pytest.raises(PluginError) as info:
        reg.get("augmenter", "crp")
    msg = str(info.value)
    assert "did you mean 'crop'" in msg and "crop, mask, reorder" in msg


def test_same_name_in_different_kinds_is_fine():
    reg = Registry()
    reg.add("augmenter", "p", "x", Augmenter, "a")
    reg.add("loss_term", "p", "x", object, "b")
    assert reg.get("loss_term", "x").description == "b"


def test_bad_name_and_options_rejected():
    reg = Registry()
    with pytest.raises(PluginError):
        reg.add("augmenter", "p", "not a name", Augmenter, "")
    with pytest.raises(PluginError, match="dataclass"):
        reg.add("augmenter", "p", "ok", Augmenter, "", options=dict)


@dataclass
class NoWidth:
    layers: int = 2


@dataclass
class Width:
    hidden_size: int = 8


def test_contract_rules_checked_at_registration():
    """What the core reads off a component is declared: d on encoder options, classes as factories."""
    reg = Registry()
    with pytest.raises(PluginError, match="encoder 'gru'.*'hidden_size' field"):
        reg.add("encoder", "p", "gru", object, "", options=NoWidth)
    with pytest.raises(PluginError, match="encoder 'gru'.*'hidden_size' field"):
        reg.add("encoder", "p", "gru", object, "", options=None)
    reg.add("encoder", "p", "gru", object, "", options=Width)
    with pytest.raises(PluginError, match="augmenter 'fn': the factory must be a subclass of seqcl.interfaces.Augmenter"):
        reg.add("augmenter", "p", "fn", lambda options, ctx: Augmenter(), "")
    with pytest.raises(PluginError, match="objective 'fn': the factory must be a subclass of seqcl.interfaces.Objective"):
        reg.add("objective", "p", "fn", object, "")
    reg.add("objective", "p", "ok", Objective, "")


def test_function_factory_rejected_through_the_plugin_loader(capsys):
    """An installed-style plugin registering a function is reported naming the plugin, and skipped."""
    from seqcl.hookspecs import hookimpl
    from seqcl.plugins import load_plugins

    class FunctionFactory:
        @hookimpl
        def register_augmenters(self, register):
            register("fnaug", lambda options, ctx: Augmenter(), "a function, not a class")

    with pytest.raises(PluginError, match="fnaug.*must be a subclass"):
        load_plugins(extra_objects=(FunctionFactory(),))
