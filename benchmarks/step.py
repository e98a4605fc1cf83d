"""In-process microbenchmark of one training step (forward, backward, Adam), per arm.

    python benchmarks/step.py --dataset ../shared/data/Beauty.txt              # every registered augmenter
    python benchmarks/step.py --dataset ../shared/data/Beauty.txt --ablation   # each optimisation on its own

Every arm gets the same fixed batches (drawn once, seed 0) and its own model
(same seed, so the same initial weights). Arms are timed **alternately**, each
rep runs every batch of every arm, and the figure is the median step time over
reps × batches, so load from other processes hits all arms alike. The machine's
fp32 GEMM peak is measured in the same run, and each arm's executed matmul
FLOPs (``torch.utils.flop_counter``) per step are reported as achieved GFLOP/s
and as a fraction of that peak.

``--ablation`` times SASRec (``none``) and ACLSRec with the optimisations
switched on one at a time (see ``ARMS_ABLATION``); the packed arms are exact
(``tests/test_exactness.py``), ``group_by_length`` is not.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, git_commit, machine, markdown_table, matmul_peak_gflops, median  # noqa: E402

from seqcl.config import parse_assignment, resolve  # noqa: E402
from seqcl.data.dataset import training_samples  # noqa: E402
from seqcl.interfaces import Encoder  # noqa: E402
from seqcl.plugins import load_plugins  # noqa: E402
from seqcl.training import iterate_batches, make_optimizer, prepare, training_step  # noqa: E402


@dataclass
class Arm:
    label: str
    augmenter: str
    overrides: list[str] = field(default_factory=list)
    adam: str = "fused"  # fused | loop
    one_bucket: bool = False  # packed tokens, attention on the padded layout
    full_last_layer: bool = False  # encode() = contextualize(embed())[:, -1]
    index_select_backward: bool = False  # packing with index_select/index_copy's own (scatter-add) backwards
    group_by_length: bool = False
    exact: bool = True


ARMS_ABLATION = [
    Arm("none: padded layout, for-loop Adam (before)", "none", ["sasrec.layout=padded"], adam="loop"),
    Arm("none: + packed per-token layers (index_select)", "none", ["sasrec.layout=packed"], adam="loop",
        one_bucket=True, full_last_layer=True, index_select_backward=True),
    Arm("none: + copy-backward packing", "none", ["sasrec.layout=packed"], adam="loop", one_bucket=True,
        full_last_layer=True),
    Arm("none: + length-bucketed attention", "none", ["sasrec.layout=packed"], adam="loop", full_last_layer=True),
    Arm("none: + last layer for the last slot only", "none", ["sasrec.layout=packed"], adam="loop"),
    Arm("none: + fused Adam (all on: the default)", "none", []),
    Arm("none: + group_by_length (NOT exact)", "none", [], group_by_length=True, exact=False),
    Arm("aclsrec: padded layout, for-loop Adam (before)", "aclsrec", ["sasrec.layout=padded"], adam="loop"),
    Arm("aclsrec: all exact optimisations (the default)", "aclsrec", []),
]


def _plain_gather(x, index):
    return x.index_select(0, index)


def _plain_scatter(x, index, rows):
    return x.new_zeros((rows, *x.shape[1:])).index_copy(0, index, x)


@contextlib.contextmanager
def patched(arm: Arm):
    """Switch an optimisation off for the duration of one arm's steps."""
    import seqcl_sasrec.encoder as enc_mod
    import seqcl_sasrec.packing as pack_mod

    mods = (enc_mod, pack_mod)  # the packed layout's row moves, and the model's last-token gather
    saved = [(m.gather_rows, m.scatter_rows) for m in mods]
    if arm.index_select_backward:
        for m in mods:
            m.gather_rows, m.scatter_rows = _plain_gather, _plain_scatter
    try:
        yield
    finally:
        for m, (gather, scatter) in zip(mods, saved):
            m.gather_rows, m.scatter_rows = gather, scatter


