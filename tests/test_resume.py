"""Runs that survive: checkpoints, exact ``--resume``, the NaN guard, clean failure on faults."""

from __future__ import annotations

import errno
import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import seqcl.training as training
from seqcl.config import parse_assignment, resolve
from seqcl.errors import ConfigError, NonFiniteLoss, StorageError
from seqcl.hookspecs import hookimpl
from seqcl.interfaces import Augmenter
from seqcl.plugins import load_plugins
from seqcl.runs import RunDir
from seqcl.training import resume, train

from conftest import TINY

AUGMENTERS = ["none", "aclsrec", "crop", "mask", "reorder", "random", "dropout"]


@dataclass
class CountingOptions:
    weight: float = 0.1


class CountingTerm(nn.Module):
    """A term whose value depends on state outside its parameters (a step counter)."""

    needs_negatives = False

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, views, batch):
        self.calls += 1
        first = next(iter(views.tensors.values()))
        return first.pow(2).mean() * (1 + self.calls % 3)

    def get_extra_state(self):
        return {"calls": self.calls}

    def set_extra_state(self, state):
        self.calls = state["calls"]


class CountingPlugin:
    @hookimpl
    def register_loss_terms(self, register):
        register("counting", lambda options, ctx: CountingTerm(), "test term with a step counter",
                 options=CountingOptions)


@pytest.fixture(scope="module")
def plugins():
    return load_plugins(extra_objects=(CountingPlugin(),))


def config(plugins, run_dir, *extra, augmenter="none", dataset, with_terms=()):
    pairs = [parse_assignment(a) for a in TINY[1::2]] + [parse_assignment(a) for a in extra]
    pairs += [("augmenter", augmenter), ("dataset", str(dataset)), ("run.dir", str(run_dir))]
    return resolve(plugins.registry, overrides=pairs, with_terms=list(with_terms))


def quiet(msg: str) -> None:
    pass


def interrupt_after(epoch: int):
    """A log function that raises KeyboardInterrupt once epoch ``epoch`` is reported (its checkpoint is on disk)."""
    lines: list[str] = []

    def log(msg: str) -> None:
        lines.append(msg)
        if msg.startswith(f"epoch {epoch:3d} |"):
            raise KeyboardInterrupt

    log.lines = lines  # type: ignore[attr-defined]
    return log


