"""Faults a long study meets, each provoked for real and checked the way a user would notice it (issue 20).

Workers are real ``synthboost`` processes on the smoke profile.  They are killed at a named stage through the
``SYNTHBOOST_FAULT`` hook (synthboost/faults.py: inert unless set), so each fault lands at the same moment on
every machine.  Every process a test starts is ended by the test (or its fixture) even when it fails.  Each test
also records its fault, what it checked and the runs/trials it counted before and after (the ``record`` fixture:
one JSON per test under tests/artifacts/faults/); ``python tests/fault_table.py`` (``make fault-table``) runs this
file and renders those into the table in tests/README.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from synthboost import queue
from synthboost.tracking import Tracker

from conftest import unavailable
from servers import cli, worker_env
from smoke_configs import smoke_study

pytestmark = pytest.mark.slow


def study_yaml(n_trials: int, latent: int) -> str:
    return smoke_study(n_trials=n_trials, search={"mix.ratio": "{low: 0.2, high: 1.0}"},
                       fixed=f"clf.epochs: 2, gen.epochs: 2, gen.latent_dim: {latent}")
    # gen.epochs 2: "during generator training" is after its first epoch, with one still to go


GRID = """
experiment: faults-grid
profile: smoke
models: [vae]
regimes: [balanced]
sizes: [300]
seeds: [0]
classifiers: [cnn]
mixes: [{ratio: 0.5, strategy: balance}, {ratio: 1.0, strategy: uniform}]
fixed: {clf.epochs: 2, gen.latent_dim: 9}
"""
# one unit (one generator) of two cells


# ---------------------------------------------------------------- helpers
def embedded_env(home: Path, **extra: str) -> dict[str, str]:
    """A fresh clone's environment: the embedded default stores under ``home``, nothing inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SYNTHBOOST_"))}
    return env | {"SYNTHBOOST_HOME": str(home), "OMP_NUM_THREADS": "1",
                  "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"} | extra


class Procs:
    """Starts ``synthboost`` processes and kills whatever is still running at the end of the test."""

    def __init__(self):
        self.started: list[subprocess.Popen] = []

    def start(self, args: list[str], *, env: dict, cwd: Path, stderr=subprocess.PIPE, **kw) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-m", "synthboost", *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                             stderr=stderr, text=True, **kw)
        self.started.append(p)
        return p

    def run(self, args: list[str], *, env: dict, cwd: Path, timeout: float = 600, **kw) -> tuple[int, str, str]:
        p = self.start(args, env=env, cwd=cwd, **kw)
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out, err

    def cleanup(self):
        for p in self.started:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)


@pytest.fixture(autouse=True)
def _server_running(request):
    """The module's server runs at the start of every test that uses it, whatever a failed earlier test that stopped
    it left behind (`server start` is idempotent): one failure must not turn into two."""
    if "server" in request.fixturenames:
        request.getfixturevalue("server").start()


@pytest.fixture
def procs():
    p = Procs()
    yield p
    p.cleanup()


def embedded_tracker(home: Path) -> Tracker:
    return Tracker(f"sqlite:///{home / 'tracking' / 'mlflow.db'}")


def journal_study(home: Path, name: str):
    return optuna.load_study(study_name=name, storage=queue.open_storage(str(home / "tracking" / "optuna.journal")))


def all_runs(tracker: Tracker):
    return tracker.client.search_runs(tracker.experiment_ids(), max_results=1000)


def status_counts(runs) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in runs:
        out[r.info.status] = out.get(r.info.status, 0) + 1
    return out


def state_counts(trials) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def trained_runs(runs) -> list:
    return [r for r in runs if r.data.tags.get("generator_trained") == "true"]


def one_line_error(err: str) -> str:
    """The CLI's message: no traceback, and the last line of stderr says what happened."""
    assert "Traceback" not in err, err[-3000:]
    return err.strip().splitlines()[-1]


def write_study(home: Path, n_trials: int, latent: int) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "study.yaml"
    path.write_text(study_yaml(n_trials, latent))
    return path


# ---------------------------------------------------------------- the record behind tests/README.md's table
RECORDS = Path(__file__).parent / "artifacts" / "faults"


class FaultRecord:
    """What one test provoked and counted; written as JSON when the test ends, with its outcome."""

    def __init__(self, nodeid: str):
        self.data: dict = {"test": nodeid}

    def fault(self, what: str, *, checked: str, store: str) -> None:
        self.data |= {"fault": what, "checked": checked, "store": store}

    def count(self, when: str, label: str, *, runs, trials=None) -> None:
        """``when``: "before" (the fault or the resume) or "after"; counts from the stores the test opened."""
        self.data[when] = {"label": label, "runs": status_counts(runs),
                           "trials": None if trials is None else state_counts(trials)}

    def write(self, node) -> None:
        if "fault" not in self.data:
            return
        rep = getattr(node, "rep_call", None)  # set by conftest.py's pytest_runtest_makereport
        self.data |= {"outcome": rep.outcome if rep else "not run",
                      "seconds": round(rep.duration, 1) if rep else None, "finished_at": time.time()}
        RECORDS.mkdir(parents=True, exist_ok=True)
        name = "".join(c if c.isalnum() or c in "-_" else "_" for c in node.nodeid.split("::")[-1])
        (RECORDS / f"{name}.json").write_text(json.dumps(self.data, indent=1) + "\n")


