"""Why do the contrastive terms make a worse recommender? Measure it while training.

Issue #11: ``--augmenter aclsrec`` (and, on Beauty, every contrastive augmenter
after one epoch) trains a worse model than plain SASRec. Final metrics only say
*that*; this script says *why*, by watching, every ``--every`` steps of an
ordinary training run:

* what each loss term contributes to the update of the shared **encoder**: the
  norm of ``weight · ∇_θ term`` (θ = encoder parameters), its ratio to the main
  loss's, and the cosine between the two gradients (< 0: the term fights the
  main loss). Also on the Transformer alone (encoder minus the item table,
  which the main loss also uses as its output layer) and on the main path's output ``H``
  (whose last slot is ``o``);
* the logit scale of ``cl``: |sim/τ| of positives and negatives, view norms;
* collapse of ``o`` and of every view: mean pairwise cosine within the batch and
  effective rank (exp of the entropy of the normalised singular values, RankMe);
* how much of Adam's step the main loss gets: RMS of g_main / √v̂ (≈ 1 when it has
  Adam to itself; Adam's v̂ is the running mean of the *total* squared gradient over
  ~1/(1-β2) = 1000 steps), the first-order main-loss decrease of the actual step;
* the unweighted value of every term, and valid MRR@10 at each epoch end.

Training is seqcl's own: ``seqcl.config.resolve`` → ``seqcl.plugins`` →
``seqcl.training.prepare`` / ``make_optimizer`` / ``iterate_batches`` /
``training_step`` (called as is; its term and main-loss tensors are recorded by
thin wrappers on measured steps only). The measurement uses
``torch.autograd.grad(..., retain_graph=True)`` on the step's own graph and
``no_grad`` statistics, which draw no random numbers and touch no ``.grad`` or
parameter, so the trajectory is the one ``seqcl train`` follows (``--verify N``
checks this: parameters after N batches equal ``train_epoch``'s, bit for bit).
Only the validation split is evaluated; the test split is never read.

    python benchmarks/diagnose_terms.py --dataset builtin --augmenter aclsrec \\
        --epochs 5 --every 5 --out docs/diagnosis/builtin/aclsrec.jsonl
    python benchmarks/diagnose_terms.py --summarize docs/diagnosis/builtin/*.jsonl --detail
    python benchmarks/diagnose_terms.py --augmenter aclsrec --verify 6
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor

from seqcl.config import Resolved, parse_assignment, resolve
from seqcl.data.dataset import eval_set, training_samples
from seqcl.evaluation import evaluate
from seqcl.interfaces import Batch, Views
from seqcl.plugins import load_plugins
from seqcl_contrastive.formulas import similarity
from seqcl.training import Model, iterate_batches, make_optimizer, prepare, train_epoch, training_step


# --------------------------------------------------------------------- recording


class Recorder:
    """Holds the attached tensors of one step: main loss, h, each term's value, the views."""

    def __init__(self) -> None:
        self.values: dict[str, Tensor] = {}
        self.h: Tensor | None = None
        self.views: Views | None = None
        self.batch: Batch | None = None
        self.hidden: Tensor | None = None  # the main path's H as the augmenter receives it: (B, W, d), or (B, 1, d)


class _RecordedTerm:
    """A loss term that behaves exactly like ``term`` and keeps its output tensor."""

    def __init__(self, name: str, term: Any, rec: Recorder) -> None:
        self.name, self.term, self.rec = name, term, rec
        self.needs_negatives = getattr(term, "needs_negatives", False)

    def __call__(self, views: Views, batch: Batch) -> Tensor:
        value = self.term(views, batch)
        self.rec.values[self.name], self.rec.views = value, views
        return value


@contextlib.contextmanager
def recording(model: Model) -> Iterator[Recorder]:
    """Within the block, ``training_step`` records into the yielded Recorder (nothing else changes)."""
    rec = Recorder()
    original_terms = model.terms

    def keep_main(module: Any, args: tuple[Any, ...], value: Tensor) -> None:
        _, rec.batch, rec.h = args  # objective(encoder, batch, h)
        rec.values["main"] = value

    def keep_hidden(module: Any, args: tuple[Any, ...]) -> None:
        rec.hidden = args[3]  # forward(batch, encoder, h_in, hidden)

    model.terms = {name: _RecordedTerm(name, term, rec) for name, term in original_terms.items()}
    hooks = [model.objective.register_forward_hook(keep_main),  # objectives and augmenters are nn.Modules
             model.augmenter.register_forward_pre_hook(keep_hidden)]
    try:
        yield rec
    finally:
        model.terms = original_terms
        for hook in hooks:
            hook.remove()


