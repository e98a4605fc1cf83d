"""Data-parallel exactness (``seqcl.distributed``): 2 gloo ranks on CPU equal one process.

The test spawns two processes itself (``torch.multiprocessing``, a free port on
127.0.0.1). Each builds the same tiny model (dropout off), takes its shard of one
global batch of 9 rows (5 + 4: unequal shards, so the share weighting matters),
runs one DDP step and one sharded evaluation. The parent runs the same step on
the whole batch in one process. Loss, every parameter gradient and the metrics
must agree.

Random augmenters (``random``, ``dropout``) draw per batch from their own
stream, so a shard of 5 rows cannot draw what 9 rows draw. For the test, both
sides run the augmenter row by row with its stream seeded from the sample id
(:func:`_per_row_randomness`): the same sample gets the same augmentation in
either run, and everything else is the code under test.
"""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import seqcl.distributed as distributed
import seqcl.training as training
from seqcl.config import parse_assignment, resolve
from seqcl.data.dataset import eval_set, training_samples
from seqcl.errors import ConfigError
from seqcl.interfaces import Batch, Views
from seqcl.plugins import load_plugins
from seqcl.rng import DeviceGenerators, OwnsGenerators
from seqcl.training import _evaluate, distribute, iterate_batches, prepare, train_epoch

from conftest import TINY
from test_resume import assert_same_weights, records

#: (name, augmenter, terms made rank-local for the case): a rank-local ``align`` (a row mean) must still be
#: exact through the share weighting; a rank-local ``cl`` (negatives of its shard only) must not be
CASES = [("none", "none", ()), ("random", "random", ()), ("dropout", "dropout", ()),
         ("aclsrec", "aclsrec", ()), ("aclsrec-local-align", "aclsrec", ("align",)),
         ("aclsrec-local-cl", "aclsrec", ("cl",)), ("elcrec", "elcrec", ())]
EXACT = [c[0] for c in CASES if c[0] != "aclsrec-local-cl"]
GLOBAL_BATCH = 9
#: float32 sums in another order (a 5-row and a 4-row matmul instead of one 9-row one)
LOSS_RTOL, GRAD_RTOL, ATOL = 1e-5, 1e-4, 1e-6


def _config(plugins, dataset: Path, augmenter: str):
    pairs = [parse_assignment(a) for a in TINY[1::2]]
    pairs += [parse_assignment(a) for a in ("sasrec.dropout=0", "sasrec.attn_dropout=0", "eval.batch_size=64")]
    pairs += [("augmenter", augmenter), ("dataset", str(dataset))]
    return resolve(plugins.registry, overrides=pairs)


def _per_row_randomness(augmenter, max_len: int) -> None:
    """Run a random augmenter one row at a time, at full width, its stream seeded from the row's sample id.

    (A shard is trimmed to its own widest row, so without the padding a row's
    draws, e.g. ``torch.rand(items.shape)``, would depend on its shard.)
    """
    if not isinstance(augmenter, OwnsGenerators):
        return
    forward = augmenter.forward

    def per_row(batch: Batch, encoder, h_in, hidden) -> Views:
        rows = []
        for i in range(batch.size):
            augmenter.generators = DeviceGenerators(1000 + int(batch.sample_ids[i]))
            r = slice(i, i + 1)
            items = F.pad(batch.items[r], (max_len - batch.items.shape[1], 0))  # draws must not see the width
            rows.append(forward(Batch(items, batch.targets[r], batch.sample_ids[r]), encoder,
                                h_in[r] if h_in is not None else None, hidden[r]))
        return Views({n: torch.cat([v.tensors[n] for v in rows]) for n in rows[0].tensors}, rows[0].pairs)

    augmenter.forward = per_row


def _one_step(plugins, dataset: Path, augmenter: str, local: tuple[str, ...]) -> dict:
    """Loss, gradients (in ``model.parameters()`` order) and valid metrics/ranks of one step."""
    resolved = _config(plugins, dataset, augmenter)
    torch.manual_seed(resolved.train.seed)
    data, _, model = prepare(resolved, plugins)
    for term in local:
        type(model.terms[term]).needs_global_batch = False
    _per_row_randomness(model.augmenter, model.max_len)
    distribute(model, resolved.train.seed)
    batch = next(iterate_batches(training_samples(data), GLOBAL_BATCH, model.max_len, torch.Generator().manual_seed(0),
                                 torch.device("cpu"), world=distributed.world()))
    model.train(True)
    out = model.step(batch)
    out.total.backward()
    grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
    result = _evaluate(model, eval_set(data, "valid"), resolved, torch.device("cpu"))
    for term in local:
        type(model.terms[term]).needs_global_batch = True
    return {"loss": out.value().detach(), "parts": {k: v.detach() for k, v in out.parts.items()}, "grads": grads,
            "rows": batch.size, "metrics": result.metrics, "ranks": result.ranks}


