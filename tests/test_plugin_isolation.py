"""Issue #9: one bad installed plugin is reported once and skipped; it never breaks a command.

Installed plugins are faked as entry points pointing at modules put in ``sys.modules``.
"""

from __future__ import annotations

import importlib.metadata
import sys
import types

import pytest

from seqcl.cli import main
from seqcl.errors import PluginError
from seqcl.hookspecs import hookimpl
from seqcl.interfaces import Augmenter
from seqcl.plugins import ENTRY_POINT_GROUP, load_plugins

LOAD_PLUGINS_ENV = "SEQCL_LOAD_PLUGINS"  # the documented name, spelled out


def _raising_hook(register):
    register("half_done", Augmenter, "registered before the hook raised")
    raise RuntimeError("boom in register_augmenters")


def _duplicate_hook(register):
    register("zz_own", Augmenter, "a name nobody else has")
    register("crop", Augmenter, "clashes with cl4srec's crop")


def _misspelled_hook(register):
    register("typo_aug", Augmenter, "never reached")


HOOKS = {
    "zz_raises": ("register_augmenters", _raising_hook),
    "zz_dup": ("register_augmenters", _duplicate_hook),
    "zz_typo": ("register_augmentrs", _misspelled_hook),
}


@pytest.fixture
def installed(monkeypatch):
    """``installed("zz_raises", ...)`` adds those fake plugins (any other name: one that cannot be
    imported) to the ``seqcl`` entry points."""
    real = importlib.metadata.entry_points
    extra: list[importlib.metadata.EntryPoint] = []

    def fake(**kwargs):
        eps = list(real(**kwargs))
        return eps + extra if kwargs.get("group") == ENTRY_POINT_GROUP else eps

    def install(*names: str) -> None:
        for name in names:
            if name not in HOOKS:  # a plugin that fails to import
                extra.append(importlib.metadata.EntryPoint(name, f"no_such_module_{name}", ENTRY_POINT_GROUP))
                continue
            hook_name, function = HOOKS[name]
            module = types.ModuleType(f"fake_{name}")
            setattr(module, hook_name, hookimpl(function))
            monkeypatch.setitem(sys.modules, module.__name__, module)
            extra.append(importlib.metadata.EntryPoint(name, module.__name__, ENTRY_POINT_GROUP))

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    return install


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning: plugin")]


# ---------------------------------------------------------------- fault 1: isolation


def test_hook_that_raises_is_skipped_and_rolled_back(installed):
    installed("zz_raises")
    loaded = load_plugins()
    assert [str(b) for b in loaded.broken] == ["zz_raises: RuntimeError: boom in register_augmenters"]
    assert "half_done" not in loaded.registry.names("augmenter")  # staged, never committed
    assert loaded.manager.get_plugin("zz_raises") is None and "zz_raises" not in loaded.sources
    assert {"none", "aclsrec", "crop"} <= set(loaded.registry.names("augmenter"))


def test_duplicate_keeps_first_owner_and_names_both(installed):
    installed("zz_dup")
    loaded = load_plugins()
    assert loaded.registry.get("augmenter", "crop").plugin == "cl4srec"
    assert "zz_own" not in loaded.registry.names("augmenter")  # the whole plugin is skipped
    (broken,) = loaded.broken
    assert broken.name == "zz_dup"
    assert "augmenter 'crop' is registered twice: by plugin cl4srec and by plugin zz_dup" in broken.error


def test_misspelled_hook_of_installed_plugin_is_skipped(installed):
    installed("zz_typo")
    loaded = load_plugins()
    assert [str(b) for b in loaded.broken] == ["zz_typo: unknown hook 'register_augmentrs'"]
    assert "crop" in loaded.registry.names("augmenter")


def test_explicit_plugin_that_raises_stays_a_user_error(monkeypatch):
    module = types.ModuleType("zz_explicit_raises")
    module.register_augmenters = hookimpl(_raising_hook)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    with pytest.raises(PluginError, match="plugin zz_explicit_raises: RuntimeError: boom"):
        load_plugins(["zz_explicit_raises"])


def test_help_survives_a_raising_plugin(installed, capsys):
    installed("zz_raises")
    code, out, err = run(capsys, "--help")
    assert code == 0 and "train" in out
    assert warnings(err) == ["warning: plugin zz_raises: RuntimeError: boom in register_augmenters (skipped)"]