# --------------------------------------------------------------------- measures


def _flat(grads: tuple[Tensor | None, ...], params: list[Tensor]) -> Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def _cos(a: Tensor, b: Tensor) -> float:
    denom = float(a.norm() * b.norm())
    return float(a @ b) / denom if denom > 0 else float("nan")


def effective_rank(x: Tensor) -> float:
    """exp(entropy of σ/Σσ) of the (N, d) matrix x, uncentred (RankMe); 1 = collapsed to a line."""
    s = torch.linalg.svdvals(x.float())
    p = s / s.sum().clamp_min(1e-12)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def collapse_stats(x: Tensor) -> dict[str, float]:
    """(N, d) → mean L2 norm, mean off-diagonal pairwise cosine, effective rank."""
    n = x.shape[0]
    z = torch.nn.functional.normalize(x.float(), dim=-1)
    c = z @ z.T
    off = (c.sum() - c.diagonal().sum()) / max(n * (n - 1), 1)
    return {"norm": float(x.norm(dim=-1).mean()), "mean_cos": float(off), "erank": effective_rank(x)}


def logit_stats(a: Tensor, b: Tensor, sim: str, tau: float, targets: Tensor) -> dict[str, float]:
    """NT-Xent logits sim(Z, Z)/τ of a pair: |·| of positives (i ↔ i+N) and negatives; cosines too.

    ``neg_same_target_*``: the in-batch negatives whose sample has the same next item
    (false negatives for the recommender: NT-Xent pushes them apart, the main loss pulls them together).
    """
    n = a.shape[0]
    z = torch.cat([a, b]).float()
    partner = (torch.arange(2 * n) + n) % (2 * n)
    pos_mask = torch.nn.functional.one_hot(partner, 2 * n).bool()
    neg_mask = ~(pos_mask | torch.eye(2 * n, dtype=torch.bool))
    t = torch.cat([targets, targets]).cpu()
    same = neg_mask & (t[:, None] == t[None, :])
    logits = similarity(z, z, sim) / tau
    out: dict[str, float] = {"neg_same_target_frac": float(same.sum() / neg_mask.sum()),
                             "neg_same_target_logit_mean": float(logits[same].mean()) if same.any() else float("nan"),
                             "neg_other_target_logit_mean": float(logits[neg_mask & ~same].mean())}
    for name, s in (("logit", logits), ("cos", similarity(z, z, "cos"))):
        pos, neg = s[pos_mask], s[neg_mask]
        out[f"pos_{name}_mean"], out[f"neg_{name}_mean"] = float(pos.mean()), float(neg.mean())
        if name == "logit":
            out["pos_logit_absmean"], out["pos_logit_absmax"] = float(pos.abs().mean()), float(pos.abs().max())
            out["neg_logit_absmean"], out["neg_logit_absmax"] = float(neg.abs().mean()), float(neg.abs().max())
    return out