class Runner:
    def __init__(self, arm: Arm, dataset: str, extra: list[str], plugins, n_batches: int, batch_size: int):
        self.arm = arm
        pairs = [parse_assignment(s) for s in [*extra, *arm.overrides]]
        pairs += [("augmenter", arm.augmenter), ("dataset", dataset), ("train.batch_size", batch_size)]
        self.resolved = resolve(plugins.registry, overrides=pairs)
        torch.manual_seed(self.resolved.train.seed)
        self.data, _, self.model = prepare(self.resolved, plugins)
        enc = self.model.encoder
        if arm.one_bucket:
            enc.bucket_bounds = (10**9,)
        if arm.full_last_layer:
            enc.encode = lambda items, enc=enc: Encoder.encode(enc, items)  # type: ignore[method-assign]
        if arm.adam == "loop":
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.resolved.train.lr, foreach=False)
        else:
            self.optimizer = make_optimizer(self.model, self.resolved)
        samples = training_samples(self.data)
        gen = torch.Generator().manual_seed(0)
        batches = iterate_batches(samples, batch_size, self.model.max_len, gen, torch.device("cpu"),
                                  trim=not getattr(self.model.augmenter, "full_width", False),
                                  group_by_length=arm.group_by_length)
        self.batches = [b for _, b in zip(range(n_batches), batches)]
        self.generator = torch.Generator().manual_seed(1)
        self.times: list[float] = []
        self.model.train(True)

    def step(self, batch) -> None:
        out = training_step(self.model, batch)
        self.optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        self.optimizer.step()

    def run(self, record: bool = True) -> None:
        with patched(self.arm):
            for batch in self.batches:
                t0 = time.perf_counter()
                self.step(batch)
                if record:
                    self.times.append(time.perf_counter() - t0)

    def flops(self) -> float:
        """Matmul FLOPs of one step's forward + backward, averaged over the arm's batches."""
        counter = FlopCounterMode(display=False)
        with patched(self.arm), counter:
            for batch in self.batches:
                out = training_step(self.model, batch)
                out.total.backward()
        self.optimizer.zero_grad(set_to_none=True)
        return float(counter.get_total_flops()) / len(self.batches)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default=str(HERE.parent.parent / "shared" / "data" / "Beauty.txt"))
    ap.add_argument("--augmenters", default="all", help="comma list, or 'all' registered augmenters")
    ap.add_argument("--ablation", action="store_true", help="time each optimisation on its own (none, aclsrec)")
    ap.add_argument("--batches", type=int, default=8, help="fixed batches per arm and rep")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--set", dest="extra", action="append", default=[], help="config override KEY=VALUE")
    ap.add_argument("--out", default="", help="JSON output path (default benchmarks/results/<date>-<host>-step.json)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    plugins = load_plugins()
    if args.ablation:
        arms = ARMS_ABLATION
    else:
        names = (plugins.registry.names("augmenter") if args.augmenters == "all"
                 else [a.strip() for a in args.augmenters.split(",")])
        arms = [Arm(name, name) for name in names]
    peaks = [matmul_peak_gflops()]
    runners = []
    for arm in arms:
        print(f"building {arm.label}", file=sys.stderr)
        runner = Runner(arm, args.dataset, args.extra, plugins, args.batches, args.batch_size)
        if callable(getattr(runner.model.augmenter, "optim_plan", None)):
            # several optimiser steps per batch: one backward + step would not be its step
            print(f"skipping {arm.label}: it declares an optimisation plan (time it with benchmarks/stages.py)",
                  file=sys.stderr)
            continue
        runners.append(runner)
    flops = [r.flops() for r in runners]
    for r in runners:  # warm-up: one pass each
        r.run(record=False)
    for rep in range(args.reps):
        for r in runners:
            r.run()
        print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr)
    peaks.append(matmul_peak_gflops())
    peak = median(peaks)
    rows, arms_out = [], []
    base = {}
    for r, fl in zip(runners, flops):
        ms = median(r.times) * 1e3
        sps = args.batch_size / (ms / 1e3)
        base.setdefault(r.arm.augmenter, ms)
        gflops = fl / (ms / 1e3) / 1e9
        arms_out.append({"label": r.arm.label, "augmenter": r.arm.augmenter, "exact": r.arm.exact,
                         "ms_per_step": ms, "samples_per_s": sps, "gflop_per_step": fl / 1e9,
                         "achieved_gflops": gflops, "fraction_of_peak": gflops / peak,
                         "steps_timed": len(r.times), "width_mean": median([b.items.shape[1] for b in r.batches])})
        rows.append([r.arm.label, ms, sps, base[r.arm.augmenter] / ms, fl / 1e9, gflops, f"{100 * gflops / peak:.1f}%"])
    table = markdown_table(["arm", "ms/step (median)", "samples/s", "speed-up vs first arm of its augmenter",
                            "GFLOP/step (matmuls)", "achieved GFLOP/s", "of fp32 peak"], rows)
    result = {"kind": "step", "date": dt.datetime.now().isoformat(timespec="seconds"), "commit": git_commit(),
              "machine": machine(), "dataset": args.dataset, "batch_size": args.batch_size,
              "batches": args.batches, "reps": args.reps, "matmul_peak_gflops": peak, "peaks": peaks,
              "overrides": args.extra, "arms": arms_out, "table": table}
    out = Path(args.out) if args.out else HERE / "results" / (
        f"{dt.date.today().isoformat()}-{result['machine']['host']}-step{'-ablation' if args.ablation else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"fp32 matmul peak (1024³ GEMM, median of start/end): {peak:.1f} GFLOP/s; "
          f"{result['machine']['threads']} threads; load {result['machine']['loadavg']}")
    print(table)
    print(f"wrote {out}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
