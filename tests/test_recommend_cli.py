"""seqcl recommend: original ids in and out, --users files, JSON, unknown ids as one-line errors."""

from __future__ import annotations

import json

import pytest

from seqcl.api import load_run
from seqcl.cli import main

from trained import train_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("recommend"))


@pytest.fixture(scope="module")
def run(tiny):
    return load_run(tiny.path)


def call(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_history_gives_the_apis_list(capsys, tiny, run):
    history = tiny.sequences["user0010"][:-1]
    code, out, err = call(capsys, "recommend", tiny.path, "--history", " ".join(history), "-k", 7)
    assert code == 0, err
    assert out.split() == run.recommend([history], k=7)[0]


def test_users_file_in_the_training_format(capsys, tiny, run, tmp_path):
    users = ["user0001", "user0002", "user0150"]
    path = tmp_path / "histories.txt"
    path.write_text("\n".join(f"{u} {' '.join(tiny.sequences[u])}" for u in users) + "\n\n")
    code, out, err = call(capsys, "recommend", tiny.path, "--users", path)
    assert code == 0, err
    want = run.recommend([tiny.sequences[u] for u in users], k=10)
    assert [line.split() for line in out.splitlines()] == [[u, *w] for u, w in zip(users, want)]
    code, out, _ = call(capsys, "recommend", tiny.path, "--users", path, "--json", "-k", 3)
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["user"] for r in records] == users and [r["items"] for r in records] == [w[:3] for w in want]
    assert all(r["scores"] == sorted(r["scores"], reverse=True) for r in records)


def test_keep_history_may_recommend_history_items(capsys, tiny, run):
    history = tiny.sequences["user0020"]
    code, out, _ = call(capsys, "recommend", tiny.path, "--history", " ".join(history), "--keep-history",
                        "-k", run.num_items)
    assert code == 0 and set(history) <= set(out.split())


def test_unknown_item_is_a_one_line_error_or_skipped(capsys, tiny, run, tmp_path):
    known = tiny.sequences["user0005"]
    path = tmp_path / "h.txt"
    path.write_text(f"a {known[0]}\nb {known[1]} sku-0 {known[2]}\nc sku-0\n")
    code, out, err = call(capsys, "recommend", tiny.path, "--users", path)
    assert (code, out) == (2, "")
    assert err == f"error: {path}:2: item 'sku-0' is not in the run's item id map ({run.num_items} items; --skip-unknown " \
                  "skips such ids)\n"
    code, out, err = call(capsys, "recommend", tiny.path, "--users", path, "--skip-unknown")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["a", "b"]
    assert f"warning: {path}:2: item 'sku-0' is not in the run's item id map; skipped" in err
    assert f"warning: {path}:3: no known item left; history skipped" in err
    code, _, err = call(capsys, "recommend", tiny.path, "--history", "nope")
    assert code == 2 and err.startswith("error: --history: item 'nope' is not in the run's item id map")


@pytest.mark.parametrize("args, needle", [
    ([], "exactly one of --history"),
    (["--history", "x", "--users", "f"], "exactly one of --history"),
    (["--history", "x", "-k", "0"], "-k must be >= 1"),
])
def test_usage_mistakes_exit_2(capsys, tiny, args, needle):
    code, _, err = call(capsys, "recommend", tiny.path, *args)
    assert code == 2 and needle in err and err.count("\n") == 1


def test_not_a_run_folder(capsys, tmp_path):
    code, _, err = call(capsys, "recommend", tmp_path, "--history", "1")
    assert code == 2 and err == f"error: {tmp_path}: not a trained run folder (config.yaml missing)\n"


def test_help_lists_the_commands(capsys):
    code, out, _ = call(capsys, "--help")
    assert code == 0 and "recommend" in out and "export" in out


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_device_reaches_the_model(capsys, tiny):
    code, _, err = call(capsys, "recommend", tiny.path, "--history", "x", "--device", "cuda")
    assert code == 2 and err == "error: train.device is 'cuda' but CUDA is not available\n"


def test_export_out_folder(capsys, tiny, tmp_path):
    code, out, err = call(capsys, "export", tiny.path, "--out", tmp_path / "serve")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "serve").iterdir()) == ["export.json", "items.json",
                                                                     "model.torchscript.pt"]
