"""Where a training step's time goes, per stage and augmenter, and each augmenter's step time ÷ ``none``'s.

    python benchmarks/stages.py --dataset ../shared/data/Beauty.txt --augmenters none,random,dropout,aclsrec
    python benchmarks/stages.py --dataset ../shared/data/Beauty.txt --augmenters none,cfit4srec,mclrec,elcrec --plain

The step of ``seqcl.training.training_step``, cut into timed stages: the main
pass (``main_pass``, or ``encode`` for ``none``), the objective, the augmenter's
views, the loss terms, backward, and Adam. Every arm gets the same fixed batches
(seed 0) and its own model (same seed). Arms run **alternately**, batch by batch,
so the load of other processes hits all of them alike; the ratio to ``none`` is
taken per rep (median step time over the rep's batches) and its median over reps
is reported — on a loaded machine the ratios hold where absolute times do not.
The default clock is the thread's CPU time (``--clock cpu``; with one torch
thread, forward, backward and Adam all run on the calling thread), which leaves
out the time the process waits for a core; ``--clock wall`` for wall time.
The allocator is set up as ``seqcl train`` sets it (``seqcl.memory``).

An augmenter with an optimisation plan (MCLRec: three optimiser steps per batch)
runs its whole plan per batch (``seqcl.optimplan``): its forward passes are timed
stage by stage and summed over the plan's steps, and "backward" is then the
rest of the batch (every backward pass and optimiser step of the plan). The
``after_optimizer_step`` callbacks run after each step, as in training (timed
with Adam). Centres that a component sets at fit start (ELCRec's k-means) are
drawn at random instead (unit rows): the step's cost does not depend on them.

``--plain`` adds, for each of ``cfit4srec``, ``mclrec``, ``elcrec``, an arm
``NAME plain`` that runs the path its exactness test compares the fast one with
(the code before issue #14's speed-ups: CFIT4SRec's full-width batches, padded
main pass and six shifted filters; MCLRec's plan steps computing every part;
ELCRec's argmin with autograd recording), on the same batches, alternated with
the other arms: before and after measured side by side, under the same load.
With ``--encoder bert4rec`` or ``--encoder s3rec`` (every arm on that encoder),
``none plain`` is the encoder on the padded layout, the path before its packed
one (``--set`` adds config overrides, e.g. S3Rec's pre-training stage):

    python benchmarks/stages.py --encoder bert4rec --augmenters none --plain
    python benchmarks/stages.py --encoder s3rec --augmenters none --plain --batch-size 100 \
        --set objective=mip --set s3rec.attention=bidirectional --set stages=[]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import types
from contextlib import nullcontext
from pathlib import Path

from seqcl.memory import apply_malloc_policy, enable_thp_env  # noqa: I001  (before torch, as seqcl.cli)

enable_thp_env()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from einops import rearrange, repeat  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, machine, markdown_table, median  # noqa: E402
from step import Arm, Runner  # noqa: E402

from seqcl.interfaces import Batch, Views  # noqa: E402
from seqcl.plugins import load_plugins  # noqa: E402
from seqcl.training import StepOutput, main_pass  # noqa: E402

STAGES = ("main pass", "objective", "views", "terms", "backward", "adam")
PLAIN = ("cfit4srec", "mclrec", "elcrec")  # augmenters with a recorded plain path (--plain)
#: encoders whose packed layout has a padded reference (--plain: arm "none plain")
PADDED_REFERENCE = ("bert4rec", "s3rec")


def timed_forward(model, batch, times: dict[str, float], clock=time.thread_time, parts=None) -> StepOutput:
    """``training_step`` (one process, the ``parts`` a plan step asks for), each stage's time added to ``times``."""
    t = clock()

    def lap(name: str) -> None:
        nonlocal t
        now = clock()
        times[name] = times.get(name, 0.0) + now - t
        t = now

    terms = {n: term for n, term in model.terms.items() if parts is None or n in parts}
    wants_main = parts is None or "main" in parts
    h_in = hidden = h = None
    if terms and model.augmenter.hidden_slots != "none":
        h_in, hidden = main_pass(model.encoder, model.augmenter, batch.items)
        h = hidden[:, -1]
    elif wants_main and model.objective.uses_main_pass:  # as training_step: BERT4Rec's cloze runs its own pass
        h = model.encoder.encode(batch.items)
    lap("main pass")
    total, values = None, {}
    if wants_main:
        total = values["main"] = model.objective(model.encoder, batch, h if model.objective.uses_main_pass else None)
    lap("objective")
    if terms:
        views = model.augmenter(batch, model.encoder, h_in, hidden)
        lap("views")
        for name, term in terms.items():
            values[name] = term(views, batch)
            if model.weights[name] != 0.0:
                weighted = model.weights[name] * values[name]
                total = weighted if total is None else total + weighted
    lap("terms")
    return StepOutput(total, {}, [], values)


