"""Server mode: a local PostgreSQL + MLflow server, and a study and a grid driven by 4 independent workers.

Each worker is started as a separate machine would be: its own working directory and SYNTHBOOST_HOME, and
nothing but the two URIs ``synthboost server start`` printed — no file shared with the others.  The server
lives in a folder under /tmp (PostgreSQL runs as the ``postgres`` user when the tests run as root, and pytest's
own tmp folders are closed to other users) on free loopback ports, and is stopped even when a test fails.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from synthboost import queue
from synthboost.cli import app
from synthboost.tracking import Tracker

from servers import Server, cli, free_port, worker_env
from smoke_configs import smoke_grid, smoke_study

runner = CliRunner()

STUDY = smoke_study(n_trials=8, fixed="clf.epochs: 1, gen.latent_dim: 10")
# mix-only (the generator is the same for every trial): 4 workers start together, one trains it, three reuse it

GRID = smoke_grid(experiment="grid-server", mixes="[{ratio: 0.5, strategy: balance}, {ratio: 1.0, strategy: uniform}]",
                  fixed="clf.epochs: 1, gen.latent_dim: 11")
# 2 `none` units of 1 cell + 2 `vae` units of 2 cells (one generator each) = 4 units, 6 cells


def start_workers(server: Server, tmp_path: Path, n: int, text: str, args) -> list[tuple[subprocess.Popen, Path]]:
    """``n`` processes, each in its own folder with its own copy of the config file, started at once."""
    procs = []
    for i in range(n):
        home = tmp_path / f"machine{i}"
        home.mkdir()
        (home / "config.yaml").write_text(text)
        procs.append((subprocess.Popen([sys.executable, "-m", "synthboost", *args], cwd=home,
                                       env=worker_env(server, home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True), home))
    return procs


def finish(procs, timeout: float = 600) -> list[tuple[int, str, str]]:
    out = []
    for p, _ in procs:
        o, e = p.communicate(timeout=timeout)
        out.append((p.returncode, o, e))
    return out


def outputs(results) -> str:
    """Every worker's output, for a failure message: the one that failed a trial is not always the first."""
    return "\n".join(f"--- worker {i} (exit {code})\n{out}{err}" for i, (code, out, err) in enumerate(results))


def runs_of(tracker: Tracker, experiment: str):
    exp = tracker.client.get_experiment_by_name(experiment)
    return tracker.client.search_runs([exp.experiment_id], max_results=1000)


def trained_per_key(tracker: Tracker, keys: set[str]) -> dict[str, int]:
    """How many runs, anywhere in the store, trained the generator of each key."""
    runs = tracker.search("tags.generator_trained = 'true'", max_results=1000)
    counts = collections.Counter(r.data.tags["generator_key"] for r in runs)
    return {k: counts[k] for k in keys}


# ---------------------------------------------------------------- the server's own commands
@pytest.mark.slow
def test_start_is_idempotent_and_status_hides_the_password(server):
    assert server.tracking_uri == f"http://127.0.0.1:{server.port}"
    assert server.storage.startswith("postgresql://synthboost:") and server.storage.endswith(
        f"@127.0.0.1:{server.pg_port}/optuna")
    password = server.storage.split(":")[2].split("@")[0]
    with urllib.request.urlopen(server.tracking_uri + "/health", timeout=5) as r:
        assert r.status == 200
    before = server.leftovers()
    again = server.start()
    assert "already running" in again.stdout
    assert server.leftovers() == before  # the same processes, no second server
    st = cli("server", "status", "--dir", str(server.dir))
    assert st.returncode == 0, st.stderr
    assert password not in st.stdout and "synthboost:***@" in st.stdout
    assert f"127.0.0.1:{server.pg_port}" in st.stdout and server.tracking_uri in st.stdout
    assert st.stdout.count("running, pid") == 2
    # loopback only: PostgreSQL answers on 127.0.0.1, and the MLflow server listens nowhere else
    ss = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout if shutil.which("ss") else ""
    for port in (server.port, server.pg_port):
        assert all(line.split()[3].startswith("127.0.0.1:") for line in ss.splitlines()
                   if line.split()[3].endswith(f":{port}")), ss


