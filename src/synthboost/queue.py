"""The work queue studies and grids both run on: Optuna's storage, its workers, and their MLflow parent run.

Storage is the work queue.  The embedded default is a JournalStorage file under ``tracking/`` (safe for
several processes; SQLite is not); any Optuna storage URL (PostgreSQL for many machines) works too.  A study
(or a grid's study) keeps what its workers need in its own user attributes, so a worker needs only the
study name and the storage URL.  Workers use ask/tell so that a study-wide trial budget is exact: on a
journal file the check-and-ask is done under a file lock.  Optuna 5's JournalStorage has no heartbeat, so
liveness is one mechanism for every storage: each running trial records its worker (host:pid) and a
heartbeat timestamp; a trial whose worker is gone (dead pid on this host, or a heartbeat older than the
grace period) is marked FAIL, its MLflow run is closed as FAILED, and the same parameters (and a grid
unit's payload) are enqueued again as a retry.

The study and the MLflow parent run name each other: the parent is tagged ``optuna.study_name`` /
``optuna.storage`` and the study carries the parent's id as the user attribute ``mlflow_parent_run_id``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import TrackingUnavailable, UserError
from .tracking import TAG_KIND, env_run_id, tracking_dir

HEARTBEAT_SECONDS = 15.0
GRACE_SECONDS = 120.0
PARENT_RUN_ATTR = "mlflow_parent_run_id"  # the study's user attribute naming its MLflow parent run


# ---------------------------------------------------------------- storage
def default_storage() -> str:
    return os.environ.get("SYNTHBOOST_OPTUNA_STORAGE") or str(tracking_dir() / "optuna.journal")


def is_journal(url: str) -> bool:
    """A file path (a JournalStorage), not a database URL."""
    return "://" not in url


def open_storage(url: str):
    """A JournalStorage for a file path, an RDBStorage for a database URL; unreachable -> UserError."""
    import optuna

    if is_journal(url):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        except OSError as err:
            raise TrackingUnavailable(f"cannot open the Optuna journal {path} ({err.strerror})") from None
    engine_kwargs = {"connect_args": {"connect_timeout": 5}} if url.startswith("postgresql") else None
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as err:  # sqlalchemy raises many types for a bad or unreachable URL
        raise TrackingUnavailable(f"Optuna storage {redact(url)} is unreachable or invalid "
                                  f"({type(err).__name__}); check --storage / SYNTHBOOST_OPTUNA_STORAGE") from None


def redact(url: str) -> str:
    """Hide a password in a storage URL before it goes into a tag or a message."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':')[0]}:***@{host}"
    return url


def create_study(name: str, storage_url: str, **kwargs):
    """Create the study in the storage, or load it when it exists (a resume)."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna.create_study(study_name=name, storage=open_storage(storage_url), load_if_exists=True, **kwargs)


def load_study(name: str, storage_url: str, *, what: str = "study"):
    """An existing study, for a worker; a missing one is the user's mistake (``what`` names it in the message)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = open_storage(storage_url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise UserError(f"no {what} named {name!r} in {redact(storage_url)}") from None


# ---------------------------------------------------------------- the parent run
def open_parent_run(study, tracker, *, experiment: str, name: str, kind: str, storage_url: str,
                    tags: dict[str, Any], follow_env_run: bool = True) -> tuple[str, bool]:
    """The study's MLflow parent run, reopened on a resume; returns ``(run id, whether it is new)``.

    A new parent is opened the first time, when the old one was deleted (e.g. from the UI), and, with
    ``follow_env_run``, when ``mlflow run`` opened a run of its own for this process.
    """
    parent = study.user_attrs.get(PARENT_RUN_ATTR)
    env_run = env_run_id() if follow_env_run else None
    if parent is None or (env_run and env_run != parent) or not tracker.run_is_active(parent):
        parent = tracker.open_parent(experiment=experiment, name=name, tags={
            TAG_KIND: kind, "optuna.study_name": study.study_name, "optuna.storage": redact(storage_url), **tags})
        study.set_user_attr(PARENT_RUN_ATTR, parent)
        study.set_user_attr("mlflow_tracking_uri", tracker.uri)
        return parent, True
    tracker.reopen(parent)
    return parent, False


