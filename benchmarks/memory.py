"""Resident memory (VmRSS / VmHWM) over a training run, in-process, per epoch and per N batches.

    python benchmarks/memory.py --dataset ../shared/data/Beauty.txt --epochs 4 --max-batches 200
    python benchmarks/memory.py --dataset ../shared/data/Beauty.txt --epochs 6 --plot memory.png   # whole epochs + validation
    python benchmarks/memory.py --dataset ... --no-eval --set sasrec.layout=padded
    python benchmarks/memory.py --dataset ... --trim        # malloc_trim(0) after every epoch
    python benchmarks/memory.py --dataset ... --augmenter cfit4srec --threads 2 --epochs 2 --max-batches 20 \
        --no-eval --malloc reuse                            # train.malloc=reuse (cpu_s, RSS against compact)
    SEQCL_MALLOC=default python benchmarks/memory.py ...    # glibc's default malloc settings (the "before")
    GLIBC_TUNABLES=glibc.malloc.tcache_count=7 python benchmarks/memory.py ...  # tcache on, threshold fixed

Runs ``train_epoch`` (and the validation ``evaluate`` unless ``--no-eval``) for a
few epochs, reading ``/proc/self/status`` every ``--every`` batches, and writes
``--out`` (JSON: per-sample epoch, batch, rss_mb, hwm_mb). Used to bisect issue
#12's growth of RSS over a run (see benchmarks/results/2026-11-29-memory.md).
Like the ``seqcl`` command, it re-executes itself once with glibc's tcache and
fastbins off (``seqcl.memory.reexec_with_tunables``). ``after_train`` samples
also carry glibc's heap (``mallinfo2``: heap, mmap'd, in use, free-in-heap) and
the epoch's CPU seconds; ``--objects`` adds live Python objects and tensors.
As a regression check (about a minute per augmenter at one thread)::

    for a in none random dropout aclsrec; do
      python benchmarks/memory.py --dataset ../shared/data/Beauty.txt --augmenter $a --epochs 3 \
          --max-batches 200 --no-eval --max-growth-mb 60 || echo "$a: RSS keeps growing"
    done   # exits 1 when RSS keeps growing (see results/2026-11-29-memory.md for before/after)
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import sys
import time
from pathlib import Path

from seqcl.memory import MALLOC_POLICIES, apply_malloc_policy, enable_thp_env, heap_stats, reexec_with_tunables  # noqa: I001  (as seqcl.cli)

reexec_with_tunables()  # the glibc tunables of a real run (seqcl.cli's entry)
enable_thp_env()

import torch  # noqa: E402

from seqcl.config import parse_assignment, resolve  # noqa: E402
from seqcl.data.dataset import eval_set, training_samples  # noqa: E402
from seqcl.plugins import load_plugins  # noqa: E402
from seqcl.training import _evaluate, make_optimizer, prepare, train_epoch  # noqa: E402


def rss() -> tuple[float, float]:
    vals = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            vals[line.split(":")[0]] = int(line.split()[1]) / 1024
    return round(vals["VmRSS"], 1), round(vals["VmHWM"], 1)


def heap() -> dict[str, float]:
    """glibc's heap (``seqcl.memory.heap_stats``) in MiB, keys ``*_mb``."""
    return {f"{k}_mb": round(v / 2**20, 1) for k, v in heap_stats().items()}


def live_objects() -> dict[str, float]:
    """Python objects and torch tensors alive after ``gc.collect()`` (a leak shows as a growing count)."""
    gc.collect()
    objs = gc.get_objects()
    tensors = [o for o in objs if isinstance(o, torch.Tensor)]
    nbytes = sum(t.untyped_storage().nbytes() for t in tensors)
    return {"objects": len(objs), "tensors": len(tensors), "tensor_mb": round(nbytes / 2**20, 1)}


