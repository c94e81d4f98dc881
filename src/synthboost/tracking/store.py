"""Where the MLflow store is, how to reach it, how to lock it, and how a file comes out of it."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from .. import outage
from ..errors import DiskFull, TrackingUnavailable

#: a full disk on this side: not the store's outage
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def project_root() -> Path:
    """The repo root for a source checkout (editable install), else ``$SYNTHBOOST_HOME`` or the cwd."""
    if os.environ.get("SYNTHBOOST_HOME"):
        return Path(os.environ["SYNTHBOOST_HOME"]).resolve()
    here = Path(__file__).resolve().parents[3]
    return here if (here / "pyproject.toml").is_file() and (here / "MLproject").is_file() else Path.cwd()


def tracking_dir() -> Path:
    """The machine-local folder of the embedded store, the Optuna journal and the ledger (git-ignored)."""
    return project_root() / "tracking"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else SQLite at ``tracking/mlflow.db`` (artifacts beside it)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{tracking_dir() / 'mlflow.db'}"


def local_store_dir(uri: str) -> Path | None:
    """The folder of a SQLite store (its artifacts go beside it), None for servers/databases."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).resolve().parent
    return None


@functools.lru_cache(maxsize=None)
def check_reachable(uri: str) -> None:
    """Fail fast and clearly when the store cannot be reached (default retries take minutes)."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as resp:
                resp.read()
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise TrackingUnavailable(f"MLflow tracking server {redact(uri)} is unreachable ({reason}); start it, or "
                                      "unset MLFLOW_TRACKING_URI to use the embedded store") from None
        _check_login(uri)
    elif (folder := local_store_dir(uri)) is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TrackingUnavailable(f"cannot create the tracking store folder {folder} ({err.strerror}); "
                                      "set MLFLOW_TRACKING_URI to a writable location") from None
        if not os.access(folder, os.W_OK):
            raise TrackingUnavailable(f"tracking store folder {folder} is not writable; "
                                      "set MLFLOW_TRACKING_URI to a writable location")
    elif uri.startswith(("postgresql", "mysql")):  # MLflow straight on a database: try the credentials now
        check_database(uri, "MLflow tracking store", hint="check MLFLOW_TRACKING_URI")
    elif not uri.startswith(("mssql", "databricks", "file:")):
        raise TrackingUnavailable(f"unsupported MLFLOW_TRACKING_URI {uri!r}; use http(s)://, sqlite:/// or "
                                  "postgresql://")


def _check_login(uri: str) -> None:
    """A server with a login (``synthboost server start --auth``) that refuses ours: one line now, not later."""
    import base64

    req = urllib.request.Request(uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1")
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            said = "no login was given" if not (user and password) else f"user {user!r} was refused"
            raise TrackingUnavailable(f"MLflow tracking server {redact(uri)} needs a login and {said} (HTTP "
                                      f"{err.code}); set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (the "
                                      "lines `synthboost server start` printed)") from None
    except (urllib.error.URLError, OSError, ValueError):
        pass  # it answered /health a moment ago: the calls themselves ride out what this was


@contextlib.contextmanager
def store_refusals(what: str) -> Iterator[None]:
    """An MLflow store's refusal of a request as one line naming ``what`` was being done, not MLflow's traceback."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise TrackingUnavailable(f"{what}: the tracking store {redact(tracking_uri())} refused it: "
                                  f"{first[:300]}") from None


