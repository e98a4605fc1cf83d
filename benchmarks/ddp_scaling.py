"""Data-parallel scaling on one machine: N ranks × 1 thread against 1 rank × N threads (samples/s).

    python benchmarks/ddp_scaling.py --dataset ../shared/data/Beauty.txt              # N = 2, 3 reps each
    python benchmarks/ddp_scaling.py --dataset ../shared/data/Beauty.txt --ranks 4 --device cuda

Each repetition is a fresh launch of ``seqcl_bench.py`` (the training loop
``seqcl train`` runs, ``train_epoch``): ``python seqcl_bench.py --threads N``
for one rank, ``torchrun --nproc-per-node N seqcl_bench.py --threads 1`` for N
ranks (``seqcl.distributed``; the same **global** batch, so both sides do the
same work per step and samples/s compare directly). The two arms alternate and
the result is the median of each arm and the median of the per-repetition ratios,
with the load average before every launch (other jobs on the machine skew
single runs). Writes ``benchmarks/results/<date>-<host>-ddp-<augmenter>.json`` and prints a
Markdown table. On CUDA (``--device cuda``) the one-rank arm uses one GPU and
the N-rank arm N GPUs (NCCL).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, git_commit, machine, markdown_table, median, parse_results  # noqa: E402


def launch(ranks: int, threads: int, args: argparse.Namespace) -> dict:
    """One repetition: ``ranks`` processes of ``threads`` threads each; rank 0's BENCH-RESULT."""
    bench = [str(HERE / "seqcl_bench.py"), "--dataset", args.dataset, "--augmenter", args.augmenter,
             "--warmup", str(args.warmup), "--steps", str(args.steps), "--threads", str(threads),
             "--set", f"train.device={args.device}", "--set", f"train.batch_size={args.batch_size}",
             *[x for s in args.extra for x in ("--set", s)]]
    if ranks == 1:
        cmd = [sys.executable, *bench]
    else:
        torchrun = shutil.which("torchrun") or "torchrun"
        cmd = [torchrun, "--standalone", "--nproc-per-node", str(ranks), *bench]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    load = os.getloadavg()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    (result,) = parse_results(proc.stdout)
    return {**result, "launch_ranks": ranks, "launch_threads": threads, "loadavg_before": [round(x, 2) for x in load]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--augmenter", default="none")
    ap.add_argument("--ranks", type=int, default=2, help="N: N ranks × 1 thread vs 1 rank × N threads")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=256, help="the global batch (both arms)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    n = args.ranks
    arms = {"1 rank": (1, 1 if args.device == "cuda" else n), f"{n} ranks": (n, 1)}
    reps: dict[str, list[dict]] = {name: [] for name in arms}
    for rep in range(args.reps):
        for name, (ranks, threads) in (arms.items() if rep % 2 == 0 else reversed(arms.items())):
            r = launch(ranks, threads, args)
            reps[name].append(r)
            print(f"rep {rep + 1} {name:>8}: {r['samples_per_s']:,.0f} samples/s (load {r['loadavg_before'][0]})",
                  file=sys.stderr, flush=True)
    one, many = reps["1 rank"], reps[f"{n} ranks"]
    ratios = [b["samples_per_s"] / a["samples_per_s"] for a, b in zip(one, many)]
    summary = {name: median([r["samples_per_s"] for r in rs]) for name, rs in reps.items()}
    out = {"date": dt.datetime.now().isoformat(timespec="seconds"), "commit": git_commit(), "machine": machine(),
           "args": vars(args), "samples_per_s_median": summary, "ratio_median": median(ratios), "reps": reps}
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    path = results / f"{dt.date.today()}-{out['machine']['host']}-ddp-{args.augmenter}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    rows = [[name, f"{arms[name][0]} × {arms[name][1]}", summary[name]] for name in arms]
    print(markdown_table(["arm", "ranks × threads", "samples/s (median)"], rows))
    print(f"\n{n} ranks / 1 rank: {median(ratios):.2f}× (median of {len(ratios)} paired repetitions); {path}")


if __name__ == "__main__":
    main()
