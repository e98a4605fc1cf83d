"""Keep glibc's heap from growing over a training run (issue #12).

A CPU training step frees and re-allocates tensors of many sizes: the fixed
(B, num_items) logits and their gradients (12 MiB on Beauty) between packed
activations whose sizes change with every batch. glibc's *dynamic* mmap
threshold moves up to 32 MiB once such a chunk has been freed, so from then on
these large tensors come from the heap, where the varying smaller ones split
their freed chunks; the next large one no longer fits and the heap grows. RSS
then rose by ~4 MiB a step (0.3 → 1.3 GiB in 300 Beauty batches, 4.4 GiB
resident at epoch 29), all of it free memory that ``malloc_trim(0)`` hands back.

:func:`apply_malloc_policy` (``compact``, the default) fixes the threshold at :data:`MMAP_THRESHOLD`: larger
allocations are mmap'd and go back to the OS when freed, so RSS stays flat
(~0.5 GiB). Only the allocator changes: every value computed is the same.
Mapping fresh pages costs page faults; PyTorch's ``THP_MEM_ALLOC_ENABLE``
(aligned allocations of ≥ 2 MiB advised as transparent huge pages) makes that
cost small, but PyTorch reads it once, at its first allocation, so it has to be
in the environment before ``import torch``: :mod:`seqcl.cli` sets it.

Not applied where the user already set the threshold (``MALLOC_MMAP_THRESHOLD_``,
``GLIBC_TUNABLES``) or ``SEQCL_MALLOC=default``, nor off glibc.

The contrastive augmenters (CL4SRec's ``random`` …) still grew the heap by
~50 MiB per 200 Beauty batches with the threshold fixed at 1, 2, 4 or 8 MiB:
small allocations (< 1 KiB) held in glibc's per-thread cache (*tcache*) are
never coalesced with their free neighbours, so freed regions stay split and
new requests extend the heap (live memory flat, free-in-heap rising;
``malloc_trim`` hands it back). With the tcache off
(``GLIBC_TUNABLES=glibc.malloc.tcache_count=0``) the growth drops to ~5 MiB;
with the fastbins off too (``glibc.malloc.mxfast=0``: those chunks are not
coalesced either until a consolidation) the heap stays flat, at the same CPU
time per step; fastbins off alone changes nothing. glibc reads tunables only
at process start, so :func:`tunables_env` gives the value and :mod:`seqcl.cli` re-executes the
command once with it (:func:`reexec_with_tunables`); children (study workers,
torchrun ranks) inherit it.

What remained (``random``: ~10 MiB per full Beauty epoch, in-use memory flat, the free part
of the heap rising: chunks between 1 KiB and the threshold) :func:`trim_heap` hands back
once per epoch, after validation, whose transient allocations leave the most free pages.

The price of mmap'ing every allocation of 8 MiB or more is that the kernel zeroes its pages
again each time. It grows with a step's tensors; CFIT4SRec, which encodes its views as one
wide batch, pays heavily: its step allocates
(6B, T, d) to (6B, T, 4d) activations of 19–79 MiB, ~1.3 GB/s of fresh pages on Beauty, and
``perf`` put 53 % of its CPU time in the kernel's ``clear_page_erms``. ``train.malloc=reuse``
(:data:`MALLOC_POLICIES`) keeps such blocks in the heap instead (no mmap at all, heap top
kept up to :data:`REUSE_TRIM_THRESHOLD`), so each step reuses the last step's pages: on 2
threads CFIT4SRec's 20-step windows took 20–27 s instead of 48–70 s and the live Beauty run went
from ~100 to ~200 samples/s, at an RSS of ~2.5 GiB instead of ~0.45 GiB (its heap, 2.3 GiB, is
about 1.6× the compact run's peak RSS). :func:`trim_heap` still hands free pages back each epoch.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys
import typing
from collections.abc import Callable, Mapping
from typing import Literal

#: allocations of at least this many bytes are mmap'd (glibc's ``M_MMAP_THRESHOLD``) under ``compact``.
MMAP_THRESHOLD = 8 * 1024 * 1024
#: free memory at the heap's top that ``reuse`` keeps rather than returning (``M_TRIM_THRESHOLD``)
REUSE_TRIM_THRESHOLD = 256 * 1024 * 1024
#: ``train.malloc``: ``compact`` (RSS flat near the live set; large blocks mmap'd, zeroed again on
#: each use) or ``reuse`` (large blocks stay in the heap: faster for wide-batch plugins, more RSS)
MallocPolicy = Literal["compact", "reuse"]
MALLOC_POLICIES: tuple[str, ...] = typing.get_args(MallocPolicy)
# mallopt parameters (malloc.h) and glibc's defaults, restored when a later run in the process says compact
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
_MALLOPTS = {
    "compact": ((_M_MMAP_MAX, _DEFAULT_MMAP_MAX), (_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD),
                (_M_MMAP_THRESHOLD, MMAP_THRESHOLD)),
    "reuse": ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, REUSE_TRIM_THRESHOLD)),
}
#: the user's own malloc settings, which :func:`apply_malloc_policy` leaves alone
_USER_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")
_USER_TUNABLES = ("mmap_threshold", "mmap_max", "trim_threshold")
_applied: str | None = None
#: glibc tunables that keep the heap from fragmenting (see the module doc)
MALLOC_TUNABLES = "glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0"


@functools.cache
def _glibc() -> bool:
    """Once per process: ``platform.libc_ver`` scans the interpreter's binary, and the trainer asks every epoch."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, loaded once; None elsewhere or where it cannot be loaded."""
    if not _glibc():
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def tunables_env(environ: Mapping[str, str]) -> str | None:
    """The ``GLIBC_TUNABLES`` value with :data:`MALLOC_TUNABLES` added, or None when they are set
    already, the user set ``tcache_count`` or ``mxfast`` themselves, ``SEQCL_MALLOC=default``, or off glibc."""
    current = environ.get("GLIBC_TUNABLES", "")
    if environ.get("SEQCL_MALLOC") == "default" or "tcache_count" in current or "mxfast" in current \
            or not _glibc():
        return None
    return f"{current}:{MALLOC_TUNABLES}" if current else MALLOC_TUNABLES


