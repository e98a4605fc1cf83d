"""Run a study: claim runs from the ledger and train them, in one or several processes.

Each worker — this process, or one of ``--workers N`` spawned processes, on
this machine or another one sharing ``--storage`` — loops: claim a run under
the study lock, train it with :func:`seqcl.training.train` (``run.dir`` =
``runs/<study>/runs``, ``run.name`` = the run's deterministic name) — or, for a
variant with ``launch: {nproc_per_node: N}``, as a ``torchrun`` job of N
processes that it starts and waits for (:mod:`seqcl_study.launch`) — store the
run dir and metrics as the trial's user attributes, report it finished. A run
that raises is reported FAIL and the worker goes on; Ctrl-C reports the
current run FAIL and stops. The next ``seqcl study`` call retries failed runs
and skips finished ones. A worker that is killed (SIGKILL, the OOM killer, a
lost machine) is noticed — by the parent at once, by any worker once its
heartbeat has stopped — and its run is retried in the same call: a worker with
nothing left to claim waits for runs still running elsewhere rather than
leaving. Whatever is still not done at the end makes ``seqcl study`` exit 1.

A run directory that already holds ``summary.json`` with the same config (a
worker that died between training and reporting) is reused, not retrained; a
leftover ``<run>.incomplete`` is continued from its checkpoint (with as many
processes as trained it) or removed first, because the claim makes this
worker its only owner. A run the plan found finished in another study
(``reuse:``, :mod:`seqcl_study.reuse`) is copied into place first and then
taken like such a run dir.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from seqcl.config import execution_changes, flatten, resolve
from seqcl.plugins import LoadedPlugins, load_plugins
from seqcl.atomic import atomic_write_text

from .ledger import DEFAULT_HEARTBEAT_S, Heartbeat, Ledger, Progress, default_url, redact
from .plan import Cell, Plan, config_diff, hashed_items, search_cell
from .reuse import copy_run, reused_from
from .files import read_yaml
from .spec import SearchParam

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class RunOutcome:
    """What one trained (or reused) run gives back to the ledger."""

    value: float  # the headline metric on the validation split (the study maximises it)
    attrs: dict[str, Any]
    reused: bool = False


@dataclass
class StudyOutcome:
    plan: Plan
    progress: Progress | None
    failed: list[tuple[str, str]] = field(default_factory=list)  # (run or trial, error)
    seconds: float = 0.0
    url: str = ""
    running: list[str] = field(default_factory=list)  # runs (trials) still RUNNING in the ledger at the end


# ----------------------------------------------------------------- one run


def run_cell(cell: Cell, plan: Plan, plugins: LoadedPlugins, log: Log,
             plugin_modules: tuple[str, ...] = ()) -> RunOutcome:
    """Train one run into ``runs/<study>/runs/<cell.run>`` (or reuse a finished one).

    In this process, or as a torchrun job of ``cell.nproc`` processes
    (:mod:`seqcl_study.launch`; ``plugin_modules`` are handed to it as ``--plugin``).
    """
    from seqcl.training import train

    resolved = resolve(plugins.registry, cell.config)
    final = plan.runs_dir / cell.run
    summary_path = final / "summary.json"
    if cell.reuse is not None and not summary_path.is_file():
        copy_run(Path(cell.reuse), final, log)
    if summary_path.is_file():
        saved = yaml.safe_load((final / "config.yaml").read_text())
        changed, _ = config_diff(hashed_items(saved), hashed_items(resolved.tree))
        if changed:
            raise RuntimeError(f"{final} exists from another config ({', '.join(changed[:4])}); "
                               "remove it to rerun")
        summary = json.loads(summary_path.read_text())
        if summary.get("world_size", 1) != cell.nproc:
            raise RuntimeError(f"{final} exists from a run of {summary.get('world_size', 1)} process(es), this "
                               f"one is launched with {cell.nproc}; remove it to rerun")
        log(f"reusing finished run dir {final}")
        reused = True
    else:
        incomplete = final.with_name(final.name + ".incomplete")
        if cell.nproc > 1:
            leftover = incomplete if _usable_leftover(incomplete, resolved, cell.nproc, log) else None
            _train_torchrun(cell, plan, resolved, leftover, plugin_modules, log)
        else:
            result = _resume_leftover(incomplete, resolved, plugins, log)
            if result is None:
                result = train(resolved, plugins, log=log)
            if result.run_dir != final:
                log(f"warning: run dir is {result.run_dir}, expected {final}")
            final = result.run_dir
        summary = json.loads((final / "summary.json").read_text())
        reused = False
    atomic_write_text(final / "cell.json", json.dumps({"study": plan.spec.name, **cell.to_dict()}, indent=2) + "\n")
    attrs = {"run_dir": str(final), "valid": summary["valid"], "test": summary["test"],
             "best_epoch": summary["best_epoch"], "epochs_run": summary["epochs_run"],
             "train_seconds": summary["seconds"]}
    origin = reused_from(final)
    if origin is not None:
        attrs["reused_from"] = str(origin.get("source", "?"))
    return RunOutcome(float(summary["valid"][plan.metric]), attrs, reused)


def _usable_leftover(incomplete: Path, resolved: Any, nproc: int, log: Log) -> bool:
    """Whether an earlier attempt's ``<run>.incomplete`` can be continued; if not, it is removed.

    The claim makes this worker the run's only owner, so the leftover is ours.
    A run without a checkpoint, one that failed (a non-finite loss), one from
    another config or data, or one trained by another number of processes (its
    ranks' random streams would not continue) is started afresh.
    """
    from seqcl.runs import FAILED, LAST
    from seqcl.stages import is_staged

    if not incomplete.exists():
        return False
    checkpointed = (incomplete / LAST).is_file() or is_staged(incomplete)  # a run in stages: in its stages
    usable = checkpointed and not (incomplete / FAILED).is_file()
    if usable:
        saved = read_yaml(incomplete / "config.yaml")
        changed, _ = config_diff(hashed_items(saved), hashed_items(resolved.tree))
        usable = not changed and _world_size(incomplete) in (None, nproc)
    if not usable:
        log(f"removing the leftover {incomplete} of an earlier attempt")
        shutil.rmtree(incomplete)
    return usable


def _world_size(run_dir: Path) -> int | None:
    """The processes that trained ``run_dir``'s last recorded epoch (1 for records from before the field)."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return int(json.loads(lines[-1]).get("world_size", 1)) if lines else None


def execution_settings(tree: dict[str, Any], leftover: Path, log: Log) -> list[tuple[str, Any]]:
    """This invocation's values of the keys that say how a run executes (``train.threads``,
    ``train.device``, …) where they differ from ``leftover``'s: it resumes with them, not with those
    of the attempt that left it (they are not in the run's identity,
    :data:`seqcl_study.confighash.UNHASHED`). A change of device is said: from then on the run
    draws from that device's random streams."""
    saved = read_yaml(leftover / "config.yaml")
    now_device, saved_device = flatten(tree).get("train.device"), flatten(saved).get("train.device")
    if now_device != saved_device:
        log(f"{leftover} continues on train.device={now_device}, not {saved_device} "
            "(its later epochs draw from that device's random streams)")
    return execution_changes(tree, saved)


def _resume_leftover(incomplete: Path, resolved: Any, plugins: LoadedPlugins, log: Log) -> Any:
    """Continue a usable leftover in this process; None (folder removed) if there is none or it can't be."""
    from seqcl.errors import SeqclError
    from seqcl.training import resume

    if not _usable_leftover(incomplete, resolved, 1, log):
        return None
    try:
        return resume(incomplete, plugins, log=log, overrides=execution_settings(resolved.tree, incomplete, log))
    except SeqclError as exc:
        log(f"cannot resume {incomplete} ({exc}); starting it afresh")
    shutil.rmtree(incomplete)
    return None


def _train_torchrun(cell: Cell, plan: Plan, resolved: Any, leftover: Path | None, plugin_modules: tuple[str, ...],
                    log: Log) -> None:
    """Train (or resume) the run as a torchrun job of ``cell.nproc`` processes (:mod:`seqcl_study.launch`).

    The job gets the run's resolved config as a file, ``run.dir``/``run.name``
    included, so it writes exactly where an in-process run would.
    """
    from .launch import train_job

    if leftover is not None:
        args = ["--resume", str(leftover)]
        for key, value in execution_settings(resolved.tree, leftover, log):
            args += ["--set", f"{key}={json.dumps(value)}"]
    else:
        config = plan.study_dir / "launch" / f"{cell.run}.yaml"
        config.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(config, resolved.to_yaml())
        args = ["--config", str(config)]
    train_job(cell.nproc, args, plugin_modules, log)
    if not (plan.runs_dir / cell.run / "summary.json").is_file():
        raise RuntimeError(f"the torchrun job ended without {plan.runs_dir / cell.run / 'summary.json'} "
                           "(its output is in the run's log)")


def _run_log(plan: Plan, name: str) -> tuple[Log, Callable[[], None]]:
    """A logger appending to ``runs/<study>/logs/<name>.log`` and its closer."""
    path = plan.study_dir / "logs" / f"{name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a")

    def log(msg: str) -> None:
        fh.write(msg + "\n")
        fh.flush()

    return log, fh.close