def records(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the timings and memory readings (they differ between any two runs)."""
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out.append({k: v for k, v in rec.items() if "seconds" not in k and "rss" not in k})
    return out


def assert_same_weights(a: Path, b: Path) -> None:
    sa = torch.load(a, weights_only=True)
    sb = torch.load(b, weights_only=True)
    assert sa.keys() == sb.keys()
    for name in sa:
        assert sa[name].keys() == sb[name].keys()
        for key, value in sa[name].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, sb[name][key]), f"{name}.{key} differs"


def interrupted_run(plugins, r, epoch: int) -> Path:
    log = interrupt_after(epoch)
    with pytest.raises(KeyboardInterrupt):
        train(r, plugins, log=log)
    assert any("seqcl train --resume" in line for line in log.lines)
    (path,) = Path(r.run.dir).glob("*.incomplete")
    return path


@pytest.mark.parametrize("augmenter", AUGMENTERS)
def test_kill_after_epoch_2_and_resume_is_exact(plugins, tmp_path, tiny_file, augmenter):
    """Every shipped augmenter: interrupted after epoch 2 of 4 + --resume == uninterrupted, exactly."""
    extra = ("train.epochs=4", "train.patience=10")
    full = train(config(plugins, tmp_path / "a", *extra, augmenter=augmenter, dataset=tiny_file), plugins, log=quiet)
    path = interrupted_run(plugins, config(plugins, tmp_path / "b", *extra, augmenter=augmenter, dataset=tiny_file), 2)
    assert [r["epoch"] for r in records(path)] == [1, 2]
    resumed = resume(path, plugins, log=quiet)
    assert resumed.run_dir == path.with_name(path.name.removesuffix(".incomplete"))
    assert records(resumed.run_dir) == records(full.run_dir)
    assert (resumed.best_epoch, resumed.valid, resumed.test) == (full.best_epoch, full.valid, full.test)
    sa = json.loads((full.run_dir / "summary.json").read_text())
    sb = json.loads((resumed.run_dir / "summary.json").read_text())
    assert (sa["valid"], sa["test"], sa["best_epoch"], sa["epochs_run"]) == (
        sb["valid"], sb["test"], sb["best_epoch"], sb["epochs_run"])
    assert_same_weights(full.run_dir / "best.pt", resumed.run_dir / "best.pt")
    assert torch.equal(torch.load(full.run_dir / "ranks.pt", weights_only=True)["test"],
                       torch.load(resumed.run_dir / "ranks.pt", weights_only=True)["test"])


def test_state_outside_parameters_is_checkpointed(plugins, tmp_path, tiny_file):
    """A component's extra state (get_extra_state) is in last.pt and restored: resume stays exact."""
    extra = ("train.epochs=3",)
    r = config(plugins, tmp_path / "a", *extra, augmenter="random", dataset=tiny_file, with_terms=["counting"])
    full = train(r, plugins, log=quiet)
    path = interrupted_run(plugins, config(plugins, tmp_path / "b", *extra, augmenter="random", dataset=tiny_file,
                                           with_terms=["counting"]), 1)
    ckpt = torch.load(path / "last.pt", weights_only=True)
    assert ckpt["model"]["term.counting"]["_extra_state"]["calls"] > 0
    assert ckpt["model"]["augmenter"]["_extra_state"]["generators"]  # CL4SRec's own RNG stream
    resumed = resume(path, plugins, log=quiet)
    assert records(resumed.run_dir) == records(full.run_dir)


def test_checkpoint_contents(plugins, tmp_path, tiny_file):
    res = train(config(plugins, tmp_path, "train.epochs=2", dataset=tiny_file), plugins, log=quiet)
    ckpt = torch.load(res.run_dir / "last.pt", weights_only=True)
    assert ckpt["format"] == 1 and ckpt["fit"]["epoch"] == 2
    assert set(ckpt["rng"]) == {"torch", "cuda", "trainer"}
    assert {"best_score", "best_epoch", "bad_epochs"} <= set(ckpt["fit"])
    assert ckpt["optimizer"]["state"]  # Adam moments
    assert set(ckpt["model"]) == {"encoder", "augmenter", "objective"}


def test_best_pt_written_when_validation_improves(plugins, tmp_path, tiny_file):
    """best.pt exists after the first epoch, before the run ends."""
    log = interrupt_after(1)
    with pytest.raises(KeyboardInterrupt):
        train(config(plugins, tmp_path, "train.epochs=3", dataset=tiny_file), plugins, log=log)
    (path,) = tmp_path.glob("*.incomplete")
    assert (path / "best.pt").is_file() and (path / "last.pt").is_file()
    assert not list(path.glob(".*.tmp"))  # no temporary file left behind


def test_resume_refusals(plugins, tmp_path, tiny_file):
    done = train(config(plugins, tmp_path / "done", "train.epochs=1", dataset=tiny_file), plugins, log=quiet)
    with pytest.raises(ConfigError, match="finished"):
        resume(done.run_dir, plugins, log=quiet)
    with pytest.raises(ConfigError, match="no such run directory"):
        resume(tmp_path / "nope", plugins, log=quiet)
    path = interrupted_run(plugins, config(plugins, tmp_path / "b", "train.epochs=3", dataset=tiny_file), 1)
    (path / "config.yaml").write_text((path / "config.yaml").read_text().replace("lr: 0.001", "lr: 0.002"))
    with pytest.raises(ConfigError, match=r"config.yaml changed since the checkpoint \(train.lr\)"):
        resume(path, plugins, log=quiet)
    (path / "last.pt").unlink()
    with pytest.raises(ConfigError, match="no checkpoint"):
        resume(path, plugins, log=quiet)


def test_resume_may_change_how_the_run_executes_and_nothing_else(plugins, tmp_path, tiny_file, monkeypatch):
    """``train.threads`` and ``eval.batch_size`` given on resume reach their uses and config.yaml;
    a key that changes what the run learns is refused, config.yaml untouched."""
    path = interrupted_run(plugins, config(plugins, tmp_path, "train.epochs=2", "train.threads=1",
                                           "eval.batch_size=512", dataset=tiny_file), 1)
    before = (path / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"train.lr cannot change when a run resumes.*train.threads"):
        resume(path, plugins, log=quiet, overrides=[("train.threads", 2), ("train.lr", 0.01)])
    assert (path / "config.yaml").read_text() == before
    threads, batch_sizes = [], []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    real_evaluate = training.evaluate

    def spy(*args, **kwargs):
        batch_sizes.append(kwargs["batch_size"])
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(training, "evaluate", spy)
    lines: list[str] = []
    result = resume(path, plugins, log=lines.append, overrides=[("train.threads", 2), ("eval.batch_size", 7)])
    assert "resuming with train.threads=2 (was 1), eval.batch_size=7 (was 512)" in lines
    assert threads == [2] and batch_sizes and set(batch_sizes) == {7}
    saved = resolve(plugins.registry, yaml.safe_load((result.run_dir / "config.yaml").read_text()))
    assert (saved.train.threads, saved.eval.batch_size, saved.train.lr) == (2, 7, 0.001)
    assert len(records(result.run_dir)) == 2


def test_resume_takes_train_device_and_each_epoch_records_its_device(plugins, tmp_path, tiny_file):
    """``train.device`` is an execution key: the override reaches the device check (here, a machine
    without CUDA refuses it in one line, config.yaml untouched) and every metrics line names its device."""
    path = interrupted_run(plugins, config(plugins, tmp_path, "train.epochs=2", dataset=tiny_file), 1)
    before = (path / "config.yaml").read_text()
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="train.device is 'cuda' but CUDA is not available"):
            resume(path, plugins, log=quiet, overrides=[("train.device", "cuda")])
        assert (path / "config.yaml").read_text() == before
    result = resume(path, plugins, log=quiet, overrides=[("train.device", "cpu")])
    assert [r["device"] for r in records(result.run_dir)] == ["cpu", "cpu"]


