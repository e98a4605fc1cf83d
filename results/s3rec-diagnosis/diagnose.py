"""Why does S3Rec fine-tune so slowly after MIP pre-training? (results §5; validation only)

Fine-tunes the table2 S3Rec run's fine-tuning config for EPOCHS epochs from
different starting weights and records valid MRR@10 and the training loss per
epoch. Each run is stopped after its last epoch's checkpoint, before the test
split is evaluated: test is not read.

    python results/s3rec-diagnosis/diagnose.py VARIANT [VARIANT ...]
    python results/s3rec-diagnosis/diagnose.py check     # only the MIP-term check of the mapping

Variants (the pre-trained weights are the run's 1-pretrain/last.pt, MIP epoch 150: on the machine
that trained it; the folder is committed without it):

- ``scratch``      — no pre-training (s3rec's causal encoder from its seeded initialisation);
- ``mip``          — every encoder weight pre-trained (what the run does);
- ``mip-no-items`` — pre-trained, but the item table from the fresh initialisation;
- ``mip-items``    — the item table pre-trained, everything else fresh;
- ``official``     — the official code's released Beauty checkpoint (full S3Rec: AAP + MIP + MAP + SP,
  150 epochs; ``reproduce/Beauty-epochs-150.pt`` of RUCAIBox/CIKM2020-S3Rec, path in ``$S3REC_OFFICIAL``),
  mapped onto seqcl's layout (same ids: the repository's Beauty.txt is byte-identical to ours).
  Checked by the MIP loss per masked item that its own ``mip_norm`` gives with seqcl's bidirectional
  encoder on training samples (``official_mip_term``; a wrong mapping gives ≈ ln 2).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from seqcl import checkpoint
from seqcl.config import read_yaml, resolve
from seqcl.plugins import load_plugins
from seqcl.training import _set_seed, prepare, train

HERE = Path(__file__).resolve().parent
RUNS = HERE.parent / "table2-beauty" / "runs"
EPOCHS = 5
ITEMS = "item_embedding.weight"
OFFICIAL = "/tmp/s3rec_official_beauty150.pt"
SCRATCH = Path("/tmp/s3rec-diagnosis")


class Stop(Exception):
    """Raised after the last epoch's record: the run ends before its test evaluation."""


def official_weights(path: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The released checkpoint as seqcl's ``s3rec`` encoder state, and its ``mip_norm``."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    out = {"item_embedding.weight": sd["item_embeddings.weight"],
           "position_embedding.weight": sd["position_embeddings.weight"],
           "ln.weight": sd["LayerNorm.weight"], "ln.bias": sd["LayerNorm.bias"]}
    for i in range(2):
        src = f"item_encoder.layer.{i}."
        for kind in ("weight", "bias"):
            out[f"blocks.{i}.qkv.{kind}"] = torch.cat([sd[f"{src}attention.{n}.{kind}"]
                                                      for n in ("query", "key", "value")])
            out[f"blocks.{i}.out.{kind}"] = sd[f"{src}attention.dense.{kind}"]
            out[f"blocks.{i}.ln1.{kind}"] = sd[f"{src}attention.LayerNorm.{kind}"]
            out[f"blocks.{i}.ff1.{kind}"] = sd[f"{src}intermediate.dense_1.{kind}"]
            out[f"blocks.{i}.ff2.{kind}"] = sd[f"{src}intermediate.dense_2.{kind}"]
            out[f"blocks.{i}.ln2.{kind}"] = sd[f"{src}intermediate.LayerNorm.{kind}"]
    return out, {"weight": sd["mip_norm.weight"], "bias": sd["mip_norm.bias"]}


