"""The ledger of a study's runs: an Optuna study in an RDB storage.

Why Optuna: it already is a shared, durable record of trials (state, params,
values, user attributes, heartbeats) over SQLite or any SQLAlchemy URL, with
tools around it (optuna-dashboard). One trial is one run (grid studies) or one
sampled configuration over all seeds (search studies).

Exactly-once for grids. Optuna's ``GridSampler`` alone may run a grid point
twice when workers race, and it counts failed points as visited (see
``GridSampler._get_unvisited_grid_ids``). So every grid run is *enqueued* as a
WAITING trial (its run name in the user attribute ``run``, not an Optuna param:
a categorical param's choices may never change, and a study grows — a variant
added to its file, ``--seeds 1`` then the rest) and a worker claims one by moving it WAITING → RUNNING with
``storage.set_trial_state_values``, which refuses a trial that is no longer
WAITING. All enqueueing and claiming additionally happens under a study-wide
lock — a file lock beside a SQLite file (pysqlite reads outside transactions,
so the storage's ``SELECT … FOR UPDATE`` is no lock there), ``pg_advisory_lock``
on PostgreSQL, ``GET_LOCK`` on MySQL — so two machines starting the same study
at the same moment cannot enqueue a run twice either.

Resuming: a run whose trial is COMPLETE is never enqueued again; a FAIL trial
(an exception, Ctrl-C) is enqueued again by the next ``seqcl study`` call. A
run whose worker died — a dead process, or a heartbeat that stopped (a killed
machine) — is failed, marked ``died`` and enqueued again within the same call
(:meth:`Ledger.requeue_dead`, at most :data:`MAX_DEATHS` times). Each trial
stores a hash of its resolved config; a study file changed under a finished
run is an error naming the keys that differ, not a silent mix.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from seqcl.errors import ConfigError

from .plan import Cell, config_diff, with_implied

DEFAULT_HEARTBEAT_S = 30
MAX_DEATHS = 3  # a run whose worker died this often is not retried again within one invocation


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def default_url(study_dir: Path) -> str:
    """``sqlite:///<absolute path>/study.db`` in the study directory."""
    return f"sqlite:///{(Path(study_dir) / 'study.db').resolve()}"


# Query parameters whose values are credentials: password, passwd, pwd, sslpassword,
# secret, token, access_token, api_key, sslkey, auth… (matched anywhere in the name).
_SECRET_PARAM = re.compile(r"pass|pwd|secret|token|key|auth|cred", re.IGNORECASE)
# ``scheme://user:password@``: to the last "@" before the query (a password with an
# unescaped "@" or "/" is still hidden whole), else to the first "@" (SQLAlchemy's rule).
_USERINFO = (re.compile(r"^(?P<head>[^:/?#]+://[^:/@?#]*):[^?#]*@"),
             re.compile(r"^(?P<head>[^:/?#]+://[^:/@?#]*):[^@]*@"))


def redact(url: str) -> str:
    """The URL with every credential hidden (for logs, errors and study.json).

    Both the ``user:password@`` form and credentials given as query parameters
    (``?password=…``, ``passwd``, ``pwd``, ``secret``, ``token``, ``sslkey``…)
    become ``***``; done on the text, so it works for URLs SQLAlchemy cannot parse.
    """
    for pattern in _USERINFO:
        hidden, n = pattern.subn(r"\g<head>:***@", url, count=1)
        if n:
            url = hidden
            break
    start = url.find("?", url.rfind("***@") + 1 if "***@" in url else 0)
    if start < 0:
        return url
    query, hash_, fragment = url[start + 1:].partition("#")
    parts = re.split(r"([&;])", query)
    for i in range(0, len(parts), 2):
        key, eq, _ = parts[i].partition("=")
        if eq and _SECRET_PARAM.search(unquote_plus(key)):
            parts[i] = f"{key}=***"
    return url[:start + 1] + "".join(parts) + hash_ + ("***" if fragment else "")