@pytest.fixture
def record(request):
    rec = FaultRecord(request.node.nodeid)
    yield rec
    rec.write(request.node)


# ---------------------------------------------------------------- SIGKILL of a worker
@pytest.mark.parametrize("stage", ["generator-training", "checkpoint-uploaded"])
def test_a_study_worker_killed_resumes_and_completes_each_trial_once(stage, procs, tmp_path, record):
    """Killed while training its generator, or once the checkpoint is uploaded but not yet marked complete:
    the same command again finishes the study; the generator is trained (and marked) once, by the retry."""
    record.fault("SIGKILL of a study worker " + ("while it trains its generator" if stage == "generator-training"
                 else "once its checkpoint is uploaded, not yet marked complete"), store="embedded",
                 checked="the same command finishes the study: `1 complete … (1 retried`; the killed trial FAIL, its "
                         "run FAILED, none RUNNING; the generator trained once, by the retry"
                         + ("" if stage == "generator-training" else "; the uploaded checkpoint never reused"))
    home = tmp_path / "clone"
    study_file = write_study(home, 1, latent=7 if stage == "generator-training" else 6)
    args = ["study", "--model", "vae", "--config", str(study_file), "--name", "k"]
    code, out, err = procs.run(args, env=embedded_env(home, SYNTHBOOST_FAULT=f"{stage}:SIGKILL"), cwd=home)
    assert code == -signal.SIGKILL and f"fault point {stage} reached" in err, err[-3000:]
    tracker = embedded_tracker(home)
    killed = [r for r in all_runs(tracker) if r.data.tags.get("optuna.trial_number") == "0"]
    assert [r.info.status for r in killed] == ["RUNNING"]  # what a crash leaves behind
    if stage == "checkpoint-uploaded":  # the checkpoint is in the store, the completion mark is not
        assert Path(killed[0].info.artifact_uri.removeprefix("file://"), "generator", "model.pt").is_file()
        assert "generator_trained" not in killed[0].data.tags
    record.count("before", "after the kill", runs=all_runs(tracker), trials=journal_study(home, "k").get_trials())

    code, out, err = procs.run(args, env=embedded_env(home), cwd=home)
    assert code == 0, err[-3000:]
    assert "study k: 1 complete, 0 pruned, 0 failed (1 retried" in out, out

    trials = journal_study(home, "k").get_trials()
    record.count("after", "after the resume", runs=all_runs(tracker), trials=trials)
    assert sorted(t.state.name for t in trials) == ["COMPLETE", "FAIL"]
    failed, done = sorted(trials, key=lambda t: t.state.name != "FAIL")
    assert "died" in failed.user_attrs["fail_reason"] and done.user_attrs["retry_of"] == failed.number
    runs = all_runs(tracker)
    assert status_counts(runs) == {"FINISHED": 2, "FAILED": 1}  # parent + the retry; the killed run closed
    by_id = {r.info.run_id: r for r in runs}
    assert by_id[failed.user_attrs["mlflow_run_id"]].info.status == "FAILED"
    retry = by_id[done.user_attrs["mlflow_run_id"]]
    assert [r.info.run_id for r in trained_runs(runs)] == [retry.info.run_id]  # trained once, by the retry
    assert retry.data.tags["generator_run_id"] == retry.info.run_id


def test_a_grid_worker_killed_while_training_its_classifier_the_grid_still_runs_each_cell_once(procs, tmp_path,
                                                                                                  record):
    """Two grid workers; one is killed in its first cell's classifier training.  The same `synthboost grid`
    command retries the unit: its generator (complete) is reused, each cell ends FINISHED exactly once."""
    record.fault("SIGKILL of one of two `grid-worker`s while it trains a classifier", store="embedded",
                 checked="`synthboost grid --workers 2` still ends `0 missing of 2`; each cell FINISHED once, the "
                         "killed cell FAILED; its complete generator reused, not retrained")
    home = tmp_path / "clone"
    home.mkdir()
    (home / "grid.yaml").write_text(GRID)
    env = embedded_env(home, SYNTHBOOST_FAULT="classifier-training:SIGKILL",
                       SYNTHBOOST_FAULT_ONCE=str(tmp_path / "fault-once"))
    record.count("before", "a new store", runs=[], trials=[])  # the kill and its retry happen in one command
    code, out, err = procs.run(["grid", "--config", "grid.yaml", "--workers", "2"], env=env, cwd=home)
    assert code == 0, out + err[-3000:]
    assert "fault point classifier-training reached" in err and "-9" in err, err[-3000:]  # a worker did die
    assert "0 missing of 2" in out, out

    runs = all_runs(embedded_tracker(home))
    cells = [r for r in runs if r.data.tags.get("synthboost.kind") == "experiment"]
    finished = [r for r in cells if r.info.status == "FINISHED"]
    assert len(finished) == 2 and len({r.data.tags["config_key"] for r in finished}) == 2  # each cell once
    assert status_counts(runs) == {"FINISHED": 3, "FAILED": 1}  # two cells + the parent; the killed cell closed
    killed = next(r for r in cells if r.info.status == "FAILED")
    assert "died" in killed.data.tags["error"]
    # the killed run had finished its generator (complete and marked): the retry reused it, trained nothing
    assert [r.info.run_id for r in trained_runs(runs)] == [killed.info.run_id]
    assert {r.data.tags["generator_run_id"] for r in finished} == {killed.info.run_id}
    units = journal_study(home, "grid-faults-grid").get_trials()
    record.count("after", "after the grid (units as trials)", runs=runs, trials=units)
    assert sorted(t.state.name for t in units) == ["COMPLETE", "FAIL"]