@pytest.mark.slow
def test_wrong_credentials_or_database_exit_2_naming_the_uri_without_its_password(server, tmp_path):
    base = f"postgresql://synthboost:%s@127.0.0.1:{server.pg_port}/%s"
    study_file = tmp_path / "s.yaml"
    study_file.write_text(STUDY)
    password = server.storage.split(":")[2].split("@")[0]
    cases = [  # (env, args, expected text)
        ({}, ["study", "--model", "vae", "--config", str(study_file), "--storage", base % ("wrong", "optuna")],
         "wrong user or password"),
        ({"SYNTHBOOST_OPTUNA_STORAGE": base % (password, "nodb")}, ["study", "--model", "vae", "--config",
                                                                    str(study_file)], 'database "nodb" does not exist'),
        ({"MLFLOW_TRACKING_URI": base % ("wrong", "mlflow")}, ["run", "--model", "none", "--profile", "smoke"],
         "wrong user or password"),
        ({"MLFLOW_TRACKING_URI": base % (password, "nodb")}, ["run", "--model", "none", "--profile", "smoke"],
         'database "nodb" does not exist'),
    ]
    for env, args, expected in cases:
        result = runner.invoke(app, args, env=env)
        err = result.stderr.strip()
        assert result.exit_code == 2, (args, result.output)
        assert len(err.splitlines()) == 1 and expected in err, err
        assert f"postgresql://synthboost:***@127.0.0.1:{server.pg_port}/" in err
        assert "wrong@" not in err and password not in err


