import pytest

from seqcl.errors import PluginError
from seqcl.registry import Registry


def test_duplicate_name_names_both_plugins():
    reg = Registry()
    reg.add("augmenter", "plugin_a", "crop", object, "one")
    with pytest.raises(PluginError, match="plugin_a.*plugin_b"):
        reg.add("augmenter", "plugin_b", "crop", object, "two")


def test_unknown_name_lists_available_and_suggests():
    reg = Registry()
    for name in ("crop", "mask", "reorder"):
        reg.add("augmenter", "p", name, object, name)
    with pytest.raises(PluginError) as info:
        reg.get("augmenter", "crp")
    msg = str(info.value)
    assert "did you mean 'crop'" in msg and "crop, mask, reorder" in msg


def test_same_name_in_different_kinds_is_fine():
    reg = Registry()
    reg.add("augmenter", "p", "x", object, "a")
    reg.add("loss_term", "p", "x", object, "b")
    assert reg.get("loss_term", "x").description == "b"


def test_bad_name_and_options_rejected():
    reg = Registry()
    with pytest.raises(PluginError):
        reg.add("augmenter", "p", "not a name", object, "")
    with pytest.raises(PluginError, match="dataclass"):
        reg.add("augmenter", "p", "ok", object, "", options=dict)