def test_a_damaged_checkpoint_is_never_taken_as_a_cached_generator(tmp_path, capsys, record):
    """A checkpoint whose bytes no longer match the digest recorded after its upload is not sampled from."""
    from synthboost.cell import make_config
    from synthboost.pipeline import run_experiment

    record.fault("a stored checkpoint cut to half its bytes (no longer the digest recorded after upload)",
                 store="embedded", checked="`does not match the digest … not reusing it` on stderr; the generator "
                                           "trained again, and that one reused next")

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    cfg = make_config(model="vae", regime="balanced", size=300, profile="smoke",
                      overrides={"clf": {"epochs": 1}, "gen": {"latent_dim": 5}})
    first = run_experiment(cfg, tracker=tracker, progress=False, use_env_run=False)
    assert not first.generator_reused
    run = tracker.client.get_run(first.run_id)
    ckpt = Path(run.info.artifact_uri.removeprefix("file://"), "generator", "model.pt")
    record.count("before", "before the damage", runs=all_runs(tracker))
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # e.g. a copy cut short
    second = run_experiment(cfg, tracker=tracker, progress=False, use_env_run=False)
    assert not second.generator_reused and second.generator_run_id == second.run_id  # trained again
    assert "does not match the digest" in capsys.readouterr().err
    third = run_experiment(cfg, tracker=tracker, progress=False, use_env_run=False)
    assert third.generator_reused and third.generator_run_id == second.run_id  # the good one is reused
    record.count("after", "after two more runs", runs=all_runs(tracker))


