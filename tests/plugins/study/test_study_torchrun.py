"""Study runs as torchrun jobs (issue #15, deliverable 6): ``launch: {nproc_per_node: N}``.

One study trains a run in a worker's process and one as a 2-process torchrun
job, and a third torchrun run fails at train time, with two ``--workers``
sharing one ledger: a throwaway PostgreSQL server where ``initdb``/``pg_ctl``
and a driver exist (the test id says ``postgresql``), SQLite otherwise. The
rest is fast: parsing, hashing, error lines, and the job's process tree.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from seqcl.cli import main
from seqcl.config import read_yaml
from seqcl.errors import ConfigError
from seqcl.plugins import load_plugins
from seqcl_study import launch
from seqcl_study.ledger import normalize_url
from seqcl_study.plan import build_plan, config_hash, hashed_items
from seqcl_study.spec import Launch, load_spec, parse_spec

from study_helpers import write_spec


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


# ------------------------------------------------------------------ study file


def spec_of(**fields):
    return parse_spec({"name": "t", "base": {"dataset": "builtin"}, **fields}, "s.yaml")


def test_launch_top_level_and_per_variant():
    spec = spec_of(launch={"nproc_per_node": 2},
                   variants={"a": {}, "b": {"augmenter": "random", "launch": {"nproc_per_node": 1}}})
    assert spec.launch_of("a") == Launch(2) and spec.launch_of("b") == Launch(1)
    assert spec.variants["b"].overrides == {"augmenter": "random"}  # launch is not a config key
    assert spec_of(variants={"a": {}}).launch_of("a") == Launch(1)  # default: in the worker's process
    assert spec.to_dict()["variants"]["b"]["launch"] == {"nproc_per_node": 1}


@pytest.mark.parametrize("fields, message", [
    ({"launch": {"nproc_per_node": 0}}, "launch.nproc_per_node must be an integer >= 1, got 0"),
    ({"launch": {"nproc_per_node": "2"}}, "launch.nproc_per_node must be an integer >= 1, got '2'"),
    ({"launch": {"nnodes": 2}}, "launch: unknown key 'nnodes'; launch has nproc_per_node"),
    ({"launch": 2}, "launch must be a mapping like {nproc_per_node: 2}, got 2"),
    ({"variants": {"a": {"launch.nproc_per_node": 2}}}, "variant 'a': write launch: {nproc_per_node: N}"),
    ({"variants": {"a": {"launch": {"nproc_per_node": True}}}}, "variant 'a': launch.nproc_per_node must be"),
])
def test_bad_launch_is_a_one_line_error(fields, message):
    with pytest.raises(ConfigError) as err:
        spec_of(**({"variants": {"a": {}}} | fields))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_nproc_enters_the_hash_of_torchrun_runs_only(plugins, tmp_path):
    spec = spec_of(variants={"plain": {}, "one": {"launch": {"nproc_per_node": 1}},
                             "two": {"launch": {"nproc_per_node": 2}}}, seeds=[1])
    plan = build_plan(spec, plugins.registry, tmp_path)
    cells = {c.variant: c for c in plan.cells}
    assert cells["one"].same_as == "plain__s1"  # nproc 1 is the in-process run: trained once
    assert cells["two"].same_as is None and cells["two"].nproc == 2
    assert cells["two"].config_hash != cells["plain"].config_hash
    assert plan.configs["two__s1"] == {**plan.configs["plain__s1"], "launch.nproc_per_node": 2}
    # a one-process run hashes as before the launcher existed: its config alone
    from seqcl.config import resolve

    tree = resolve(plugins.registry, cells["plain"].config).tree
    assert cells["plain"].config_hash == config_hash(tree) and plan.configs["plain__s1"] == hashed_items(tree)
    assert cells["two"].to_dict()["nproc_per_node"] == 2
    # a search trial's runs take their variant's launcher too
    from seqcl_study.plan import search_cell

    search = spec_of(variants={"two": {"launch": {"nproc_per_node": 2}}}, trials=1,
                     search={"train.lr": {"type": "float", "low": 0.001, "high": 0.01}})
    splan = build_plan(search, plugins.registry, tmp_path)
    trial = search_cell(splan, plugins.registry, 0, "two", {"train.lr": 0.002}, 1)
    assert trial.nproc == 2 and trial.config_hash == config_hash(resolve(plugins.registry, trial.config).tree,
                                                                 Launch(2))


def test_dry_run_names_the_torchrun_runs(tmp_path, capsys):
    spec = write_spec(tmp_path / "s.yaml", "builtin", seeds=[1], variants={
        "local": {}, "ddp": {"launch": {"nproc_per_node": 2}}})
    assert main(["study", str(spec), "--runs-dir", str(tmp_path / "runs"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.endswith("(torchrun, 2 processes)") for line in lines[1:]] == [False, True]


def test_changing_nproc_under_queued_runs_is_the_study_changed_error(plugins, tmp_path):
    """``launch.nproc_per_node`` is a change even against runs from before the launcher (no such key)."""
    from seqcl_study.ledger import Ledger, default_url

    def sync(launch):
        spec = spec_of(variants={"a": {} if launch is None else {"launch": {"nproc_per_node": launch}}}, seeds=[1])
        plan = build_plan(spec, plugins.registry, tmp_path)
        plan.study_dir.mkdir(exist_ok=True)
        ledger = Ledger(default_url(plan.study_dir), "t", [c.run for c in plan.trained])
        with ledger.lock():
            return ledger.sync(plan.trained, plan.configs)

    assert sync(None) == 1
    assert sync(1) == 0  # the same run: one process
    with pytest.raises(ConfigError, match=r"run a__s1 is waiting .* another config \(launch.nproc_per_node: 1 → 2\)"):
        sync(2)


def test_what_torchrun_refuses_is_refused_before_training(plugins, tmp_path):
    stages = [{"name": "pre", "objective": "bce", "epochs": 1}, {"name": "fine", "objective": "ce", "epochs": 1}]
    spec = spec_of(variants={"a": {"stages": stages, "launch": {"nproc_per_node": 2}}})
    with pytest.raises(ConfigError, match="variant 'a'.*launch.nproc_per_node=2: runs in stages do not run under "
                                          "torchrun yet"):
        build_plan(spec, plugins.registry, tmp_path)


def _leftover(plan, cell, plugins, world_size: int) -> Path:
    """``<run>.incomplete`` as an attempt of ``world_size`` processes leaves it after one epoch (no training)."""
    from seqcl.config import resolve

    path = plan.runs_dir / f"{cell.run}.incomplete"
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(resolve(plugins.registry, cell.config).to_yaml())
    (path / "last.pt").write_bytes(b"")
    (path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "world_size": world_size}) + "\n")
    return path


def test_torchrun_run_resumes_a_leftover_of_as_many_processes_only(plugins, tmp_path, monkeypatch):
    from seqcl_study.runner import run_cell

    spec = spec_of(variants={"a": {"launch": {"nproc_per_node": 2}}}, seeds=[1], metric="mrr@10")
    plan = build_plan(spec, plugins.registry, tmp_path)
    (cell,) = plan.cells
    jobs: list[tuple[int, list[str]]] = []
    metrics = {f"{m}@{k}": 0.5 for m in ("hr", "ndcg", "mrr") for k in (5, 10)}

    def fake_job(nproc, args, plugin_modules, log):  # what the job leaves: the finished run folder
        jobs.append((nproc, list(args)))
        final = plan.runs_dir / cell.run
        shutil.rmtree(final.with_name(final.name + ".incomplete"), ignore_errors=True)
        final.mkdir(parents=True)
        (final / "summary.json").write_text(json.dumps({"valid": metrics, "test": metrics, "best_epoch": 1,
                                                        "epochs_run": 1, "seconds": 1.0, "world_size": nproc}))

    monkeypatch.setattr(launch, "train_job", fake_job)
    lines: list[str] = []
    leftover = _leftover(plan, cell, plugins, world_size=2)
    outcome = run_cell(cell, plan, plugins, lines.append, ("my_plugin",))
    assert jobs == [(2, ["--resume", str(leftover)])] and outcome.value == 0.5
    assert json.loads((plan.runs_dir / cell.run / "cell.json").read_text())["nproc_per_node"] == 2

    shutil.rmtree(plan.runs_dir / cell.run)  # a leftover of an attempt on another thread count: resumed with ours
    leftover = _leftover(plan, cell, plugins, world_size=2)
    config = leftover / "config.yaml"
    config.write_text(config.read_text().replace("threads: 0", "threads: 3"))
    run_cell(cell, plan, plugins, lines.append)
    assert jobs[-1] == (2, ["--resume", str(leftover), "--set", "train.threads=0"])
    jobs.pop()

    shutil.rmtree(plan.runs_dir / cell.run)
    leftover = _leftover(plan, cell, plugins, world_size=1)  # another number of ranks: started afresh
    run_cell(cell, plan, plugins, lines.append)
    config = plan.study_dir / "launch" / f"{cell.run}.yaml"
    assert jobs[1] == (2, ["--config", str(config)]) and f"removing the leftover {leftover}" in " ".join(lines)
    assert read_yaml(config)["run"]["name"] == cell.run and read_yaml(config)["run"]["dir"] == str(plan.runs_dir)

    # a finished run of another number of processes is not reused as this one
    summary = plan.runs_dir / cell.run / "summary.json"
    summary.write_text(summary.read_text().replace('"world_size": 2', '"world_size": 1'))
    (plan.runs_dir / cell.run / "config.yaml").write_text(yaml.safe_dump(read_yaml(config)))
    with pytest.raises(RuntimeError, match="exists from a run of 1 process"):
        run_cell(cell, plan, plugins, lines.append)


# ------------------------------------------------------------- the job itself


def test_job_command_is_seqcl_train_under_torchrun():
    argv = launch.torchrun_argv(3, ["--config", "c.yaml"], ["my_plugin"])
    assert argv[:3] == [sys.executable, "-m", "seqcl_study.launch"]
    assert argv[3:] == ["--standalone", "--nproc-per-node", "3", "-m", "seqcl", "train", "--plugin", "my_plugin",
                        "--config", "c.yaml"]
    env = launch.child_env()
    assert env["PYTHONSAFEPATH"] == "1" and env[launch.PARENT_ENV] == str(os.getpid())
    assert all(p in env["PYTHONPATH"].split(os.pathsep) for p in sys.path if p and os.path.isdir(p))


def test_failure_message_is_the_jobs_own_error():
    seqcl_error = ["epoch stuff", "error: train.metric must be one of hr@5, got 'x'",
                   "error: train.metric must be one of hr@5, got 'x'", "E1129 ... failed (exitcode: 2)",
                   "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ", "======"]
    assert launch.failure_message(seqcl_error, 1) == "train.metric must be one of hr@5, got 'x'"
    crash = ["Traceback (most recent call last):", '  File "x.py", line 1', "RuntimeError: CUDA out of memory",
             "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:", "======"]
    assert launch.failure_message(crash, 1) == "RuntimeError: CUDA out of memory"
    assert launch.failure_message(["a", "", "b", "c", "d"], -9) == "b | c | d"
    assert launch.failure_message([], -9) == "no output (exit code -9)"


def test_error_line_is_found_before_other_ranks_tracebacks():
    """Rank 0's one-line error, then another rank's traceback and torchrun's report: the error is rank 0's."""
    job = "print('error: bad value'); [print('noise', i) for i in range(3 * launch.TAIL_LINES)]; raise SystemExit(1)"
    seen: list[str] = []
    code, lines = launch.run_job([sys.executable, "-c", job.replace("launch.TAIL_LINES", str(launch.TAIL_LINES))],
                                 seen.append)
    assert code == 1 and len(seen) == 1 + 3 * launch.TAIL_LINES  # every line went to the run's log
    assert launch.failure_message(lines, code) == "bad value"


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # exited (a zombie until its new parent reaps it)


#: a job like torchrun: it starts a "rank" in a session of its own, reports its pid and waits
TREE = """
import subprocess, sys, time
rank = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
print("rank", rank.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the process tree is read from /proc")
def test_interrupted_worker_stops_the_job_and_its_ranks():
    ranks: list[int] = []

    def log(line: str) -> None:
        if line.startswith("rank "):
            ranks.append(int(line.split()[1]))
            raise KeyboardInterrupt  # Ctrl-C or SIGTERM reaching the worker while the job runs

    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        launch.run_job([sys.executable, "-c", TREE], log, grace_s=5)
    assert ranks and time.perf_counter() - started < 30
    deadline = time.time() + 5
    while not _gone(ranks[0]) and time.time() < deadline:
        time.sleep(0.05)
    assert _gone(ranks[0]), "the job's rank (in a session of its own) survived the worker's interrupt"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_job_whose_worker_is_gone_does_not_start():
    """The launcher sets the parent-death signal, then checks its parent: one already gone means exit now."""
    env = {**launch.child_env(), launch.PARENT_ENV: "1"}  # not our parent: as if the worker had died
    done = subprocess.run([sys.executable, "-m", "seqcl_study.launch", "--standalone", "--nproc-per-node", "2",
                           "-m", "seqcl", "train"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 143, done.stderr


# -------------------------------------------------- a study with a torchrun run


def _postgres_tools() -> tuple[str, str, list[str]] | None:
    """``initdb``, ``pg_ctl`` and the prefix that runs them (as ``postgres`` when we are root), or None."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    driver = importlib.util.find_spec("psycopg") or importlib.util.find_spec("psycopg2")
    if not (initdb and pg_ctl and driver and sys.platform.startswith("linux")):
        return None
    if os.geteuid() != 0:
        return initdb, pg_ctl, []
    runuser = shutil.which("runuser")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        return None
    return (initdb, pg_ctl, [runuser, "-u", "postgres", "--"]) if runuser else None


POSTGRES = _postgres_tools()


@pytest.fixture(scope="module")
def ledger_url() -> Iterator[str | None]:
    """A throwaway PostgreSQL server on a Unix socket (None: SQLite, the default ledger)."""
    if POSTGRES is None:
        yield None
        return
    initdb, pg_ctl, as_user = POSTGRES
    root = Path(tempfile.mkdtemp(prefix="seqcl-pg-"))
    if as_user:
        import pwd

        shutil.chown(root, user=pwd.getpwnam("postgres").pw_uid)
    data = root / "data"
    try:
        subprocess.run([*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "seqcl", "--no-sync"],
                       check=True, capture_output=True, timeout=120)
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-w", "-l", str(root / "log"), "-o",
                        f"-k {root} -c listen_addresses= -F", "start"], check=True, capture_output=True, timeout=120)
        yield f"postgresql://seqcl@/postgres?host={root}"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True,
                       timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _trials(url: str, name: str) -> list:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=normalize_url(url)).get_trials(deepcopy=False)


@pytest.mark.parametrize("ledger", ["postgresql" if POSTGRES else "sqlite"])
def test_two_workers_share_a_study_with_a_torchrun_run(ledger, ledger_url, tmp_path, tiny_file, plugins, capsys):
    assert (ledger_url is not None) == (ledger == "postgresql")
    spec = write_spec(tmp_path / "s.yaml", tiny_file, seeds=[1], metric="mrr@10", variants={
        "local": {"augmenter": "none"},
        "ddp": {"augmenter": "none", "launch": {"nproc_per_node": 2}},
        "broken": {"augmenter": "none", "train.metric": "hr@99", "launch": {"nproc_per_node": 2}},  # fails in train
    })
    runs = tmp_path / "runs"
    url = ledger_url or f"sqlite:///{runs / 't' / 'study.db'}"
    args = ["study", str(spec), "--runs-dir", str(runs), "--workers", "2", "--storage", url, "--heartbeat", "5"]
    started = time.perf_counter()
    code = main(args)
    seconds = time.perf_counter() - started
    out, err = capsys.readouterr()
    assert code == 1, err  # one run failed; the others finished
    assert "failed: broken__s1: TorchrunFailed: torchrun job (2 processes) exited with code 1: train.metric must " \
           "be one of hr@5, ndcg@5, mrr@5, hr@10, ndcg@10, mrr@10, got 'hr@99'" in err, err

    trials = {t.user_attrs["run"]: t for t in _trials(url, "t")}
    assert {run: t.state.name for run, t in trials.items()} == {"local__s1": "COMPLETE", "ddp__s1": "COMPLETE",
                                                                "broken__s1": "FAIL"}
    workers = {t.user_attrs["worker"] for t in trials.values()}
    assert len(workers) == 2, f"one worker ran every run ({workers}); the ledger was not shared"

    study = runs / "t"
    plan = build_plan(load_spec(spec), plugins.registry, runs)
    ddp, local = study / "runs" / "ddp__s1", study / "runs" / "local__s1"
    assert json.loads((ddp / "summary.json").read_text())["world_size"] == 2
    assert [r["world_size"] for r in map(json.loads, (ddp / "metrics.jsonl").read_text().splitlines())] == [2]
    assert json.loads((local / "summary.json").read_text())["world_size"] == 1
    assert json.loads((ddp / "cell.json").read_text())["nproc_per_node"] == 2
    trained = hashed_items(read_yaml(ddp / "config.yaml"))  # the job trained the config the plan checked
    assert {**trained, "launch.nproc_per_node": 2} == plan.configs["ddp__s1"]
    assert trials["ddp__s1"].user_attrs["config_hash"] == plan.by_run()["ddp__s1"].config_hash
    log = (study / "logs" / "ddp__s1.log").read_text()
    assert "--standalone --nproc-per-node 2 -m seqcl train --config" in log and "best epoch 1 of 1" in log
    assert not (study / "runs" / "broken__s1").exists() and not (study / "runs" / "broken__s1.incomplete").exists()

    report = (study / "report.md").read_text()
    rows = [line.split("|")[1].strip() for line in report.splitlines() if line.startswith("| ")]
    assert "local" in rows and "ddp" in rows and "broken" not in rows, report
    print(f"study with a torchrun run on {ledger}: {seconds:.1f}s")
