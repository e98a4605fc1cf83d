"""Lifecycle callbacks and views of declared shapes: called when they should be, with what they need."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from seqcl.config import parse_assignment, resolve
from seqcl.errors import PluginError
from seqcl.hookspecs import hookimpl
from seqcl.interfaces import Augmenter, FitContext, Views
from seqcl.lifecycle import Callbacks
from seqcl.plugins import load_plugins
from seqcl.training import resume, train

from conftest import TINY
from test_resume import interrupted_run, records


@dataclass
class RecordingOptions:
    weight: float = 0.0


class RecordingTerm(nn.Module):
    """A term that records every callback (and a tensor it computes from the fit context)."""

    needs_negatives = False
    events: list = []

    def __init__(self, options, ctx) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, views, batch):
        return self.scale * 0.0

    def on_fit_start(self, fit: FitContext) -> None:
        reps = fit.representations()
        self.events.append(("fit_start", fit.resumed, fit.epoch, tuple(reps.shape), len(fit.train),
                            bool(torch.isfinite(reps).all()), fit.encoder.training))

    def on_epoch_start(self, epoch: int) -> None:
        self.events.append(("epoch_start", epoch))

    def after_optimizer_step(self) -> None:
        self.events.append(("step",))


class WideViews(Augmenter):
    """Views (B, 3·d): declared in ``view_shapes`` at build time, like CFIT4SRec's flattened sequences."""

    default_terms = {"cl": {"weight": 0.1}}
    pairs = [("a", "b")]

    def __init__(self, options, ctx) -> None:
        super().__init__()
        self.view_shapes = {"a": (3 * ctx.hidden_size,), "b": (3 * ctx.hidden_size,)}
        self.full_width = True

    def forward(self, batch, encoder, h_in, hidden):
        wide = hidden[:, -3:].flatten(1)
        return Views({"a": wide, "b": wide + 0.01 * torch.randn_like(wide)}, list(self.pairs))


class Plugin:
    @hookimpl
    def register_loss_terms(self, register):
        register("recording", RecordingTerm, "test: records lifecycle callbacks", options=RecordingOptions)

    @hookimpl
    def register_augmenters(self, register):
        register("wide_views", WideViews, "test: views of a declared shape (B, 3d)")


@pytest.fixture(scope="module")
def plugins():
    return load_plugins(extra_objects=(Plugin(),))


def config(plugins, run_dir, *extra, dataset, augmenter="none", with_terms=("recording",)):
    pairs = [parse_assignment(a) for a in TINY[1::2]] + [parse_assignment(a) for a in extra]
    pairs += [("augmenter", augmenter), ("dataset", str(dataset)), ("run.dir", str(run_dir))]
    return resolve(plugins.registry, overrides=pairs, with_terms=list(with_terms))


def test_callbacks_collected_only_where_defined():
    class Plain:
        pass

    term = RecordingTerm(None, None)
    found = Callbacks.of([Plain(), term, Plain()])
    assert found.fit_start == (term.on_fit_start,) and found.after_step == (term.after_optimizer_step,)
    assert Callbacks.of([Plain()]) == Callbacks()  # the plain loop tests empty tuples only


def test_callbacks_called_at_fit_start_each_epoch_and_each_step(plugins, tmp_path, tiny_file):
    RecordingTerm.events = []
    r = config(plugins, tmp_path / "a", "train.epochs=2", "train.patience=5", dataset=tiny_file)
    res = train(r, plugins, log=lambda m: None)
    events = RecordingTerm.events
    kind, resumed, epoch, shape, n, finite, training = events[0]
    assert (kind, resumed, epoch, finite, training) == ("fit_start", False, 0, True, True)
    assert shape == (n, 16)  # every training sample's representation, (N, d)
    steps_per_epoch = -(-n // r.train.batch_size)
    starts = [i for i, e in enumerate(events) if e[0] == "epoch_start"]
    assert [events[i][1] for i in starts] == [1, 2]
    assert starts[1] - starts[0] - 1 == steps_per_epoch  # one after_optimizer_step per step
    assert sum(e == ("step",) for e in events) == 2 * steps_per_epoch
    assert res.epochs_run == 2


def test_fit_start_says_resumed(plugins, tmp_path, tiny_file):
    RecordingTerm.events = []
    path = interrupted_run(plugins, config(plugins, tmp_path, "train.epochs=2", dataset=tiny_file), 1)
    RecordingTerm.events = []
    resume(path, plugins, log=lambda m: None)
    assert RecordingTerm.events[0][:3] == ("fit_start", True, 1)
    assert [e[1] for e in RecordingTerm.events if e[0] == "epoch_start"] == [2]


def test_declared_wide_views_train_and_resume_exactly(plugins, tmp_path, tiny_file):
    extra = ("train.epochs=2", "train.patience=5")
    full = train(config(plugins, tmp_path / "a", *extra, dataset=tiny_file, augmenter="wide_views", with_terms=()),
                 plugins, log=lambda m: None)
    cl = [rec["loss"]["cl"] for rec in records(full.run_dir)]
    assert all(v > 0 for v in cl)
    path = interrupted_run(plugins, config(plugins, tmp_path / "b", *extra, dataset=tiny_file,
                                           augmenter="wide_views", with_terms=()), 1)
    assert records(resume(path, plugins, log=lambda m: None).run_dir) == records(full.run_dir)


def test_undeclared_wide_view_still_refused():
    from seqcl.training import check_views

    h = torch.zeros(4, 8)
    wide = torch.zeros(4, 24)
    check_views(Views({"a": wide, "b": h}, [("a", "b")]), 4, 8, "test", {"a": (24,)})
    with pytest.raises(PluginError, match=r"view 'a' has shape \(4, 24\), expected \(B, d\) = \(4, 8\)"):
        check_views(Views({"a": wide, "b": h}, [("a", "b")]), 4, 8, "test", {})
    with pytest.raises(PluginError, match=r"expected declared"):
        check_views(Views({"a": h, "b": h}, [("a", "b")]), 4, 8, "test", {"a": (24,)})