def timed_step(runner: Runner, batch, clock=time.thread_time) -> dict[str, float]:
    """One training step (as ``training_step`` + backward + Adam, or the model's whole optimisation
    plan), each stage timed by ``clock``."""
    with getattr(runner, "patch", nullcontext)():
        return _timed_step(runner, batch, clock)


def _timed_step(runner: Runner, batch, clock) -> dict[str, float]:
    model, times = runner.model, {}
    every_part = getattr(runner, "every_part", False)
    if model.plan is not None:
        t0 = clock()
        model.plan.step(model, batch, runner.optimizer,
                        lambda m, b, parts: timed_forward(m, b, times, clock, None if every_part else parts),
                        nullcontext(), lambda out, loss: None)
        times["backward"] = clock() - t0 - sum(times.values())  # every backward and optimiser step of the plan
        return times
    out = timed_forward(model, batch, times, clock)
    t = clock()
    runner.optimizer.zero_grad(set_to_none=True)
    out.total.backward()
    times["backward"] = clock() - t
    t = clock()
    runner.optimizer.step()
    model.callbacks.after_optimizer_step()
    times["adam"] = clock() - t
    return times


def plain_cfit4srec_forward(self, batch, encoder, h_in, hidden) -> Views:
    """CFIT4SRec's views before the fast path (the reference of ``tests/plugins/test_cfit4srec.py``):
    six filters on the centred spectrum (two rolls each), the encoder's all-slot ``contextualize``."""
    from seqcl_cfit4srec.filters import frequency_filter

    x = encoder.embed_without_dropout(batch.items)
    six = frequency_filter(x.unsqueeze(0), self.masks(x.device).unsqueeze(1))
    out = encoder.contextualize(encoder.embedding_dropout(rearrange(six, "v b t d -> (v b) t d")),
                                repeat(batch.items, "b t -> (v b) t", v=6))
    views = rearrange(out, "(v b) t d -> v b (t d)", v=6)
    return Views(dict(zip([name for pair in self.pairs for name in pair], views)), list(self.pairs))


@contextlib.contextmanager
def recorded_argmin():
    """ELCRec's nearest centre as before: the argmin of distances that autograd records."""
    import seqcl_elcrec.formulas as f

    fast = f.nearest
    f.nearest = lambda x, c: f.sq_distances(x, c).argmin(dim=1)
    try:
        yield
    finally:
        f.nearest = fast


def make_plain(runner: Runner) -> None:
    """Switch ``runner`` to its augmenter's plain path (see the module doc)."""
    name, model = runner.arm.augmenter, runner.model
    if name == "cfit4srec":
        aug, t = model.augmenter, model.max_len
        aug.hidden_slots, aug.reads_embedding = "all", True  # the core computes every slot of H
        aug.forward = types.MethodType(plain_cfit4srec_forward, aug)
        model.encoder.request_full_width()  # padded layout for every pass
        runner.batches = [Batch(F.pad(b.items, (t - b.items.shape[1], 0)), b.targets, b.sample_ids)
                          for b in runner.batches]  # full-width batches: the same samples
    elif name == "mclrec":
        runner.every_part = True  # every plan step computes the main pass, CE and every term
    elif name == "elcrec":
        runner.patch = recorded_argmin
    elif name == "none":  # only with --encoder bert4rec or s3rec (main): every pass on the padded layout
        model.encoder.layout_mode = "padded"
    else:
        raise SystemExit(f"--plain: no plain path recorded for {name}")


