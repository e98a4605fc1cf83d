"""seqcl side of the comparison: one process = one repetition.

    python benchmarks/seqcl_bench.py --dataset ../shared/data/Beauty.txt --augmenter none \
        --warmup 5 --steps 40 --eval [--epoch] [--set key=value ...]

Builds the model as ``seqcl train`` does (``prepare``, ``make_optimizer``), runs
``warmup`` batches of the training loop (``train_epoch``), then times ``steps``
more batches (or, with ``--epoch``, one whole epoch), then (``--eval``) one
full-ranking validation pass. Under ``torchrun`` the ranks train together
(``seqcl.distributed``: ``train.batch_size`` is the global batch, evaluation is
sharded) and rank 0 prints the result. Defaults for the RecBole comparison:
``ce.include_pad_logit=true`` (RecBole's CE scores the padding row too) and
``eval.exclude_history=false`` (RecBole does not mask history). Prints one
``BENCH-RESULT`` JSON line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, peak_rss_mb  # noqa: E402

PARITY = ["ce.include_pad_logit=true", "eval.exclude_history=false"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--augmenter", default="none")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--epoch", action="store_true", help="time one whole epoch instead of --steps batches")
    ap.add_argument("--eval", action="store_true")
    ap.add_argument("--no-train", action="store_true", help="validation pass only (its own peak RSS)")
    ap.add_argument("--item-chunk", type=int, default=0, help="score items in chunks of this many (0: all)")
    ap.add_argument("--eval-users", type=int, default=0, help="validate the first N users only (0: all)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--set", dest="extra", action="append", default=[])
    args = ap.parse_args()
    from seqcl import distributed

    with distributed.session() as world:
        result = run(args)
        if world.is_main:
            emit(result)


def run(args: argparse.Namespace) -> dict:
    """One repetition in this process (one rank of it under torchrun); the result to print."""
    import torch

    from seqcl import distributed
    from seqcl.config import parse_assignment, resolve
    from seqcl.data.dataset import EvalSet, eval_set, training_samples
    from seqcl.evaluation import evaluate
    from seqcl.plugins import load_plugins
    from seqcl.training import distribute, make_optimizer, prepare, train_epoch

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    plugins = load_plugins()
    pairs = [parse_assignment(s) for s in [*PARITY, *args.extra]]
    pairs += [("augmenter", args.augmenter), ("dataset", args.dataset)]
    resolved = resolve(plugins.registry, overrides=pairs)
    torch.manual_seed(resolved.train.seed)
    generator = torch.Generator().manual_seed(resolved.train.seed)
    data, _, model = prepare(resolved, plugins)
    distribute(model, resolved.train.seed)
    samples = training_samples(data)
    device = torch.device(resolved.train.device)
    optimizer = make_optimizer(model, resolved)
    setup_s = time.perf_counter() - t0

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    result = {
        "framework": "seqcl", "augmenter": args.augmenter, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "device": str(device), "train_samples": len(samples),
        "num_items": data.num_items, "setup_s": setup_s, "ranks": distributed.world().size, "overrides": [*PARITY, *args.extra],
    }
    if not args.no_train:
        train_epoch(model, optimizer, samples, resolved, generator, device, max_batches=args.warmup)
        sync()
        t0 = time.perf_counter()
        _, _, n = train_epoch(model, optimizer, samples, resolved, generator, device,
                              max_batches=None if args.epoch else args.steps)
        sync()
        train_s = time.perf_counter() - t0
        bs = resolved.train.batch_size
        n_samples = len(samples) if args.epoch else n * bs
        result.update({
            "steps": n, "batch_size": bs, "epoch": args.epoch, "samples_per_s": n_samples / train_s,
            "ms_per_step": 1e3 * train_s / n, "train_s": train_s, "peak_rss_train_mb": peak_rss_mb(),
        })
    if args.eval:
        valid = eval_set(data, "valid")
        if args.eval_users:
            n_users = min(args.eval_users, len(valid))
            valid = EvalSet(data, valid.starts[:n_users], valid.ends[:n_users], valid.targets[:n_users])
        t0 = time.perf_counter()
        res = evaluate(model.encoder, valid, model.num_items, model.max_len, ks=resolved.eval.ks,
                       exclude_history=resolved.eval.exclude_history, batch_size=resolved.eval.batch_size,
                       device=device, item_chunk=args.item_chunk or None)
        sync()
        result["eval_s"] = time.perf_counter() - t0
        result["eval_users"] = len(valid)
        result["valid"] = res.metrics
        result["peak_rss_mb"] = peak_rss_mb()
    return result


if __name__ == "__main__":
    main()