def measure(model: Model, rec: Recorder, resolved: Resolved) -> tuple[dict[str, Any], Tensor, Tensor]:
    """Per-term gradients on the encoder (whole, Transformer only, and on o), logits, collapse.

    Also returns the main loss's and the total's flat encoder gradients, to score the step's
    update against them (:func:`update_stats`).
    """
    named = [(n, p) for n, p in model.encoder.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    in_transformer = torch.cat([torch.full((p.numel(),), not n.startswith("item_embedding"), dtype=torch.bool)
                                for n, p in named])
    weights = {"main": 1.0, **model.weights}
    assert rec.h is not None
    # "o": the main path's Transformer output H, which both the main loss (through its last
    # slot) and the augmenter's views read; without loss terms, the main loss's h itself.
    o = rec.hidden if rec.hidden is not None else rec.h
    grads: dict[str, Tensor] = {}
    grads_o: dict[str, Tensor] = {}
    for name, value in rec.values.items():
        g = torch.autograd.grad(value, params + [o], retain_graph=True, allow_unused=True)
        grads[name] = _flat(g[:-1], params) * weights[name]
        grads_o[name] = (g[-1] if g[-1] is not None else torch.zeros_like(o)) * weights[name]
    grads["total"] = sum(grads.values())  # what Adam receives on the encoder (main + Σ w·term)
    grads_o["total"] = sum(grads_o.values())
    main, main_t, main_o = grads["main"], grads["main"][in_transformer], grads_o["main"].reshape(-1)
    terms: dict[str, dict[str, float]] = {}
    for name, g in grads.items():
        g_t, g_o = g[in_transformer], grads_o[name].reshape(-1)
        terms[name] = {
            "value": float(rec.values[name].detach()) if name in rec.values else float("nan"),
            "weight": weights.get(name, float("nan")),
            "grad_norm": float(g.norm()), "ratio": float(g.norm() / main.norm()), "cos_main": _cos(g, main),
            "grad_norm_transformer": float(g_t.norm()), "ratio_transformer": float(g_t.norm() / main_t.norm()),
            "cos_main_transformer": _cos(g_t, main_t),
            "grad_norm_o": float(g_o.norm()), "ratio_o": float(g_o.norm() / main_o.norm()),
            "cos_main_o": _cos(g_o, main_o),
        }
    out: dict[str, Any] = {"terms": terms}
    with torch.no_grad():
        views = {"o": rec.h.detach()}
        pairs: dict[str, dict[str, float]] = {}
        if rec.views is not None:
            views.update({k: v.detach() for k, v in rec.views.tensors.items()})
            cl = resolved.term_options.get("cl")
            sim = getattr(cl, "sim", "dot")
            for a, b in rec.views.pairs:
                pairs[f"{a}|{b}"] = logit_stats(views[a], views[b], sim, getattr(cl, "tau", 1.0), rec.batch.targets)
        out["pairs"] = pairs
        out["views"] = {k: collapse_stats(v) for k, v in views.items()}
    return out, main, grads["total"]


def encoder_vector(model: Model) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.encoder.parameters() if p.requires_grad])


def update_stats(model: Model, optimizer: torch.optim.Optimizer, before: Tensor, main_grad: Tensor,
                 total_grad: Tensor, lr: float) -> dict[str, float]:
    """How much the optimizer step served the main loss, on the encoder.

    ``main_decrease_per_lr``: first-order decrease of the main loss, -g_main·Δθ / lr;
    ``cos_update_main``: cos(Δθ, -g_main). Adam divides by sqrt(v̂), its running mean of the
    *total* squared gradient (β2 = 0.999: a memory of ~1000 steps): ``adam_memory`` =
    mean sqrt(v̂) / mean |g_total now| (≈ 1 when the gradient scale is steady, ≫ 1 when past
    gradients were larger), and ``main_scaled_rms`` = RMS of g_main / sqrt(v̂), the size of the
    main loss's own step in Adam's units (≈ 1 for a loss that has Adam to itself).
    """
    params = [p for p in model.encoder.parameters() if p.requires_grad]
    delta = encoder_vector(model) - before
    group = optimizer.param_groups[0]
    beta2, eps = group["betas"][1], group["eps"]
    v_hat = torch.cat([(optimizer.state[p]["exp_avg_sq"] / (1 - beta2 ** float(optimizer.state[p]["step"])))
                       .reshape(-1) for p in params])
    denom = v_hat.sqrt() + eps
    return {"main_decrease_per_lr": float(-(main_grad @ delta)) / lr, "cos_update_main": _cos(delta, -main_grad),
            "update_norm_per_lr": float(delta.norm()) / lr,
            "adam_memory": float(v_hat.sqrt().mean() / total_grad.abs().mean().clamp_min(1e-30)),
            "main_scaled_rms": float((main_grad / denom).pow(2).mean().sqrt())}


# --------------------------------------------------------------------- training


def build(args: argparse.Namespace) -> tuple[Resolved, Any]:
    plugins = load_plugins()
    overrides = [parse_assignment(a) for a in args.set]
    overrides += [("dataset", args.dataset), ("augmenter", args.augmenter), ("train.epochs", args.epochs),
                  ("train.threads", args.threads)]
    return resolve(plugins.registry, {}, overrides, list(args.with_terms), list(args.without_terms)), plugins


def setup(resolved: Resolved, plugins: Any) -> tuple[Any, Model, torch.optim.Optimizer, torch.Generator]:
    """The same order as ``seqcl.training.train``: threads, seed, prepare, optimizer."""
    t = resolved.train
    if t.threads:
        torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    generator = torch.Generator().manual_seed(t.seed)
    data, _, model = prepare(resolved, plugins)
    return data, model, make_optimizer(model, resolved), generator


