"""Study runs as ``torchrun`` jobs: the worker starts one job per run and supervises it.

A run of a variant with ``launch: {nproc_per_node: N}`` (N > 1) is trained by::

    python -m torch.distributed.run --standalone --nproc-per-node N -m seqcl train --config runs/<study>/launch/<run>.yaml

(or ``… -m seqcl train --resume runs/<study>/runs/<run>.incomplete`` for a
checkpointed leftover): the command a user would type, so a study run takes
the one torchrun path of ``seqcl train`` (``seqcl.distributed``). The worker

* picks no port: ``--standalone`` rendezvous on ``localhost:0`` takes a free
  one, so several workers on one machine never collide;
* streams the job's output (every rank's stdout and stderr) into the run's log
  and keeps its tail: a non-zero exit fails the run with the job's own error
  line (:func:`failure_message`);
* stops the job with itself: Ctrl-C or SIGTERM of the worker sends SIGTERM to
  torchrun (which stops its ranks), then SIGKILL to whatever is left after
  :data:`GRACE_S`; and torchrun gets SIGTERM when the worker dies without a word
  (the Linux parent-death signal, set by this module run as ``-m``), so no
  orphaned ranks keep writing into a run that another worker retries.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

#: seconds between SIGTERM and SIGKILL when the worker stops a job (torchrun waits 30 s for its ranks)
GRACE_S = 40.0
#: lines of the job's output kept for the error of a failed run
TAIL_LINES = 80
#: the environment variable that hands the worker's pid to this module's ``__main__``
PARENT_ENV = "SEQCL_STUDY_PARENT"

Log = Callable[[str], None]

_SEQCL_ERROR = re.compile(r"^error: (.+)$")  # seqcl's one-line errors (seqcl.cli.main), every rank prints its own
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)):? ?(.*)$")
_TORCHRUN_NOISE = ("ChildFailedError", "torch.distributed.elastic")


class TorchrunFailed(RuntimeError):
    """A run's torchrun job exited with a non-zero code (the message is the job's own error)."""


def torchrun_argv(nproc: int, train_args: Sequence[str], plugin_modules: Sequence[str] = ()) -> list[str]:
    """The job's command line: torchrun (through this module, see the module doc) running ``seqcl train``."""
    plugins = [x for m in plugin_modules for x in ("--plugin", m)]
    return [sys.executable, "-m", __name__, "--standalone", "--nproc-per-node", str(nproc),
            "-m", "seqcl", "train", *plugins, *train_args]


def child_env() -> dict[str, str]:
    """This process's environment for the job, with its ``sys.path`` as ``PYTHONPATH``.

    The ranks import what the worker imports (a checkout on ``sys.path``,
    ``--plugin`` modules) and nothing from the current directory, as spawned
    ``--workers`` do. Output unbuffered, so the
    log follows the job line by line; one OpenMP thread per rank unless set
    (torchrun's own default, without its warning banner; ``train.threads`` still
    applies in each rank).
    """
    env = dict(os.environ)
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONSAFEPATH"] = "1"  # the current directory is not importable (see runner._cwd_not_importable)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    env[PARENT_ENV] = str(os.getpid())
    return env


def run_job(argv: Sequence[str], log: Log, env: dict[str, str] | None = None,
            grace_s: float = GRACE_S) -> tuple[int, list[str]]:
    """Run ``argv`` in a session of its own, every output line to ``log``; ``(exit code, lines for the error)``.

    The lines for the error are seqcl's ``error:`` lines from anywhere in the
    output (a rank's one-line error can be followed by the other ranks'
    tracebacks and torchrun's report), then the last :data:`TAIL_LINES`.
    Any exception while it runs (KeyboardInterrupt: Ctrl-C or SIGTERM of the
    worker) stops the job (:func:`stop`) before it propagates.
    """
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    errors: deque[str] = deque(maxlen=10)
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", bufsize=1, env=env, start_new_session=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            if _SEQCL_ERROR.match(line.strip()):
                errors.append(line)
            log(line)
        return proc.wait(), [*errors, *tail]
    except BaseException:
        stop(proc, grace_s)
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()


def _started(pid: int) -> str | None:
    """The start time of ``pid`` (``/proc/<pid>/stat`` field 22), so a reused pid is never signalled."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _descendants(pid: int) -> list[tuple[int, str]]:
    """``(pid, start time)`` of every descendant of ``pid`` (Linux ``/proc``; empty elsewhere).

    torchrun starts each rank in a session of its own, so a process-group
    signal to torchrun does not reach them.
    """
    out: list[tuple[int, str]] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            kids = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            started = _started(kid)
            if started is not None:
                out += [(kid, started), *_descendants(kid)]
    return out


def stop(proc: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    """SIGTERM to the job's process group (torchrun then stops its ranks); SIGKILL to what is left after ``grace_s``."""
    ranks = _descendants(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    with_kids = ranks + _descendants(proc.pid)
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid, started in with_kids:
        if _started(pid) == started:  # still the rank we saw, not a reused pid
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    proc.wait()


def failure_message(tail: Sequence[str], code: int) -> str:
    """The job's own reason for failing: seqcl's one-line ``error:``, else a rank's exception, else the last lines.

    Every rank prints the same ``error:`` line; it is given once.
    """
    errors = list(dict.fromkeys(m.group(1) for line in tail if (m := _SEQCL_ERROR.match(line.strip()))))
    if errors:
        return "; ".join(errors[-2:])
    raised = [line.strip() for line in tail if _EXCEPTION.match(line.strip())
              and not any(noise in line for noise in _TORCHRUN_NOISE)]
    if raised:
        return raised[-1]
    lines = [line.strip() for line in tail if line.strip()]
    return " | ".join(lines[-3:]) or f"no output (exit code {code})"


def train_job(nproc: int, train_args: Sequence[str], plugin_modules: Sequence[str], log: Log) -> None:
    """Run ``seqcl train TRAIN_ARGS`` as a torchrun job of ``nproc`` processes; raise :class:`TorchrunFailed` on failure."""
    argv = torchrun_argv(nproc, train_args, plugin_modules)
    log("torchrun job: " + " ".join(argv[1:]))
    code, tail = run_job(argv, log, child_env())
    if code != 0:
        raise TorchrunFailed(f"torchrun job ({nproc} processes) exited with code {code}: "
                             f"{failure_message(tail, code)}")


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when the worker that started it dies; exit now if it already has."""
    parent = os.environ.get(PARENT_ENV)
    if not sys.platform.startswith("linux") or not parent:
        return
    import ctypes

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # the worker died before the line above took effect
        sys.exit(143)


if __name__ == "__main__":
    _die_with_parent()
    os.environ.pop(PARENT_ENV, None)
    from torch.distributed.run import main

    main(sys.argv[1:])
