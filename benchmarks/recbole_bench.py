"""RecBole 1.2.1 side of the comparison; runs inside ``benchmarks/.venv-recbole``.

    benchmarks/.venv-recbole/bin/python benchmarks/recbole_bench.py --work benchmarks/work \
        --dataset Beauty --warmup 5 --steps 40 --eval

One process = one repetition: build RecBole's SASRec (the SPEC defaults, CE),
run ``warmup`` batches of RecBole's own ``Trainer._train_epoch`` loop, then time
``steps`` more batches of it, then (``--eval``) time one full-ranking validation
pass (``Trainer.evaluate``; RecBole never masks history). Prints one
``BENCH-RESULT`` JSON line with samples/s, seconds per validation pass and the
process's peak RSS after training and after evaluation.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # RecBole's torch.load calls predate torch 2.6

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, peak_rss_mb  # noqa: E402


class Limited:
    """The first ``n`` batches of a RecBole dataloader, for ``Trainer._train_epoch``."""

    def __init__(self, loader, n: int) -> None:
        self.loader, self.n = loader, n

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)

    def __len__(self) -> int:
        return self.n

    def __getattr__(self, name):
        return getattr(self.loader, name)


def config_dict(work: Path, args) -> dict:
    return {
        "data_path": str(work),
        "checkpoint_dir": str(work / "recbole-saved"),
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "n_layers": 2, "n_heads": 2, "hidden_size": 64, "inner_size": 256,
        "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5, "hidden_act": "gelu",
        "layer_norm_eps": 1e-12, "initializer_range": 0.02, "loss_type": "CE",
        "train_neg_sample_args": None,
        "epochs": 1, "train_batch_size": args.batch_size, "eval_batch_size": args.eval_batch_size,
        "learning_rate": 0.001, "weight_decay": 0.0,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["Hit", "NDCG", "MRR"], "topk": [5, 10], "valid_metric": "MRR@10",
        "show_progress": False, "seed": 2026, "reproducibility": True,
        "use_gpu": args.device != "cpu", "device": args.device, "save_dataset": False,
        "save_dataloaders": False, "log_wandb": False, "state": "WARNING",
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--dataset", default="Beauty")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--eval", action="store_true")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--eval-batch-size", type=int, default=4096)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    work = Path(args.work).resolve()
    os.chdir(work)  # RecBole writes ./log and ./log_tensorboard
    t0 = time.perf_counter()
    config = Config(model="SASRec", dataset=args.dataset, config_dict=config_dict(work, args))
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, dataset)
    model = SASRec(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)
    setup_s = time.perf_counter() - t0

    trainer._train_epoch(Limited(train_data, args.warmup), 0)
    t0 = time.perf_counter()
    trainer._train_epoch(Limited(train_data, args.steps), 1)
    train_s = time.perf_counter() - t0
    rss_train = peak_rss_mb()
    result = {
        "framework": "recbole", "torch": torch.__version__, "threads": torch.get_num_threads(),
        "train_samples": len(train_data.dataset), "num_items": dataset.item_num - 1,
        "steps": args.steps, "batch_size": args.batch_size,
        "samples_per_s": args.steps * args.batch_size / train_s, "ms_per_step": 1e3 * train_s / args.steps,
        "setup_s": setup_s, "peak_rss_train_mb": rss_train,
    }
    if args.eval:
        t0 = time.perf_counter()
        metrics = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
        result["eval_s"] = time.perf_counter() - t0
        result["eval_users"] = len(valid_data.dataset.inter_feat) if hasattr(valid_data, "dataset") else None
        result["valid"] = {k: float(v) for k, v in dict(metrics).items()}
        result["peak_rss_mb"] = peak_rss_mb()
    emit(result)


if __name__ == "__main__":
    main()