def run_epoch(model: Model, optimizer: torch.optim.Optimizer, samples: Any, resolved: Resolved,
              generator: torch.Generator, device: torch.device, every: int, max_batches: int | None,
              on_measure: Any) -> tuple[dict[str, float], int, float]:
    """``seqcl.training.train_epoch``'s loop, measuring every ``every`` steps (0: never)."""
    t = resolved.train
    model.train(True)
    sums: dict[str, float] = {}
    n, measure_seconds = 0, 0.0
    batches = iterate_batches(samples, t.batch_size, model.max_len, generator, device,
                              trim=not getattr(model.augmenter, "full_width", False),
                              group_by_length=t.group_by_length)
    total = math.ceil(len(samples) / t.batch_size)
    if max_batches is not None:
        total = min(total, max_batches)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.autocast_bf16)
    for batch in batches:
        if n >= total:
            break
        measured = every > 0 and n % every == 0
        with recording(model) if measured else contextlib.nullcontext() as rec:
            with autocast:
                out = training_step(model, batch)
        if measured:
            started = time.perf_counter()
            stats, main_grad, total_grad = measure(model, rec, resolved)
            before = encoder_vector(model)
            measure_seconds += time.perf_counter() - started
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        optimizer.step()
        if measured:
            stats["update"] = update_stats(model, optimizer, before, main_grad, total_grad, t.lr)
            on_measure(n, stats)
        for name, value in out.parts.items():
            sums[name] = sums.get(name, 0.0) + float(value)
        n += 1
    return {k: v / max(n, 1) for k, v in sums.items()}, n, measure_seconds


def diagnose(args: argparse.Namespace) -> None:
    resolved, plugins = build(args)
    data, model, optimizer, generator = setup(resolved, plugins)
    samples, valid_set = training_samples(data), eval_set(data, "valid")
    device = torch.device(resolved.train.device)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w") as f:
        def write(record: dict[str, Any]) -> None:
            f.write(json.dumps(record) + "\n")
            f.flush()

        write({"kind": "config", "argv": sys.argv[1:], "torch": torch.__version__,
               "threads": torch.get_num_threads(), "samples": len(samples), "resolved": resolved.tree})
        best, bad = -math.inf, 0
        for epoch in range(1, resolved.train.epochs + 1):
            started = time.perf_counter()

            def on_measure(step: int, stats: dict[str, Any]) -> None:
                write({"kind": "step", "epoch": epoch, "step": step, **stats})
                ratios = " ".join(f"{k} {v['ratio']:.2f}/{v['cos_main']:+.2f}" for k, v in stats["terms"].items()
                                  if k != "main")
                print(f"  e{epoch} s{step:4d} main {stats['terms']['main']['value']:.3f} | ratio/cos {ratios} | "
                      f"o erank {stats['views']['o']['erank']:.1f} cos {stats['views']['o']['mean_cos']:.2f} | "
                      f"upd·main {stats['update']['main_decrease_per_lr']:.3g} "
                      f"cos {stats['update']['cos_update_main']:+.3f} "
                      f"main/√v̂ {stats['update']['main_scaled_rms']:.3f}",
                      file=sys.stderr, flush=True)

            loss, n, measure_seconds = run_epoch(model, optimizer, samples, resolved, generator, device,
                                                 args.every, args.max_batches, on_measure)
            train_seconds = time.perf_counter() - started
            valid = evaluate(model.encoder, valid_set, model.num_items, model.max_len, ks=resolved.eval.ks,
                             exclude_history=resolved.eval.exclude_history, batch_size=resolved.eval.batch_size,
                             device=device).metrics
            write({"kind": "epoch", "epoch": epoch, "batches": n, "loss": loss, "valid": valid,
                   "train_seconds": round(train_seconds, 2), "measure_seconds": round(measure_seconds, 2)})
            parts = " ".join(f"{k} {v:.4f}" for k, v in loss.items())
            print(f"epoch {epoch} | {parts} | valid mrr@10 {valid['mrr@10']:.4f} | {train_seconds:.1f}s",
                  file=sys.stderr, flush=True)
            score = valid[resolved.train.metric]
            best, bad = (score, 0) if score > best else (best, bad + 1)
            if args.patience and bad >= args.patience:  # seqcl's rule: strictly better resets
                print(f"early stop after {epoch} epochs", file=sys.stderr)
                break