# ------------------------------------------------------------ worker loops


def _suggest(trial: Any, param: SearchParam) -> Any:
    if param.type == "float":
        return trial.suggest_float(param.key, param.low, param.high, log=param.log, step=param.step)
    if param.type == "int":
        return trial.suggest_int(param.key, int(param.low), int(param.high), log=param.log,
                                 step=int(param.step or 1))
    return trial.suggest_categorical(param.key, list(param.choices))


def work(plan: Plan, ledger: Ledger, plugins: LoadedPlugins, log: Log = _stderr, workers: int = 1,
         plugin_modules: tuple[str, ...] = ()) -> int:
    """Claim and run until nothing is left; returns the number of runs (trials) that failed here.

    When nothing is left to claim but runs are still RUNNING elsewhere, this
    worker waits for them instead of leaving: should their worker be dead (its
    heartbeat stops), they are failed and retried here, so a killed worker never
    leaves a study "done" with a run that nobody runs.
    """
    failed = 0
    by_run = plan.by_run()
    poll = min(max(ledger.heartbeat_s / 2, 0.2), 5.0)
    waiting = False
    while True:
        with ledger.lock():
            trial = claim = None
            others = 0
            if plan.spec.mode == "grid":
                claim = ledger.claim(set(by_run))
                if claim is None:
                    retried = ledger.requeue_dead(plan.trained, plan.configs)
                    if retried:
                        log(f"[study {plan.spec.name}] the worker of {', '.join(retried)} died; retrying")
                        continue
                    others = ledger.running(set(by_run))
            else:
                trial = ledger.claim_search(plan.spec.trials)  # fails stale trials first: they are asked anew
                if trial is None:
                    others = ledger.running()
        if claim is None and trial is None:
            if not others:
                return failed
            if not waiting:
                log(f"[study {plan.spec.name}] waiting for {others} run(s) of other workers to finish "
                    f"(a dead worker's run is retried here once its heartbeat has stopped for "
                    f"{ledger.storage.grace_period}s)")
                waiting = True
            time.sleep(poll)
            continue
        waiting = False
        if trial is None:
            trial_id, number, label = claim.trial_id, claim.number, claim.run
        else:
            trial_id, number, label = trial._trial_id, trial.number, f"trial {trial.number}"
        started = time.perf_counter()
        run_log, close = _run_log(plan, label.replace(" ", "-"))
        try:
            with Heartbeat(ledger.storage, trial_id, ledger.heartbeat_s):
                if trial is None:
                    outcome = run_cell(by_run[label], plan, plugins, run_log, plugin_modules)
                    value, attrs = outcome.value, outcome.attrs
                else:
                    value, attrs = _run_trial(trial, plan, plugins, run_log, plugin_modules)
            ledger.set_attrs(trial_id, attrs)
            ledger.finish(number, value)
            how = (f"reused from {attrs['reused_from']}" if "reused_from" in attrs
                   else f"finished in {time.perf_counter() - started:.1f}s")
            log(f"[study {plan.spec.name}] {label} {how} (valid {plan.metric} {value:.4f})")
        except KeyboardInterrupt:
            ledger.fail(trial_id, number, "interrupted")
            raise
        except Exception as exc:
            run_log(traceback.format_exc())
            ledger.fail(trial_id, number, f"{type(exc).__name__}: {exc}")
            log(f"[study {plan.spec.name}] {label} FAILED: {type(exc).__name__}: {exc}")
            failed += 1
        finally:
            close()
        if workers == 1:
            progress = ledger.progress(plan.trained or None, plan.spec.trials or None)
            if progress.left or progress.running:
                log(progress.line(plan.spec.name, workers))


