"""Training loop: Adam, main loss + Σ weight·term, per-epoch validation, early stopping.

Components are built from the registry and the resolved config; the loop
itself knows nothing about any augmenter (``seqcl.interfaces`` has the step).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection

import torch
from torch import Tensor, nn
from tqdm import tqdm

from seqcl import checkpoint, distributed, stages
from seqcl.checkpoint import FitState
from seqcl.config import (EXECUTION_KEYS, Resolved, execution_changes, execution_overrides, flatten, read_yaml,
                          resolve)
from seqcl.data.dataset import SequenceData, TrainSamples, eval_set, training_samples, trim_padding
from seqcl.data.loading import load_data
from seqcl.errors import ConfigError, NonFiniteLoss, PluginError
from seqcl.evaluation import EvalResult, evaluate, trivially_ranked
from seqcl.ids import IDS_FILE, IdMap
from seqcl.interfaces import Augmenter, Batch, BuildContext, Encoder, LossTerm, Objective, Views
from seqcl.lifecycle import Callbacks, fit_context
from seqcl.loggers import LoggerContext, Loggers
from seqcl.memory import apply_malloc_policy, peak_rss_mb, reset_peak_rss, rss_mb, trim_heap
from seqcl.optimplan import PlanRunner, adam, declared_plan
from seqcl.plugins import LoadedPlugins
from seqcl.registry import Registry
from seqcl.runs import BEST, LAST, MODEL_FILE, RunDir, SilentRunDir


@dataclass
class Model:
    """The components of one run."""

    encoder: Encoder
    augmenter: Augmenter
    objective: Objective
    terms: dict[str, LossTerm]
    weights: dict[str, float]
    num_items: int
    max_len: int
    augmenter_label: str = "augmenter"  # "augmenter 'crop' (plugin cl4srec)", for contract errors
    views_checked: bool = False
    callbacks: Callbacks = field(default_factory=Callbacks)  # lifecycle callbacks (seqcl.lifecycle)
    plan: PlanRunner | None = None  # a component's optimisation plan (seqcl.optimplan); None: one Adam step
    replica: nn.Module | None = None  # the DistributedDataParallel wrapper under torchrun (seqcl.distributed)

    def step(self, batch: Batch) -> "StepOutput":
        """One training step: through the DDP replica under torchrun (gradients averaged over ranks)."""
        if self.replica is None:
            return training_step(self, batch)
        total, out = self.replica(batch)
        return dataclasses.replace(out, total=total)

    def modules(self) -> list[nn.Module]:
        return [m for m in self.components().values() if isinstance(m, nn.Module)]

    def parameters(self) -> list[nn.Parameter]:
        seen: dict[int, nn.Parameter] = {}
        for module in self.modules():
            for p in module.parameters():
                seen.setdefault(id(p), p)
        return list(seen.values())

    def train(self, mode: bool = True) -> None:
        for module in self.modules():
            module.train(mode)

    def to(self, device: torch.device) -> "Model":
        for module in self.modules():
            module.to(device)
        return self

    def components(self) -> dict[str, Any]:
        """Checkpoint name → component: ``encoder``, ``augmenter``, ``objective``, ``term.<name>``."""
        return {"encoder": self.encoder, "augmenter": self.augmenter, "objective": self.objective,
                **{f"term.{name}": term for name, term in self.terms.items()}}

    def state_dict(self) -> dict[str, Any]:
        """Every component's ``state_dict()`` (weights, buffers, extra state), by name.

        A component that is not an ``nn.Module`` is included when it has a
        ``state_dict`` method (see ``seqcl.interfaces``, "State").
        """
        return {name: c.state_dict() for name, c in self.components().items() if hasattr(c, "state_dict")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, c in self.components().items():
            if hasattr(c, "load_state_dict"):
                c.load_state_dict(state[name])

    def load_components(self, state: dict[str, Any], label: str) -> None:
        """Load the named components' states only (a stage's hand-off); one-line error on a mismatch."""
        components = self.components()
        for name, value in state.items():
            if name not in components:
                raise ConfigError(f"{label}: no component {name!r} to load (components: {', '.join(components)})")
            try:
                components[name].load_state_dict(value)
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()[0]
                raise ConfigError(f"{label}: component {name!r} does not match ({first})") from None


def build_model(resolved: Resolved, registry: Registry, context: BuildContext) -> Model:
    """Augmenter first (it may ask for extra item rows), then encoder, then objective and terms.

    The augmenter, the objective and the terms are initialised from their own RNG
    stream, so the encoder's initial weights depend on the seed alone, not on the
    augmenter: every arm of a comparison starts from the same encoder.
    """
    aug = registry.get("augmenter", resolved.augmenter)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(context.seed + 1)
        augmenter = aug.factory(resolved.augmenter_options, context)
    context = dataclasses.replace(
        context,
        extra_rows=int(getattr(augmenter, "extra_rows", 0)),
        view_pairs=list(getattr(augmenter, "pairs", [])),
        augmenter=aug.name,
    )
    enc = registry.get("encoder", resolved.encoder)
    encoder = enc.factory(resolved.encoder_options, context)
    if getattr(encoder, "hidden_size", None) != context.hidden_size:
        raise ConfigError(f"encoder {enc.name}: hidden_size mismatch ({encoder.hidden_size} vs {context.hidden_size})")
    if augmenter.full_width:
        encoder.request_full_width()
    terms = {}
    weights = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(context.seed + 2)
        objective = registry.get("objective", resolved.objective).factory(resolved.objective_options, context)
        for name in resolved.terms:
            options = resolved.term_options[name]
            terms[name] = registry.get("loss_term", name).factory(options, context)
            weights[name] = float(options.weight)
    label = f"augmenter {aug.name!r} (plugin {aug.plugin})"
    model = Model(encoder, augmenter, objective, terms, weights, context.num_items, context.max_len, label)
    model.callbacks = Callbacks.of(model.components().values())
    model.plan = declared_plan(model.components(), model.parameters(), model.weights)
    return model


@dataclass
class StepOutput:
    total: Tensor  # what this process backpropagates
    parts: dict[str, Tensor]  # unweighted, detached: "main" and each term (over the global batch)
    skipped: list[str] = field(default_factory=list)
    #: the parts, attached, over this process's rows (optimisation plans)
    values: dict[str, Tensor] = field(default_factory=dict)
    loss: Tensor | None = None  # detached loss of the global batch under torchrun (equal on all ranks)

    def value(self) -> Tensor:
        """The step's loss over the whole (global) batch."""
        return self.total if self.loss is None else self.loss