def _stop_before_epoch(n: int):
    """A ``train_epoch`` that raises KeyboardInterrupt on every rank when epoch ``n`` would start."""
    calls = []

    def stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return train_epoch(*args, **kwargs)

    return stop


def _train_and_resume(plugins, dataset: Path, root: Path) -> dict:
    """An uninterrupted 2-rank run (a) and one stopped after epoch 1 and resumed (b); rank 0's run dirs."""
    pairs = [parse_assignment(a) for a in (*TINY[1::2], "train.epochs=2", "train.patience=10",
                                           "train.batch_size=512")]
    quiet = lambda msg: None  # noqa: E731
    runs = {}
    for name in ("a", "b"):
        resolved = resolve(plugins.registry, overrides=pairs + [("augmenter", "random"), ("dataset", str(dataset)),
                                                                ("run.dir", str(root / name))])
        if name == "a":
            runs[name] = training.train(resolved, plugins, log=quiet).run_dir
            continue
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(training, "train_epoch", _stop_before_epoch(2))
            with pytest.raises(KeyboardInterrupt):
                training.train(resolved, plugins, log=quiet)
        (path,) = (root / name).glob("*.incomplete") if dist.get_rank() == 0 else [None]
        path = distributed.from_main(lambda: path)  # only rank 0 sees the folder
        runs[name] = training.resume(path, plugins, log=quiet).run_dir
    return runs


