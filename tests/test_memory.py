"""seqcl.memory: glibc's malloc as ``train.malloc`` says, and its tcache off, for training runs (issue #12, RSS growth).

The RSS effect itself is measured by ``benchmarks/memory.py`` (see
benchmarks/results/2026-11-29-memory.md); here: it is applied, once, and opt-outs hold.
Each case runs in a fresh interpreter, since mallopt is process-wide and irreversible.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from seqcl.memory import MALLOC_TUNABLES, tunables_env

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="glibc only")

SNIPPET = "from seqcl.memory import apply_malloc_policy as f; print(f(), f())"
_MALLOC_ENV = ("SEQCL_MALLOC", "MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def _run(env_extra: dict[str, str], code: str = SNIPPET) -> str:
    env = {k: v for k, v in os.environ.items() if k not in _MALLOC_ENV}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


@glibc
def test_applied_on_glibc() -> None:
    assert _run({}) == "True True"


@glibc
@pytest.mark.parametrize("env", [{"SEQCL_MALLOC": "default"}, {"MALLOC_MMAP_THRESHOLD_": "131072"},
                                 {"MALLOC_MMAP_MAX_": "0"}, {"MALLOC_TRIM_THRESHOLD_": "131072"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"}])
def test_user_settings_win(env: dict[str, str]) -> None:
    assert _run(env) == "False False"


#: where a block comes from under each policy in turn (a study worker's runs switch in one process):
#: glibc counts mmap'd blocks in mallinfo2's hblkhd, heap blocks in uordblks. The last block is
#: larger than what ``reuse`` left free in the heap, which glibc would otherwise hand out first.
WHERE = """
import ctypes
from seqcl.memory import apply_malloc_policy, heap_stats
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
heap_stats()
for policy, mib in (("compact", 20), ("reuse", 20), ("compact", 40)):
    assert apply_malloc_policy(policy)
    before = heap_stats()
    p = libc.malloc(mib * 2**20)
    after = heap_stats()
    libc.free(p)
    print(policy, after["mmap"] - before["mmap"] >= mib * 2**20, after["in_use"] - before["in_use"] >= mib * 2**20)