def training_step(model: Model, batch: Batch, parts: Collection[str] | None = None) -> StepOutput:
    """One forward pass: objective + Σ weight·term. No host sync in one process (torchrun: shard sizes are gathered).

    With no loss term the augmenter never runs, so nothing reads ``H_in`` or the
    other slots of ``H``: the step asks the encoder for the last slot alone
    (``encode``), which an encoder may compute more cheaply (SASRec does). An
    objective without ``uses_main_pass`` (BERT4Rec's cloze task) runs its own
    encoder pass; the main pass then exists only for the views.

    ``parts``: the loss parts to compute (``"main"`` and term names; None: all). An
    optimisation plan's step that minimises some parts only asks for those
    (``seqcl.optimplan``); without ``"main"`` the objective is skipped, and so is the
    main pass when the augmenter reads none of it (``hidden_slots = "none"``).

    Under torchrun ``batch`` is this rank's shard (``seqcl.distributed``): row-mean
    losses are weighted by the shard's share, terms that declare
    ``needs_global_batch`` see the gathered global batch, and the returned
    ``parts`` and ``loss`` are the global batch's values.
    """
    shard = distributed.step_shard(batch)
    local = {"main"}  # parts that are means over this rank's rows
    wanted_terms = {n: t for n, t in model.terms.items() if parts is None or n in parts}
    wants_main = parts is None or "main" in parts
    h_in = hidden = h = None
    if wanted_terms and model.augmenter.hidden_slots != "none":
        h_in, hidden = main_pass(model.encoder, model.augmenter, batch.items)
        h = hidden[:, -1]
    elif wants_main and model.objective.uses_main_pass:
        h = model.encoder.encode(batch.items)
    total: Tensor | None = None
    values: dict[str, Tensor] = {}
    out_parts: dict[str, Tensor] = {}
    if wants_main:
        main = model.objective(model.encoder, batch, h if model.objective.uses_main_pass else None)
        total = main if shard is None else main * shard.weight
        out_parts["main"], values["main"] = main.detach(), main
    skipped = []
    if wanted_terms:
        views = model.augmenter(batch, model.encoder, h_in, hidden)
        if not model.views_checked:
            check_views(views, batch.size, model.encoder.hidden_size, model.augmenter_label,
                        model.augmenter.view_shapes)
            model.views_checked = True
        gathered = None
        for name, term in wanted_terms.items():
            term_views, term_batch = views, batch
            if shard is not None and distributed.needs_global_batch(term):
                gathered = gathered or shard.gather(views, batch)
                term_views, term_batch = gathered
            elif shard is not None:
                local.add(name)
            if getattr(term, "needs_negatives", False) and term_batch.size < 2:
                skipped.append(name)
            value = term(term_views, term_batch)
            out_parts[name], values[name] = value.detach(), value
            if model.weights[name] != 0.0:
                weighted = model.weights[name] * (value * shard.weight if name in local else value)
                total = weighted if total is None else total + weighted
    if total is None:  # nothing of weight ≠ 0 asked for: a zero that keeps the graph of what was computed
        total = next(iter(values.values())) * 0.0 if values else torch.zeros((), device=batch.items.device)
    if shard is None:
        return StepOutput(total, out_parts, skipped, values)
    names = list(out_parts)
    mean = shard.average(torch.stack([total.detach().float()] + [
        out_parts[n].float() * (shard.weight if n in local else 1.0) for n in names]))
    return StepOutput(total, dict(zip(names, mean[1:])), skipped, values, loss=mean[0])