# ---------------------------------------------------------------- Ctrl-C
def test_ctrl_c_ends_the_run_killed_fails_the_trial_and_says_how_to_resume(procs, tmp_path, record):
    record.fault("Ctrl-C (SIGINT) during classifier training", store="embedded",
                 checked="exit 130 without finishing the trial, one line `interrupted … re-run the same command to "
                         "resume`; the run and the study's parent KILLED (none RUNNING), the trial FAIL, its retry "
                         "WAITING; the same command then finishes (`1 retried`), the parent reopened and FINISHED")
    home = tmp_path / "clone"
    study_file = write_study(home, 1, latent=8)
    errfile = tmp_path / "stderr"
    with open(errfile, "w") as fh:
        # SIGINT as a terminal delivers it: a suite started in the background by a non-interactive shell ignores
        # SIGINT, and a child inherits that (Python then installs no handler), so restore the default
        p = procs.start(["study", "--model", "vae", "--config", str(study_file), "--name", "c"],
                        env=embedded_env(home, SYNTHBOOST_FAULT="classifier-training:wait"), cwd=home, stderr=fh,
                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 300
        while "fault point classifier-training reached" not in errfile.read_text():
            assert p.poll() is None and time.time() < deadline, errfile.read_text()[-3000:]
            time.sleep(0.5)
        record.count("before", "at Ctrl-C", runs=all_runs(embedded_tracker(home)),
                     trials=journal_study(home, "c").get_trials())
        p.send_signal(signal.SIGINT)  # what Ctrl-C sends
        # promptly: it neither finishes the trial nor waits for anything (the bound is generous because a loaded
        # CI machine may take its time to schedule the process; a hang fails with TimeoutExpired)
        try:
            p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("still running 120 s after SIGINT; its stderr:\n" + errfile.read_text()[-3000:])
    err = errfile.read_text()
    assert p.returncode == 130, err[-3000:]
    line = one_line_error(err)
    assert "interrupted" in line and "re-run the same command to resume" in line

    trials = journal_study(home, "c").get_trials()
    record.count("after", "after the exit", runs=all_runs(embedded_tracker(home)), trials=trials)
    assert sorted(t.state.name for t in trials) == ["FAIL", "WAITING"]  # the retry a resume will run
    failed = next(t for t in trials if t.state.name == "FAIL")
    assert failed.user_attrs["fail_reason"] == "interrupted (SIGINT)"
    run = embedded_tracker(home).client.get_run(failed.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["error"] == "interrupted"
    # nothing left RUNNING: the study's parent run ends KILLED too (issue 36), and the resume reopens it
    assert status_counts(all_runs(embedded_tracker(home))) == {"KILLED": 2}
    code, out, err = procs.run(["study", "--model", "vae", "--config", str(study_file), "--name", "c"],
                               env=embedded_env(home), cwd=home)
    assert code == 0 and "study c: 1 complete, 0 pruned, 0 failed (1 retried" in out, out + err[-3000:]
    record.count("after", "after the exit, then the resume", runs=all_runs(embedded_tracker(home)),
                 trials=journal_study(home, "c").get_trials())
    assert status_counts(all_runs(embedded_tracker(home))) == {"KILLED": 1, "FINISHED": 2}  # parent reopened


# ---------------------------------------------------------------- a full disk
def _limit_file_size(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


DISK_FULL_ARGS = ["run", "--model", "vae", "--profile", "smoke", "--size", "300", "--set", "gen.hidden=128",
                  "--set", "clf.epochs=1"]  # gen.hidden 128: a 6.7 MB checkpoint


def _assert_disk_full_then_resumes(procs, home: Path, record, *, first_run: dict, strerror: str, make_room,
                                   what: str = "generator checkpoint") -> None:
    """The first run fails writing its checkpoint (or ``what``): exit 1, one line; the store reads back (one FAILED
    run with the reason, no cached generator); after ``make_room()`` the same command succeeds."""
    code, out, err = procs.run(DISK_FULL_ARGS, env=embedded_env(home), cwd=home, **first_run)
    assert code == 1, err[-3000:]
    line = one_line_error(err)
    assert line.startswith(f"error: no space left writing the {what}") and "re-run" in line, line
    assert f"MB): {strerror}; free some space" in line, line  # the real errno, not a guess

    tracker = embedded_tracker(home)  # readable: the failed run is there, FAILED, with the reason
    runs = all_runs(tracker)
    record.count("before", "after the failed write", runs=runs)
    assert [r.info.status for r in runs] == ["FAILED"] and "no space left" in runs[0].data.tags["error"]
    assert not trained_runs(runs)  # never a cached generator
    make_room()
    code, out, err = procs.run(DISK_FULL_ARGS, env=embedded_env(home), cwd=home)  # space again: the same command
    assert code == 0, err[-3000:]
    assert "generator trained in run" in out
    record.count("after", "after the re-run", runs=all_runs(tracker))
    assert status_counts(all_runs(tracker)) == {"FAILED": 1, "FINISHED": 1}


def test_a_full_disk_while_writing_a_checkpoint_is_one_clear_line_and_the_store_stays_readable(procs, tmp_path,
                                                                                               record):
    """RLIMIT_FSIZE in the child makes any file past 4 MB fail as a full disk would (EFBIG, handled as ENOSPC):
    the 6.7 MB checkpoint fails, the 1 MB SQLite store does not."""
    record.fault("a full disk while writing a checkpoint: a 4 MB file-size limit in the child (EFBIG)",
                 store="embedded", checked="exit 1, one line `error: no space left writing the generator checkpoint "
                                           "…`; the store reads back: one FAILED run, no cached generator; the same "
                                           "command then succeeds")
    home = tmp_path / "clone"
    home.mkdir()
    _assert_disk_full_then_resumes(procs, home, record, first_run={"preexec_fn": _limit_file_size(4_000_000)},
                                   strerror="File too large", make_room=lambda: None)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 4 MB tmpfs mounted for the test (root only), unmounted at the end even when the test fails."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        unavailable("mounting a tmpfs needs root and mount(8)")
    where = tmp_path / "small-disk"
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        unavailable(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    yield where
    if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(where)], check=True)  # busy (a straggler): detach it now


def test_a_really_full_disk_while_writing_a_checkpoint_fails_with_enospc_and_resumes_after_room(small_tmpfs, procs,
                                                                                                 tmp_path, record):
    # small_tmpfs first: its teardown (the unmount) then runs after procs' has killed any straggler
    """The artifact folder of the embedded store on a 4 MB tmpfs: copying the 6.7 MB checkpoint in fails with a real
    ENOSPC (the SQLite store beside it is on the big disk).  Growing the tmpfs (what freeing space amounts to) and
    running the same command again succeeds."""
    record.fault("a really full disk while writing a checkpoint: the artifact folder on a 4 MB tmpfs (ENOSPC)",
                 store="embedded", checked="exit 1, one line `error: no space left … No space left on device`; the "
                                           "store reads back: one FAILED run, no cached generator; after the tmpfs is "
                                           "grown to 64 MB the same command succeeds")
    home = tmp_path / "clone"
    (home / "tracking").mkdir(parents=True)
    (home / "tracking" / "artifacts").symlink_to(small_tmpfs)  # where the embedded store puts every artifact

    def make_room():
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)

    _assert_disk_full_then_resumes(procs, home, record, first_run={}, strerror="No space left on device",
                                   make_room=make_room)


# ---------------------------------------------------------------- server mode: the server goes away
def _wait_for(predicate, *, timeout: float, what: str, proc=None):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        assert proc is None or proc.poll() is None, f"the worker exited while waiting for {what}"
        time.sleep(1)


def _trials_in(server, name: str, state: str) -> int:
    try:
        st = optuna.load_study(study_name=name, storage=server.storage)
    except Exception:  # not created yet
        return 0
    return sum(t.state.name == state for t in st.get_trials())


def _server_runs(server, experiment: str) -> list:
    tracker = Tracker(server.tracking_uri)
    exp = tracker.client.get_experiment_by_name(experiment)
    return tracker.client.search_runs([exp.experiment_id], max_results=100) if exp else []


def _server_trials(server, name: str) -> list:
    return optuna.load_study(study_name=name, storage=server.storage).get_trials()


def test_server_stopped_mid_study_and_back_within_the_bound_nothing_is_lost(server, procs, tmp_path, record):
    record.fault("MLflow server and PostgreSQL stopped mid-study, back after ~8 s", store="server",
                 checked="stderr says `unreachable … waiting for it with backoff` then `is back after N s … "
                         "its last answer was M s ago` (M ≥ the 8 s stop); the study ends `2 complete, 0 pruned, 0 "
                         "failed`, every run FINISHED, no retry")
    home = tmp_path / "machine"
    study_file = write_study(home, 2, latent=12)
    env = worker_env(server, home) | {"SYNTHBOOST_OUTAGE_SECONDS": "300"}
    errfile = tmp_path / "stderr"
    with open(errfile, "w") as fh:
        p = procs.start(["study", "--model", "vae", "--config", str(study_file), "--name", "outage",
                         "--experiment", "faults-outage"], env=env, cwd=home, stderr=fh)
        _wait_for(lambda: _trials_in(server, "outage", "COMPLETE") >= 1, timeout=300, what="a first trial", proc=p)
        record.count("before", "just before the stop", runs=_server_runs(server, "faults-outage"),
                     trials=_server_trials(server, "outage"))
        assert server.stop().returncode == 0  # both: the MLflow server and PostgreSQL
        time.sleep(8)
        server.start()  # the same ports and password
        out, _ = p.communicate(timeout=600)
    err = errfile.read_text()
    assert p.returncode == 0, err[-3000:]
    assert "unreachable" in err and "waiting for it with backoff" in err and "is back after" in err, err[-3000:]
    # the outage as long as it was: the last answer before it is named (issue 36: "back after 2 s" for an 8 s stop)
    ago = [int(line.rsplit("last answer was ", 1)[1].split()[0]) for line in err.splitlines()
           if "is back after" in line and "last answer was" in line]
    assert ago and max(ago) >= 8, err[-3000:]
    assert "study outage: 2 complete, 0 pruned, 0 failed" in out, out + err[-2000:]
    st = optuna.load_study(study_name="outage", storage=server.storage)
    assert sorted(t.state.name for t in st.get_trials()) == ["COMPLETE"] * 2  # nothing lost, nothing retried
    tracker = Tracker(server.tracking_uri)
    exp = tracker.client.get_experiment_by_name("faults-outage")
    runs = tracker.client.search_runs([exp.experiment_id], max_results=100)
    record.count("after", "after the study", runs=runs, trials=st.get_trials())
    assert status_counts(runs) == {"FINISHED": 3}  # the parent and one run per trial
    assert {t.user_attrs["mlflow_run_id"] for t in st.get_trials()} <= {r.info.run_id for r in runs}


def test_server_gone_longer_than_the_bound_exits_saying_how_to_resume(server, procs, tmp_path, record):
    record.fault("the same, gone longer than `SYNTHBOOST_OUTAGE_SECONDS` (10 s)", store="server",
                 checked="exit 1 within 120 s, one line `unreachable for N s (more than SYNTHBOOST_OUTAGE_SECONDS=10)"
                         " … re-run the same command to resume`; the same command then finishes (`1 retried`), "
                         "no run RUNNING")
    home = tmp_path / "machine"
    study_file = write_study(home, 1, latent=13)
    env = worker_env(server, home) | {"SYNTHBOOST_OUTAGE_SECONDS": "10"}
    args = ["study", "--model", "vae", "--config", str(study_file), "--name", "gone", "--experiment", "faults-gone"]
    errfile = tmp_path / "stderr"
    try:
        with open(errfile, "w") as fh:
            p = procs.start(args, env=env, cwd=home, stderr=fh)
            _wait_for(lambda: _trials_in(server, "gone", "RUNNING") >= 1, timeout=300, what="a trial", proc=p)
            assert server.stop().returncode == 0
            t0 = time.monotonic()
            p.wait(timeout=180)
            seconds = time.monotonic() - t0
    finally:
        server.start()
    err = errfile.read_text()
    assert p.returncode == 1, err[-3000:]
    line = one_line_error(err)
    assert "unreachable for" in line and "SYNTHBOOST_OUTAGE_SECONDS=10" in line, line
    assert "re-run the same command to resume" in line
    assert seconds < 120, seconds  # bounded: it did not hang on MLflow's or the driver's own retries
    record.count("before", "server back, before the resume", runs=_server_runs(server, "faults-gone"),
                 trials=_server_trials(server, "gone"))
    # and the same command, with the server back, finishes the study: the dead worker's trial is retried
    code, out, err = procs.run(args, env=env, cwd=home)
    assert code == 0, err[-3000:]
    assert "1 complete, 0 pruned, 0 failed (1 retried" in out, out
    tracker = Tracker(server.tracking_uri)
    exp = tracker.client.get_experiment_by_name("faults-gone")
    runs = tracker.client.search_runs([exp.experiment_id], max_results=100)
    record.count("after", "after the resume", runs=runs, trials=_server_trials(server, "gone"))
    assert "RUNNING" not in status_counts(runs)


def test_a_server_mode_worker_killed_while_training_resumes_and_completes_each_trial_once(server, procs, tmp_path,
                                                                                          record):
    """SIGKILL during generator training on PostgreSQL + the MLflow server (no shared files): the same command
    again retries the dead worker's trial, trains the generator once, and leaves no run RUNNING."""
    record.fault("SIGKILL of a study worker while it trains its generator, the worker given only the two URIs",
                 store="server", checked="the same command finishes: `1 complete … (1 retried`; the killed run "
                                         "FAILED, none RUNNING; the generator trained once")
    home = tmp_path / "machine"
    study_file = write_study(home, 1, latent=14)
    args = ["study", "--model", "vae", "--config", str(study_file), "--name", "killed-server",
            "--experiment", "faults-killed-server"]
    env = worker_env(server, home)
    code, out, err = procs.run(args, env=env | {"SYNTHBOOST_FAULT": "generator-training:SIGKILL"}, cwd=home)
    assert code == -signal.SIGKILL and "fault point generator-training reached" in err, err[-3000:]
    record.count("before", "after the kill", runs=_server_runs(server, "faults-killed-server"),
                 trials=_server_trials(server, "killed-server"))

    code, out, err = procs.run(args, env=env, cwd=home)
    assert code == 0, err[-3000:]
    assert "study killed-server: 1 complete, 0 pruned, 0 failed (1 retried" in out, out
    trials = optuna.load_study(study_name="killed-server", storage=server.storage).get_trials()
    assert sorted(t.state.name for t in trials) == ["COMPLETE", "FAIL"]
    tracker = Tracker(server.tracking_uri)
    exp = tracker.client.get_experiment_by_name("faults-killed-server")
    runs = tracker.client.search_runs([exp.experiment_id], max_results=100)
    record.count("after", "after the resume", runs=runs, trials=trials)
    assert status_counts(runs) == {"FINISHED": 2, "FAILED": 1}  # parent + the retry; the killed run closed
    assert len(trained_runs(runs)) == 1  # trained once, by the retry


# ---------------------------------------------------------------- issue 36: nothing lost, no open door
def test_a_full_disk_at_the_logged_model_step_is_one_line_and_the_run_closed_failed(small_tmpfs, procs, tmp_path,
                                                                                   record):
    """The checkpoint (6.7 MB) fits on a 10 MB artifact disk, the MLflow model's copy of it does not: as for the
    checkpoint, one line, the run FAILED, never a cached generator; after room the same command succeeds."""
    record.fault("a full disk at the logged-model step: the artifact folder on a 10 MB tmpfs, the checkpoint fits, "
                 "the MLflow model's copy does not (ENOSPC)", store="embedded",
                 checked="exit 1, one line `error: no space left writing the generator model … No space left on "
                         "device`; one FAILED run, no cached generator; after the tmpfs is grown the same command "
                         "succeeds")
    subprocess.run(["mount", "-o", "remount,size=10m", str(small_tmpfs)], check=True)
    home = tmp_path / "clone"
    (home / "tracking").mkdir(parents=True)
    (home / "tracking" / "artifacts").symlink_to(small_tmpfs)

    def make_room():
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)

    _assert_disk_full_then_resumes(procs, home, record, first_run={}, strerror="No space left on device",
                                   make_room=make_room, what="generator model")