def secrets_of(url: str) -> list[str]:
    """The credential values in ``url`` (as written and decoded), longest first, for :func:`scrub`."""
    found: list[str] = []
    for pattern in _USERINFO:
        m = pattern.match(url)
        if m:
            found.append(m.group(0)[len(m.group("head")) + 1:-1])
            break
    query = url.partition("?")[2].partition("#")[0]
    for part in re.split(r"[&;]", query):
        key, eq, value = part.partition("=")
        if eq and value and _SECRET_PARAM.search(unquote_plus(key)):
            found.append(value)
    found += [unquote_plus(v) for v in found]
    return sorted({v for v in found if v}, key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """``text`` (an error message that may quote the URL or a password) with the credentials hidden.

    Values under 3 characters are left alone: replacing them everywhere would garble the message.
    """
    text = text.replace(url, redact(url))
    for secret in secrets_of(url):
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Optuna's experimental-feature and heartbeat-without-optimize warnings are noise here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _sqlite_path(url: str) -> str | None:
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    db = make_url(url).database
    return db if db and db != ":memory:" else None


@contextlib.contextmanager
def _file_lock(path: str | None) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (no-op for None): local processes only, which is all SQLite serves."""
    if path is None:
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def normalize_url(url: str) -> str:
    """``postgresql://`` with whichever driver is installed.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, 2.0 to psycopg2;
    with only ``psycopg2-binary`` installed the first would fail to import.
    """
    if url.startswith(("postgresql://", "postgres://")):
        import importlib.util

        rest = url.split("://", 1)[1]
        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return f"postgresql+psycopg2://{rest}"
        if url.startswith("postgres://"):
            return f"postgresql://{rest}"
    return url


def open_storage(url: str, heartbeat_s: int = DEFAULT_HEARTBEAT_S, attempts: int = 5) -> Any:
    """An ``optuna.storages.RDBStorage`` with heartbeats; errors are one line.

    Creating the schema is not safe against a second process doing the same at
    the same moment (Optuna inserts its alembic version row), so a SQLite file
    is opened under its lock and any database is retried a few times.
    """
    optuna = _optuna()
    given, url = url, normalize_url(url)
    engine_kwargs: dict[str, Any] = {}
    db = _sqlite_path(url)
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 120}  # writers wait for each other instead of failing
    for attempt in range(attempts):
        try:
            with _quiet(), _file_lock(f"{db}.lock" if db else None):
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s,
                                                  grace_period=4 * heartbeat_s)
        except Exception as exc:  # bad URL, missing driver, server down, a concurrent schema creation
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if attempt + 1 < attempts and ("IntegrityError" in repr(type(exc)) or "UNIQUE" in first
                                           or "duplicate" in first.lower() or "already exists" in first):
                time.sleep(0.2 * (attempt + 1))
                continue
            raise ConfigError(f"--storage {redact(given)}: cannot open: {scrub(scrub(first, given), url)}") from None
    raise AssertionError("unreachable")


@contextlib.contextmanager
def study_lock(storage: Any, study_name: str) -> Iterator[None]:
    """Serialise enqueue/claim across processes and machines (see the module docstring)."""
    from sqlalchemy import text

    engine = storage.engine
    dialect = engine.dialect.name
    if dialect == "sqlite":
        db = engine.url.database
        with _file_lock(f"{db}.lock" if db and db != ":memory:" else None):
            yield
        return
    key = int.from_bytes(hashlib.sha256(f"seqcl-study:{study_name}".encode()).digest()[:8], "big", signed=True)
    if dialect == "postgresql":
        acquire, release, args = "SELECT pg_advisory_lock(:k)", "SELECT pg_advisory_unlock(:k)", {"k": key}
    elif dialect in ("mysql", "mariadb"):
        acquire, release, args = "SELECT GET_LOCK(:k, 600)", "SELECT RELEASE_LOCK(:k)", {"k": f"seqcl-{key}"}
    else:  # other databases: the storage's row-level claim is all there is
        yield
        return
    with engine.connect() as conn:
        conn.execute(text(acquire), args)
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text(release), args)
            conn.commit()


@dataclass
class Progress:
    """Counts of a study's runs (grid) or trials (search)."""

    total: int
    done: int
    running: int
    failed: int
    mean_seconds: float | None  # mean duration of finished runs, for the ETA

    @property
    def left(self) -> int:
        return max(self.total - self.done - self.running, 0)

    def line(self, name: str, workers: int = 1) -> str:
        eta = ""
        if self.mean_seconds is not None and (self.left or self.running):
            parallel = max(self.running, workers, 1)
            seconds = self.mean_seconds * (self.left + 0.5 * self.running) / parallel
            eta = f" | ETA {int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
        failed = f", {self.failed} failed" if self.failed else ""
        return f"[study {name}] {self.done}/{self.total} done, {self.running} running, {self.left} left{failed}{eta}"


@dataclass
class Claim:
    """A trial this worker owns until it reports it finished or failed."""

    trial_id: int
    number: int
    run: str | None  # grid: the run name; search: None (runs are per seed)


class Heartbeat:
    """Record a trial's heartbeat every interval, so a dead machine's run is detected and retried."""

    def __init__(self, storage: Any, trial_id: int, interval_s: int) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a missed beat is not worth killing the run
                self._storage.record_heartbeat(self._trial_id)
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


class Ledger:
    """One study in one storage: enqueue, claim, report back, count."""

    def __init__(self, url: str, study_name: str, run_names: list[str] | None = None, *,
                 heartbeat_s: int = DEFAULT_HEARTBEAT_S, seed: int = 0) -> None:
        optuna = _optuna()
        self.url = url
        self.name = study_name
        self.heartbeat_s = heartbeat_s
        self.run_names = list(run_names or [])
        self.notes: list[str] = []  # things sync() accepted but the user should know
        self.storage = open_storage(url, heartbeat_s)
        if run_names:
            sampler = optuna.samplers.GridSampler({"run": list(run_names)}, seed=seed)
        else:
            sampler = optuna.samplers.TPESampler(seed=seed)
        try:
            self.study = optuna.create_study(storage=self.storage, study_name=study_name, sampler=sampler,
                                             direction="maximize", load_if_exists=True)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"--storage {redact(url)}: cannot open study {study_name!r}: "
                              f"{scrub(first, url)}") from None
        self.study_id = self.study._study_id

    # ----------------------------------------------------------- helpers

    def lock(self) -> contextlib.AbstractContextManager[None]:
        return study_lock(self.storage, self.name)

    def trials(self, states: tuple[Any, ...] | None = None) -> list[Any]:
        return self.storage.get_all_trials(self.study_id, deepcopy=False, states=states)

    def fail_stale(self) -> int:
        """Mark RUNNING trials whose heartbeat stopped as FAIL (a killed worker or machine); returns how many.

        They are marked ``died`` so that :meth:`requeue_dead` retries them in this
        very invocation (a run that raised is retried by the next one only).
        """
        grace = self.storage.grace_period or 2 * self.heartbeat_s
        return sum(self._fail_dead(trial_id, f"worker stopped: no heartbeat for over {grace}s (killed?)")
                   for trial_id in self.storage._get_stale_trial_ids(self.study_id))

    def fail_worker(self, worker: str) -> int:
        """Mark the RUNNING trials of a worker known to be dead as FAIL; returns how many."""
        TrialState = _optuna().trial.TrialState
        n = 0
        for t in self.trials((TrialState.RUNNING,)):
            if t.user_attrs.get("worker") == worker:
                n += self._fail_dead(t._trial_id, "worker process died")
        return n

    def _fail_dead(self, trial_id: int, error: str) -> bool:
        """FAIL a RUNNING trial whose worker is gone, marked ``died``; False if it finished meanwhile."""
        TrialState = _optuna().trial.TrialState
        try:
            self.storage.set_trial_user_attr(trial_id, "error", error)
            self.storage.set_trial_user_attr(trial_id, "died", True)
            return bool(self.storage.set_trial_state_values(trial_id, TrialState.FAIL))
        except Exception:  # noqa: BLE001 - finished by its worker or failed by another process first
            return False

    def running(self, runs: set[str] | None = None) -> int:
        """Number of RUNNING trials (of ``runs`` for a grid; all of them for a search)."""
        TrialState = _optuna().trial.TrialState
        return sum(runs is None or t.user_attrs.get("run") in runs for t in self.trials((TrialState.RUNNING,)))

    # -------------------------------------------------------------- grid

    def sync(self, cells: list[Cell], configs: dict[str, dict[str, Any]]) -> int:
        """Enqueue every run that is not finished, waiting or running; returns how many.

        Raises ConfigError when a finished, waiting or running trial of a run was
        made from a different config (the study file changed under it).
        Call with :meth:`lock` held.
        """
        TrialState = _optuna().trial.TrialState
        self.fail_stale()
        live: dict[str, Any] = {}
        for t in self.trials():
            run = t.user_attrs.get("run")
            if run is None or t.state == TrialState.FAIL:
                continue
            if t.state == TrialState.COMPLETE or run not in live:
                live[run] = t
        added = 0
        upgraded: list[str] = []
        new_keys: set[str] = set()
        for cell in cells:
            t = live.get(cell.run)
            if t is not None:
                if t.user_attrs.get("config_hash") != cell.config_hash:
                    changed, one_sided = config_diff(t.user_attrs.get("config") or {}, configs.get(cell.run, {}))
                    if changed or not one_sided:
                        raise ConfigError(self._conflict(cell, t, configs.get(cell.run, {})))
                    upgraded.append(cell.run)
                    new_keys.update(one_sided)
                continue
            self._enqueue(cell, configs)
            added += 1
        if upgraded:
            self.notes.append(f"{len(upgraded)} run(s) predate options added or removed since "
                              f"({', '.join(sorted(new_keys))}); taken as unchanged")
        return added

    def _enqueue(self, cell: Cell, configs: dict[str, dict[str, Any]]) -> None:
        self.study.enqueue_trial({"run": cell.run}, user_attrs={**cell.to_dict(), "config": configs.get(cell.run, {})})

    def requeue_dead(self, cells: list[Cell], configs: dict[str, dict[str, Any]],
                     max_deaths: int = MAX_DEATHS) -> list[str]:
        """Enqueue again the runs whose worker died (stale heartbeat or a dead process); returns them.

        Only runs whose last attempt died — not ones that raised, which would fail
        again — and that have killed fewer than ``max_deaths`` workers (a run that
        gets its worker OOM-killed must not loop forever). Call with :meth:`lock` held.
        """
        TrialState = _optuna().trial.TrialState
        self.fail_stale()
        by_run: dict[str, list[Any]] = {}
        for t in sorted(self.trials(), key=lambda t: t.number):
            by_run.setdefault(t.user_attrs.get("run"), []).append(t)
        requeued = []
        for cell in cells:
            trials = by_run.get(cell.run, [])
            if not trials or any(t.state != TrialState.FAIL for t in trials):
                continue
            deaths = sum(bool(t.user_attrs.get("died")) for t in trials)
            if trials[-1].user_attrs.get("died") and deaths < max_deaths:
                self._enqueue(cell, configs)
                requeued.append(cell.run)
        return requeued

    def _conflict(self, cell: Cell, trial: Any, config: dict[str, Any]) -> str:
        old, config = with_implied(trial.user_attrs.get("config") or {}), with_implied(config)
        keys = config_diff(old, config)[0] or sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
        shown = ", ".join(f"{k}: {old.get(k)!r} → {config.get(k)!r}" for k in keys[:4]) or "unknown keys"
        more = f" (+{len(keys) - 4} more)" if len(keys) > 4 else ""
        state = trial.state.name.lower()
        return (f"study {self.name!r}: run {cell.run} is {state} in {redact(self.url)} with another config "
                f"({shown}{more}); give the study a new name (--name) or remove its ledger")

    def claim(self, runs: set[str]) -> Claim | None:
        """Move one WAITING trial of ``runs`` to RUNNING and return it; None when none is left.

        Runs are taken in the order they were first tried, so a run interrupted (or
        failed) and enqueued again keeps its place ahead of the runs queued after it:
        it resumes from its last epoch, and finishing it first leaves fewer half-trained
        runs when the study is stopped again.
        """
        optuna = _optuna()
        TrialState = optuna.trial.TrialState
        trials = self.trials()
        first: dict[str, int] = {}
        for t in trials:
            run = t.user_attrs.get("run")
            first[run] = min(first.get(run, t.number), t.number)
        waiting = sorted((t for t in trials if t.state == TrialState.WAITING),
                         key=lambda t: (first[t.user_attrs.get("run")], t.number))
        for t in waiting:
            run = t.user_attrs.get("run")
            if run not in runs:
                continue
            try:
                if not self.storage.set_trial_state_values(t._trial_id, TrialState.RUNNING):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            self.storage.set_trial_user_attr(t._trial_id, "worker", worker_id())
            self.storage.record_heartbeat(t._trial_id)  # detectable as stale even if killed before its first beat
            return Claim(t._trial_id, t.number, run)
        return None

    def progress(self, cells: list[Cell] | None = None, trials_target: int | None = None) -> Progress:
        """Done / running / failed counts of ``cells`` (grid) or of the search trials."""
        TrialState = _optuna().trial.TrialState
        trials = self.trials()
        # runs copied from other studies (``reused_from``) took no time here: left out of the ETA
        durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials
                     if t.state == TrialState.COMPLETE and t.datetime_start and t.datetime_complete
                     and "reused_from" not in t.user_attrs]
        mean = sum(durations) / len(durations) if durations else None
        if cells is None:
            done = sum(t.state == TrialState.COMPLETE for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            failed = sum(t.state == TrialState.FAIL for t in trials)
            return Progress(trials_target or 0, min(done, trials_target or done), running, failed, mean)
        wanted = {c.run for c in cells}
        states: dict[str, set[Any]] = {run: set() for run in wanted}
        for t in trials:
            run = t.user_attrs.get("run")
            if run in states:
                states[run].add(t.state)
        done = sum(TrialState.COMPLETE in s for s in states.values())
        running = sum(TrialState.RUNNING in s and TrialState.COMPLETE not in s for s in states.values())
        failed = sum(s == {TrialState.FAIL} or (TrialState.FAIL in s and not s & {TrialState.COMPLETE,
                     TrialState.RUNNING, TrialState.WAITING}) for s in states.values())
        return Progress(len(wanted), done, running, failed, mean)

    # ------------------------------------------------------------ search

    def claim_search(self, trials_target: int) -> Any | None:
        """A new Optuna trial (TPE) unless ``trials_target`` trials are finished or running."""
        TrialState = _optuna().trial.TrialState
        self.fail_stale()
        done = len(self.trials((TrialState.COMPLETE,)))
        running = len(self.trials((TrialState.RUNNING,)))
        if done + running >= trials_target:
            return None
        with _quiet():
            trial = self.study.ask()
        self.storage.set_trial_user_attr(trial._trial_id, "worker", worker_id())
        self.storage.record_heartbeat(trial._trial_id)  # see claim()
        return trial

    # ------------------------------------------------------------ report

    def set_attrs(self, trial_id: int, attrs: dict[str, Any]) -> None:
        for key, value in attrs.items():
            self.storage.set_trial_user_attr(trial_id, key, json.loads(json.dumps(value, default=str)))

    def finish(self, number: int, value: float) -> None:
        """Report a trial COMPLETE with ``value`` (FAIL if it is NaN); a no-op if already finished."""
        optuna = _optuna()
        if not self.run_names:
            with _quiet():
                self.study.tell(number, value, skip_if_finished=True)
            return
        # Grid runs are claimed, not sampled, so they lack the GridSampler's system attrs;
        # its after_trial hook (run by tell) raises KeyError('grid_id') in a one-run study.
        TrialState = optuna.trial.TrialState
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        ok = math.isfinite(value)
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self.storage.set_trial_state_values(trial_id, TrialState.COMPLETE if ok else TrialState.FAIL,
                                                [float(value)] if ok else None)

    def fail(self, trial_id: int, number: int, error: str) -> None:
        TrialState = _optuna().trial.TrialState
        with contextlib.suppress(Exception):
            self.storage.set_trial_user_attr(trial_id, "error", error[:2000])
        with _quiet(), contextlib.suppress(Exception):
            self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