def verify(args: argparse.Namespace, n_batches: int) -> None:
    """Parameters after ``n_batches`` with measurement at every step == ``train_epoch``'s (exact)."""
    states = []
    for measured in (False, True):
        resolved, plugins = build(args)
        data, model, optimizer, generator = setup(resolved, plugins)
        samples, device = training_samples(data), torch.device(resolved.train.device)
        if measured:
            run_epoch(model, optimizer, samples, resolved, generator, device, 1, n_batches, lambda *_: None)
        else:
            train_epoch(model, optimizer, samples, resolved, generator, device, max_batches=n_batches)
        states.append([p.detach().clone() for p in model.parameters()])
    same = all(torch.equal(a, b) for a, b in zip(*states))
    print(f"verify: {n_batches} batches, parameters identical with and without measurement: {same}")
    if not same:
        sys.exit(1)


# --------------------------------------------------------------------- summary


def _median(xs: list[float]) -> float:
    """The median (robust to the first step, where Adam's v̂ holds one gradient), NaNs dropped."""
    xs = sorted(x for x in xs if x == x)
    return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2 if xs else float("nan")


def summarize(paths: list[str], detail: bool = False) -> None:
    """Valid MRR@10 per epoch per file; with ``detail``, per-epoch medians of the step measures (Markdown)."""
    for path in paths:
        records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        epochs = [r for r in records if r["kind"] == "epoch"]
        mrr = [r["valid"]["mrr@10"] for r in epochs]
        best = max(range(len(mrr)), key=lambda i: mrr[i]) if mrr else -1
        curve = " ".join(f"{m:.4f}" for m in mrr)
        print(f"{Path(path).stem:45s} best {mrr[best] if mrr else float('nan'):.4f} @{best + 1} | {curve}")
        if not detail:
            continue
        steps = [r for r in records if r["kind"] == "step"]
        terms = [t for t in steps[0]["terms"] if t not in ("main", "total")] if steps else []
        pairs = list(steps[0]["pairs"]) if steps else []
        cols = (["ep", "valid mrr@10", "main"] + [f"{t} value" for t in terms]
                + [f"{t} ratio (T)/cos" for t in terms + ["total"]]
                + ["main/√v̂", "adam mem", "o norm", "o cos", "o erank"]
                + [f"{p} pos/neg/negmax logit" for p in pairs] + [f"{p} erank" for p in pairs])
        print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
        for e in epochs:
            st = [r for r in steps if r["epoch"] == e["epoch"]]
            row = [str(e["epoch"]), f"{e['valid']['mrr@10']:.4f}", f"{e['loss']['main']:.3f}"]
            row += [f"{e['loss'].get(t, float('nan')):.3g}" for t in terms]
            for t in terms + ["total"]:
                row.append(f"{_median([r['terms'][t]['ratio'] for r in st]):.2f} "
                           f"({_median([r['terms'][t]['ratio_transformer'] for r in st]):.2f})/"
                           f"{_median([r['terms'][t]['cos_main'] for r in st]):+.2f}")
            row += [f"{_median([r['update']['main_scaled_rms'] for r in st]):.3f}",
                    f"{_median([r['update']['adam_memory'] for r in st]):.2f}"]
            row += [f"{_median([r['views']['o'][k] for r in st]):.2f}" for k in ("norm", "mean_cos", "erank")]
            for p in pairs:
                row.append("/".join(f"{_median([r['pairs'][p][k] for r in st]):.1f}"
                                    for k in ("pos_logit_absmean", "neg_logit_absmean", "neg_logit_absmax")))
            for p in pairs:
                row.append("/".join(f"{_median([r['views'][v]['erank'] for r in st]):.1f}" for v in p.split("|")))
            print("| " + " | ".join(row) + " |")
        print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="builtin")
    ap.add_argument("--augmenter", default="aclsrec")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="seqcl config override")
    ap.add_argument("--with", dest="with_terms", action="append", default=[], metavar="TERM")
    ap.add_argument("--without", dest="without_terms", action="append", default=[], metavar="TERM")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--every", type=int, default=10, help="measure every N steps (0: never)")
    ap.add_argument("--max-batches", type=int, default=None, help="cut each epoch after N batches")
    ap.add_argument("--patience", type=int, default=0,
                    help="stop after N epochs without a strictly better valid metric (0: run all epochs)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="diagnosis.jsonl")
    ap.add_argument("--verify", type=int, default=0, metavar="N", help="check exactness over N batches and exit")
    ap.add_argument("--summarize", nargs="+", metavar="JSONL", help="print valid MRR@10 curves and exit")
    ap.add_argument("--detail", action="store_true", help="with --summarize: per-epoch tables of the measures")
    args = ap.parse_args()
    if args.summarize:
        summarize(args.summarize, args.detail)
    elif args.verify:
        verify(args, args.verify)
    else:
        diagnose(args)


if __name__ == "__main__":
    main()
