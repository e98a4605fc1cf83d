"""Optimisation plans: own optimisers per parameter group, several steps per batch, checkpointed."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from seqcl.config import parse_assignment, resolve
from seqcl.errors import ConfigError, PluginError
from seqcl.hookspecs import hookimpl
from seqcl.interfaces import Augmenter, OptimPlan, ParamGroup, PlanStep, Views
from seqcl.optimplan import GroupOptimizers, PlanRunner, weighted_loss
from seqcl.data.dataset import training_samples
from seqcl.plugins import load_plugins
from seqcl.training import prepare, resume, train

from conftest import TINY
from test_resume import interrupted_run, records


class Learner(Augmenter):
    """Views h and w(h); w is a learnable map in its own group, updated by the second of three steps."""

    default_terms = {"cl": {"weight": 0.1}}
    pairs = [("h", "wh")]

    def __init__(self, options, ctx) -> None:
        super().__init__()
        self.w = nn.Linear(ctx.hidden_size, ctx.hidden_size)

    def forward(self, batch, encoder, h_in, hidden):
        h = hidden[:, -1]
        return Views({"h": h, "wh": self.w(h)}, list(self.pairs))

    def optim_plan(self, weights):
        encoder_step = PlanStep(update=("model",))
        learner_step = PlanStep(update=("learner",), weights={"cl": 1.0})
        return OptimPlan([ParamGroup("learner", list(self.w.parameters()), lr=0.01)],
                         [encoder_step, learner_step, encoder_step])


class Plugin:
    @hookimpl
    def register_augmenters(self, register):
        register("learner", Learner, "test: a learnable augmenter with its own optimiser")


@pytest.fixture(scope="module")
def plugins():
    return load_plugins(extra_objects=(Plugin(),))


def config(plugins, run_dir, *extra, dataset, augmenter="learner"):
    pairs = [parse_assignment(a) for a in TINY[1::2]] + [parse_assignment(a) for a in extra]
    pairs += [("augmenter", augmenter), ("dataset", str(dataset)), ("run.dir", str(run_dir))]
    return resolve(plugins.registry, overrides=pairs)


def _params(model):
    return {"encoder": [p.detach().clone() for p in model.encoder.parameters()],
            "learner": [p.detach().clone() for p in model.augmenter.parameters()]}


def _changed(before, after):
    return {k: any(not torch.equal(a, b) for a, b in zip(before[k], after[k])) for k in before}


def test_each_step_updates_its_groups_only(plugins, tmp_path, tiny_file):
    """Step 1 and 3 move the encoder only, step 2 the learner only; each step re-runs the forward pass."""
    from seqcl.training import iterate_batches, make_optimizer, training_step

    r = config(plugins, tmp_path, dataset=tiny_file)
    data, _, model = prepare(r, plugins)
    assert model.plan is not None and model.plan.owner == "augmenter"
    optimizer = make_optimizer(model, r)
    assert isinstance(optimizer, GroupOptimizers) and set(optimizer.optimizers) == {"model", "learner"}
    assert optimizer.optimizers["learner"].param_groups[0]["lr"] == 0.01
    assert optimizer.optimizers["model"].param_groups[0]["lr"] == r.train.lr
    batch = next(iterate_batches(training_samples(data), 64, model.max_len, torch.Generator().manual_seed(0),
                                 torch.device("cpu")))
    states, forwards = [_params(model)], []

    def forward(m, b, parts=None):
        forwards.append(parts)
        return training_step(m, b, parts)

    model.callbacks = type(model.callbacks)(after_step=(lambda: states.append(_params(model)),))
    model.train(True)
    model.plan.step(model, batch, optimizer, forward, torch.autocast("cpu", enabled=False), lambda o, l: None)
    assert forwards == [None, {"cl"}, None] and len(states) == 4  # the learner step asks for its part only
    assert [_changed(a, b) for a, b in zip(states, states[1:])] == [
        {"encoder": True, "learner": False}, {"encoder": False, "learner": True}, {"encoder": True, "learner": False}]
    assert all(p.requires_grad for p in model.parameters())  # frozen flags restored


def test_plan_run_resumes_exactly(plugins, tmp_path, tiny_file):
    extra = ("train.epochs=3", "train.patience=5")
    full = train(config(plugins, tmp_path / "a", *extra, dataset=tiny_file), plugins, log=lambda m: None)
    path = interrupted_run(plugins, config(plugins, tmp_path / "b", *extra, dataset=tiny_file), 1)
    ckpt = torch.load(path / "last.pt", weights_only=True)
    assert set(ckpt["optimizer"]) == {"model", "learner"} and ckpt["optimizer"]["learner"]["state"]
    resumed = resume(path, plugins, log=lambda m: None)
    assert records(resumed.run_dir) == records(full.run_dir)
    a = torch.load(full.run_dir / "best.pt", weights_only=True)["augmenter"]["w.weight"]
    b = torch.load(resumed.run_dir / "best.pt", weights_only=True)["augmenter"]["w.weight"]
    assert torch.equal(a, b)


def test_plain_run_has_no_plan_and_no_callbacks(plugins, tiny_file, tmp_path):
    for augmenter in ("none", "random", "aclsrec"):
        _, _, model = prepare(config(plugins, tmp_path, dataset=tiny_file, augmenter=augmenter), plugins)
        assert model.plan is None
        assert not (model.callbacks.fit_start or model.callbacks.epoch_start or model.callbacks.after_step)


def test_weighted_loss_sums_present_parts():
    values = {"main": torch.tensor(2.0), "cl": torch.tensor(3.0)}
    assert float(weighted_loss(values, {"main": 1.0, "cl": 0.5, "absent": 9.0})) == 3.5
    assert float(weighted_loss(values, {"cl": 0.0})) == 0.0
    empty = weighted_loss({}, {"cl": 1.0})  # a step that asked for nothing: a zero the runner then refuses
    assert float(empty) == 0.0 and not empty.requires_grad


def test_bad_plans_refused():
    p = [nn.Parameter(torch.zeros(2))]
    q = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(PluginError, match="reserved or repeated"):
        PlanRunner(OptimPlan([ParamGroup("model", q)], [PlanStep(("model",))]), p + q, "x")
    with pytest.raises(PluginError, match="in groups 'a' and 'b'"):
        PlanRunner(OptimPlan([ParamGroup("a", q), ParamGroup("b", q)], [PlanStep(("a",))]), p + q, "x")
    with pytest.raises(PluginError, match=r"plan step 1 updates \['nope'\]"):
        PlanRunner(OptimPlan([ParamGroup("a", q)], [PlanStep(("nope",))]), p + q, "x")
    with pytest.raises(PluginError, match="no steps"):
        PlanRunner(OptimPlan([], []), p, "x")
    runner = PlanRunner(OptimPlan([ParamGroup("a", q)], [PlanStep(("a",))]), p + q, "x")
    assert runner.groups["model"] == p
    opt = runner.make_optimizer(1e-3, 0.0)
    with pytest.raises(ConfigError, match="optimisers"):
        opt.load_state_dict({"model": opt.optimizers["model"].state_dict()})