def main_pass(encoder: Encoder, augmenter: Augmenter, items: Tensor) -> tuple[Tensor | None, Tensor]:
    """``(h_in, hidden)`` for the augmenter: only what it declares it reads.

    ``hidden_slots = "last"``: ``hidden`` is H[:, -1:] (B, 1, d), from the encoder's
    last-slot paths; without ``reads_embedding``, ``h_in`` is None and the embedding
    need not be materialised. Otherwise the full (B, T, d) ``H_in`` and ``H``."""
    if augmenter.hidden_slots == "last":
        if not augmenter.reads_embedding:
            return None, encoder.encode(items).unsqueeze(1)
        h_in = encoder.embed(items)
        return h_in, encoder.contextualize_last(h_in, items).unsqueeze(1)
    h_in = encoder.embed(items)
    return h_in, encoder.contextualize(h_in, items)


def check_views(views: Views, batch_size: int, width: int, label: str,
                shapes: dict[str, tuple[int, ...]] | None = None) -> None:
    """The ``Views`` contract, checked once per run: every view is (B, d), or (B, *shape) when the
    augmenter declares its shape in ``view_shapes``, and every pair names views.

    A wrong shape would otherwise train silently (a transposed (d, B) view
    broadcasts through the similarity matrices) or fail deep inside a term.
    """
    if not isinstance(views, Views):
        raise PluginError(f"{label}: forward must return seqcl.interfaces.Views, got {type(views).__name__}")
    for name, tensor in views.tensors.items():
        shape = tuple(getattr(tensor, "shape", ()))
        declared = (shapes or {}).get(name)
        expected = (batch_size, *declared) if declared is not None else (batch_size, width)
        if not isinstance(tensor, Tensor) or shape != expected:
            what = "declared (B, *view_shapes[name])" if declared is not None else "(B, d)"
            raise PluginError(f"{label}: view {name!r} has shape {shape}, expected {what} = {expected}")
    for pair in views.pairs:
        missing = [n for n in pair if n not in views.tensors]
        if len(pair) != 2 or missing:
            raise PluginError(f"{label}: pair {pair!r} names views it does not return "
                              f"(views: {', '.join(views.tensors) or 'none'})")


#: Without a terminal (nohup, study workers, CI) a progress line is logged this often, in seconds.
PROGRESS_EVERY_S = 30.0


def _progress(batches: Any, total: int, desc: str, batch_size: int, log: Callable[[str], None]) -> Any:
    """A tqdm bar on a terminal; otherwise a line every ``PROGRESS_EVERY_S``: step, samples/s, ETA."""
    if sys.stderr.isatty():
        yield from tqdm(batches, total=total, desc=desc, unit="batch", file=sys.stderr, leave=False,
                        dynamic_ncols=True)
        return
    started = last = time.perf_counter()
    for step, batch in enumerate(batches, 1):
        yield batch
        now = time.perf_counter()
        if now - last >= PROGRESS_EVERY_S and step < total:
            last = now
            rate = step / (now - started)
            eta = (total - step) / rate
            log(f"{desc} | step {step}/{total} | {rate * batch_size:,.0f} samples/s | ETA {eta:.0f}s")


def iterate_batches(samples: TrainSamples, batch_size: int, max_len: int, generator: torch.Generator,
                    device: torch.device, trim: bool = True, group_by_length: bool = False,
                    world: distributed.World = distributed.World()):
    """Shuffled batches of the training samples; the last short batch is kept.

    ``trim`` drops all-padding leading columns on the CPU, before the copy to
    the device (exact, see :func:`seqcl.data.dataset.trim_padding`).
    ``group_by_length`` (not exact: it changes which samples share a batch, and
    so the in-batch negatives of the contrastive terms and the gradient noise)
    sorts each pool of :data:`GROUP_POOL_BATCHES` shuffled batches by length and
    then shuffles the batches, so a batch is about as wide as its rows.

    Everything per batch is a few vectorised tensor ops; on CUDA the copies are
    from pinned memory and asynchronous (no host sync).

    With ``world`` of several ranks, ``batch_size`` is the global batch and each
    rank gets its slice of every batch (:func:`seqcl.distributed.shard_ids`).
    """
    device = torch.device(device)
    order = torch.randperm(len(samples), generator=generator)
    if group_by_length:
        order = _group_by_length(order, samples, batch_size, max_len, generator)
    pin = device.type == "cuda"
    for start in range(0, len(order), batch_size):
        ids = distributed.shard_ids(order[start:start + batch_size], world)
        if ids is None:
            continue
        items = samples.windows(ids, max_len)
        items = trim_padding(items) if trim else items
        targets = samples.targets[ids]
        if pin:
            items, targets, ids = items.pin_memory(), targets.pin_memory(), ids.pin_memory()
        yield Batch(
            items=items.to(device, non_blocking=pin),
            targets=targets.to(device, non_blocking=pin),
            sample_ids=ids.to(device, non_blocking=pin),
        )


#: ``group_by_length`` sorts pools of this many batches by sample length.
GROUP_POOL_BATCHES = 64