def test_a_recovery_cut_short_by_the_store_is_finished_by_the_next_start(procs, tmp_path, record):
    """The store goes away while a dead worker's trial is being recovered, between failing the trial and closing
    its run (the outage of issue 36): the next start closes the run and retries the trial, nothing is lost."""
    from synthboost.errors import StoreOutage

    record.fault("the store gone in the middle of recovering a dead worker's trial (FAIL set, run not closed, no "
                 "retry queued)", store="embedded",
                 checked="the same command then finishes: `1 complete, 0 pruned, 0 failed (1 retried`; the dead run "
                         "FAILED, none RUNNING")
    home = tmp_path / "clone"
    study_file = write_study(home, 1, latent=15)
    args = ["study", "--model", "vae", "--config", str(study_file), "--name", "cut"]
    code, out, err = procs.run(args, env=embedded_env(home, SYNTHBOOST_FAULT="generator-training:SIGKILL"), cwd=home)
    assert code == -signal.SIGKILL, err[-3000:]

    class StoreGoneAtClose:  # the real tracker, but the store drops as the recovery closes the run
        def __init__(self, tracker):
            self.tracker = tracker

        def run_status(self, run_id):
            return self.tracker.run_status(run_id)

        def close_run(self, *a, **kw):
            raise StoreOutage("MLflow tracking store unreachable for 30 s (test)")

    study = journal_study(home, "cut")
    with pytest.raises(StoreOutage):
        queue.recover_stale_trials(study, StoreGoneAtClose(embedded_tracker(home)))
    trials = journal_study(home, "cut").get_trials()
    assert [t.state.name for t in trials] == ["FAIL"]  # what the cut-short recovery left: FAIL, no retry ...
    runs = all_runs(embedded_tracker(home))
    assert status_counts(runs) == {"RUNNING": 2}  # ... and its run (and the parent) RUNNING
    record.count("before", "after the cut-short recovery", runs=runs, trials=trials)

    code, out, err = procs.run(args, env=embedded_env(home), cwd=home)
    assert code == 0, err[-3000:]
    assert "study cut: 1 complete, 0 pruned, 0 failed (1 retried" in out, out
    trials = journal_study(home, "cut").get_trials()
    runs = all_runs(embedded_tracker(home))
    record.count("after", "after the resume", runs=runs, trials=trials)
    assert status_counts(runs) == {"FINISHED": 2, "FAILED": 1}
    assert sorted(t.state.name for t in trials) == ["COMPLETE", "FAIL"]


