"""seqcl.memory: glibc's mmap threshold is fixed for training runs (issue #12, RSS growth).

The RSS effect itself is measured by ``benchmarks/memory.py`` (see
benchmarks/results/2026-11-29-memory.md); here: it is applied, once, and opt-outs hold.
Each case runs in a fresh interpreter, since mallopt is process-wide and irreversible.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="glibc only")

SNIPPET = "from seqcl.memory import limit_heap_growth as f; print(f(), f())"


def _run(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SEQCL_MALLOC", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


@glibc
def test_applied_on_glibc() -> None:
    assert _run({}) == "True True"


@glibc
@pytest.mark.parametrize("env", [{"SEQCL_MALLOC": "default"}, {"MALLOC_MMAP_THRESHOLD_": "131072"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}])
def test_user_settings_win(env: dict[str, str]) -> None:
    assert _run(env) == "False False"


def test_cli_sets_thp_env_before_torch() -> None:
    code = "import os, sys; import seqcl.cli; print(os.environ.get('THP_MEM_ALLOC_ENABLE'))"
    env = {k: v for k, v in os.environ.items() if k not in ("SEQCL_MALLOC", "THP_MEM_ALLOC_ENABLE")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
