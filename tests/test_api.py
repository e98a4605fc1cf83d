"""The Python API: train, load a run without its data, recommend in the data's own ids, docs/api.md runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import seqcl
from seqcl.api import UnknownItem, load_run, nest, top_k
from seqcl.errors import ConfigError, DataError

from trained import train_tiny

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("api"))


@pytest.fixture(scope="module")
def run(tiny):
    return load_run(tiny.path)


def test_package_exports_the_api():
    assert {"train", "load_run", "Run"} <= set(dir(seqcl))
    assert seqcl.load_run is load_run


def test_load_run_reads_no_data_file(tiny, run):
    assert not Path(run.config["dataset"]).exists()  # deleted after training
    summary = json.loads((tiny.path / "summary.json").read_text())
    assert run.metrics == {"valid": summary["valid"], "test": summary["test"]}
    assert [r["epoch"] for r in run.history] == [1, 2]
    assert run.config["train"]["epochs"] == 2 and run.config["sasrec"]["hidden_size"] == 16  # dotted keys arrived
    assert run.num_items == len({i for seq in tiny.sequences.values() for i in seq})


def test_id_map_gives_back_the_files_ids(tiny, run):
    """Every user's test input, mapped back through ids.json, is the CSV's own sequence (minus its last item)."""
    assert sorted(run.ids.users) == sorted(tiny.sequences)
    assert run.ids.users[0] == "user0199"  # users in file order (the CSV lists them in reverse)
    assert set(run.ids.items) == {i for seq in tiny.sequences.values() for i in seq}
    first = tiny.sequences["user0199"]
    assert run.ids.items[:2] == list(dict.fromkeys(first))[:2]  # numbered by first appearance


def test_recommend_agrees_with_the_runs_ranks(tiny, run):
    """ranks.pt row u is user ids.users[u]: its test target is in the top 10 exactly when its rank is < 10."""
    ranks = run.ranks("test")
    users = run.ids.users
    histories = [tiny.sequences[u][:-1] for u in users]
    top = run.recommend(histories, k=10)
    hits = [tiny.sequences[u][-1] in t for u, t in zip(users, top)]
    assert hits == [ranks[u] < 10 for u in users]
    assert 0 < sum(hits) < len(users)  # something to compare
    hr10 = sum(hits) / len(users)
    assert hr10 == pytest.approx(run.metrics["test"]["hr@10"])


def test_ranks_of_both_test_protocols_and_a_bad_split(run):
    excluded, kept = run.ranks("test_history_excluded"), run.ranks("test_history_kept")
    assert excluded == run.ranks("test")  # the configured protocol (eval.exclude_history: true)
    assert all(kept[u] >= excluded[u] for u in excluded)  # history items can only rank above the target
    assert any(kept[u] > excluded[u] for u in excluded)
    with pytest.raises(ConfigError, match=r"no split 'tset'; it holds test, test_history_excluded"):
        run.ranks("tset")


def test_recommend_excludes_the_history_and_returns_the_files_ids(tiny, run):
    history = tiny.sequences["user0003"]
    top = run.recommend([history], k=run.num_items)[0]
    assert not set(top) & set(history)
    assert len(top) == run.num_items - len(set(history))  # everything else, nothing excluded twice
    kept = run.recommend([history], k=run.num_items, exclude_history=False)[0]
    assert sorted(kept) == sorted(run.ids.items)
    assert all(re.fullmatch(r"sku-\d+", item) for item in top)


def test_score_embed_and_item_embeddings_agree(tiny, run):
    histories = [tiny.sequences[u] for u in run.ids.users[:7]]
    scores = run.score(histories)
    h, table = run.embed(histories), run.item_embeddings()
    assert scores.shape == (7, run.num_items) and h.shape == (7, 16) and table.shape == (run.num_items, 16)
    assert torch.allclose(scores, h @ table.T, atol=1e-5)
    assert not any(t.is_inference() for t in (scores, h, table))  # usable with autograd afterwards
    pairs = run.recommend(histories, k=3, scores=True, exclude_history=False)
    for row, best in enumerate(pairs):
        column = run.ids.items.index(best[0][0])
        assert best[0][1] == pytest.approx(float(scores[row].max())) == pytest.approx(float(scores[row, column]))


def test_small_batches_equal_one_batch(tiny, run):
    """Batching is an optimisation: batches of 3 give the lists and scores of one batch."""
    histories = [tiny.sequences[u][:-1] for u in run.ids.users[:20]]
    whole, scores = run.recommend(histories, k=10), run.score(histories)
    small = load_run(tiny.path)
    small.batch_size = 3
    assert small.recommend(histories, k=10) == whole
    assert torch.allclose(small.score(histories), scores, atol=1e-5)


def test_only_the_last_max_len_items_count(tiny, run):
    history = [i for seq in list(tiny.sequences.values())[:5] for i in seq]
    assert len(history) > run.max_len
    assert torch.equal(run.embed([history]), run.embed([history[-run.max_len:]]))


def test_unknown_ids_fail_or_are_skipped(run):
    known = run.ids.items[:3]
    with pytest.raises(UnknownItem, match=r"history 1: item 'nope' is not in the run's item id map"):
        run.recommend([known, [known[0], "nope"]])
    with pytest.warns(UserWarning, match="skipped 1 unknown item id"):
        skipped = run.recommend([[known[0], "nope"]], k=5, skip_unknown=True)
    assert skipped == run.recommend([[known[0]]], k=5)
    assert run.recommend([]) == [] and run.score([]).shape == (0, run.num_items) and run.embed([]).shape == (0, 16)
    with pytest.raises(DataError, match="history 0 is empty"):
        run.recommend([[]])
    with pytest.raises(DataError, match="a history is a list of item ids"):
        run.recommend(["sku-10 sku-17"])
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        run.recommend([known], k=0)


def test_load_run_errors_are_one_line(tmp_path, tiny):
    with pytest.raises(ConfigError, match="no such run folder"):
        load_run(tmp_path / "missing")
    (tmp_path / "config.yaml").write_text((tiny.path / "config.yaml").read_text())
    with pytest.raises(ConfigError, match=r"not a trained run folder \(best.pt missing\)"):
        load_run(tmp_path)


def brute_force_top_k(scores: list[float], excluded: list[bool], k: int) -> list[int]:
    """Score descending, NaN last among candidates, equal scores by lower column; excluded never."""
    key = [(-s if s == s else float("inf"), c) for c, s in enumerate(scores)]
    return [c for _, c in sorted(key) if not excluded[c]][:k]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([-1.0, 0.0, 0.5, 2.0, float("nan"), float("-inf")]), st.booleans()),
                min_size=1, max_size=12), st.integers(1, 14))
def test_top_k_orders_ties_by_id_and_never_returns_an_excluded_item(cells, k):
    scores = torch.tensor([[s for s, _ in cells]])
    excluded = torch.tensor([[e for _, e in cells]])
    cols, values = top_k(scores, excluded, k)
    want = brute_force_top_k(scores[0].tolist(), excluded[0].tolist(), k)
    got = cols[0].tolist()
    n = len(want)
    assert got[:n] == want
    assert all(c == 0 for c in got[n:]) and all(v == float("-inf") for v in values[0, n:].tolist())
    assert len(got) == min(k, len(cells))


def test_nest_turns_dotted_keys_into_sections():
    assert nest({"train.epochs": 3, "train": {"lr": 0.1}, "sasrec.hidden_size": 8, "with": ["cl"]}) == {
        "train": {"epochs": 3, "lr": 0.1}, "sasrec": {"hidden_size": 8}, "with": ["cl"]}
    with pytest.raises(ConfigError, match="'train' is not a section"):
        nest({"train": 1, "train.epochs": 2})


def test_docs_example_runs(tmp_path):
    """The first ```python block of docs/api.md, run as a script in an empty folder."""
    text = (ROOT / "docs" / "api.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    script = tmp_path / "example.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-1].startswith("same after load_run: True"), done.stdout
    top = json.loads(lines[0])
    assert len(top) == 2 and all(len(items) == 10 for items in top)