def _worker(rank: int, world_size: int, port: int, out: str, dataset: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        plugins = load_plugins()
        results = {name: _one_step(plugins, Path(dataset), aug, local) for name, aug, local in CASES}
        results["resume"] = _train_and_resume(plugins, Path(dataset), Path(out) / "runs")
        pinned = resolve(plugins.registry, overrides=[("dataset", dataset), ("run.dir", str(Path(out) / "pinned"))])
        # resolve() refuses cuda:1 without CUDA; the torchrun check comes first in training
        pinned = dataclasses.replace(pinned, train=dataclasses.replace(pinned.train, device="cuda:1"))
        with pytest.raises(ConfigError) as error:
            training.train(pinned, plugins, log=lambda msg: None)
        results["device_error"] = str(error.value)
        # state set after DDP's broadcast from each rank's own stream (ELCRec's k-means in on_fit_start)
        torch.manual_seed(100 + rank)
        late = torch.nn.Linear(3, 2)
        results["before_sync"] = late.weight.detach().clone()
        distributed.sync_from_main([late])
        results["after_sync"] = late.weight.detach().clone()
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    """A cache folder for the module-scoped runs (the autouse per-test one is not set up yet for them)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEQCL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, tiny_file, module_cache):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, _free_port(), str(out), str(tiny_file)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def one_process(tiny_file, module_cache):
    plugins = load_plugins()
    return {name: _one_step(plugins, tiny_file, aug, local) for name, aug, local in CASES}


@pytest.mark.parametrize("name", EXACT)
def test_two_ranks_equal_one_process(two_ranks, one_process, name):
    """Loss (rtol 1e-5), every gradient (rtol 1e-4, atol 1e-6) and the metrics (exactly) of 2 ranks = 1 process."""
    single, ranks = one_process[name], [r[name] for r in two_ranks]
    assert [r["rows"] for r in ranks] == [5, 4] and single["rows"] == GLOBAL_BATCH
    for r in ranks:
        assert torch.allclose(r["loss"], single["loss"], rtol=LOSS_RTOL, atol=ATOL), (r["loss"], single["loss"])
        assert r["parts"].keys() == single["parts"].keys()
        for k in single["parts"]:
            assert torch.allclose(r["parts"][k], single["parts"][k], rtol=LOSS_RTOL, atol=ATOL), k
        assert len(r["grads"]) == len(single["grads"])
        for i, (g, ref) in enumerate(zip(r["grads"], single["grads"])):
            assert torch.allclose(g, ref, rtol=GRAD_RTOL, atol=ATOL), (i, (g - ref).abs().max())
        assert r["metrics"] == single["metrics"]
        assert torch.equal(r["ranks"], single["ranks"])
    assert any(g.abs().sum() > 0 for g in single["grads"])


def test_without_the_gather_contrastive_loss_differs(two_ranks, one_process):
    """The comparison can fail: ``cl`` on each shard's own negatives is not the global batch's loss."""
    single, shard_local = one_process["aclsrec-local-cl"], two_ranks[0]["aclsrec-local-cl"]
    assert set(single["parts"]) == {"main", "cl", "align", "boundary"}
    assert torch.allclose(shard_local["parts"]["main"], single["parts"]["main"], rtol=LOSS_RTOL, atol=ATOL)
    assert not torch.allclose(shard_local["parts"]["cl"], single["parts"]["cl"], rtol=1e-3)


def test_shard_ids_split_every_batch():
    ids = torch.arange(9)
    parts = [distributed.shard_ids(ids, distributed.World(r, 2)) for r in range(2)]
    assert torch.equal(torch.cat(parts), ids) and [len(p) for p in parts] == [5, 4]
    assert distributed.shard_ids(torch.arange(1), distributed.World(1, 2)) is None
    assert distributed.shard_ids(ids, distributed.World()) is ids


def test_two_ranks_resume_exactly_and_rank_0_writes(two_ranks):
    """Stopped after epoch 1 and resumed (2 ranks) = uninterrupted (2 ranks): records and best weights."""
    a, b = two_ranks[0]["resume"]["a"], two_ranks[0]["resume"]["b"]
    assert two_ranks[1]["resume"] == two_ranks[0]["resume"]  # every rank reports rank 0's run dir
    assert [r["epoch"] for r in records(a)] == [1, 2]
    assert records(a) == records(b)
    assert_same_weights(a / "best.pt", b / "best.pt")
    assert [p.name for p in a.parent.iterdir()] == [a.name] and [p.name for p in b.parent.iterdir()] == [b.name]
    assert len(torch.load(b / "last.pt", weights_only=True)["ranks"]) == 2  # every rank's streams


def test_one_process_is_untouched(monkeypatch, tmp_path):
    """Outside torchrun: no group, rank 0 of 1, ``from_main`` just calls, nothing gathered or sharded."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed.session() as w:
        assert w == distributed.World() and not dist.is_initialized()
        assert distributed.from_main(lambda: 42) == 42
        assert distributed.gather_streams({}) is None
        assert distributed.step_shard(Batch(torch.ones(3, 2, dtype=torch.long), torch.ones(3), torch.arange(3))) is None


def test_only_rank_0_reports(monkeypatch, tmp_path, capsys):
    """Ranks > 0 of a torchrun job print no result table and write no files."""
    from seqcl.cli import _print_result
    from seqcl.runs import SilentRunDir
    from seqcl.training import TrainResult

    result = TrainResult(tmp_path, 1, {"hr@5": 0.5}, {"hr@5": 0.25}, 1, 1.0)
    monkeypatch.setenv("RANK", "1")
    _print_result(result)
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("RANK", "0")
    _print_result(result)
    assert "0.2500" in capsys.readouterr().out
    silent = SilentRunDir(tmp_path / "run")
    silent.write_json("summary.json", {})
    silent.save("last.pt", {})
    assert not any(tmp_path.iterdir()) and silent.read_jsonl("metrics.jsonl") == [] and silent.finish() == silent.final


def test_contrastive_terms_declare_the_global_batch():
    """``cl``, ``align`` and ``boundary``, and every registered term with in-batch negatives, are computed
    on the gathered global batch under torchrun (a term that forgot would contrast one rank's rows only)."""
    plugins = load_plugins()
    for name in ("cl", "align", "boundary"):
        assert distributed.needs_global_batch(plugins.registry.get("loss_term", name).factory)
    terms = {name: plugins.registry.get("loss_term", name).factory for name in plugins.registry.names("loss_term")}
    with_negatives = [name for name, term in terms.items() if getattr(term, "needs_negatives", False)]
    assert {"cl", "boundary", "mcl", "intent"} <= set(with_negatives)
    assert [n for n in with_negatives if not distributed.needs_global_batch(terms[n])] == []


def test_a_pinned_device_index_is_refused_under_torchrun(two_ranks):
    """``train.device=cuda:1`` would put every rank on one device: one line, before anything is built."""
    for r in two_ranks:
        assert r["device_error"] == ("train.device=cuda:1: under torchrun set train.device=cuda "
                                     "(rank r uses device LOCAL_RANK)")


@settings(max_examples=60, deadline=None)
@given(b=st.integers(1, 64), n=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_share_weights_make_the_rank_average_the_global_mean(b, n, seed):
    """Σ_r weight_r · mean(shard_r) / N = mean(global batch), for any batch size and number of ranks."""
    losses = torch.rand(b, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ids = torch.arange(b)
    shards = [distributed.shard_ids(ids, distributed.World(r, n)) for r in range(n)]
    if b < n:
        assert all(s is None for s in shards)
        return
    sizes = tuple(len(s) for s in shards)
    assert torch.equal(torch.cat(shards), ids) and max(sizes) - min(sizes) <= 1
    ranks_average = sum(distributed.Shard(r, sizes, sizes).weight * losses[s].mean() for r, s in enumerate(shards)) / n
    assert torch.isclose(ranks_average, losses.mean(), rtol=1e-12)


def test_state_set_after_the_broadcast_is_synced_from_rank_0(two_ranks):
    """``sync_from_main`` (run after ``on_fit_start``) leaves every rank with rank 0's parameters."""
    r0, r1 = two_ranks
    assert not torch.equal(r0["before_sync"], r1["before_sync"])  # the ranks did draw differently
    assert torch.equal(r1["after_sync"], r0["before_sync"]) and torch.equal(r0["after_sync"], r0["before_sync"])