def test_a_gpu_run_continues_on_a_machine_without_one(plugins, tmp_path, tiny_file, capsys):
    """config.yaml says cuda (the run was trained on a GPU): without CUDA it resumes with
    ``--device cpu`` (one line otherwise), and says and records the move."""
    from seqcl.cli import main

    path = interrupted_run(plugins, config(plugins, tmp_path, "train.epochs=2", augmenter="random",
                                           dataset=tiny_file), 1)
    tree = yaml.safe_load((path / "config.yaml").read_text())
    tree["train"]["device"] = "cuda"
    (path / "config.yaml").write_text(yaml.safe_dump(tree))
    if not torch.cuda.is_available():
        assert main(["train", "--resume", str(path)]) == 2
        assert capsys.readouterr().err == "error: train.device is 'cuda' but CUDA is not available\n"
    assert main(["train", "--resume", str(path), "--device", "cpu", "--set", "train.threads=1"]) == 0
    assert "resuming with train.threads=1 (was 0), train.device=cpu (was cuda)" in capsys.readouterr().err
    final = path.with_name(path.name.removesuffix(".incomplete"))
    assert yaml.safe_load((final / "config.yaml").read_text())["train"]["device"] == "cpu"
    assert [r["device"] for r in records(final)] == ["cpu", "cpu"]
    assert main(["train", "--resume", str(final), "--epochs", "3"]) == 2  # what it learns still cannot change
    assert "takes no --epochs" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cpu_run_resumed_on_cuda_continues_there(plugins, tmp_path, tiny_file):
    """Interrupted on CPU after epoch 1, resumed with ``train.device=cuda``: the weights, optimizer state
    and early-stopping state carry over, epochs 2–3 train on the GPU and say so."""
    path = interrupted_run(plugins, config(plugins, tmp_path, "train.epochs=3", "train.patience=10",
                                           augmenter="aclsrec", dataset=tiny_file), 1)
    lines: list[str] = []
    result = resume(path, plugins, log=lines.append, overrides=[("train.device", "cuda")])
    assert "resuming with train.device=cuda (was cpu)" in lines
    assert [(r["epoch"], r["device"]) for r in records(result.run_dir)] == [(1, "cpu"), (2, "cuda"), (3, "cuda")]
    assert yaml.safe_load((result.run_dir / "config.yaml").read_text())["train"]["device"] == "cuda"
    assert all(math.isfinite(v) for v in result.test.values())