def _cmdlines() -> dict[int, str]:
    out = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                out[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                pass
    return out


def test_no_password_on_any_command_line_and_server_json_private_from_its_first_byte(server, procs, tmp_path,
                                                                                      record, monkeypatch):
    """`study --workers 2` on the server's PostgreSQL: the workers get the storage URL (and its password) by
    environment, not argv (`ps` shows argv to every local user); server.json is 0600 without a chmod after."""
    from synthboost import server as server_mod

    record.fault("`ps` read while `study --workers 2` runs on the server's PostgreSQL", store="server",
                 checked="no process's command line holds the database password (the workers get it by environment)"
                         " and they do run trials; server.json and the initdb password file are written 0600 from "
                         "the first byte (no chmod after)")
    password = server.storage.split(":")[2].split("@")[0]
    home = tmp_path / "machine"
    study_file = write_study(home, 2, latent=16)
    p = procs.start(["study", "--model", "vae", "--config", str(study_file), "--name", "argv", "--workers", "2",
                     "--experiment", "faults-argv"], env=worker_env(server, home), cwd=home,
                    stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(lambda: _trials_in(server, "argv", "RUNNING") >= 1, timeout=300, what="a worker's trial", proc=p)
        lines = _cmdlines()
        workers = [c for c in lines.values() if "study-worker" in c and "--name argv" in c]  # others may run too
        record.count("before", "while the workers run", runs=_server_runs(server, "faults-argv"),
                     trials=_server_trials(server, "argv"))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    assert len(workers) == 2, workers
    assert not [c for c in lines.values() if password in c], "the password is on a command line"

    # server.json: never a moment readable by others, whatever the umask (no chmod after the write)
    folder = tmp_path / "state"
    folder.mkdir()
    monkeypatch.setattr(server_mod.os, "chmod", lambda *a, **k: None)
    old = os.umask(0o022)
    try:
        server_mod._save(folder, server_mod.State(port=1, pg_port=2, password="secret"))
    finally:
        os.umask(old)
    assert (folder / "server.json").stat().st_mode & 0o777 == 0o600
    record.count("after", "after the workers were ended", runs=_server_runs(server, "faults-argv"),
                 trials=_server_trials(server, "argv"))


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_crashed_mlflow_server_is_seen_and_stopped_whole_and_start_checks_ports_first(server, record):
    """SIGKILL of the MLflow server's main process leaves its uvicorn workers serving the port: `status` names
    them, `stop` ends them (port closed); a port held by another program stops `start` before PostgreSQL."""
    import socket

    from synthboost import server as server_mod

    record.fault("SIGKILL of the MLflow server's main process (its uvicorn workers live on), then its port held by "
                 "another program", store="server",
                 checked="`server status` says `crashed … are left`, `server stop` ends them and the port closes; "
                         "with the port held, `server start` exits 2 `port … is in use` and PostgreSQL stays stopped")
    state = server_mod.status(server.dir).state
    os.kill(state.mlflow_pid, signal.SIGKILL)
    time.sleep(2)
    assert _port_open(server.port)  # what a crash leaves: the port still served
    st = cli("server", "status", "--dir", str(server.dir))
    assert "crashed" in st.stdout and "are left" in st.stdout, st.stdout
    r = server.stop()
    assert r.returncode == 0, r.stdout + r.stderr
    assert not _port_open(server.port), "the crashed server's workers still serve its port"
    assert server.leftovers() == []

    with socket.socket() as holder:  # another program on the MLflow port
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the ended server's connections in TIME_WAIT
        holder.bind(("127.0.0.1", server.port))
        holder.listen()
        r = cli("server", "start", "--dir", str(server.dir))
        assert r.returncode == 2 and f"port {server.port} on 127.0.0.1 is in use" in r.stderr, r.stdout + r.stderr
        st = cli("server", "status", "--dir", str(server.dir))
        assert st.stdout.count("stopped") == 2, st.stdout  # PostgreSQL was not started either
    server.start()
    record.count("after", "after the stop and a new start", runs=[])


@pytest.fixture(scope="module")
def locked_server():
    """A second server, started with `--auth` (as beyond loopback, but bound to 127.0.0.1) and its artifact folder
    on a 1 MB tmpfs (root only); stopped, unmounted and removed at the end."""
    import tempfile

    from servers import HAVE_POSTGRES, Server, free_port

    if not HAVE_POSTGRES:
        unavailable("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    if os.geteuid() != 0 or not shutil.which("mount"):
        unavailable("mounting a tmpfs needs root and mount(8)")
    folder = Path(tempfile.mkdtemp(prefix="synthboost-locked-"))
    (folder / "artifacts").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(folder / "artifacts")],
                   check=True)
    srv = Server(folder, free_port(), free_port())
    try:
        srv.start("--auth")
        yield srv
    finally:
        srv.stop()
        for line in srv.leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split()[0]), signal.SIGKILL)
        if subprocess.run(["umount", str(folder / "artifacts")], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder / "artifacts")])
        shutil.rmtree(folder, ignore_errors=True)


