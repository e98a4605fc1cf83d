"""seqcl vs RecBole 1.2.1 on the same work, side by side (GitHub issue #6).

    python benchmarks/run.py --dataset ../shared/data/Beauty.txt --reps 3

1. Sets up RecBole 1.2.1 in ``benchmarks/.venv-recbole`` (``setup_recbole.sh``;
   pins in ``benchmarks/README.md``) unless it is there already.
2. Converts the dataset to RecBole's atomic format in ``benchmarks/work/``
   (one ``user item position`` row per interaction; the position is the
   timestamp, so RecBole keeps the file's order).
3. Runs, alternating, ``--reps`` times: RecBole (SASRec, CE), seqcl ``none``
   and seqcl ``aclsrec`` — each in its own process, so each peak RSS is its own.
   Every process times ``--steps`` training batches after ``--warmup`` batches,
   and the RecBole and seqcl ``none`` processes then time one full-ranking
   validation pass. Same configuration on both sides: SASRec, CE over all items,
   batch 256, T = 50, d = 64, 2 layers, 2 heads, inner 256, dropout 0.5, Adam
   1e-3; seqcl with ``ce.include_pad_logit=true`` (RecBole's CE scores the
   padding row too) and ``eval.exclude_history=false`` (RecBole does not mask
   history).
4. Measures the machine's fp32 GEMM peak in the same run, runs the in-process
   step microbenchmark (``step.py``: every augmenter, achieved FLOP/s as a
   fraction of that peak), and writes ``benchmarks/results/<date>-<host>.json``
   and ``.md`` with medians and ratios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, git_commit, machine, markdown_table, matmul_peak_gflops, median, parse_results  # noqa: E402

VENV = HERE / ".venv-recbole"
WORK = HERE / "work"


def setup_recbole() -> Path:
    subprocess.run(["bash", str(HERE / "setup_recbole.sh")], check=True)
    return VENV / "bin" / "python"


def convert(dataset: Path) -> str:
    """``user item item …`` lines → ``WORK/<name>/<name>.inter``; returns the RecBole dataset name."""
    digest = hashlib.sha256(dataset.read_bytes()).hexdigest()[:12]
    name = f"{dataset.name.split('.')[0]}-{digest}"
    out = WORK / name / f"{name}.inter"
    if out.is_file():
        return name
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with dataset.open() as src, tmp.open("w") as dst:
        dst.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for line in src:
            user, *items = line.split()
            dst.writelines(f"{user}\t{item}\t{t}\n" for t, item in enumerate(items))
    tmp.replace(out)
    return name


def run_one(cmd: list[str], env: dict[str, str], label: str) -> dict:
    print(f"[{label}] {' '.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    results = parse_results(proc.stdout)
    if proc.returncode != 0 or not results:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"{label} failed (exit {proc.returncode})")
    return results[-1]


def summarize(runs: dict[str, list[dict]], peak: float) -> tuple[dict, str]:
    def med(arm: str, key: str) -> float:
        return median([r[key] for r in runs.get(arm, []) if key in r])

    rb_sps, sq_sps, acl_sps = med("recbole", "samples_per_s"), med("seqcl-none", "samples_per_s"), \
        med("seqcl-aclsrec", "samples_per_s")
    rb_eval, sq_eval = med("recbole", "eval_s"), med("seqcl-none", "eval_s")
    rb_rss, sq_rss = med("recbole", "peak_rss_train_mb"), med("seqcl-none", "peak_rss_train_mb")
    acl_rss = med("seqcl-aclsrec", "peak_rss_train_mb")
    rb_rss_all, sq_rss_all = med("recbole", "peak_rss_mb"), med("seqcl-none", "peak_rss_mb")
    summary = {
        "recbole_samples_per_s": rb_sps, "seqcl_none_samples_per_s": sq_sps,
        "seqcl_aclsrec_samples_per_s": acl_sps,
        "train_throughput_ratio": sq_sps / rb_sps, "target_train_throughput_ratio": 4.0,
        "recbole_eval_s": rb_eval, "seqcl_eval_s": sq_eval, "eval_speedup": rb_eval / sq_eval,
        "target_eval_speedup": 5.0,
        "aclsrec_over_none_epoch": sq_sps / acl_sps, "target_aclsrec_over_none_epoch": 2.2,
        "recbole_peak_rss_train_mb": rb_rss, "seqcl_none_peak_rss_train_mb": sq_rss,
        "seqcl_aclsrec_peak_rss_train_mb": acl_rss,
        "recbole_peak_rss_mb": rb_rss_all, "seqcl_none_peak_rss_mb": sq_rss_all,
        "matmul_peak_gflops": peak,
    }
    ok = lambda c: "met" if c else "NOT met"  # noqa: E731
    rows = [
        ["SASRec training throughput (samples/s)", rb_sps, sq_sps, f"{sq_sps / rb_sps:.2f}× faster", "≥ 4×",
         ok(sq_sps / rb_sps >= 4)],
        ["full-ranking validation pass (s, history not masked)", rb_eval, sq_eval, f"{rb_eval / sq_eval:.2f}× faster",
         "≥ 5×", ok(rb_eval / sq_eval >= 5)],
        ["peak RSS, training (MiB)", rb_rss, sq_rss, f"{sq_rss / rb_rss:.2f}× RecBole's", "≤ 1×",
         ok(sq_rss <= rb_rss)],
        ["peak RSS, training + validation (MiB)", rb_rss_all, sq_rss_all, f"{sq_rss_all / rb_rss_all:.2f}×", "–", ""],
        ["seqcl aclsrec ÷ none, time per epoch", "–", f"{acl_sps:,.0f} vs {sq_sps:,.0f} samples/s",
         f"{sq_sps / acl_sps:.2f}×", "≤ 2.2×", ok(sq_sps / acl_sps <= 2.2)],
    ]
    table = markdown_table(["figure", "RecBole 1.2.1", "seqcl", "ratio", "target", ""], rows)
    return summary, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default=str(HERE.parent.parent / "shared" / "data" / "Beauty.txt"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40, help="timed training batches per process")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in every process (0: torch's default)")
    ap.add_argument("--omp-wait-policy", default="", help="OMP_WAIT_POLICY for every process (e.g. PASSIVE)")
    ap.add_argument("--no-step", action="store_true", help="skip the step microbenchmark")
    ap.add_argument("--out", default="", help="results path stem (default benchmarks/results/<date>-<host>)")
    args = ap.parse_args()

    dataset = Path(args.dataset).resolve()
    rb_python = setup_recbole()
    name = convert(dataset)
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", PYTHONUNBUFFERED="1")
    if args.omp_wait_policy:
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    common = ["--warmup", str(args.warmup), "--steps", str(args.steps), "--threads", str(args.threads)]
    arms = {
        "recbole": [str(rb_python), str(HERE / "recbole_bench.py"), "--work", str(WORK), "--dataset", name,
                    "--eval", *common],
        "seqcl-none": [sys.executable, str(HERE / "seqcl_bench.py"), "--dataset", str(dataset), "--augmenter",
                       "none", "--eval", *common],
        "seqcl-aclsrec": [sys.executable, str(HERE / "seqcl_bench.py"), "--dataset", str(dataset),
                          "--augmenter", "aclsrec", *common],
    }
    peaks = [matmul_peak_gflops()]
    runs: dict[str, list[dict]] = {k: [] for k in arms}
    for rep in range(args.reps):
        for label, cmd in arms.items():
            runs[label].append(run_one(cmd, env, f"rep {rep + 1}/{args.reps} {label}"))
    peaks.append(matmul_peak_gflops())
    peak = median(peaks)
    summary, table = summarize(runs, peak)

    step = None
    if not args.no_step:
        step_json = WORK / "step.json"
        cmd = [sys.executable, str(HERE / "step.py"), "--dataset", str(dataset), "--threads", str(args.threads),
               "--reps", str(args.reps), "--out", str(step_json)]
        print(f"[step] {' '.join(cmd)}", file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        step = json.loads(step_json.read_text())

    info = machine()
    if args.threads:
        info["threads"] = args.threads
    result = {
        "date": dt.datetime.now().isoformat(timespec="seconds"), "commit": git_commit(), "machine": info,
        "omp_wait_policy": args.omp_wait_policy or None, "dataset": str(dataset),
        "protocol": {"reps": args.reps, "warmup": args.warmup, "steps": args.steps, "alternating": list(arms)},
        "summary": summary, "runs": runs, "step": step,
    }
    stem = Path(args.out) if args.out else HERE / "results" / f"{dt.date.today().isoformat()}-{info['host']}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# seqcl vs RecBole 1.2.1 — {result['date']}", "",
          f"`python benchmarks/run.py --dataset {args.dataset} --reps {args.reps} --steps {args.steps}"
          f"{' --threads ' + str(args.threads) if args.threads else ''}"
          f"{' --omp-wait-policy ' + args.omp_wait_policy if args.omp_wait_policy else ''}`", "",
          f"commit {result['commit']}; {info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
          f"{info['threads']} threads, load average {info['loadavg']}; fp32 GEMM peak {peak:.1f} GFLOP/s. "
          f"Medians of {args.reps} alternating repetitions, each a fresh process; training = {args.steps} batches "
          f"of 256 after {args.warmup} warm-up batches.", "", table]
    if step:
        md += ["", "One training step per augmenter (in-process, alternating; `benchmarks/step.py`):", "",
               step["table"]]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"wrote {stem.with_suffix('.json')} and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
