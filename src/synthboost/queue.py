"""The work queue studies and grids both run on: Optuna's storage, its workers, their liveness and MLflow parent run.

A study keeps what its workers need in its own user attributes, so a worker anywhere needs only the study's name
and the storage URL (docs/grid.md: storages, locks, heartbeats).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import outage
from .errors import StoreOutage, TrackingUnavailable, UserError
from .tracking import TAG_KIND, check_database, env_run_id, file_lock, redact, tracking_dir

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
    # pre-ping: after a database restart, pooled connections are dead; take fresh ones instead of failing
    engine_kwargs = ({"connect_args": {"connect_timeout": 5}, "pool_pre_ping": True} if url.startswith("postgresql")
                     else None)
    check_storage(url)  # wrong credentials or database: one clear line, now
    try:
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat arguments
        storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                             heartbeat_interval=int(HEARTBEAT_SECONDS), grace_period=int(GRACE_SECONDS),
                                             heartbeat_stale_trial_callback=_StaleRetry())
    except Exception as err:  # sqlalchemy raises many types for a bad or unreachable URL
        raise TrackingUnavailable(f"Optuna storage {redact(url)} is unreachable or invalid "
                                  f"({type(err).__name__}); check --storage / SYNTHBOOST_OPTUNA_STORAGE") from None
    return _patient_storage(storage, what=f"Optuna storage {redact(url)}")


#: RDBStorage's private methods that Optuna's own wrappers (_CachedStorage, fail_stale_trials) call
_RDB_PRIVATE_CALLS = ("_create_new_trial", "_set_trial_param", "_get_best_trial_id", "_get_trials",
                      "_get_stale_trial_ids")
#: left alone: local look-ups, and the heartbeat (its thread shrugs off a missed beat)
_RDB_LOCAL = ("record_heartbeat", "get_heartbeat_interval", "get_heartbeat_stale_trial_callback", "remove_session")


def _patient_storage(storage, *, what: str):
    """The storage with each database call riding out an outage (``outage.patient``), on the instance itself so
    that Optuna still sees an RDBStorage (heartbeats, caching)."""
    for name in [n for n in dir(storage) if not n.startswith("_") and n not in _RDB_LOCAL] + list(_RDB_PRIVATE_CALLS):
        method = getattr(storage, name, None)
        if callable(method):
            setattr(storage, name, functools.partial(_call_patiently, method, what))
    return storage


def _call_patiently(method, what: str, *args, **kwargs):
    return outage.patient(lambda: method(*args, **kwargs), what=what)


def check_storage(url: str) -> None:
    """Fail now, in one line, on a database URL with wrong credentials or database (before any other work)."""
    if url.startswith(("postgresql", "mysql")):
        check_database(url, "Optuna storage", hint="check --storage / SYNTHBOOST_OPTUNA_STORAGE")


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
    """The study's MLflow parent run, reopened on a resume (a new one when it was deleted, or with ``follow_env_run``
    when ``mlflow run`` opened one); returns ``(run id, whether it is new)``."""
    parent = study.user_attrs.get(PARENT_RUN_ATTR)
    env_run = env_run_id() if follow_env_run else None
    if parent is None or (env_run and env_run != parent) or not tracker.run_is_active(parent):
        parent = tracker.open_parent(experiment=experiment, name=name, tags={
            TAG_KIND: kind, "optuna.study_name": study.study_name, "optuna.storage": redact(storage_url), **tags})
        study.set_user_attr(PARENT_RUN_ATTR, parent)
        study.set_user_attr("mlflow_tracking_uri", redact(tracker.uri))
        return parent, True
    tracker.reopen(parent)
    return parent, False


def park_parent(study, tracker) -> None:
    """After Ctrl-C: end the parent run KILLED unless a trial still runs elsewhere (a resume reopens it), so that
    no run stays RUNNING with nothing behind it."""
    from optuna.trial import TrialState

    parent = study.user_attrs.get(PARENT_RUN_ATTR)
    if parent is None or parent == env_run_id():  # `mlflow run` ends its own run
        return
    if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tracker.close_run(parent, "KILLED", error="interrupted; re-run the same command to resume")


def parent_run_id(study) -> str:
    return study.user_attrs[PARENT_RUN_ATTR]


# ---------------------------------------------------------------- workers
def run_workers(command: str, n: int, *, name: str, storage_url: str,
                args: Callable[[int], list[str]] = lambda i: [],
                while_waiting: Callable[[], None] | None = None, every: float = 5.0) -> list[int]:
    """Start ``n`` processes ``python -m synthboost <command> --name N <args(i)>``, call ``while_waiting`` every
    ``every`` seconds until they exit, and return their exit codes (a worker's outage exit raises ``StoreOutage``).

    The storage URL reaches them in ``SYNTHBOOST_OPTUNA_STORAGE``, not on a command line every local user can read.
    """
    env = os.environ | {"SYNTHBOOST_OPTUNA_STORAGE": storage_url}
    procs = [subprocess.Popen([sys.executable, "-m", "synthboost", command, "--name", name, *args(i)], env=env)
             for i in range(n)]
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(every if while_waiting else 0.5)
            if while_waiting:
                while_waiting()
    except KeyboardInterrupt:  # Ctrl-C reached the workers too (one process group); else pass it on, then wait
        with contextlib.suppress(subprocess.TimeoutExpired):
            procs[0].wait(timeout=3)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=60)
        raise
    codes = [p.returncode for p in procs]
    if outage.OUTAGE_EXIT in codes:  # they waited the bound already: waiting it again here would double it
        raise StoreOutage(f"the workers gave up: a store stayed unreachable longer than SYNTHBOOST_OUTAGE_SECONDS="
                          f"{outage.bound():.0f} (see above); start it again, then re-run the same command to resume "
                          "(finished trials and cells are kept)")
    return codes


def budget_lock(storage_url: str):
    """Serialise check-and-ask (and a study's creation) between every worker of the storage."""
    return storage_lock(storage_url, "budget")


def storage_lock(storage_url: str, name: str) -> contextlib.AbstractContextManager:
    """An exclusive lock named ``name`` shared by every worker of the storage: a file beside a journal or SQLite
    file, a PostgreSQL advisory lock (dropped by the server when its worker dies)."""
    if is_journal(storage_url):  # the budget's file keeps its name: not ".lock", Optuna's journal lock uses it
        return file_lock(Path(storage_url + ".budget-lock") if name == "budget"
                         else Path(storage_url + ".locks") / f"{name}.lock")
    if storage_url.startswith("postgresql"):
        return _advisory_lock(storage_url, name)
    if storage_url.startswith("sqlite:///"):
        return file_lock(Path(storage_url[len("sqlite:///"):] + f".{name}.lock"))
    return contextlib.nullcontext()


@contextlib.contextmanager
def _advisory_lock(storage_url: str, name: str) -> Iterator[None]:
    import sqlalchemy

    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    engine = _lock_engine(storage_url)

    def acquire():
        conn = engine.connect()
        try:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        except BaseException:
            conn.close()
            raise
        return conn

    conn = outage.patient(acquire, what=f"Optuna storage {redact(storage_url)}")
    try:
        yield  # released when the transaction ends (or the connection drops with a dead worker)
    finally:
        with contextlib.suppress(Exception):  # a connection lost in an outage took the lock with it
            conn.rollback()
        with contextlib.suppress(Exception):
            conn.close()


@functools.lru_cache(maxsize=None)
def _lock_engine(storage_url: str):
    import sqlalchemy

    check_storage(storage_url)
    return sqlalchemy.create_engine(storage_url, connect_args={"connect_timeout": 5}, pool_pre_ping=True)


def next_trials(study, storage_url: str, tracker, *, budget: int = 0, complete: bool = False,
                limit: int | None = None, until: float | None = None) -> Iterator[Any]:
    """Ask for trials, each under the budget lock, while one is owed and ``until`` (time.time()) has not come.

    Waiting trials are always owed; beyond them, new ones until ``budget`` are done or running (0: a grid's
    enqueued units only; ``complete``: COMPLETE or running), never beyond ``limit`` started.
    """
    # the tracker borrows the storage's locks, so a generator is trained once across every worker
    tracker.lock_factory = functools.partial(storage_lock, storage_url)
    # ask/tell with RDBStorage's heartbeat is what this module is for (Heartbeat beats, recover_stale_trials fails)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    while until is None or time.time() < until:
        with budget_lock(storage_url):
            recover_stale_trials(study, tracker)
            counts = budget_counts(study)
            owed = (counts["complete"] if complete else counts["done"]) + counts["running"] < budget
            if limit is not None and counts["done"] + counts["running"] >= limit:
                owed = False
            if not counts["waiting"] and not owed:
                return
            trial = study.ask()
        yield trial


def wait_for_others(study, storage_url: str, tracker, work: Callable[[], Any], *, every: float = 2.0) -> None:
    """After this worker's loop: wait while workers elsewhere still hold trials, and ``work`` again whenever one
    of theirs comes back to the queue (its worker died), so that the caller summarises a finished study."""
    said = False
    while True:
        with budget_lock(storage_url):
            recover_stale_trials(study, tracker)
            counts = budget_counts(study)
        if counts["waiting"]:
            work()
        elif not counts["running"]:
            return
        else:
            if not said:
                print(f"waiting for {counts['running']} trial(s) running in other workers (a trial whose worker "
                      f"stops beating for {GRACE_SECONDS:.0f} s is retried here)", file=sys.stderr)
                said = True
            time.sleep(every)


def budget_counts(study) -> dict[str, int]:
    """done (COMPLETE, PRUNED, FAIL not retried), complete, running, waiting."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    done = sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and t.number not in retried))
    return {"done": done, "complete": sum(t.state == TrialState.COMPLETE for t in trials),
            "running": sum(t.state == TrialState.RUNNING for t in trials),
            "waiting": sum(t.state == TrialState.WAITING for t in trials)}


# ---------------------------------------------------------------- liveness
def recover_stale_trials(study, tracker) -> list[int]:
    """Fail trials whose worker is gone, close their MLflow runs as FAILED, enqueue a retry of each; idempotent, so
    a store that drops between those steps has the next call finish the job."""
    from optuna.trial import TrialState

    host, now, failed = socket.gethostname(), time.time(), []
    native = _native_heartbeat(study._storage)
    if native:  # a database: Optuna fails the trials whose heartbeat is older than the grace period ...
        failed += _recover_native(study, tracker)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker", "")
        w_host, _, w_pid = worker.partition(":")
        beat = t.user_attrs.get("heartbeat", t.datetime_start.timestamp() if t.datetime_start else now)
        dead_here = w_host == host and w_pid.isdigit() and not pid_alive(int(w_pid))
        # ... here: a dead pid on this host at once, and (a database) a trial whose worker never beat at all
        if not (dead_here or (now - beat > GRACE_SECONDS and (not native or not worker))):
            continue
        reason = f"worker {worker or '?'} died (no heartbeat since {time.ctime(beat)})"
        # Optuna has no public call that changes another worker's trial: its storage does it.  The marks go first
        # (a finished trial takes no attribute), so that a recovery cut short is finished by the next one
        study._storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
        study._storage.set_trial_user_attr(t._trial_id, RETRY_WANTED, True)
        study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        _close_and_retry(study, tracker, t, reason)
        failed.append(t.number)
    return failed + _unfinished_recoveries(study, tracker)


#: a trial's user attribute, set before it is failed: it must be retried (its worker died or was interrupted)
RETRY_WANTED = "retry_wanted"
#: (study, trial id) of FAIL trials seen settled: a closed run is never reopened, so they are not looked at again
_settled: set[tuple[str, int]] = set()


def _close_and_retry(study, tracker, t, reason: str) -> None:
    """Close the trial's run FAILED (when still open), then enqueue its retry: in that order, so that a retry
    never waits while its dead run still looks alive."""
    run_id = t.user_attrs.get("mlflow_run_id")
    if run_id and tracker.run_status(run_id) == "RUNNING":  # a grid unit's earlier cells may be FINISHED
        tracker.close_run(run_id, "FAILED", error=reason)
    _enqueue_retry(study, t)


def _worker_gone(t) -> bool:
    """Whether the process that last held a FAIL trial can no longer finish its own recovery: a dead pid on this
    host, or (elsewhere) a trial failed longer than the grace period ago."""
    w_host, _, w_pid = t.user_attrs.get("worker", "").partition(":")
    if w_host == socket.gethostname() and w_pid.isdigit():
        return not pid_alive(int(w_pid))
    ended = t.datetime_complete.timestamp() if t.datetime_complete else 0.0
    return time.time() - ended > GRACE_SECONDS


def _unfinished_recoveries(study, tracker) -> list[int]:
    """FAIL trials without a retry that a recovery (or Ctrl-C) left half done: marked for a retry, or whose run is
    still RUNNING (Optuna's own stale-trial pass failed it before the store went away).  Finish them."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    done = []
    for t in trials:
        key = (study.study_name, t._trial_id)
        if t.state != TrialState.FAIL or t.number in retried or key in _settled:
            continue
        run_id = t.user_attrs.get("mlflow_run_id")
        open_run = bool(run_id) and tracker.run_status(run_id) == "RUNNING"
        if not (t.user_attrs.get(RETRY_WANTED) or open_run):
            _settled.add(key)  # a trial that failed for its own reason, its run closed: nothing to finish
            continue
        if not _worker_gone(t):  # e.g. an interrupted worker between its FAIL and its own enqueue
            continue
        _close_and_retry(study, tracker, t, t.user_attrs.get("fail_reason") or "its worker stopped; retried")
        _settled.add(key)
        done.append(t.number)
    return done


def interrupted(study, trial, *, reason: str = "interrupted (SIGINT)") -> None:
    """Ctrl-C during ``trial`` (or a time limit): it ends FAIL with ``reason`` and waits as a retry, so a resume
    runs it."""
    from optuna.trial import TrialState

    trial.set_user_attr("fail_reason", reason)
    trial.set_user_attr(RETRY_WANTED, True)  # a resume retries it even if the store drops before the enqueue
    study.tell(trial, state=TrialState.FAIL)
    _enqueue_retry(study, trial)


def withdraw(study, trials, *, reason: str) -> None:
    """Take waiting ``trials`` out of the queue (FAIL with ``reason``, no retry); the caller holds the budget lock."""
    from optuna.trial import TrialState

    for t in trials:  # Optuna has no public call that ends a trial nobody asked for: its storage does it
        study._storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
        study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)


def _enqueue_retry(study, t) -> None:
    """The same parameters again, with a grid unit's payload (``unit``, ``unit_id``) and ``retry_of``."""
    carry = {k: v for k, v in t.user_attrs.items() if k in ("unit", "unit_id")}
    study.enqueue_trial(t.params, user_attrs={**carry, "retry_of": t.number}, skip_if_exists=False)


def _native_heartbeat(storage) -> bool:
    """Whether the storage keeps Optuna's own heartbeats (RDBStorage opened by ``open_storage``)."""
    return getattr(storage, "get_heartbeat_interval", lambda: None)() is not None


class _StaleRetry:
    """RDBStorage's ``heartbeat_stale_trial_callback``: close the trial's run, then retry it with its payload only
    (Optuna's own callback would copy the dead run's id too)."""

    def __init__(self):
        self.seen: list[Any] = []  # the trials it retried
        self.tracker = None  # set by the recovery that calls fail_stale_trials

    def __call__(self, study, trial) -> None:
        reason = f"worker {trial.user_attrs.get('worker', '?')} stopped beating for {GRACE_SECONDS:.0f} s; retried"
        if self.tracker is not None:
            _close_and_retry(study, self.tracker, trial, reason)
        else:
            _enqueue_retry(study, trial)
        self.seen.append(trial)


def _recover_native(study, tracker) -> list[int]:
    from optuna.storages import fail_stale_trials

    callback = study._storage.get_heartbeat_stale_trial_callback()
    if isinstance(callback, _StaleRetry):
        callback.tracker = tracker
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental
        fail_stale_trials(study)
    stale = []
    if isinstance(callback, _StaleRetry):
        stale, callback.seen[:] = list(callback.seen), []
    return [t.number for t in stale]


def pid_alive(pid: int) -> bool:
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
        self.storage = trial.study._storage
        self.native = _native_heartbeat(self.storage)  # a database: RDBStorage's own heartbeat table
        self._stamp()  # first: a trial that names its worker has a heartbeat
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _stamp(self):
        if self.native:
            self.storage.record_heartbeat(self.trial._trial_id)
        else:
            self.trial.set_user_attr("heartbeat", time.time())

    def _beat(self):
        while not self.stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(Exception):  # a storage hiccup must not kill the trial
                self._stamp()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)