"""


@glibc
def test_policies_move_large_blocks_between_mmap_and_heap() -> None:
    """``compact`` mmaps a 20 MiB block (returned, and zeroed again, on each use); ``reuse`` keeps it in
    the heap; switching back restores ``compact`` (a study worker's next run)."""
    assert _run({}, WHERE).splitlines() == ["compact True False", "reuse False True", "compact True False"]


def test_unknown_policy_is_refused() -> None:
    from seqcl.memory import apply_malloc_policy

    with pytest.raises(ValueError, match="compact, reuse"):
        apply_malloc_policy("fast")  # type: ignore[arg-type]


def test_train_malloc_reaches_the_allocator(monkeypatch, tmp_path) -> None:
    """``--set train.malloc=reuse`` arrives at :func:`apply_malloc_policy` (one typed path)."""
    import seqcl.training as training
    from seqcl.config import resolve
    from seqcl.plugins import load_plugins

    class Applied(Exception):
        pass

    def apply(policy: str) -> bool:
        raise Applied(policy)

    plugins = load_plugins()
    for value in ("reuse", "compact"):
        resolved = resolve(plugins.registry, overrides=[("dataset", "builtin"), ("run.dir", str(tmp_path)),
                                                        ("train.malloc", value)])
        monkeypatch.setattr(training, "apply_malloc_policy", apply)
        with pytest.raises(Applied, match=f"^{value}$"):
            training.train(resolved, plugins)


def test_cli_sets_thp_env_before_torch() -> None:
    code = "import os, sys; import seqcl.cli; print(os.environ.get('THP_MEM_ALLOC_ENABLE'))"
    env = {k: v for k, v in os.environ.items() if k not in ("SEQCL_MALLOC", "THP_MEM_ALLOC_ENABLE")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


# ---------------------------------------------------------------- tcache off (GLIBC_TUNABLES, re-exec)

#: frees 20 separated 1000-byte chunks and prints how much glibc counts as free afterwards: with the
#: tcache on, up to 7 of them stay in the tcache and count as in use (never coalesced: the heap growth)
CHURN = """
import ctypes, os
from seqcl.memory import heap_stats, reexec_with_tunables
reexec_with_tunables()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
heap_stats()  # loads mallinfo2 before the count
chunks = [(libc.malloc(1000), libc.malloc(16)) for _ in range(20)]
before = heap_stats()["free"]
for p, _ in chunks:
    libc.free(p)
print(os.environ.get("GLIBC_TUNABLES"), heap_stats()["free"] - before)
"""


def _churn(env_extra: dict[str, str]) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("SEQCL_MALLOC", "GLIBC_TUNABLES")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", CHURN], env=env, capture_output=True, text=True, check=True)
    tunables, freed = out.stdout.split()
    return tunables, int(freed)


@glibc
def test_reexec_turns_the_tcache_off() -> None:
    tunables, freed = _churn({})
    assert tunables == MALLOC_TUNABLES
    assert freed >= 20 * 1000  # every freed chunk is free (coalescable) memory at once


@glibc
def test_default_malloc_keeps_the_tcache() -> None:
    """The control: the churn above does see the tcache (else the test before proves nothing)."""
    tunables, freed = _churn({"SEQCL_MALLOC": "default"})
    assert tunables == "None"
    assert freed < 20 * 1000


@glibc
def test_tunables_env() -> None:
    assert tunables_env({}) == MALLOC_TUNABLES
    assert tunables_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}) == f"glibc.malloc.hugetlb=1:{MALLOC_TUNABLES}"
    assert tunables_env({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=3"}) is None  # the user's wins
    assert tunables_env({"GLIBC_TUNABLES": "glibc.malloc.mxfast=64"}) is None
    assert tunables_env({"SEQCL_MALLOC": "default"}) is None


@glibc
def test_seqcl_entry_reexecutes_with_the_tunables() -> None:
    """``seqcl.cli.entry`` (the console script) restarts once: the snippet prints only in the restart."""
    code = ("import os, sys; from seqcl import cli\n"
            "if os.environ.get('GLIBC_TUNABLES'): print('restarted', os.environ['GLIBC_TUNABLES'])\n"
            "sys.argv = ['seqcl', '--help']; cli.entry()")
    env = {k: v for k, v in os.environ.items() if k not in ("SEQCL_MALLOC", "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"restarted {MALLOC_TUNABLES}\n")
    assert out.stdout.count("restarted") == 1


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_reset_peak_rss_forgets_an_earlier_peak() -> None:
    """A study worker's second run must not report its first run's peak (summary.json peak_rss_mb)."""
    from seqcl.memory import reset_peak_rss
    from seqcl.memory import peak_rss_mb

    before = peak_rss_mb()
    buf = bytearray(256 * 2**20)
    buf[:: 4096] = b"x" * len(buf[:: 4096])  # touch every page: resident
    high = peak_rss_mb()
    del buf
    assert high >= before + 200
    assert reset_peak_rss()
    assert peak_rss_mb() < high - 200


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_trim_heap_returns_fragmented_free_memory() -> None:
    """Free chunks between live ones stay resident until trimmed: what a training epoch leaves."""
    from seqcl.memory import rss_mb, trim_heap

    if os.environ.get("SEQCL_MALLOC") == "default" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    blocks: list[bytearray | None] = [bytearray(64 * 1024) for _ in range(2000)]  # heap chunks, 125 MiB
    for block in blocks:
        assert block is not None
        block[:: 4096] = b"x" * len(block[:: 4096])
    for i in range(0, len(blocks), 2):
        blocks[i] = None  # half freed, each between two live chunks: nothing to trim from the top
    before = rss_mb()
    assert trim_heap()
    assert before is not None and rss_mb() < before - 40


def test_a_run_resets_the_peak_first(monkeypatch, tmp_path) -> None:
    """``seqcl.training.train`` resets VmHWM as the run starts, so its summary's peak is its own."""
    import seqcl.training as training
    from seqcl.config import resolve
    from seqcl.plugins import load_plugins

    class Reset(Exception):
        pass

    def reset() -> bool:
        raise Reset

    plugins = load_plugins()
    resolved = resolve(plugins.registry, overrides=[("dataset", "builtin"), ("run.dir", str(tmp_path))])
    monkeypatch.setattr(training, "reset_peak_rss", reset)
    with pytest.raises(Reset):
        training.train(resolved, plugins)