def random_fit_state(runner: Runner) -> None:
    """Stand-in for state set at fit start (ELCRec's k-means centres): unit rows at random."""
    centres = getattr(runner.model.augmenter, "centres", None)
    if isinstance(centres, torch.Tensor):
        with torch.no_grad():
            gen = torch.Generator().manual_seed(0)
            centres.copy_(torch.nn.functional.normalize(torch.randn(centres.shape, generator=gen), dim=-1))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default=str(HERE.parent.parent / "shared" / "data" / "Beauty.txt"))
    ap.add_argument("--augmenters", default="none,random,dropout,aclsrec")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                    help="cpu: the thread's CPU time (needs --threads 1); wall: perf_counter")
    ap.add_argument("--plain", action="store_true",
                    help=f"add a 'NAME plain' arm for each of {', '.join(PLAIN)} (the path before the speed-ups; "
                         f"with --encoder bert4rec or s3rec also 'none plain': the padded layout)")
    ap.add_argument("--encoder", default="sasrec", help="the encoder of every arm (e.g. bert4rec)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every arm (repeatable)")
    args = ap.parse_args(argv)
    if args.clock == "cpu" and args.threads != 1:
        ap.error("--clock cpu measures the calling thread only: use --threads 1 or --clock wall")
    torch.set_num_threads(args.threads)
    apply_malloc_policy()  # the allocator settings of a real run (seqcl.training; train.malloc=compact)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    plugins = load_plugins()
    names = [a.strip() for a in args.augmenters.split(",")]
    if names[0] != "none":
        names = ["none", *[n for n in names if n != "none"]]
    arms = [Arm(n, n) for n in names]
    if args.plain:
        plain = PLAIN + (("none",) if args.encoder in PADDED_REFERENCE else ())
        arms += [Arm(f"{n} plain", n) for n in names if n in plain]
        names = [a.label for a in arms]
    runners = [Runner(a, args.dataset, [f"encoder={args.encoder}", *args.set], plugins, args.batches,
                      args.batch_size)
               for a in arms]
    for r in runners:
        if r.arm.label.endswith(" plain"):
            make_plain(r)
    for r in runners:
        random_fit_state(r)
    for r in runners:  # warm-up
        for b in r.batches:
            timed_step(r, b, clock)
    per_rep: dict[str, list[list[dict[str, float]]]] = {n: [] for n in names}
    for _ in range(args.reps):
        rows = {n: [] for n in names}
        for i in range(args.batches):
            for n, r in zip(names, runners):
                rows[n].append(timed_step(r, r.batches[i], clock))
        for n in names:
            per_rep[n].append(rows[n])
    step_ms = {n: [median([sum(s.values()) for s in rep]) * 1e3 for rep in per_rep[n]] for n in names}
    table = []
    for n in names:
        steps = [s for rep in per_rep[n] for s in rep]
        stage_ms = [median([s.get(k, 0.0) for s in steps]) * 1e3 for k in STAGES]
        ratios = [a / b for a, b in zip(step_ms[n], step_ms["none"])]
        table.append([n, *[f"{v:.1f}" for v in stage_ms], f"{median(step_ms[n]):.1f}",
                      f"{median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})"])
    m = machine()
    print(f"{args.clock} clock, {args.threads} thread(s), load average {m['loadavg']}, {args.batches} batches × {args.reps} reps, "
          f"batch {args.batch_size}; stage medians in ms")
    print(markdown_table(["augmenter", *STAGES, "step", "÷ none (median, range over reps)"], table))


if __name__ == "__main__":
    main()