def plot(log: list[dict], path: Path, title: str) -> None:
    """RSS and VmHWM against optimizer steps over the whole run, validation passes marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from seqcl_study.figure import save_png

    steps_per_epoch = max((s["batch"] for s in log if s["phase"] == "after_train"), default=1)
    x = [(s["epoch"] - 1) * steps_per_epoch + s["batch"] if s["epoch"] else 0 for s in log]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(x, [s["rss_mb"] for s in log], label="VmRSS")
    ax.plot(x, [s["hwm_mb"] for s in log], label="VmHWM (peak)", linestyle="--")
    evals = [xi for xi, s in zip(x, log) if s["phase"] == "after_eval"]
    ax.scatter(evals, [s["rss_mb"] for s in log if s["phase"] == "after_eval"], marker="v", label="after validation")
    ax.set(xlabel="optimizer step", ylabel="MiB", title=f"resident memory over the run ({title})")
    ax.legend()
    save_png(fig, path, {"step": x, "rss_mb": [s["rss_mb"] for s in log], "hwm_mb": [s["hwm_mb"] for s in log]})
    print(f"wrote {path}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--augmenter", default="none")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--max-batches", type=int, default=None)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--trim", action="store_true", help="malloc_trim(0) after each epoch")
    ap.add_argument("--trim-every", type=int, default=0, help="malloc_trim(0) every N optimizer steps")
    ap.add_argument("--objects", action="store_true",
                    help="after each epoch, also count live Python objects and tensors (gc)")
    ap.add_argument("--malloc", choices=MALLOC_POLICIES, default="compact", help="train.malloc (seqcl.memory)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", dest="extra", action="append", default=[])
    ap.add_argument("--out", default=None)
    ap.add_argument("--plot", default=None, help="PNG of RSS and VmHWM over the run (samples embedded as JSON)")
    ap.add_argument("--max-growth-mb", type=float, default=None,
                    help="exit 1 if RSS grows by more than this from the end of epoch 1 to the end")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"malloc {args.malloc}:", apply_malloc_policy(args.malloc), "GLIBC_TUNABLES:", os.environ.get("GLIBC_TUNABLES"), flush=True)
    plugins = load_plugins()
    pairs = [parse_assignment(s) for s in args.extra]
    pairs += [("augmenter", args.augmenter), ("dataset", args.dataset)]
    resolved = resolve(plugins.registry, overrides=pairs)
    torch.manual_seed(resolved.train.seed)
    generator = torch.Generator().manual_seed(resolved.train.seed)
    data, _, model = prepare(resolved, plugins)
    samples = training_samples(data)
    valid = eval_set(data, "valid")
    device = torch.device("cpu")
    optimizer = make_optimizer(model, resolved)
    libc = ctypes.CDLL("libc.so.6") if args.trim or args.trim_every else None
    log: list[dict] = [{"epoch": 0, "batch": 0, "phase": "start", "rss_mb": rss()[0], "hwm_mb": rss()[1]}]
    print(log[-1], flush=True)

    # sample every `every` steps by wrapping optimizer.step
    counter = {"n": 0, "epoch": 0}
    step = optimizer.step

    def sampled_step(*a, **k):
        out = step(*a, **k)
        counter["n"] += 1
        if args.trim_every and counter["n"] % args.trim_every == 0:
            libc.malloc_trim(0)
        if counter["n"] % args.every == 0:
            r, h = rss()
            log.append({"epoch": counter["epoch"], "batch": counter["n"], "phase": "train", "rss_mb": r, "hwm_mb": h})
        return out

    optimizer.step = sampled_step  # type: ignore[method-assign]
    for epoch in range(1, args.epochs + 1):
        counter["epoch"], counter["n"] = epoch, 0
        t0, c0 = time.perf_counter(), time.process_time()
        train_epoch(model, optimizer, samples, resolved, generator, device, max_batches=args.max_batches)
        r, h = rss()
        log.append({"epoch": epoch, "batch": counter["n"], "phase": "after_train", "rss_mb": r, "hwm_mb": h,
                    "cpu_s": round(time.process_time() - c0, 1),
                    **heap(), **(live_objects() if args.objects else {})})
        print(log[-1], f"{time.perf_counter() - t0:.1f}s", flush=True)
        if not args.no_eval:
            _evaluate(model, valid, resolved, device)
            r, h = rss()
            log.append({"epoch": epoch, "batch": counter["n"], "phase": "after_eval", "rss_mb": r, "hwm_mb": h, **heap()})
            print(log[-1], flush=True)
        if args.trim:
            libc.malloc_trim(0)
            r, h = rss()
            log.append({"epoch": epoch, "batch": counter["n"], "phase": "after_trim", "rss_mb": r, "hwm_mb": h, **heap()})
            print(log[-1], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "samples": log}, indent=1))
    if args.plot:
        plot(log, Path(args.plot), f"{args.augmenter}, {Path(args.dataset).name}")
    if args.max_growth_mb is not None:
        base = next(s["rss_mb"] for s in log if s["epoch"] == 1 and s["phase"] != "train")
        growth = log[-1]["rss_mb"] - base
        print(f"RSS growth after epoch 1: {growth:.1f} MiB (bound {args.max_growth_mb})")
        if growth > args.max_growth_mb:
            sys.exit(1)


if __name__ == "__main__":
    main()