def quiet_artifact_bars() -> None:
    """Turn MLflow's artifact progress bars off (unless the user set them): off a terminal they are log noise."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")




def redact(url: str) -> str:
    """Hide a password in a URL (``scheme://user:***@host/…``) before it goes into a tag or a message."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        user, colon, _ = cred.partition(":")
        return f"{scheme}://{user}{':***' if colon else ''}@{host}"
    return url


@functools.lru_cache(maxsize=None)
def check_database(url: str, what: str, hint: str) -> None:
    """Connect once (5 s at most): wrong credentials or no server fail now in one line, not deep inside MLflow."""
    import sqlalchemy

    engine = None
    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5} if url.startswith("postgresql")
                                          else {})
        with engine.connect():
            pass
    except ModuleNotFoundError as err:
        raise TrackingUnavailable(f"{what} {redact(url)} needs the database driver {err.name!r}; "
                                  "pip install 'psycopg[binary]'") from None
    except Exception as err:  # sqlalchemy wraps the driver's errors; the driver's text says what went wrong
        text = str(getattr(err, "orig", None) or err)
        if "password authentication failed" in text or "no password supplied" in text:
            reason = "wrong user or password"
        elif "does not exist" in text:
            reason = text.split("FATAL:")[-1].strip().splitlines()[0]  # database "x" / role "y" does not exist
        elif "refused" in text or "timeout" in text or "could not translate host" in text:
            reason = "unreachable (" + ("connection refused" if "refused" in text else "no answer") + ")"
        else:
            reason = f"cannot connect ({type(err).__name__})"
        raise TrackingUnavailable(f"{what} {redact(url)}: {reason}; {hint}") from None
    finally:
        if engine is not None:
            engine.dispose()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created with its folder), for processes on one machine."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def open_client(uri: str):
    """An ``MlflowClient``; a new SQLite store is created (migrated) by one process at a time, under a file lock.

    Several processes migrating one new store at once all crash but one (``duplicate column name``).
    """
    from mlflow.tracking import MlflowClient

    if local_store_dir(uri) is None:
        if uri.startswith(("http://", "https://")):  # MLflow would print a "View run … at" link for every run
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
            # MLflow's own retries wait minutes in silence; outage.patient waits saying so, up to its bound
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        return _PatientClient(MlflowClient(tracking_uri=uri), what=_store_name(uri),
                              answers=functools.partial(_server_side_failure, uri) if uri.startswith("http") else None)
    db = Path(uri[len("sqlite:///"):]).resolve()
    with file_lock(db.with_name(db.name + ".init-lock")):
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # creates and migrates the store when it is new
    return client


def _store_name(uri: str) -> str:
    """The store as the outage messages name it."""
    return (f"MLflow tracking server {uri}" if uri.startswith(("http://", "https://"))
            else f"MLflow tracking store {redact(uri)}")


def _server_side_failure(uri: str, err: BaseException) -> BaseException | None:
    """An upload that failed while the server answers: a write error on its side (a full disk, as a rule), no outage."""
    chain, seen = [], err
    while seen is not None and len(chain) < 10:
        chain.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    if not any("/mlflow-artifacts/artifacts/" in text for text in chain):
        return None
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as resp:
            if resp.status != 200:
                return None
    except OSError:
        return None  # down: an outage after all
    return DiskFull(f"no space left on the tracking server's artifact store (most likely: {uri} answers, but "
                    "failed twice to store an upload; the server's log says why); free space there, then re-run the "
                    "same command to resume")


class _PatientClient:
    """An ``MlflowClient`` for a server or database whose calls ride out an outage (``outage.patient``)."""

    def __init__(self, client, *, what: str, answers=None):
        self._client, self._what, self._answers = client, what, answers

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        answers = self._answers if name.startswith("log_") else None  # uploads only: a download is not a write

        @functools.wraps(attr)
        def call(*args, **kwargs):
            return outage.patient(lambda: attr(*args, **kwargs), what=self._what, answers=answers)

        return call


def git_commit() -> str:
    """The checkout's commit (``-dirty`` with uncommitted changes), recorded with every run."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True,
                             timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=project_root(),
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class _Missing(Exception):
    """The run does not list the artifact asked for."""


def fetch_artifact(uri: str, run_id: str, path: str, dst: str | Path) -> str | None:
    """Download one artifact of one run into the folder ``dst``: its local path, or None when the run lists none.

    A failed download of a file the run does list is an outage (``outage.patient``), never a missing file, which
    would fail a trial for nothing."""
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    def attempt() -> str:
        try:
            return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, tracking_uri=uri,
                                                       dst_path=str(dst))
        except Exception as err:  # MLflow raises several types for a missing artifact (OSError, MlflowException, …)
            if outage.unreachable(err) or isinstance(err, OSError) and err.errno in NO_SPACE_ERRNOS:
                raise
            if not _lists(uri, run_id, path):
                raise _Missing from None
            raise ConnectionError(f"download of {path} failed ({type(err).__name__}: {err}) although the run "
                                  "lists it") from err

    try:
        return outage.patient(attempt, what=_store_name(uri))
    except _Missing:
        return None


def _lists(uri: str, run_id: str, path: str) -> bool:
    """Whether the run's artifact listing holds ``path`` (an unreachable store raises, for outage.patient)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    folder, _, _ = path.rpartition("/")
    try:
        return any(f.path == path for f in MlflowClient(tracking_uri=uri).list_artifacts(run_id, folder or None))
    except MlflowException as err:
        if outage.unreachable(err):
            raise
        return False  # no such run
