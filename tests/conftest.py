"""Shared fixtures: a tiny sequence file built from the synthetic generator, the plugin set."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqcl.data.synthetic import SyntheticConfig, generate

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY = ["--set", "sasrec.hidden_size=16", "--set", "sasrec.inner_size=32", "--set", "data.max_len=20",
        "--set", "train.batch_size=128"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SEQCL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_file(tmp_path_factory) -> Path:
    """~300 users in one-line-per-user format (written once per session)."""
    data = generate(seed=1, config=SyntheticConfig(num_users=300))
    path = tmp_path_factory.mktemp("data") / "tiny.txt"
    lines = []
    for u in range(data.num_users):
        seq = data.items[data.offsets[u]:data.offsets[u + 1]].tolist()
        lines.append(" ".join(map(str, [u + 1, *seq])))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def beauty() -> Path:
    path = SHARED_DATA / "Beauty.txt"
    if not path.is_file():
        pytest.skip("../shared/data/Beauty.txt not present")
    return path