def _group_by_length(order: Tensor, samples: TrainSamples, batch_size: int, max_len: int,
                     generator: torch.Generator) -> Tensor:
    """Reorder a shuffled ``order`` so that batches hold similar lengths; batch order shuffled."""
    lengths = (samples.ends - samples.starts).clamp(max=max_len)[order]
    pool = torch.arange(len(order)) // (GROUP_POOL_BATCHES * batch_size)
    order = order[torch.argsort(pool * (max_len + 1) + lengths, stable=True)]
    batches = order.split(batch_size)
    return torch.cat([batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()])


def make_optimizer(model: Model, resolved: Resolved) -> torch.optim.Optimizer:
    """Adam over the model's parameters (:func:`seqcl.optimplan.adam`), or the plan's optimisers."""
    t = resolved.train
    if model.plan is not None:  # one optimiser per parameter group (seqcl.optimplan)
        return model.plan.make_optimizer(t.lr, t.weight_decay)
    return adam(model.parameters(), t.lr, t.weight_decay)


def train_epoch(model: Model, optimizer: torch.optim.Optimizer, samples: TrainSamples, resolved: Resolved,
                generator: torch.Generator, device: torch.device, max_batches: int | None = None,
                progress: str | None = None, log: Callable[[str], None] | None = None,
                first: dict[str, float] | None = None,
                on_step: Callable[[int, StepOutput], None] | None = None,
                ) -> tuple[dict[str, Tensor], dict[str, int], int]:
    """One pass over shuffled batches (or the first ``max_batches``): step, backward, Adam.

    Returns the summed (detached) loss parts, the skip counts and the number of
    batches. A non-finite loss raises :class:`NonFiniteLoss` at its step, before
    the optimizer touches the weights (one host sync per step: free on CPU, a
    few microseconds on CUDA). ``first``, if given and empty, receives the first
    step's loss parts (for the divergence warning). ``on_step(b, output)``, if
    given, is called after the ``b``-th optimizer step (1-based; the loggers).
    """
    t = resolved.train
    model.train(True)
    sums: dict[str, Tensor] = {}
    skipped: dict[str, int] = {}
    n_batches = 0
    batches = iterate_batches(samples, t.batch_size, model.max_len, generator, device,
                              trim=not getattr(model.augmenter, "full_width", False),
                              group_by_length=t.group_by_length, world=distributed.world())
    total_batches = math.ceil(len(samples) / t.batch_size)
    if max_batches is not None:
        total_batches = min(total_batches, max_batches)
    if progress is not None and distributed.world().is_main:
        batches = _progress(batches, total_batches, progress, t.batch_size, log or _stderr)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.autocast_bf16)
    for batch in batches:
        if n_batches >= total_batches:
            break
        if model.plan is not None:  # several steps per batch (seqcl.optimplan)
            step = n_batches + 1
            out = model.plan.step(model, batch, optimizer, training_step, autocast,
                                  lambda o, loss: _check_finite(o, loss, step))
        else:
            with autocast:
                out = model.step(batch)
            _check_finite(out, out.value(), n_batches + 1)
            optimizer.zero_grad(set_to_none=True)
            out.total.backward()
            optimizer.step()
            if model.callbacks.after_step:
                model.callbacks.after_optimizer_step()
        if first is not None and not first:
            first.update({name: float(value) for name, value in out.parts.items()})
        for name, value in out.parts.items():
            sums[name] = sums[name] + value if name in sums else value.float()
        for name in out.skipped:
            skipped[name] = skipped.get(name, 0) + 1
        n_batches += 1
        if on_step is not None:
            on_step(n_batches, out)
    return sums, skipped, n_batches


def _check_finite(out: StepOutput, loss: Tensor, step: int) -> None:
    """Raise :class:`NonFiniteLoss` before the optimiser touches the weights (one host sync)."""
    if not bool(torch.isfinite(loss)):
        raise NonFiniteLoss(_non_finite(out, step))


def _non_finite(out: StepOutput, step: int) -> str:
    bad = [(name, float(v)) for name, v in out.parts.items() if not bool(torch.isfinite(v))]
    name, value = bad[0] if bad else ("total", float(out.value()))
    what = f"loss term {name!r}" if name != "main" else "the main loss"
    return f"step {step}: {what} is not finite ({value})"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    epochs_run: int
    seconds: float

    @classmethod
    def from_summary(cls, run_dir: Path) -> "TrainResult":
        """The result of a finished run, read back from its ``summary.json``."""
        s = json.loads((Path(run_dir) / "summary.json").read_text())
        return cls(Path(run_dir), s["best_epoch"], s["valid"], s["test"], s["epochs_run"], s["seconds"])