def test_a_full_artifact_disk_on_the_server_is_one_line_not_an_outage(locked_server, procs, tmp_path, record,
                                                                      monkeypatch):
    """The server answers, but cannot store the 6.7 MB checkpoint on its 1 MB artifact disk: no backoff, no
    "unreachable", one line naming the server's artifact store; the run FAILED."""
    record.fault("the tracking server's artifact folder on a 1 MB tmpfs (the upload fails on its side)",
                 store="server (with login)",
                 checked="exit 1 well within SYNTHBOOST_OUTAGE_SECONDS=120, one line `no space left on the tracking "
                         "server's artifact store`, never `unreachable`; the run FAILED, none RUNNING")
    home = tmp_path / "machine"
    home.mkdir()
    env = worker_env(locked_server, home) | {"SYNTHBOOST_OUTAGE_SECONDS": "120"}
    record.count("before", "a new experiment", runs=[])
    t0 = time.monotonic()
    code, out, err = procs.run(DISK_FULL_ARGS + ["--experiment", "faults-full-server"], env=env, cwd=home)
    seconds = time.monotonic() - t0
    assert code == 1, err[-3000:]
    line = one_line_error(err)
    assert "no space left on the tracking server's artifact store" in line, line
    assert "unreachable" not in err and seconds < 120, (seconds, err[-3000:])
    for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):  # this process reads it with the login
        monkeypatch.setenv(k, locked_server.env[k])
    runs = _server_runs(locked_server, "faults-full-server")
    record.count("after", "after the failed run", runs=runs)
    assert [r.info.status for r in runs] == ["FAILED"]


