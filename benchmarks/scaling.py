"""How seqcl's step time and memory grow with the item count, T and the batch size.

    python benchmarks/scaling.py            # a few steps per configuration, ~10 minutes on 2 cores

Synthetic data (``benchmarks/work/synth-*.txt``, one line per user): enough
users (≥ 20,000) for every item id ``1..N`` to occur at least once, the other
interactions Zipf-popular, lengths ``5 + geometric`` — mean ~9 like Beauty, or
mean ~100 for the T sweep. Each configuration is one fresh process
(``seqcl_bench.py``: ``--warmup`` + ``--steps`` batches of SASRec ``none``, then
one full-ranking validation pass over the first 2,000 users, with chunked item scoring
where the catalogue is large), so its peak RSS is its own. Writes
``benchmarks/results/<date>-<host>-scaling.json`` and ``benchmarks/scaling.png``
and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, git_commit, machine, markdown_table, parse_results  # noqa: E402

WORK = HERE / "work"


def synth(num_items: int, mean_len: float, max_len: int, seed: int = 0) -> Path:
    """Users enough for every item to occur (≥ 20,000 users), each item id at least once, the
    rest Zipf-popular; lengths ``5 + geometric``, clipped to ``max_len``."""
    users = max(20_000, int(1.2 * num_items / mean_len))
    path = WORK / f"synth-{num_items}-{int(mean_len)}-{max_len}-{users}.txt"
    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    lengths = np.minimum(5 + rng.geometric(1.0 / max(mean_len - 4, 1.0), size=users), max_len)
    total = int(lengths.sum())
    assert total >= num_items, (total, num_items)
    p = 1.0 / np.arange(1, num_items + 1, dtype=np.float64)
    items = np.concatenate([np.arange(1, num_items + 1), rng.choice(num_items, size=total - num_items,
                                                                    p=p / p.sum()) + 1])
    items = items[rng.permutation(total)]  # every id occurs: the catalogue is exactly 1..num_items
    WORK.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        start = 0
        for u, n in enumerate(lengths.tolist()):
            f.write(f"{u + 1} " + " ".join(map(str, items[start:start + n].tolist())) + "\n")
            start += n
    return path


CONFIGS = [
    # label, items, mean_len, T, batch, item_chunk
    ("items 12k", 12_101, 9, 50, 256, 0),
    ("items 100k", 100_000, 9, 50, 256, 0),
    ("items 1M", 1_000_000, 9, 50, 256, 131_072),
    ("T 50 (long seqs)", 12_101, 100, 50, 256, 0),
    ("T 100 (long seqs)", 12_101, 100, 100, 256, 0),
    ("T 200 (long seqs)", 12_101, 100, 200, 256, 0),
    ("batch 128", 12_101, 9, 50, 128, 0),
    ("batch 512", 12_101, 9, 50, 512, 0),
    ("batch 1024", 12_101, 9, 50, 1024, 0),
    ("eval only, items 1M", 1_000_000, 9, 50, 256, 131_072),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--only", default="", help="comma list of config labels (default: all)")
    args = ap.parse_args()
    rows, out = [], []
    for label, items, mean_len, t, batch, chunk in CONFIGS:
        if args.only and label not in args.only.split(","):
            continue
        data = synth(items, mean_len, 400 if mean_len > 50 else 200)
        cmd = [sys.executable, str(HERE / "seqcl_bench.py"), "--dataset", str(data), "--augmenter", "none",
               "--warmup", str(args.warmup), "--steps", str(args.steps), "--threads", str(args.threads), "--eval",
               "--item-chunk", str(chunk), "--eval-users", "2000", "--set", f"data.max_len={t}", "--set", f"train.batch_size={batch}",
               "--set", "eval.batch_size=512", "--set", "data.min_user_items=3"]
        if label.startswith("eval only"):
            cmd.append("--no-train")
        print(f"[{label}] {' '.join(cmd)}", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        res = parse_results(proc.stdout)
        if proc.returncode or not res:
            sys.stderr.write(proc.stderr[-3000:])
            raise SystemExit(f"{label} failed")
        r = dict(res[-1], label=label, items=items, T=t, batch=batch, item_chunk=chunk or None)
        out.append(r)
        nan = float("nan")
        rows.append([label, f"{items:,}", t, batch, r.get("ms_per_step", nan), r.get("samples_per_s", nan),
                     r.get("ms_per_step", nan) / 1e3 * (131_413 / batch), r.get("peak_rss_train_mb", nan),
                     r["eval_s"], f"{r['eval_users']:,}", chunk or "all", r["peak_rss_mb"]])
    table = markdown_table(["config", "items", "T", "batch", "ms/step", "samples/s",
                            "epoch of 131k samples (s, est.)", "peak RSS train (MiB)",
                            "eval pass (s)", "eval users", "item chunk", "peak RSS train+eval (MiB)"], rows)
    info = machine()
    if args.threads:
        info["threads"] = args.threads
    result = {"date": dt.datetime.now().isoformat(timespec="seconds"), "commit": git_commit(), "machine": info,
              "runs": out, "table": table}
    path = HERE / "results" / f"{dt.date.today().isoformat()}-{info['host']}-scaling.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    plot(out, HERE / "scaling.png", info)
    print(table)
    print(f"wrote {path} and {HERE / 'scaling.png'}", file=sys.stderr)


def plot(runs: list[dict], path: Path, info: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    groups = [("items", "items", lambda r: r["label"].startswith("items")),
              ("T", "T (window length)", lambda r: r["label"].startswith("T ")),
              ("batch", "batch size", lambda r: r["label"].startswith("batch") or r["label"] == "items 12k")]
    for ax, (key, xlabel, sel) in zip(axes, groups):
        pts = sorted((r[key], r["ms_per_step"], r["peak_rss_train_mb"]) for r in runs if sel(r) and "ms_per_step" in r)
        if not pts:
            continue
        xs, ms, rss = zip(*pts)
        ax.plot(xs, ms, "o-", color="tab:blue", label="ms / step")
        ax.set_xscale("log")
        if key == "items":
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ms per training step", color="tab:blue")
        ax2 = ax.twinx()
        ax2.plot(xs, rss, "s--", color="tab:red", label="peak RSS")
        ax2.set_ylabel("peak RSS (MiB)", color="tab:red")
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{x:,}" for x in xs], rotation=0, fontsize=8)
        ax.minorticks_off()
    fig.suptitle(f"seqcl SASRec (none) training step and memory — {info['cpu']}, torch threads: {info['threads']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