def reexec_with_tunables() -> None:
    """Restart this command (same interpreter, same arguments) with :func:`tunables_env` in its
    environment, unless nothing is to change. Call it first thing in a console entry point only:
    nothing before it runs twice. Does not return when it re-executes."""
    value = tunables_env(os.environ)
    argv = getattr(sys, "orig_argv", None)
    if value is None or not argv:
        return
    os.environ["GLIBC_TUNABLES"] = value
    try:
        os.execv(sys.executable, [sys.executable, *argv[1:]])
    except OSError:  # cannot re-execute: run on with glibc's defaults (children still inherit it)
        return


def enable_thp_env() -> None:
    """Ask PyTorch for huge pages on large CPU allocations; effective only before ``import torch``."""
    if os.environ.get("SEQCL_MALLOC") != "default":
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def apply_malloc_policy(policy: MallocPolicy = "compact") -> bool:
    """Set glibc's malloc for ``train.malloc`` (see the module doc); True when applied (or already).

    Each run calls it, so a study worker's runs each get their own policy. Leaves malloc alone
    under ``SEQCL_MALLOC=default``, where the user set any of these parameters themselves
    (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_`` or the same in
    ``GLIBC_TUNABLES``), and off glibc.
    """
    global _applied
    if policy not in _MALLOPTS:
        raise ValueError(f"malloc policy must be one of {', '.join(MALLOC_POLICIES)}, got {policy!r}")
    if _applied == policy:
        return True
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if os.environ.get("SEQCL_MALLOC") == "default" or any(k in os.environ for k in _USER_ENV) \
            or any(k in tunables for k in _USER_TUNABLES):
        return False
    libc = _libc()
    if libc is None:
        return False
    try:
        ok = all([bool(libc.mallopt(param, value)) for param, value in _MALLOPTS[policy]])
        if ok and _applied == "reuse":
            trim_heap()  # the heap that ``reuse`` kept goes back to the OS
    except AttributeError:
        return False
    _applied = policy if ok else None
    return ok


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


@functools.cache
def _mallinfo2() -> Callable[[], _Mallinfo2] | None:
    libc = _libc()
    if libc is None:
        return None
    try:
        f = libc.mallinfo2
    except AttributeError:
        return None
    f.restype = _Mallinfo2
    return f


def heap_stats() -> dict[str, int]:
    """glibc's ``mallinfo2`` (glibc >= 2.33) in bytes: ``heap`` (its size), ``mmap`` (mmap'd
    blocks), ``in_use``, ``free`` (free inside the heap); {} elsewhere. ``free`` rising while
    ``in_use`` stays flat is fragmentation, not a leak (benchmarks/memory.py)."""
    f = _mallinfo2()
    if f is None:
        return {}
    m = f()
    return {"heap": m.arena, "mmap": m.hblkhd, "in_use": m.uordblks, "free": m.fordblks}


def trim_heap() -> bool:
    """Return the heap's free pages to the OS (glibc ``malloc_trim(0)``); True when it released any.

    Costs milliseconds, so the trainer calls it once per epoch; values are untouched, only
    where free memory lives. Honours ``SEQCL_MALLOC=default`` (glibc exactly as it comes).
    """
    libc = _libc()
    if os.environ.get("SEQCL_MALLOC") == "default" or libc is None:
        return False
    try:
        return bool(libc.malloc_trim(0))
    except AttributeError:
        return False


def _status_mb(key: str) -> float | None:
    """A ``/proc/self/status`` memory line (``VmHWM``, ``VmRSS``) in MiB; None where there is none."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def peak_rss_mb() -> float | None:
    """This process's peak resident memory (VmHWM) in MiB since the last :func:`reset_peak_rss`.

    Falls back to ``getrusage``'s lifetime maximum off Linux; None where neither is reported.
    """
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    except (ImportError, OSError):
        return None


def rss_mb() -> float | None:
    """This process's resident memory now (VmRSS) in MiB; None off Linux.

    Why per epoch (``metrics.jsonl``): a value that climbs epoch after epoch is a leak or
    fragmentation; one that plateaus is the working set (issue #12's 4.7 GB run).
    """
    return _status_mb("VmRSS")


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM (Linux: ``5`` to ``/proc/self/clear_refs``); True when done.

    Why: a study worker trains run after run in one process, so without a reset each
    run's ``summary.json`` ``peak_rss_mb`` would be the highest of every run before it.
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True