def test_the_mlflow_server_with_auth_refuses_strangers_and_keeps_its_files_private(locked_server, tmp_path, record):
    """`server start --auth` (always on beyond loopback): no login, no data; the workers' login from the 0600
    server.json works; the artifacts folder 0700, the log 0600; a wrong login is one line, exit 2."""
    import urllib.error
    import urllib.request

    from synthboost import server as server_mod

    record.fault("requests to a server started with `--auth` without, with a wrong and with the printed login",
                 store="server (with login)",
                 checked="HTTP 401 without a login; the printed login reads; `ledger export` with a wrong password "
                         "exits 2 in one line; artifacts 0700, mlflow.log and server.json 0600; `--host 0.0.0.0 "
                         "--no-auth` refused before anything starts")
    env = locked_server.env
    assert env.get("MLFLOW_TRACKING_USERNAME") and env.get("MLFLOW_TRACKING_PASSWORD"), locked_server.out
    search = locked_server.tracking_uri + "/api/2.0/mlflow/experiments/search?max_results=1"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(search, timeout=10)
    assert refused.value.code == 401
    import base64

    req = urllib.request.Request(search, headers={"Authorization": "Basic " + base64.b64encode(
        f"{env['MLFLOW_TRACKING_USERNAME']}:{env['MLFLOW_TRACKING_PASSWORD']}".encode()).decode()})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    home = tmp_path / "machine"
    home.mkdir()
    r = cli("ledger", "export", "--dir", str(tmp_path / "ledger"), cwd=home,
            env=worker_env(locked_server, home) | {"MLFLOW_TRACKING_PASSWORD": "wrong-password-123"})
    assert r.returncode == 2, r.stderr[-3000:]
    line = one_line_error(r.stderr)
    assert "needs a login" in line and "wrong-password" not in line, line
    folder = locked_server.dir
    assert (folder / "artifacts").stat().st_mode & 0o777 == 0o700
    for name in ("mlflow.log", "server.json", "basic_auth.ini"):
        assert (folder / name).stat().st_mode & 0o777 == 0o600, name
    assert env["MLFLOW_TRACKING_PASSWORD"] in (folder / "server.json").read_text()
    # beyond loopback the login cannot be turned off (checked before anything binds)
    with pytest.raises(server_mod.UserError, match="beyond loopback"):
        server_mod.start(tmp_path / "never", host="0.0.0.0", auth=False)
    assert not (tmp_path / "never").exists()
    assert server_mod.wants_auth("0.0.0.0", None) and not server_mod.wants_auth("127.0.0.1", None)
    record.count("after", "after the requests", runs=[])


def test_workers_giving_up_on_an_outage_end_the_study_command_within_the_bound(server, procs, tmp_path, record):
    """`study --workers 2` with the server gone longer than the bound: the workers give up after it, and the
    command stops with them instead of waiting the bound a second time."""
    record.fault("MLflow server and PostgreSQL stopped for good under `study --workers 2`, "
                 "SYNTHBOOST_OUTAGE_SECONDS=30", store="server",
                 checked="exit 1, last line `the workers gave up … re-run the same command to resume`, within 15 s "
                         "of the last worker's exit (the bound waited once, by the workers, not again)")
    home = tmp_path / "machine"
    study_file = write_study(home, 2, latent=17)
    env = worker_env(server, home) | {"SYNTHBOOST_OUTAGE_SECONDS": "30"}
    errfile = tmp_path / "stderr"
    try:
        with open(errfile, "w") as fh:
            p = procs.start(["study", "--model", "vae", "--config", str(study_file), "--name", "twice",
                             "--workers", "2", "--experiment", "faults-twice"], env=env, cwd=home, stderr=fh)
            _wait_for(lambda: _trials_in(server, "twice", "RUNNING") >= 1, timeout=300, what="a trial", proc=p)
            record.count("before", "just before the stop", runs=_server_runs(server, "faults-twice"),
                         trials=_server_trials(server, "twice"))
            assert server.stop().returncode == 0
            # when the last worker has given up (waited the bound), the command must not wait it again itself
            deadline = time.monotonic() + 900  # a loaded machine: the workers notice at their next store call
            while any("study-worker" in c and "twice" in c for c in _cmdlines().values()):
                assert time.monotonic() < deadline, "the workers did not give up"
                time.sleep(0.5)
            workers_gone = time.monotonic()
            p.wait(timeout=600)
            seconds = time.monotonic() - workers_gone
    finally:
        server.start()
    err = errfile.read_text()
    assert p.returncode == 1, err[-3000:]
    line = one_line_error(err)
    assert "the workers gave up" in line and "re-run the same command to resume" in line, line
    assert seconds < 15, seconds  # at once, not after the bound (30 s) a second time
    record.count("after", "server back", runs=_server_runs(server, "faults-twice"),
                 trials=_server_trials(server, "twice"))
