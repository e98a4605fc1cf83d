"""Shared fixtures: a tiny sequence file built from the synthetic generator, the plugin set.

Plugins are found through the installed ``seqcl`` entry points, which ``pip
install -e .`` writes once. When they differ from this checkout's
``pyproject.toml`` (installed before a plugin package was added or removed, or
from another worktree sharing the venv), a ``seqcl`` dist-info holding the
checkout's entry points is put first on ``sys.path`` and ``PYTHONPATH``
(subprocesses) for the session, so the tests see the plugins of the code under test.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from seqcl.data.synthetic import SyntheticConfig, generate

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
TINY = ["--set", "sasrec.hidden_size=16", "--set", "sasrec.inner_size=32", "--set", "data.max_len=20",
        "--set", "train.batch_size=128"]


def _use_checkout_entry_points() -> None:
    """Shadow stale installed ``seqcl`` metadata with this checkout's entry points (see the module doc)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: trust the installed metadata
        return
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = project.get("entry-points", {})
    wanted = groups.get("seqcl", {})
    if {ep.name: ep.value for ep in importlib.metadata.entry_points(group="seqcl")} == wanted:
        return
    where = Path(tempfile.mkdtemp(prefix="seqcl-entry-points-"))
    atexit.register(shutil.rmtree, where, ignore_errors=True)
    info = where / f"seqcl-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: seqcl\nVersion: {project['version']}\n")
    groups = {**groups, "console_scripts": project.get("scripts", {})}
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in eps.items()) + "\n"
        for group, eps in groups.items()))
    sys.path.insert(0, str(where))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(where), *filter(None, [os.environ.get("PYTHONPATH")])])


_use_checkout_entry_points()


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