def test_a_resume_that_changed_threads_and_stopped_before_its_first_epoch_resumes(plugins, tmp_path, tiny_file):
    """config.yaml (train.threads 2) is ahead of last.pt (1) until the resume's first checkpoint: a stop in
    between must not leave the run unresumable."""
    path = interrupted_run(plugins, config(plugins, tmp_path, "train.epochs=3", "train.threads=1",
                                           dataset=tiny_file), 1)

    def stop_at_start(msg):
        if msg.startswith("run dir"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        resume(path, plugins, log=stop_at_start, overrides=[("train.threads", 2)])
    assert torch.load(path / "last.pt", weights_only=False)["config"]["train"]["threads"] == 1
    result = resume(path, plugins, log=quiet)
    assert yaml.safe_load((result.run_dir / "config.yaml").read_text())["train"]["threads"] == 2
    assert len(records(result.run_dir)) == 3


def test_cli_resume_takes_set_for_execution_keys_only(plugins, tmp_path, tiny_file, capsys):
    from seqcl.cli import main

    path = interrupted_run(plugins, config(plugins, tmp_path, "train.epochs=2", dataset=tiny_file), 1)
    assert main(["train", "--resume", str(path), "--set", "train.lr=0.1"]) == 2
    err = capsys.readouterr().err
    assert "train.lr cannot change when a run resumes" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--resume", str(path), "--set", "train.threads=1"]) == 0
    assert "best epoch" in capsys.readouterr().out


def test_resume_refuses_changed_data(plugins, tmp_path, tiny_file):
    data = tmp_path / "data.txt"
    data.write_text(tiny_file.read_text())
    path = interrupted_run(plugins, config(plugins, tmp_path / "b", "train.epochs=3", dataset=data), 1)
    lines = data.read_text().splitlines()
    data.write_text("\n".join(lines[:-1]) + "\n")  # one user fewer
    with pytest.raises(ConfigError, match="data changed since the checkpoint"):
        resume(path, plugins, log=quiet)


def test_cli_resume(plugins, tmp_path, tiny_file, capsys):
    from seqcl.cli import main

    path = interrupted_run(plugins, config(plugins, tmp_path, "train.epochs=2", dataset=tiny_file), 1)
    assert main(["train", "--resume", str(path), "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "takes no --epochs" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--resume", str(path)]) == 0
    out = capsys.readouterr().out
    assert "best epoch" in out and "test" in out
    assert main(["train", "--resume", str(path)]) == 2  # finished now
    assert "finished" in capsys.readouterr().err


def test_resume_after_sigkill(tmp_path, tiny_file):
    """A real SIGKILL of `seqcl train` mid-run, then --resume: the same metrics as an uninterrupted run."""
    args = [sys.executable, "-m", "seqcl", "train", *TINY, "--dataset", str(tiny_file), "--epochs", "4",
            "--set", "train.threads=1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    full = subprocess.run(args + ["--set", f"run.dir={tmp_path / 'a'}"], capture_output=True, text=True, env=env)
    assert full.returncode == 0, full.stderr
    proc = subprocess.Popen(args + ["--set", f"run.dir={tmp_path / 'b'}"], stderr=subprocess.PIPE, text=True,
                            env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        ckpts = list((tmp_path / "b").glob("*.incomplete/last.pt"))
        if ckpts:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (path,) = (tmp_path / "b").glob("*.incomplete")
    resumed = subprocess.run([sys.executable, "-m", "seqcl", "train", "--resume", str(path)],
                             capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr
    (a,) = (tmp_path / "a").iterdir()
    (b,) = [p for p in (tmp_path / "b").iterdir()]
    assert records(a) == records(b)
    assert_same_weights(a / "best.pt", b / "best.pt")


# ----------------------------------------------------------------- NaN and divergence


def test_lr_1e30_exits_3_one_line(tmp_path, capsys):
    from seqcl.cli import main

    code = main(["train", *TINY, "--set", "train.lr=1e30", "--epochs", "2", "--set", f"run.dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 3, err
    lines = [x for x in err.strip().splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "not finite" in lines[0] and "Traceback" not in err
    (path,) = tmp_path.iterdir()
    assert path.name.endswith(".incomplete") and not (path / "summary.json").exists()
    assert json.loads((path / "failed.json").read_text())["reason"].startswith("epoch ")


def test_nan_in_epoch_2_names_term_and_step_keeps_epoch_1(plugins, tmp_path, tiny_file, monkeypatch):
    real = training.training_step
    calls = {"n": 0}
    steps_per_epoch = None

    def poisoned(model, batch):
        out = real(model, batch)
        calls["n"] += 1
        if calls["n"] == steps_per_epoch + 3:  # epoch 2, step 3
            out.parts["cl"] = torch.tensor(float("nan"))
            out.total = out.total + out.parts["cl"]
        return out

    from seqcl.data.dataset import training_samples
    from seqcl.data.loading import load_data

    r = config(plugins, tmp_path, "train.epochs=3", augmenter="random", dataset=tiny_file)
    data, _ = load_data(r.dataset, r.data)
    steps_per_epoch = -(-len(training_samples(data)) // r.train.batch_size)
    monkeypatch.setattr(training, "training_step", poisoned)
    with pytest.raises(NonFiniteLoss, match=r"epoch 2, step 3: loss term 'cl' is not finite \(nan\)") as info:
        train(r, plugins, log=quiet)
    assert info.value.exit_code == 3
    (path,) = tmp_path.glob("*.incomplete")
    assert torch.load(path / "last.pt", weights_only=True)["fit"]["epoch"] == 1
    assert (path / "best.pt").is_file() and not (path / "summary.json").exists()
    assert [r["epoch"] for r in records(path)] == [1]
    with pytest.raises(ConfigError, match="the run failed"):
        resume(path, plugins, log=quiet)


def test_divergence_warning(plugins, tmp_path, tiny_file):
    lines: list[str] = []
    r = config(plugins, tmp_path, "train.epochs=2", "loss.cl.sim=dot", "loss.cl.tau=1e-4",  # unbounded logits
               augmenter="random", dataset=tiny_file)
    train(r, plugins, log=lines.append)
    warnings = [x for x in lines if x.startswith("warning:")]
    assert any("dominates training" in x and "cl" in x for x in warnings), lines


def test_stalled_main_loss_warning():
    from seqcl.checkpoint import FitState

    state = FitState(epoch=2, first={"main": 5.7})
    out = training._divergence_warnings({"main": 5.71}, state, {})
    assert len(out) == 1 and "not learning" in out[0]
    assert training._divergence_warnings({"main": 5.71}, state, {}) == []  # once per run
    assert training._divergence_warnings({"main": 1.0}, FitState(epoch=2, first={"main": 5.7}), {}) == []


# ----------------------------------------------------------------- storage faults


def test_unwritable_run_dir_fails_before_training(tmp_path, capsys, monkeypatch):
    """(Running as root, chmod does not stop writes: the OS error is simulated.)"""
    from seqcl.cli import main

    real_mkdir = Path.mkdir

    def mkdir(self, *a, **k):
        if "runs" in str(self):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    called = []
    monkeypatch.setattr(training, "train_epoch", lambda *a, **k: called.append(1))
    code = main(["train", *TINY, "--set", f"run.dir={tmp_path / 'runs'}"])
    err = capsys.readouterr().err
    assert code == 2 and not called
    assert err.strip().splitlines() == [err.strip()] and "Permission denied" in err and "run.dir" in err


def test_full_disk_at_checkpoint_keeps_previous_files(plugins, tmp_path, tiny_file, monkeypatch):
    import seqcl.atomic as atomic

    real = atomic.os.fsync
    state = {"epoch2": False}

    def log(msg):
        if msg.startswith("epoch   1 |"):
            state["epoch2"] = True

    def fsync(fd):
        if state["epoch2"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    with pytest.raises(StorageError, match="No space left on device") as info:
        train(config(plugins, tmp_path, "train.epochs=3", dataset=tiny_file), plugins, log=log)
    assert info.value.exit_code == 1
    (path,) = tmp_path.glob("*.incomplete")
    assert torch.load(path / "last.pt", weights_only=True)["fit"]["epoch"] == 1  # the good one, intact
    assert [r["epoch"] for r in records(path)] == [1]
    assert not list(path.glob(".*.tmp")) and not (path / "summary.json").exists()


def _create_many(args):
    root, n = args
    return [RunDir.create(root, "same", "none", "builtin").path.name for _ in range(n)]


def test_run_dir_create_race(tmp_path):
    """Two processes claiming names at once: 300 unique folders, no FileExistsError."""
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        names = sum(pool.map(_create_many, [(tmp_path, 150), (tmp_path, 150)]), [])
    assert len(names) == len(set(names)) == 300


# ----------------------------------------------------------------- contract and progress


class BadViews(Augmenter):
    """Returns view ``b`` in a wrong shape (one subclass per shape)."""

    default_terms = {"cl": {"weight": 0.1}}
    pairs = [("a", "b")]
    shape = ""

    def __init__(self, options, ctx) -> None:
        super().__init__()

    def forward(self, batch, encoder, h_in, hidden):
        from seqcl.interfaces import Views

        h = hidden[:, -1]
        bad = {"wide": torch.cat([h, h[:, :3]], 1), "short": h[1:], "3d": hidden, "transposed": h.t()}[self.shape]
        return Views({"a": h, "b": bad}, [("a", "b")])


class BadViewsPlugin:
    @hookimpl
    def register_augmenters(self, register):
        for shape in ("wide", "short", "3d", "transposed"):
            register(f"bad_{shape}", type(f"Bad_{shape}", (BadViews,), {"shape": shape}), "test: wrong view shape")


@pytest.mark.parametrize("shape", ["wide", "short", "3d", "transposed"])
def test_views_contract_checked(tmp_path, tiny_file, shape):
    from seqcl.errors import PluginError

    plugins = load_plugins(extra_objects=(BadViewsPlugin(),))
    r = config(plugins, tmp_path, "train.epochs=1", "data.max_len=16", "sasrec.hidden_size=16",
               augmenter=f"bad_{shape}", dataset=tiny_file)
    with pytest.raises(PluginError, match=rf"augmenter .bad_{shape}' \(plugin .*\): view 'b' has shape"):
        train(r, plugins, log=quiet)


def test_progress_lines_without_a_terminal(plugins, tmp_path, tiny_file, monkeypatch):
    monkeypatch.setattr(training, "PROGRESS_EVERY_S", 0.0)
    lines: list[str] = []
    train(config(plugins, tmp_path, "train.epochs=1", dataset=tiny_file), plugins, log=lines.append)
    progress = [x for x in lines if "samples/s" in x]
    assert progress and all("ETA" in x and "step " in x for x in progress)


def test_trivial_metric_warning(plugins, tmp_path):
    """8 items and k = 10: HR@10 is 1 whatever the model; the run says so."""
    data = tmp_path / "small.txt"
    data.write_text("".join(f"{u} " + " ".join(str(1 + (u + j) % 8) for j in range(6)) + "\n" for u in range(1, 40)))
    lines: list[str] = []
    train(config(plugins, tmp_path, "train.epochs=1", dataset=data), plugins, log=lines.append)
    assert any(x.startswith("warning:") and "HR@5" in x for x in lines), lines