def _run_trial(trial: Any, plan: Plan, plugins: LoadedPlugins, log: Log,
               plugin_modules: tuple[str, ...] = ()) -> tuple[float, dict[str, Any]]:
    """One search trial: sample its parameters, train every seed, return the mean valid metric."""
    variants = list(plan.spec.variants)
    variant = trial.suggest_categorical("variant", variants) if len(variants) > 1 else variants[0]
    params = {key: _suggest(trial, p) for key, p in plan.spec.search.items()}
    values, runs, tests = [], [], []
    for seed in plan.seeds:
        cell = search_cell(plan, plugins.registry, trial.number, variant, params, seed)
        outcome = run_cell(cell, plan, plugins, log, plugin_modules)
        values.append(outcome.value)
        runs.append(outcome.attrs["run_dir"])
        tests.append(outcome.attrs["test"])
    mean_test = {k: sum(t[k] for t in tests) / len(tests) for k in tests[0]}
    return sum(values) / len(values), {"variant": variant, "params": params, "runs": runs, "test_mean": mean_test}


# -------------------------------------------------------- spawned workers


@dataclass
class WorkerJob:
    """Everything a spawned worker process needs (picklable)."""

    plan: Plan
    url: str
    plugin_modules: tuple[str, ...]
    heartbeat_s: int
    threads: int
    log_path: str


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (``kill``, a batch scheduler) like Ctrl-C: the running trial is reported FAIL."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def worker_main(job: WorkerJob) -> None:
    """Entry point of a ``--workers`` process: stdout/stderr go to its log file."""
    fd = os.open(job.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    if job.threads:
        import torch

        torch.set_num_threads(job.threads)
    plugins = load_plugins(job.plugin_modules)
    ledger = Ledger(job.url, job.plan.spec.name, [c.run for c in job.plan.trained] or None,
                    heartbeat_s=job.heartbeat_s)
    try:
        failed = work(job.plan, ledger, plugins, log=_stderr, workers=2, plugin_modules=job.plugin_modules)
    except KeyboardInterrupt:
        _stderr("interrupted")
        sys.exit(130)
    sys.exit(1 if failed else 0)


@contextlib.contextmanager
def _cwd_not_importable() -> Iterator[None]:
    """Start spawned children with PYTHONSAFEPATH=1 (Python >= 3.11).

    A spawned child runs ``python -c 'from multiprocessing.spawn import …'``,
    and ``-c`` puts the current directory first on ``sys.path`` before anything
    is imported: a ``multiprocessing.py`` (``socket.py``, ``pickle.py`` …) there
    would run in every worker. With safe-path nothing is prepended; the child
    then takes this process's ``sys.path``, so it imports what the parent can.
    """
    old = os.environ.get("PYTHONSAFEPATH")
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONSAFEPATH", None)
        else:
            os.environ["PYTHONSAFEPATH"] = old


def _work_left(ledger: Ledger, plan: Plan) -> bool:
    """Whether runs wait in the ledger (grid) or trials are missing (search) with no worker alive."""
    progress = ledger.progress(plan.trained or None, plan.spec.trials or None)
    if plan.spec.mode != "grid":
        return progress.left > 0
    import optuna

    runs = set(plan.by_run())
    return any(t.user_attrs.get("run") in runs for t in ledger.trials((optuna.trial.TrialState.WAITING,)))


def worker_threads(base: dict[str, Any], workers: int) -> tuple[int, str]:
    """Torch threads each worker sets (0: the runs' own ``train.threads`` decide), and the phrase that says so.

    Without ``train.threads`` in the base config the cores are split between the workers, so that
    two workers on two cores do not each start a thread per core.
    """
    configured = (base.get("train") or {}).get("threads")
    if configured:
        return 0, f"train.threads={configured} each"
    threads = max(1, (os.cpu_count() or 1) // workers)
    return threads, f"{threads} torch threads each"


def _spawn(plan: Plan, url: str, workers: int, plugin_modules: tuple[str, ...], heartbeat_s: int,
           log: Log, poll_s: float) -> None:
    """Run ``workers`` worker processes until the study is done.

    A worker that dies (SIGKILL, OOM killer) is noticed here at once: its run is
    failed and queued again for the live workers (or a replacement worker when
    none is left), within this invocation.
    """
    ctx = multiprocessing.get_context("spawn")
    threads, each = worker_threads(plan.spec.base, workers)
    logs = plan.study_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[Any] = []

    def start() -> Any:
        i = len(procs) + 1
        job = WorkerJob(plan, url, plugin_modules, heartbeat_s, threads, str(logs / f"worker-{i}.log"))
        p = ctx.Process(target=worker_main, args=(job,), name=f"seqcl-study-worker-{i}")
        with _cwd_not_importable():
            p.start()
        procs.append(p)
        return p

    for _ in range(workers):
        start()
    log(f"[study {plan.spec.name}] {workers} worker processes ({each}), logs in {logs}")
    ledger = Ledger(url, plan.spec.name, [c.run for c in plan.trained] or None, heartbeat_s=heartbeat_s)
    host = socket.gethostname()
    reaped: set[int] = set()
    owed = 0  # replacement workers owed: runs (trials) of dead workers still to retry
    replacements = 0
    last = ""

    def reap(requeue: bool) -> int:
        """Fail the runs of workers that died, queue them again if ``requeue``; returns how many to retry."""
        retry = 0
        for p in procs:
            if p.exitcode in (0, None) or p.pid in reaped:
                continue
            reaped.add(p.pid)
            with ledger.lock():
                n = ledger.fail_worker(f"{host}:{p.pid}")
                again = ledger.requeue_dead(plan.trained, plan.configs) if requeue and plan.spec.mode == "grid" else []
            retry += len(again) if plan.spec.mode == "grid" else n * requeue
            if p.exitcode != 1 or n:
                what = "; its run is queued again" if again else ("; its run is marked failed" if n else "")
                log(f"[study {plan.spec.name}] worker {p.name} exited with code {p.exitcode}{what}")
        return retry

    try:
        while True:
            alive = [p for p in procs if p.is_alive()]
            for p in alive:
                p.join(timeout=poll_s / len(alive))
            owed += reap(requeue=True)
            if not any(p.is_alive() for p in procs):
                if owed and replacements < 2 * workers and _work_left(ledger, plan):
                    owed -= 1
                    replacements += 1
                    p = start()
                    log(f"[study {plan.spec.name}] no worker left: started {p.name} for the remaining runs")
                    continue
                break
            line = ledger.progress(plan.trained or None, plan.spec.trials or None).line(plan.spec.name, workers)
            if line != last:
                log(line)
                last = line
    except KeyboardInterrupt:
        log(f"[study {plan.spec.name}] interrupted: stopping workers (their running runs are marked failed)")
        for p in procs:  # Ctrl-C in a terminal reached them too; a signal to this process alone did not
            p.join(timeout=2)
            if p.is_alive():
                p.terminate()  # SIGTERM: the worker reports its running trial FAIL and exits
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
        raise
    finally:
        reap(requeue=False)  # a worker that died leaves its run RUNNING until the heartbeat expires: fail it now


# --------------------------------------------------------------- the study


def run_study(plan: Plan, plugins: LoadedPlugins, *, storage: str | None = None, workers: int = 1,
              plugin_modules: tuple[str, ...] = (), log: Log = _stderr,
              heartbeat_s: int = DEFAULT_HEARTBEAT_S, poll_s: float = 2.0) -> StudyOutcome:
    """Enqueue the plan's runs in the ledger and work on them until none is left."""
    started = time.perf_counter()
    plan.study_dir.mkdir(parents=True, exist_ok=True)
    url = storage or default_url(plan.study_dir)
    write_study_json(plan, url)
    ledger = Ledger(url, plan.spec.name, [c.run for c in plan.trained] or None, heartbeat_s=heartbeat_s)
    if plan.spec.mode == "grid":
        with ledger.lock():
            added = ledger.sync(plan.trained, plan.configs)
        for note in ledger.notes[:5]:
            log(f"[study {plan.spec.name}] note: {note}")
        progress = ledger.progress(plan.trained)
        log(f"[study {plan.spec.name}] {_count_runs(plan)}: {progress.done} done, {progress.running} running "
            f"elsewhere, {added} queued | ledger {redact(url)}")
    else:
        log(f"[study {plan.spec.name}] search: {plan.spec.trials} trials × {len(plan.seeds)} seeds | "
            f"ledger {redact(url)}")
    with sigterm_as_interrupt():
        if workers <= 1:
            work(plan, ledger, plugins, log, workers=1, plugin_modules=plugin_modules)
        else:
            _spawn(plan, url, workers, plugin_modules, heartbeat_s, log, poll_s)
    progress = ledger.progress(plan.trained or None, plan.spec.trials or None)
    return StudyOutcome(plan, progress, failures(ledger, plan), time.perf_counter() - started, url,
                        still_running(ledger, plan))


def _count_runs(plan: Plan) -> str:
    """``12 runs (+2 sharing an identical run, 6 not selected now)``: what this call trains, and why
    the study's other cells are not counted."""
    in_scope = [c for c in plan.cells if plan.selected is None or c.run in plan.selected]
    shared = sum(c.same_as is not None for c in in_scope)
    left_out = len(plan.cells) - len(in_scope)
    extra = [f"+{shared} sharing an identical run"] if shared else []
    extra += [f"{left_out} not selected now"] if left_out else []
    n = len(plan.trained)
    return f"{n} run{'s' if n != 1 else ''}" + (f" ({', '.join(extra)})" if extra else "")


def still_running(ledger: Ledger, plan: Plan) -> list[str]:
    """Runs (grid) or trials (search) RUNNING in the ledger, with the worker that claimed them."""
    import optuna

    runs = plan.by_run()
    out = []
    for t in sorted(ledger.trials((optuna.trial.TrialState.RUNNING,)), key=lambda t: t.number):
        name = t.user_attrs.get("run") if plan.spec.mode == "grid" else f"trial {t.number}"
        if plan.spec.mode != "grid" or name in runs:
            out.append(f"{name} (worker {t.user_attrs.get('worker', '?')})")
    return out


def failures(ledger: Ledger, plan: Plan) -> list[tuple[str, str]]:
    """Runs (grid) or trials (search) whose last attempt failed and that are not finished."""
    import optuna

    TrialState = optuna.trial.TrialState
    trials = ledger.trials()
    if plan.spec.mode == "search":
        return [(f"trial {t.number}", t.user_attrs.get("error", "?")) for t in trials if t.state == TrialState.FAIL]
    finished = {t.user_attrs.get("run") for t in trials if t.state in (TrialState.COMPLETE, TrialState.RUNNING,
                                                                       TrialState.WAITING)}
    last: dict[str, str] = {}
    for t in sorted(trials, key=lambda t: t.number):
        run = t.user_attrs.get("run")
        if t.state == TrialState.FAIL and run in plan.by_run() and run not in finished:
            last[run] = t.user_attrs.get("error", "?")
    return sorted(last.items())


def write_study_json(plan: Plan, url: str) -> Path:
    """``runs/<study>/study.json``: the spec and its runs, so a report needs no study file or ledger."""
    path = plan.study_dir / "study.json"
    data = {"name": plan.spec.name, "mode": plan.spec.mode, "metric": plan.metric, "seeds": plan.seeds,
            "storage": redact(url), "spec": plan.spec.to_dict(), "cells": [c.to_dict() for c in plan.cells]}
    return atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")