def test_plugins_command_lists_the_broken_ones(installed, capsys):
    installed("zz_dup", "zz_raises")
    code, out, err = run(capsys, "plugins")
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()[1:]]
    broken = {r[1]: " ".join(r) for r in rows if r[0] == "broken"}
    assert set(broken) == {"zz_dup", "zz_raises"}
    assert "by plugin cl4srec and by plugin zz_dup" in broken["zz_dup"]
    assert "RuntimeError: boom" in broken["zz_raises"]
    assert ["augmenter", "crop"] in [r[:2] for r in rows]


def test_register_commands_that_raises_is_skipped(monkeypatch, capsys):
    def fake(**kwargs):
        eps = list(real(**kwargs))
        ep = importlib.metadata.EntryPoint("zz_cmd", "zz_cmd_mod", ENTRY_POINT_GROUP)
        return eps + [ep] if kwargs.get("group") == ENTRY_POINT_GROUP else eps

    def register_commands(cli):
        @cli.command("zz-half")
        def half() -> None:
            """Added before the hook raised."""

        raise ValueError("no commands today")

    real = importlib.metadata.entry_points
    module = types.ModuleType("zz_cmd_mod")
    module.register_augmenters = hookimpl(lambda register: register("zz_cmd_aug", Augmenter, "x"))
    module.register_commands = hookimpl(register_commands)
    monkeypatch.setitem(sys.modules, "zz_cmd_mod", module)
    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    code, out, err = run(capsys, "plugins")
    assert code == 0
    assert warnings(err) == ["warning: plugin zz_cmd: register_commands: ValueError: no commands today (skipped)"]
    assert "zz-half" not in out and "zz_cmd_aug" not in out and "zz_cmd" in out  # listed as broken only
    from seqcl.cli import cli

    assert "zz-half" not in cli.commands


# ------------------------------------------------------- fault 2: SEQCL_LOAD_PLUGINS


def test_load_plugins_env_loads_only_the_named(monkeypatch, installed):
    installed("zz_raises")
    monkeypatch.setenv(LOAD_PLUGINS_ENV, "sasrec, contrastive")
    loaded = load_plugins()
    assert set(loaded.sources) == {"sasrec", "contrastive"}
    assert loaded.registry.names("augmenter") == ["none"]
    assert loaded.registry.names("loss_term") == ["align", "boundary", "cl"]
    assert loaded.broken == []  # the broken plugin was not even imported


def test_load_plugins_env_empty_loads_no_installed_plugin(monkeypatch, tmp_path):
    monkeypatch.setenv(LOAD_PLUGINS_ENV, "")
    loaded = load_plugins()
    assert loaded.registry.all() == [] and loaded.sources == {}
    module = types.ModuleType("zz_only_explicit")
    module.register_augmenters = hookimpl(lambda register: register("mine", Augmenter, "x"))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    assert load_plugins(["zz_only_explicit"]).registry.names("augmenter") == ["mine"]  # --plugin still loads


def test_load_plugins_env_unknown_name_is_reported(monkeypatch, capsys):
    monkeypatch.setenv(LOAD_PLUGINS_ENV, "sasrc,contrastive")
    code, out, err = run(capsys, "plugins")
    assert code == 0
    (line,) = warnings(err)
    assert line.startswith("warning: plugin sasrc: not installed (SEQCL_LOAD_PLUGINS names it; did you mean 'sasrec'?")
    kinds = {tuple(line.split()[:2]) for line in out.splitlines()[1:]}
    assert ("loss_term", "cl") in kinds and ("augmenter", "aclsrec") not in kinds and ("broken", "sasrc") in kinds


# ------------------------------------------------ fault 3: discovery once per command


@pytest.mark.parametrize("args", [["plugins"], ["train", "--dry-run"],
                                  ["train", "--dry-run", "--plugin", "zz_quiet_mod"]])
def test_broken_plugin_warned_exactly_once(installed, capsys, monkeypatch, args):
    module = types.ModuleType("zz_quiet_mod")
    monkeypatch.setitem(sys.modules, "zz_quiet_mod", module)
    installed("zz_noimport")
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert warnings(err) == ["warning: plugin zz_noimport: ModuleNotFoundError: "
                             "No module named 'no_such_module_zz_noimport' (skipped)"]
    code, out, err = run(capsys, *args)  # a second command in the same process discovers (and warns) again
    assert len(warnings(err)) == 1, err


def test_discovery_runs_once_per_command(monkeypatch, capsys):
    import seqcl.plugins

    calls = []
    real = seqcl.plugins.load_plugins
    monkeypatch.setattr(seqcl.plugins, "load_plugins", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert run(capsys, "train", "--dry-run")[0] == 0
    assert len(calls) == 1