def parent_run_id(study) -> str:
    return study.user_attrs[PARENT_RUN_ATTR]


# ---------------------------------------------------------------- workers
def run_workers(command: str, n: int, *, name: str, storage_url: str,
                args: Callable[[int], list[str]] = lambda i: [],
                while_waiting: Callable[[], None] | None = None, every: float = 5.0) -> list[int]:
    """Start ``n`` processes ``python -m synthboost <command> --name N --storage S <args(i)>`` and wait for them.

    ``while_waiting`` is called every ``every`` seconds until the last one exits (e.g. to move a progress bar).
    Returns their exit codes.
    """
    procs = [subprocess.Popen([sys.executable, "-m", "synthboost", command, "--name", name, "--storage",
                               storage_url, *args(i)]) for i in range(n)]
    if while_waiting is None:
        return [p.wait() for p in procs]
    while any(p.poll() is None for p in procs):
        time.sleep(every)
        while_waiting()
    return [p.returncode for p in procs]


@contextlib.contextmanager
def budget_lock(storage_url: str):
    """Serialise check-and-ask between processes on one machine (journal files); no-op for databases."""
    if not is_journal(storage_url):
        yield
        return
    import fcntl

    with open(storage_url + ".budget-lock", "a") as fh:  # not ".lock": Optuna's own journal lock uses it
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def next_trials(study, storage_url: str, tracker, *, budget: int = 0) -> Iterator[Any]:
    """Ask for trials one at a time until none is owed; each check-and-ask holds the budget lock.

    A waiting trial (enqueued, or the retry of a stale one) is always owed; beyond those, new trials are
    asked until ``budget`` of them are done or running (0: only enqueued trials, as a grid's units).
    """
    while True:
        with budget_lock(storage_url):
            recover_stale_trials(study, tracker)
            counts = budget_counts(study)
            if not counts["waiting"] and counts["done"] + counts["running"] >= budget:
                return
            trial = study.ask()
        yield trial


def budget_counts(study) -> dict[str, int]:
    """done (COMPLETE, PRUNED, FAIL not retried), running, waiting."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    done = sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and t.number not in retried))
    return {"done": done, "running": sum(t.state == TrialState.RUNNING for t in trials),
            "waiting": sum(t.state == TrialState.WAITING for t in trials)}


# ---------------------------------------------------------------- liveness
def recover_stale_trials(study, tracker) -> list[int]:
    """Fail trials whose worker is gone, close their MLflow runs as FAILED, enqueue a retry of each."""
    from optuna.trial import TrialState

    host, now, failed = socket.gethostname(), time.time(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker", "")
        w_host, _, w_pid = worker.partition(":")
        beat = t.user_attrs.get("heartbeat", t.datetime_start.timestamp() if t.datetime_start else now)
        dead_here = w_host == host and w_pid.isdigit() and not _pid_alive(int(w_pid))
        if not (dead_here or now - beat > GRACE_SECONDS):
            continue
        reason = f"worker {worker or '?'} died (no heartbeat since {time.ctime(beat)})"
        # Optuna has no public call that changes another worker's trial: its storage does it
        study._storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
        study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        run_id = t.user_attrs.get("mlflow_run_id")
        if run_id and tracker.run_status(run_id) == "RUNNING":  # a grid unit's earlier cells may be FINISHED
            tracker.close_run(run_id, "FAILED", error=reason)
        carry = {k: v for k, v in t.user_attrs.items() if k in ("unit", "unit_id")}  # a grid unit's payload
        study.enqueue_trial(t.params, user_attrs={**carry, "retry_of": t.number}, skip_if_exists=False)
        failed.append(t.number)
    return failed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (killed child not yet reaped by its parent) is dead for our purposes
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


class Heartbeat:
    """Stamps the trial every few seconds from a thread, so a long generator training still looks alive."""

    def __init__(self, trial):
        self.trial, self.stop = trial, threading.Event()
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("heartbeat", time.time())
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while not self.stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(Exception):  # a storage hiccup must not kill the trial
                self.trial.set_user_attr("heartbeat", time.time())

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)