def _set_seed(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def prepare(resolved: Resolved, plugins: LoadedPlugins) -> tuple[SequenceData, str, Model]:
    """Load data and build the model (used by ``train`` and by benchmarks)."""
    data, key = load_data(resolved.dataset, resolved.data)
    samples = training_samples(data)
    if len(samples) == 0:
        raise ConfigError(f"{resolved.dataset}: no training samples (every user needs at least 4 items)")
    device = torch.device(resolved.train.device)
    context = BuildContext(
        num_items=data.num_items,
        max_len=resolved.data.max_len,
        hidden_size=int(resolved.encoder_options.hidden_size),  # every encoder's options have it (registry)
        train=samples,
        cache_dir=resolved.data.resolved_cache_dir(),
        data_key=key,
        device=device,
        seed=resolved.train.seed,
    )
    return data, key, build_model(resolved, plugins.registry, context).to(device)


def distribute(model: Model, seed: int) -> None:
    """Under torchrun: own random streams for ranks > 0, and ``model.step`` through a DDP replica."""
    world = distributed.world()
    if world.size > 1 and model.plan is not None:
        raise ConfigError("optimisation plans (several optimiser steps per batch) do not run under torchrun yet")
    if world.size > 1:
        distributed.decorrelate(model.modules(), seed, world)
        model.replica = distributed.replicate(model.modules(), lambda batch: training_step(model, batch))


def train(resolved: Resolved, plugins: LoadedPlugins, log: Callable[[str], None] | None = None,
          init: dict[str, Any] | None = None, init_label: str = "") -> TrainResult:
    """Train with early stopping on validation; test with the best weights; write the run dir.

    The run dir gets ``last.pt`` after every epoch and ``best.pt`` whenever
    validation improves, so an interrupted run continues with :func:`resume`.
    A run with stages trains each in turn (:mod:`seqcl.stages`); ``init`` (component
    name → state) starts the model from a previous stage's components.
    Under ``torchrun`` the ranks train one model together (``seqcl.distributed``)
    and rank 0 alone writes the run dir and logs.
    """
    if resolved.stages:
        if distributed.launched():
            raise ConfigError("runs in stages do not run under torchrun yet; train each stage in one process")
        return stages.train(resolved, plugins, log or _stderr, _SINGLE)
    with distributed.session() as world:
        return _run(resolved, plugins, None, _rank_log(world, log), None, init, init_label)


def resume(path: str | Path, plugins: LoadedPlugins, log: Callable[[str], None] | None = None,
           overrides: list[tuple[str, Any]] | None = None) -> TrainResult:
    """Continue an interrupted run from its ``last.pt``; the result equals an uninterrupted run (CPU, same device).

    ``overrides`` may change only how the run executes (:data:`seqcl.config.EXECUTION_KEYS`,
    e.g. ``train.threads`` on a machine with more cores, ``train.device=cuda`` on a GPU); the
    run's ``config.yaml`` records them, ``metrics.jsonl`` each epoch's device. Refused (one
    line): any other key, a finished or failed run, a folder without a checkpoint, a
    ``config.yaml`` or data file changed since the checkpoint.
    """
    overrides = execution_overrides(list(overrides or []), f"--resume {path}")
    if stages.is_staged(path):
        if distributed.launched():
            raise ConfigError("runs in stages do not run under torchrun yet; resume it in one process")
        return stages.resume(path, plugins, log or _stderr, _SINGLE, overrides)
    with distributed.session() as world:
        log = _rank_log(world, log)
        final, ckpt, tree = distributed.from_main(lambda: _read_resume(path, plugins, overrides, log))  # rank 0's
        resolved = resolve(plugins.registry, tree)
        run = RunDir(final) if world.is_main else SilentRunDir(final)
        return _run(resolved, plugins, run, log, ckpt)


def _read_resume(path: str | Path, plugins: LoadedPlugins, overrides: list[tuple[str, Any]],
                 log: Callable[[str], None]) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """The run folder, its checkpoint and its config (``overrides`` applied and recorded), checked against each other."""
    run = RunDir.open(path)
    ckpt = checkpoint.load(run.path / LAST)
    saved = read_yaml(run.path / "config.yaml")
    # the overrides first: config.yaml may name a device this machine lacks (a GPU run continued on CPU)
    resolved = resolve(plugins.registry, saved, overrides)
    # config.yaml decides the execution keys: a resume that changed them may stop before its first checkpoint
    changed = [k for k in checkpoint.changed_keys(ckpt["config"], resolved.tree) if k not in EXECUTION_KEYS]
    if changed:
        raise ConfigError(f"--resume {path}: config.yaml changed since the checkpoint ({', '.join(changed[:5])}); "
                          "start a new run instead")
    if not overrides:
        return run.final, ckpt, resolved.tree
    moved = execution_changes(resolved.tree, saved)
    if moved:
        before = flatten(saved)
        log("resuming with " + ", ".join(f"{k}={value} (was {before.get(k, 'unset')})" for k, value in moved))
        run.write_text("config.yaml", resolved.to_yaml())
    return run.final, ckpt, resolved.tree


def _rank_log(world: distributed.World, log: Callable[[str], None] | None) -> Callable[[str], None]:
    """Rank 0 logs; the other ranks of a torchrun job stay silent."""
    return (log or _stderr) if world.is_main else (lambda msg: None)


def _new_run_dir(resolved: Resolved, plugins: LoadedPlugins) -> RunDir:
    """Claim the run dir and write its config; a folder that can't be written fails here, before training."""
    run = RunDir.create(resolved.run.dir, resolved.run.name, resolved.augmenter, resolved.dataset)
    try:
        run.write_text("config.yaml", resolved.to_yaml())
        run.write_json("plugins.json", plugins.sources)
    except BaseException:
        shutil.rmtree(run.path, ignore_errors=True)  # nothing trained yet: leave nothing behind
        raise
    return run


def _run(resolved: Resolved, plugins: LoadedPlugins, run: RunDir | None, log: Callable[[str], None],
         ckpt: dict[str, Any] | None, init: dict[str, Any] | None = None, init_label: str = "") -> TrainResult:
    """Set up (data, model, optimizer, or the checkpoint's state), then fit; ``run`` None: a new run dir."""
    t = resolved.train
    apply_malloc_policy(t.malloc)  # compact: RSS would otherwise grow over the run (seqcl.memory)
    reset_peak_rss()  # summary.json's peak_rss_mb is this run's, not an earlier run's in this process
    if t.threads:
        torch.set_num_threads(t.threads)
    if t.metric not in _metric_names(resolved):
        raise ConfigError(f"train.metric must be one of {', '.join(_metric_names(resolved))}, got {t.metric!r}")
    world = distributed.world()
    if world.size > 1 and torch.device(t.device).index is not None:
        raise ConfigError(f"train.device={t.device}: under torchrun set train.device={torch.device(t.device).type} "
                          "(rank r uses device LOCAL_RANK)")
    generator = _set_seed(t.seed)
    data, key, model = prepare(resolved, plugins)
    if ckpt is not None and ckpt["data_key"] != key:
        raise ConfigError(f"--resume {run.path}: the data changed since the checkpoint ({resolved.dataset}: "
                          "content or preprocessing differs); start a new run instead")
    samples = training_samples(data)
    valid_set, test_set = eval_set(data, "valid"), eval_set(data, "test")
    device = torch.device(t.device)
    if init:
        model.load_components(init, init_label or "init")
    distribute(model, t.seed)
    optimizer = make_optimizer(model, resolved)
    state = FitState()
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        checkpoint.set_rng_state(ckpt["rng"], generator)
        distributed.restore_streams(model.components(), ckpt.get("ranks"), t.seed)
        state = checkpoint.fit_state(ckpt)
        log(f"resuming {run.path} after epoch {state.epoch} (best epoch {state.best_epoch})")
    else:
        _warn_trivial(valid_set, data, resolved, log)
        final = distributed.from_main(lambda: _new_run_dir(resolved, plugins).final)
        run = RunDir(final) if world.is_main else SilentRunDir(final)
    write_inference_files(run, data, model)
    loggers = _start_loggers(resolved, plugins, run, state, len(samples), resumed=ckpt is not None, log=log)
    log(f"run dir {run.final} | {data.num_users} users, {data.num_items} items, {len(samples)} training samples")
    try:
        result = _fit(model, optimizer, samples, valid_set, test_set, resolved, generator, device, run, log,
                      state, ckpt["best_model"] if ckpt else None, key, loggers)
        final = run.finish()
    except KeyboardInterrupt:
        loggers.close("interrupted")
        raise  # _fit said what is kept and how to resume
    except NonFiniteLoss:
        loggers.close("failed")
        raise
    except BaseException:
        loggers.close("failed")
        log(f"run stopped; partial results left in {run.path}")
        raise
    return dataclasses.replace(result, run_dir=final)


def _start_loggers(resolved: Resolved, plugins: LoadedPlugins, run: RunDir, state: FitState, n_samples: int,
                   resumed: bool, log: Callable[[str], None]) -> Loggers:
    """The loggers of ``run.loggers``; one that cannot start leaves no new run folder behind."""
    start_step = state.epoch * math.ceil(n_samples / resolved.train.batch_size)
    context = LoggerContext(run.path, run.final.name, resolved.tree, start_step, resumed)
    started: list[Loggers] = []
    try:  # rank 0 alone logs; a logger that cannot start stops every rank with its one-line error
        distributed.from_main(lambda: started.append(Loggers.start(resolved.run.loggers, plugins.registry,
                                                                   context, log)))
        return started[0] if started else Loggers.start([], plugins.registry, context, log)
    except BaseException:
        if not resumed and distributed.world().is_main:
            shutil.rmtree(run.path, ignore_errors=True)  # nothing trained yet
        raise


def write_inference_files(run: RunDir, data: SequenceData, model: Model) -> None:
    """What ``seqcl.load_run`` needs besides ``config.yaml`` and ``best.pt``, so no data file is read again.

    ``ids.json``: the original item and user ids (:mod:`seqcl.ids`); ``model.json``:
    the sizes the encoder is built with (items, the augmenter's extra item rows).
    Written again on resume (same data, checked by its key): older runs get them too.
    """
    run.write_json(IDS_FILE, IdMap.of(data).to_json())
    run.write_json(MODEL_FILE, {"format": 1, "num_items": model.num_items, "max_len": model.max_len,
                                "extra_rows": int(getattr(model.augmenter, "extra_rows", 0))})


def _warn_trivial(valid_set: Any, data: SequenceData, resolved: Resolved, log: Callable[[str], None]) -> None:
    """Warn when a metric cannot discriminate: users with ≤ k rankable items have HR@k = 1 by construction."""
    if data.num_users == 1:
        log("warning: the data set has a single user: every metric is that one user's hit or miss")
    for k in resolved.eval.ks:
        n = trivially_ranked(valid_set, data.num_items, k, resolved.eval.exclude_history)
        if n:
            log(f"warning: {n} of {len(valid_set)} users have at most {k} rankable items "
                f"({data.num_items} items in all): their HR@{k} is 1 whatever the model")
            break


def _metric_names(resolved: Resolved) -> list[str]:
    return [f"{m}@{k}" for k in resolved.eval.ks for m in ("hr", "ndcg", "mrr")]


def _evaluate(model: Model, split_set: Any, resolved: Resolved, device: torch.device,
              exclude_history: bool | None = None) -> EvalResult:
    """Full ranking under ``eval.exclude_history``, or under the protocol given."""
    return evaluate(
        model.encoder, split_set, model.num_items, model.max_len, ks=resolved.eval.ks,
        exclude_history=resolved.eval.exclude_history if exclude_history is None else exclude_history,
        batch_size=resolved.eval.batch_size, device=device,
    )


#: The two test protocols every run reports on its best checkpoint (issue #11): the user's full
#: history excluded from the ranking (SPEC §1, the default) and kept in it (RecBole's protocol).
TEST_PROTOCOLS = {"test_history_excluded": True, "test_history_kept": False}


def _test_protocols(model: Model, test_set: Any, resolved: Resolved, device: torch.device,
                    configured: EvalResult) -> dict[str, EvalResult]:
    """The test split under both protocols; the configured one is reused, not evaluated again."""
    return {name: configured if flag == resolved.eval.exclude_history
            else _evaluate(model, test_set, resolved, device, exclude_history=flag)
            for name, flag in TEST_PROTOCOLS.items()}


#: A loss part this many times its first-step value, or a weighted term this many times the main
#: loss, gets a warning: the run is probably diverging or dominated by the term (lr, τ, weights).
DIVERGENCE_FACTOR = 100.0


def _divergence_warnings(losses: dict[str, float], state: FitState, weights: dict[str, float]) -> list[str]:
    """Cheap checks on the epoch's mean losses against the first step's; each warning once per run."""
    out = []
    for name, value in losses.items():
        first = state.first.get(name, 0.0)
        if first > 1e-3 and value > DIVERGENCE_FACTOR * first and f"grow:{name}" not in state.warned:
            state.warned.append(f"grow:{name}")
            out.append(f"{name} loss {value:.4g} is {value / first:.0f}x its first step's {first:.4g}: "
                       "the run is diverging (check train.lr and the temperatures)")
        share = weights.get(name, 0.0) * value
        main = losses.get("main", 0.0)
        if name != "main" and main > 0 and share > DIVERGENCE_FACTOR * main and f"dominate:{name}" not in state.warned:
            state.warned.append(f"dominate:{name}")
            out.append(f"weighted {name} loss {share:.4g} is {share / main:.0f}x the main loss {main:.4g}: "
                       "it dominates training (check its weight and temperature)")
    main, first = losses.get("main"), state.first.get("main")
    if state.epoch >= 2 and main is not None and first and main >= first and "stall:main" not in state.warned:
        state.warned.append("stall:main")
        out.append(f"the main loss has not decreased since the first step ({first:.4g} -> {main:.4g} "
                   f"at epoch {state.epoch}): the model is not learning")
    return out


def _fit(model, optimizer, samples, valid_set, test_set, resolved, generator, device, run, log, state,
         best_state, data_key, loggers: Loggers | None = None) -> TrainResult:
    t = resolved.train
    loggers = loggers or Loggers([], log)
    per_epoch = math.ceil(len(samples) / t.batch_size)  # batches, hence steps, per epoch
    records = [r for r in run.read_jsonl("metrics.jsonl") if r["epoch"] <= state.epoch]
    started = time.perf_counter() - state.seconds
    if best_state is not None and state.best_epoch:  # a kill between best.pt and last.pt: rewrite it
        run.save(BEST, best_state)
    saved = state.epoch
    if model.callbacks.fit_start:
        model.callbacks.on_fit_start(fit_context(model.encoder, samples, t.batch_size, model.max_len, device,
                                                 state.epoch))
        distributed.sync_from_main(model.modules())  # ranks draw their own streams: keep rank 0's state
    try:
        while not state.stopped and state.epoch < t.epochs:
            epoch = state.epoch + 1
            model.callbacks.on_epoch_start(epoch)
            epoch_start = time.perf_counter()
            on_step = _step_logger(loggers, epoch, per_epoch) if loggers.wants_steps else None
            try:
                sums, skipped, n_batches = train_epoch(model, optimizer, samples, resolved, generator, device,
                                                       progress=f"epoch {epoch}", log=log, first=state.first,
                                                       on_step=on_step)
            except NonFiniteLoss as exc:
                kept = f"epoch {state.epoch} kept in {run.path}" if state.epoch else f"no epoch finished; {run.path}"
                reason = f"epoch {epoch}, {exc}"
                run.mark_failed(reason)
                raise NonFiniteLoss(f"{reason}; run stopped ({kept}, marked failed)") from None
            train_seconds = time.perf_counter() - epoch_start
            losses = {name: float(value) / n_batches for name, value in sums.items()}
            valid = _evaluate(model, valid_set, resolved, device).metrics
            trim_heap()  # fragmentation's free pages back to the OS each epoch (seqcl.memory)
            seconds = time.perf_counter() - epoch_start
            score = valid[t.metric]
            improved = score > state.best_score
            state.epoch = epoch
            if improved:
                state.best_score, state.best_epoch, state.best_valid, state.bad_epochs = score, epoch, valid, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                state.bad_epochs += 1
            state.stopped = state.bad_epochs >= t.patience
            state.seconds = time.perf_counter() - started
            for warning in _divergence_warnings(losses, state, model.weights):
                log(f"warning: epoch {epoch}: {warning}")
            records.append({"epoch": epoch, "loss": losses, "skipped": skipped, "valid": valid,
                            "train_seconds": round(train_seconds, 3), "seconds": round(seconds, 3),
                            "world_size": distributed.world().size, "device": str(device),
                            "rss_mb": rss_mb(), "peak_rss_mb": peak_rss_mb()})  # memory over epochs (rank 0's)
            run.write_jsonl("metrics.jsonl", records)
            if improved:
                run.save(BEST, best_state)
            run.save(LAST, checkpoint.build(model.state_dict(), optimizer, generator, state, best_state,
                                            resolved.tree, data_key))
            saved = epoch
            loggers.epoch({**records[-1], "step": epoch * per_epoch})
            parts = ", ".join(f"{k} {v:.4f}" for k, v in losses.items())
            log(f"epoch {epoch:3d} | {parts} | valid {t.metric} {score:.4f}{' *' if improved else ''} | {seconds:.1f}s")
            if state.stopped:
                log(f"early stop: no improvement of valid {t.metric} for {t.patience} epochs")
    except KeyboardInterrupt:
        log(f"interrupted; epoch {saved} is saved: resume with  seqcl train --resume {run.path}" if saved
            else f"interrupted before the first epoch ended; nothing to resume in {run.path}")
        raise
    assert best_state is not None
    model.load_state_dict(best_state)
    valid_result = _evaluate(model, valid_set, resolved, device)
    test_result = _evaluate(model, test_set, resolved, device)
    protocols = _test_protocols(model, test_set, resolved, device, test_result)
    total = time.perf_counter() - started
    if resolved.run.save_ranks:
        run.save("ranks.pt", {"valid": valid_result.ranks.to(torch.int32), "test": test_result.ranks.to(torch.int32),
                              **{name: r.ranks.to(torch.int32) for name, r in protocols.items()}})
    summary = {
        "augmenter": resolved.augmenter, "encoder": resolved.encoder, "dataset": resolved.dataset,
        "terms": resolved.terms, "best_epoch": state.best_epoch, "epochs_run": state.epoch,
        "valid": valid_result.metrics, "test": test_result.metrics,
        **{name: r.metrics for name, r in protocols.items()}, "seconds": round(total, 2),
        "seed": t.seed, "peak_rss_mb": peak_rss_mb(),  # rank 0's under torchrun
        "world_size": distributed.world().size,  # processes that trained it (torchrun ranks; 1 without)
    }
    run.write_json("summary.json", summary)
    loggers.close("finished", summary)
    return TrainResult(run.final, state.best_epoch, valid_result.metrics, test_result.metrics, state.epoch, total)


def _step_logger(loggers: Loggers, epoch: int, per_epoch: int) -> Callable[[int, StepOutput], None]:
    """The per-step callback of one epoch: global step numbers, losses as floats (a host sync each)."""

    def on_step(batch: int, out: StepOutput) -> None:
        loggers.step({"step": (epoch - 1) * per_epoch + batch, "epoch": epoch,
                      "loss": {name: float(value) for name, value in out.parts.items()},
                      "total": float(out.value().detach())})  # the global batch's loss under torchrun

    return on_step


#: what a run in stages uses to train each stage (seqcl.stages cannot import this module)
_SINGLE = stages.SingleRun(train, resume, _new_run_dir, TrainResult.from_summary)


def format_table(result: TrainResult) -> str:
    """A plain-text metrics table for stdout (the metrics' own order: hr, ndcg, mrr per K)."""
    cols = sorted(result.test, key=lambda c: (("hr", "ndcg", "mrr").index(c.split("@")[0]), int(c.split("@")[1])))
    head = "split | " + " | ".join(f"{c:>8}" for c in cols)
    rows = [head, "-" * len(head)]
    for split, metrics in (("valid", result.valid), ("test", result.test)):
        rows.append(f"{split:5} | " + " | ".join(f"{metrics[c]:8.4f}" for c in cols))
    return "\n".join(rows)
