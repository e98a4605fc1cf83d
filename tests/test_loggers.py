"""Logger plugins (seqcl.loggers): the hook, the run.loggers setting, what the trainer sends, failure policy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from seqcl.config import parse_assignment, resolve
from seqcl.data.dataset import training_samples
from seqcl.data.loading import load_data
from seqcl.errors import ConfigError, PluginError
from seqcl.hookspecs import hookimpl
from seqcl.loggers import Logger, LoggerContext
from seqcl.plugins import load_plugins
from seqcl.training import resume, train

from conftest import TINY


class Recorder(Logger):
    """Keeps every call, per run (class-level, so the test can read what the trainer built)."""

    runs: list["Recorder"] = []

    def __init__(self, context: LoggerContext) -> None:
        self.context = context
        self.steps: list[dict] = []
        self.epochs: list[dict] = []
        self.closed: list[tuple[str, dict | None]] = []
        Recorder.runs.append(self)

    def log_step(self, record):
        self.steps.append(record)

    def log_epoch(self, record):
        self.epochs.append(record)

    def close(self, status, summary):
        self.closed.append((status, summary))


class EpochsOnly(Recorder):
    wants_steps = False


class Broken(Logger):
    def __init__(self, context):
        self.closed = False

    def log_epoch(self, record):
        raise OSError("disk full")


class CannotStart(Logger):
    def __init__(self, context):
        raise RuntimeError("no server")


class LoggerPlugin:
    @hookimpl
    def register_loggers(self, register):
        register("recorder", Recorder, "test: records every call")
        register("epochs_only", EpochsOnly, "test: epochs only")
        register("broken", Broken, "test: fails at the first epoch")
        register("cannot_start", CannotStart, "test: fails to start")


@pytest.fixture(scope="module")
def plugins():
    return load_plugins(extra_objects=(LoggerPlugin(),))


@pytest.fixture(autouse=True)
def _fresh():
    Recorder.runs.clear()


def config(plugins, tmp_path, *extra, dataset):
    pairs = [parse_assignment(a) for a in TINY[1::2]] + [parse_assignment(a) for a in extra]
    pairs += [("dataset", str(dataset)), ("run.dir", str(tmp_path / "runs"))]
    return resolve(plugins.registry, overrides=pairs)


def quiet(msg: str) -> None:
    pass


def test_logger_is_a_registered_kind(plugins):
    assert {"recorder", "epochs_only", "broken", "cannot_start"} <= set(plugins.registry.names("logger"))
    assert plugins.registry.get("logger", "recorder").factory is Recorder


def test_run_loggers_setting_reaches_the_trainer(plugins, tmp_path, tiny_file):
    """run.loggers=[recorder] → the factory is built and gets every step and epoch (drop the value: this fails)."""
    r = config(plugins, tmp_path, "train.epochs=2", "run.loggers=[recorder]", dataset=tiny_file)
    assert r.run.loggers == ["recorder"]
    result = train(r, plugins, log=quiet)
    (rec,) = Recorder.runs
    per_epoch = math.ceil(len(training_samples(load_data(str(tiny_file), r.data)[0])) / r.train.batch_size)
    assert [s["step"] for s in rec.steps] == list(range(1, 2 * per_epoch + 1))
    assert [s["epoch"] for s in rec.steps] == [1] * per_epoch + [2] * per_epoch
    assert all(set(s["loss"]) == {"main"} and math.isfinite(s["total"]) for s in rec.steps)
    lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in e.items() if k != "step"} for e in rec.epochs] == lines  # the same numbers
    assert [e["step"] for e in rec.epochs] == [per_epoch, 2 * per_epoch]
    # the step losses average to the epoch's mean loss
    mean1 = sum(s["loss"]["main"] for s in rec.steps[:per_epoch]) / per_epoch
    assert mean1 == pytest.approx(lines[0]["loss"]["main"], rel=1e-5)
    assert rec.closed == [("finished", json.loads((result.run_dir / "summary.json").read_text()))]
    assert rec.context.name == result.run_dir.name and rec.context.run_dir.name == result.run_dir.name + ".incomplete"
    assert rec.context.start_step == 0 and not rec.context.resumed


def test_no_logger_no_step_records(plugins, tmp_path, tiny_file):
    train(config(plugins, tmp_path, "train.epochs=1", dataset=tiny_file), plugins, log=quiet)
    assert Recorder.runs == []
    train(config(plugins, tmp_path, "train.epochs=1", "run.loggers=epochs_only", dataset=tiny_file), plugins, log=quiet)
    (rec,) = Recorder.runs
    assert rec.steps == [] and len(rec.epochs) == 1


def test_cli_logger_flag_and_unknown_name(plugins, tmp_path, tiny_file, capsys):
    from seqcl.cli import main

    base = ["train", "--dataset", str(tiny_file), "--set", f"run.dir={tmp_path}", "--dry-run"]
    assert main([*base, "--logger", "tensorboard"]) == 0
    import yaml

    assert yaml.safe_load(capsys.readouterr().out)["run"]["loggers"] == ["tensorboard"]
    assert main([*base, "--logger", "tensorbord"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: run.loggers: unknown logger 'tensorbord'") and "did you mean 'tensorboard'" in err
    assert len(err.splitlines()) == 1


def test_repeated_logger_name_is_an_error(plugins, tmp_path, tiny_file):
    with pytest.raises(ConfigError, match="recorder named more than once"):
        config(plugins, tmp_path, "run.loggers=[recorder, recorder]", dataset=tiny_file)


def test_failing_logger_is_disabled_with_one_warning(plugins, tmp_path, tiny_file):
    lines: list[str] = []
    r = config(plugins, tmp_path, "train.epochs=2", "run.loggers=[broken, recorder]", dataset=tiny_file)
    result = train(r, plugins, log=lines.append)
    warnings = [x for x in lines if "logger broken" in x]
    assert len(warnings) == 1 and "disk full" in warnings[0] and "disabled" in warnings[0]
    assert len(Recorder.runs[0].epochs) == 2  # the other logger goes on
    assert (result.run_dir / "summary.json").is_file()


def test_logger_that_cannot_start_fails_before_training(plugins, tmp_path, tiny_file):
    r = config(plugins, tmp_path, "train.epochs=1", "run.loggers=[recorder, cannot_start]", dataset=tiny_file)
    with pytest.raises(PluginError, match="logger cannot_start .* cannot start: RuntimeError: no server"):
        train(r, plugins, log=quiet)
    assert not any((tmp_path / "runs").iterdir())  # no run folder left behind
    assert Recorder.runs[0].closed == [("failed", None)]  # the one already started was closed


def test_interrupt_and_resume(plugins, tmp_path, tiny_file):
    """Interrupted after epoch 1: closed as interrupted; the resumed run's logger starts after epoch 1's last step."""
    r = config(plugins, tmp_path, "train.epochs=2", "run.loggers=recorder", dataset=tiny_file)

    def stop(msg: str) -> None:
        if msg.startswith("epoch   1 |"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(r, plugins, log=stop)
    first = Recorder.runs[0]
    assert first.closed == [("interrupted", None)]
    per_epoch = first.epochs[0]["step"]
    (path,) = Path(r.run.dir).glob("*.incomplete")
    resume(path, plugins, log=quiet)
    second = Recorder.runs[1]
    assert second.context.resumed and second.context.start_step == per_epoch
    assert second.steps[0]["step"] == per_epoch + 1 and [e["epoch"] for e in second.epochs] == [2]


# ---------------------------------------------------------------- the W&B and MLflow examples of docs/loggers.md


def doc_plugin(marker: str):
    """The python block of docs/loggers.md that registers ``marker``, executed as a module."""
    import re
    import types

    text = (Path(__file__).resolve().parents[1] / "docs" / "loggers.md").read_text()
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if f'register("{marker}"' in b]
    module = types.ModuleType(f"doc_{marker}")
    exec(compile(code, f"docs/loggers.md ({marker})", "exec"), module.__dict__)
    return module


class FakeService:
    """Records the calls a doc example makes to wandb / mlflow (neither is installed here)."""

    def __init__(self):
        self.calls: list[tuple[str, tuple, dict]] = []
        self.summary: dict = {}

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return self

        return call

    def named(self, name):
        return [(args, kwargs) for n, args, kwargs in self.calls if n == name]


@pytest.mark.parametrize("service", ["wandb", "mlflow"])
def test_doc_examples_follow_the_contract(tmp_path, tiny_file, monkeypatch, service):
    import sys

    fake = FakeService()
    monkeypatch.setitem(sys.modules, service, fake)
    plugins = load_plugins(extra_objects=(doc_plugin(service),))
    r = config(plugins, tmp_path, "train.epochs=2", f"run.loggers={service}", dataset=tiny_file)
    result = train(r, plugins, log=quiet)
    lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    test = json.loads((result.run_dir / "summary.json").read_text())["test"]
    if service == "wandb":
        (_, init), = fake.named("init")
        assert init["name"] == result.run_dir.name and init["config"]["run"]["loggers"] == ["wandb"]
        logged = [(args[0], kwargs["step"]) for args, kwargs in fake.named("log")]
        epochs = [(values, step) for values, step in logged if "epoch" in values]
        assert [values["valid/mrr@10"] for values, _ in epochs] == [x["valid"]["mrr@10"] for x in lines]
        steps = [step for _, step in logged]
        assert steps == sorted(steps)  # W&B needs steps that never go back
        assert fake.summary == {f"test/{k}": v for k, v in test.items()}
        assert fake.named("finish") == [((), {"exit_code": 0})]
    else:
        metrics = fake.named("log_metrics")
        assert [a[0]["valid_mrr_at_10"] for a, kw in metrics if "step" in kw] == [x["valid"]["mrr@10"] for x in lines]
        assert metrics[-1][0][0] == {f"test_{k.replace('@', '_at_')}": v for k, v in test.items()}
        assert fake.named("log_params")[0][0][0]["run.loggers"] == "['mlflow']"
        assert fake.named("end_run") == [((), {"status": "FINISHED"})]