def mip_term(plugins, tree, encoder_state, mip_norm_state, batches: int = 20) -> float:
    """Mean MIP loss per masked item of ``encoder_state`` (bidirectional) with that ``mip_norm``, on
    the first ``batches`` × 100 training samples, in eval mode (no dropout). Between softplus(−1) ≈ 0.313
    (perfect) and softplus(1); ≈ ln 2 = 0.693 when the scores carry no information."""
    import seqcl_s3rec.objective as objective
    from seqcl.data.dataset import training_samples
    from seqcl.data.loading import load_data
    from seqcl.interfaces import Batch

    tree = {k: v for k, v in tree.items() if k != "ce"}  # the fine-tuning objective's section
    resolved = resolve(plugins.registry, tree, [("objective", "mip"), ("s3rec.attention", "bidirectional"),
                                                ("run.dir", str(SCRATCH))])
    _set_seed(resolved.train.seed)
    _, _, model = prepare(resolved, plugins)
    model.encoder.load_state_dict(encoder_state)
    model.objective.mip_norm.load_state_dict(mip_norm_state)
    model.encoder.eval(); model.objective.eval()
    samples = training_samples(load_data(resolved.dataset, resolved.data)[0])
    counted, real = [], objective.mip_loss
    objective.mip_loss = lambda projected, *rest: (counted.append(projected.shape[0]), real(projected, *rest))[1]
    total = 0.0
    try:
        with torch.no_grad():
            for b in range(batches):
                ids = torch.arange(b * 100, (b + 1) * 100)
                batch = Batch(items=samples.windows(ids, resolved.data.max_len), targets=samples.targets[ids],
                              sample_ids=ids)
                total += float(model.objective(model.encoder, batch))
    finally:
        objective.mip_loss = real
    return round(total / sum(counted), 4)


def starting_weights(variant: str, fresh: dict[str, torch.Tensor], mip: dict[str, torch.Tensor],
                     official: dict[str, torch.Tensor] | None):
    if variant == "scratch":
        return None
    if variant == "mip":
        return mip
    if variant == "mip-no-items":
        return {**mip, ITEMS: fresh[ITEMS]}
    if variant == "mip-items":
        return {**fresh, ITEMS: mip[ITEMS]}
    if variant == "official":
        return official
    raise SystemExit(f"unknown variant {variant!r}")


def main(variants: list[str]) -> None:
    plugins = load_plugins()
    run = next(p for p in (RUNS / "s3rec__s1", RUNS / "s3rec__s1.incomplete") if p.is_dir())
    finetune = next(p for p in (run / "2-finetune", run / "2-finetune.incomplete") if p.is_dir())
    tree = read_yaml(finetune / "config.yaml")
    mip = checkpoint.load(run / "1-pretrain" / "last.pt")["model"]["encoder"]
    base = resolve(plugins.registry, tree, [("run.dir", str(SCRATCH))])
    _set_seed(base.train.seed)  # as train() does: the fresh weights are the run's own initialisation
    _, _, model = prepare(base, plugins)
    fresh = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    del model
    official, checks = None, {}
    if "official" in variants or variants == ["check"]:
        official, official_mip_norm = official_weights(os.environ.get("S3REC_OFFICIAL", OFFICIAL))
        ours_mip_norm = {k.removeprefix("mip_norm."): v for k, v in
                         checkpoint.load(run / "1-pretrain" / "last.pt")["model"]["objective"].items()
                         if k.startswith("mip_norm.")}
        checks = {"official_mip_term": mip_term(plugins, tree, official, official_mip_norm),
                  "ours_mip_term": mip_term(plugins, tree, mip, ours_mip_norm)}
        print(json.dumps(checks), flush=True)
    if variants == ["check"]:
        return
    for variant in variants:
        init = starting_weights(variant, fresh, mip, official)
        resolved = resolve(plugins.registry, tree, [("train.epochs", EPOCHS + 1), ("run.dir", str(SCRATCH)),
                                                    ("run.name", variant)])
        for old in (SCRATCH / variant, SCRATCH / f"{variant}.incomplete"):
            shutil.rmtree(old, ignore_errors=True)
        started = time.time()

        def log(msg: str) -> None:
            print(f"[{variant}] {msg}", flush=True)
            if msg.startswith(f"epoch {EPOCHS:3d} |"):
                raise Stop

        try:
            train(resolved, plugins, log=log, init={"encoder": init} if init is not None else None,
                  init_label=variant)
        except Stop:
            pass
        folder = SCRATCH / f"{variant}.incomplete"
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        rows = [{"epoch": r["epoch"], "loss": round(r["loss"]["main"], 4),
                 "valid_mrr@10": round(r["valid"]["mrr@10"], 4), "train_seconds": r["train_seconds"]}
                for r in records]
        norms = {"item_row_norm": round(float((init or fresh)[ITEMS][1:].norm(dim=-1).mean()), 3)}
        out = {"variant": variant, "start": norms, "epochs": rows, "wall_s": round(time.time() - started, 1),
               **(checks if variant == "official" else {})}
        (HERE / f"{variant}.json").write_text(json.dumps(out, indent=1) + "\n")
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["scratch", "mip", "mip-no-items", "mip-items", "official"])