# ---------------------------------------------------------------- 4 independent workers
@pytest.mark.slow
def test_a_study_driven_by_four_independent_workers_runs_each_trial_once(server, tmp_path):
    args = ["study", "--model", "vae", "--config", "config.yaml", "--name", "four", "--experiment", "server-study"]
    results = finish(start_workers(server, tmp_path, 4, STUDY, args))
    st = optuna.load_study(study_name="four", storage=queue.open_storage(server.storage))
    trials = st.get_trials()
    reasons = {t.number: t.user_attrs.get("fail_reason") for t in trials if t.state.name != "COMPLETE"}
    for code, out, err in results:
        assert code == 0, outputs(results)
        assert "study four: 8 complete, 0 pruned, 0 failed" in out, f"{reasons}\n{outputs(results)}"

    assert sorted(t.number for t in trials) == list(range(8))  # exactly the budget, no retry, nothing lost
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) >= 2, "the work was not shared"
    tracker = Tracker(server.tracking_uri)
    runs = runs_of(tracker, "server-study")
    parent = tracker.client.get_run(st.user_attrs["mlflow_parent_run_id"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 9 and len(children) == 8  # one parent, one child per trial: no duplicate run
    assert {t.user_attrs["mlflow_run_id"] for t in trials} == {r.info.run_id for r in children}
    assert all(r.info.status == "FINISHED" for r in runs)  # nothing left RUNNING, parent included
    assert parent.data.tags["optuna.study_name"] == "four" and "best_params" in parent.data.tags
    keys = {r.data.tags["generator_key"] for r in children}
    assert len(keys) == 1 and trained_per_key(tracker, keys) == {k: 1 for k in keys}  # trained once, reused 7×
    # artifacts went through the server into its folder; the workers' own folders hold no store
    assert list((server.dir / "artifacts").rglob("model.pt"))
    for home in (tmp_path / f"machine{i}" for i in range(4)):
        assert not (home / "tracking").exists() and not list(home.rglob("*.db")), list(home.rglob("*"))


@pytest.mark.slow
def test_a_grid_driven_by_four_independent_workers_runs_each_cell_once(server, tmp_path):
    from synthboost import grid as grid_mod

    results = finish(start_workers(server, tmp_path, 4, GRID, ["grid", "--config", "config.yaml"]))
    for code, out, err in results:
        assert code == 0, outputs(results)
        assert "0 missing of 6" in out, outputs(results)

    tracker = Tracker(server.tracking_uri)
    spec_file = tmp_path / "grid.yaml"
    spec_file.write_text(GRID)
    units = grid_mod.plan(grid_mod.load_grid(spec_file), server.storage)
    planned = {c.key for u in units for c in u.cells}
    runs = runs_of(tracker, "grid-server")
    cells = [r for r in runs if r.data.tags.get("synthboost.kind") == "experiment"]
    assert len(cells) == 6 and {r.data.tags["config_key"] for r in cells} == planned  # each cell once
    assert all(r.info.status == "FINISHED" for r in runs)  # cells and the grid's parent
    st = optuna.load_study(study_name="grid-grid-server", storage=queue.open_storage(server.storage))
    done = [t.user_attrs["unit_id"] for t in st.get_trials() if t.state.name == "COMPLETE"]
    assert sorted(done) == sorted(u.id for u in units)  # each unit once, none failed or retried
    vae = [r for r in cells if r.data.tags["model"] == "vae"]
    keys = {r.data.tags["generator_key"] for r in vae}
    assert len(keys) == 2 and trained_per_key(tracker, keys) == {k: 1 for k in keys}
    trained = {r.info.run_id for r in vae if r.data.tags.get("generator_trained") == "true"}
    assert {r.data.tags["generator_run_id"] for r in vae} == trained

    # the other commands, unchanged, on the same two URIs (started together: they are independent)
    env, home = worker_env(server, tmp_path / "machine0"), tmp_path / "machine0"
    port = free_port()
    commands = {"report": ["report", "--experiment", "grid-server", "--out", str(tmp_path / "report"), "--format",
                           "md,csv"],
                "evaluate": ["evaluate", "--run-id", sorted(trained)[0]],
                "ui": ["ui"],
                "dashboard": ["dashboard", "--name", "grid-grid-server", "--port", str(port)]}
    procs = {k: subprocess.Popen([sys.executable, "-m", "synthboost", *a], env=env, cwd=home, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for k, a in commands.items()}
    try:
        deadline, body = time.time() + 120, None
        while time.time() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    body = json.loads(r.read())
            except OSError:
                time.sleep(0.5)
        assert body is not None and "grid-grid-server" in json.dumps(body)
    finally:
        procs["dashboard"].send_signal(signal.SIGINT)
    out = {}
    for k, p in procs.items():
        stdout, stderr = p.communicate(timeout=600)
        out[k] = (p.returncode, stdout, stderr)
    code, stdout, stderr = out["report"]
    assert code == 0 and "logged as MLflow run" in stdout, stdout + stderr
    assert (tmp_path / "report" / "report.md").is_file()
    code, stdout, stderr = out["evaluate"]
    assert code == 0 and "FID" in stdout, stdout + stderr
    assert "gen/fid" in tracker.client.get_run(sorted(trained)[0]).data.metrics
    code, stdout, stderr = out["ui"]
    assert code == 0 and server.tracking_uri in stdout, stdout + stderr
    stdout = out["dashboard"][1]
    assert "***@" in stdout and server.storage.split(":")[2].split("@")[0] not in stdout  # the password stays hidden


# ---------------------------------------------------------------- a new store, three processes at once
@pytest.mark.slow
def test_three_runs_at_once_on_a_new_sqlite_store_all_succeed(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SYNTHBOOST_"))}
    env |= {"SYNTHBOOST_HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}  # one fresh clone, three terminals
    procs = [subprocess.Popen([sys.executable, "-m", "synthboost", "run", "--model", "none", "--profile", "smoke",
                               "--size", "300", "--seed", str(seed), "--set", "clf.epochs=1"], env=env,
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in range(3)]
    results = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in procs]
    for code, out, err in results:
        assert code == 0, err[-3000:]
    tracker = Tracker(f"sqlite:///{tmp_path / 'tracking' / 'mlflow.db'}")
    runs = runs_of(tracker, "synthboost")
    assert sorted(r.data.tags["seed"] for r in runs) == ["0", "1", "2"]
    assert all(r.info.status == "FINISHED" for r in runs)


# ---------------------------------------------------------------- last: stop (the fixture's finalizer is then a no-op)
@pytest.mark.slow
def test_stop_leaves_nothing_running(server):
    assert server.leftovers()
    r = server.stop()
    assert r.returncode == 0, r.stderr
    assert "MLflow server" in r.stdout and "PostgreSQL" in r.stdout
    assert server.leftovers() == []  # no postgres, no mlflow server, no uvicorn worker
    st = cli("server", "status", "--dir", str(server.dir))
    assert st.stdout.count("stopped") == 2
    again = cli("server", "stop", "--dir", str(server.dir))
    assert again.returncode == 0 and "nothing running" in again.stdout


@pytest.mark.parametrize("exits_after", [3, None])
def test_stop_waits_for_a_postgres_that_is_still_exiting_and_names_one_that_is_stuck(tmp_path, monkeypatch,
                                                                                     exits_after):
    """pg_ctl says "server stopped" once the pid file is gone, a moment before the process exits (a busy CI machine
    made that moment long enough to fail `server stop`): stop waits for it; a process that never exits is an error."""
    from synthboost import server as srv

    alive = iter([True] * exits_after if exits_after else [])
    monkeypatch.setattr(srv, "status", lambda folder: srv.Status(dir=folder, state=None, pg_pid=4242, mlflow_pid=None,
                                                                 mlflow_healthy=False))
    monkeypatch.setattr(srv, "_pg_run", lambda *a: subprocess.CompletedProcess(a, 0, "server stopped\n", ""))
    monkeypatch.setattr(srv, "pid_alive", lambda pid: next(alive, exits_after is None))
    monkeypatch.setattr(srv, "PG_EXIT_GRACE", 1.0)
    said = []
    if exits_after:
        srv.stop(tmp_path, say=said.append)
        assert said == ["PostgreSQL (pid 4242) stopped"]
    else:
        with pytest.raises(RuntimeError, match=r"PostgreSQL \(pid 4242\) did not stop: server stopped"):
            srv.stop(tmp_path, say=said.append)
