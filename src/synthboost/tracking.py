"""Everything that talks to MLflow: where the store is, run names and tags, artifact layout, look-ups.

The embedded default is SQLite at ``tracking/mlflow.db`` with artifacts under ``tracking/artifacts/``;
``MLFLOW_TRACKING_URI`` points elsewhere (e.g. a PostgreSQL-backed tracking server).  Under
``mlflow run`` (which exports ``MLFLOW_RUN_ID``) a single experiment logs into the run that ``mlflow run``
opened instead of starting a second one.  The rest of the package never imports mlflow.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import outage
from .errors import CheckpointIncomplete, DiskFull, TrackingUnavailable, UserError

DEFAULT_EXPERIMENT = "synthboost"
MODELS_EXPERIMENT = "synthboost-models"  # auxiliary models: feature extractor, CLIP
MAX_PARAMS, MAX_METRICS, MAX_TAGS = 100, 1000, 100  # MLflow's per-log_batch limits

# ---------------------------------------------------------------- tag names (the store's schema)
TAG_KIND = "synthboost.kind"  # experiment | study | grid | report | model
TAG_CONFIG_KEY = "config_key"  # hash of a cell's whole config: a grid skips a FINISHED cell with the same key
TAG_GENERATOR_KEY = "generator_key"  # hash of what a generator's training depends on
TAG_GENERATOR_TRAINED = "generator_trained"  # "true" on the run that trained (and logged) the generator
TAG_GENERATOR_RUN_ID = "generator_run_id"  # the run whose checkpoint a run used
TAG_GENERATOR_REUSED = "generator_reused"
#: "true" on a run whose wall times are known to be wrong (e.g. its process was paused mid-run): its result stands,
#: but the cost model does not price other cells from it
TAG_TIMINGS_DISTURBED = "timings_disturbed"
TAG_GENERATOR_RESUMED = "generator_resumed"  # where its training went on from a killed attempt's snapshot
TAG_SAMPLES_REUSED = "samples_reused"  # "true" when a run drew no image: its synthetic ones were kept (sample_cache)
# what a run's amp settings resolved to on its machine (fp32 | bf16 | fp16): the generator's sampling, and its
# training on the run that trained it (the classifier's is the param clf.precision, part of its recipe)
TAG_SAMPLING_PRECISION, TAG_TRAINING_PRECISION = "gen.sampling_precision", "gen.training_precision"
TAG_VARIANT = "variant"  # the grid's name for a configured model (e.g. dvae-blur); the model otherwise
TAG_ERROR = "error"
#: "true" on runs that learned from more than their cell's real images (e.g. a CLIP trained on the official train
#: set): the report keeps them apart; TAG_EXTERNAL_SOURCE says what the external data was
TAG_EXTERNAL_DATA = "uses_external_data"
TAG_EXTERNAL_SOURCE = "external_data"
#: on runs that learned from unlabelled official-train images outside their cell (ssvae's pool, the pseudo-label
#: baseline's): how many, and a digest of which; the report pairs them only with a baseline on the same pool
TAG_UNLABELED_POOL = "unlabeled_pool"
TAG_UNLABELED_DIGEST = "unlabeled_pool.digest"
TAG_SHA256 = "sha256."  # + an artifact path: the digest of a checkpoint, set only once it is wholly uploaded
TAG_TUNED_STUDY = "tuned.study"  # a grid cell run from a study's best: that study's name
TAG_TUNED_BUDGET = "tuned.budget"  # … and its tuning budget (study.budget_label), which the report pairs on
#: on a FINISHED cell run whose cell was re-run under another config_key (supersede.py): the newer run's id, and
#: why (the keys and the config values that differ); the report leaves such runs out unless asked for them
TAG_SUPERSEDED_BY = "superseded_by"
TAG_SUPERSEDED_REASON = "superseded_reason"
KIND_EXPERIMENT, KIND_STUDY, KIND_GRID, KIND_REPORT, KIND_MODEL = "experiment", "study", "grid", "report", "model"


def kind_filter(kind: str, *, finished: bool = True) -> str:
    """The ``search_runs`` filter for runs of one kind (FINISHED ones by default)."""
    status = " and attributes.status = 'FINISHED'" if finished else ""
    return f"tags.`{TAG_KIND}` = '{kind}'{status}"


def env_run_id() -> str | None:
    """The run ``mlflow run`` opened for this process (it exports ``MLFLOW_RUN_ID``), if any."""
    return os.environ.get("MLFLOW_RUN_ID") or None


# ---------------------------------------------------------------- where things live
def project_root() -> Path:
    """The repo root for a source checkout (editable install), else ``$SYNTHBOOST_HOME`` or the cwd."""
    if os.environ.get("SYNTHBOOST_HOME"):
        return Path(os.environ["SYNTHBOOST_HOME"]).resolve()
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").is_file() and (here / "MLproject").is_file() else Path.cwd()


def tracking_dir() -> Path:
    return project_root() / "tracking"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{tracking_dir() / 'mlflow.db'}"


def _local_store_dir(uri: str) -> Path | None:
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
    elif (folder := _local_store_dir(uri)) is not None:
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
    """A server with a login (``synthboost server start --auth``) that refuses ours: one line now, not MLflow's
    traceback at the first call."""
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
    """An MLflow store's refusal of a request (an error it answered, as MLflow raises it) as one line naming
    ``what`` was being done, instead of MLflow's traceback."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise TrackingUnavailable(f"{what}: the tracking store {redact(tracking_uri())} refused it: "
                                  f"{first[:300]}") from None


# ---------------------------------------------------------------- server mode: database URLs, locks, new stores
def quiet_artifact_bars() -> None:
    """Turn MLflow's artifact up/download bars off (unless the user set them): off a terminal they write
    carriage-return noise into the log between a command's stage lines."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _duplicate_key(err: BaseException) -> bool:
    """A store's unique-key violation (PostgreSQL's or SQLite's wording), as MLflow passes it on."""
    text = str(err)
    return "duplicate key value violates unique constraint" in text or "UNIQUE constraint failed" in text


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
    """Connect once (5 s at most) so that wrong credentials, an unknown database or no server at all fail now, in
    one line naming the URL with its password hidden, instead of deep inside MLflow or Optuna."""
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


def _open_client(uri: str):
    """An ``MlflowClient``; a SQLite store is created (migrated) by one process at a time.

    Several processes opening a store that does not exist yet would each run MLflow's migrations on it, and all
    but one crash (``duplicate column name``); the first use runs under a file lock beside the database, so the
    others wait for it and then find the store ready.
    """
    from mlflow.tracking import MlflowClient

    if _local_store_dir(uri) is None:
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
    return (f"MLflow tracking server {uri}" if uri.startswith(("http://", "https://"))
            else f"MLflow tracking store {redact(uri)}")


def _server_side_failure(uri: str, err: BaseException) -> BaseException | None:
    """An upload to the server's artifact store that failed while the server answers: not an outage but a write
    error on its side (a full disk, as a rule: it drops the upload, or answers 500, which read like an outage)."""
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
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True,
                             timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=project_root(),
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ---------------------------------------------------------------- the client
class Tracker:
    """A thin wrapper over ``MlflowClient`` for one tracking URI."""

    def __init__(self, uri: str | None = None):
        self.uri = uri or tracking_uri()
        check_reachable(self.uri)
        self.client = _open_client(self.uri)
        self.seconds = 0.0  # wall time spent in MLflow calls (for the overhead benchmark)
        # name -> a lock every worker of this store shares (the work queue lends its storage's; see exclusive)
        self.lock_factory: Callable[[str], contextlib.AbstractContextManager] | None = None

    def exclusive(self, name: str) -> contextlib.AbstractContextManager:
        """A lock shared by every process on this store (e.g. to train one generator once): the work queue's when
        it lent one (``lock_factory``), a file lock beside a SQLite store, else none."""
        if self.lock_factory is not None:
            return self.lock_factory(name)
        folder = _local_store_dir(self.uri)
        return file_lock(folder / "locks" / f"{name}.lock") if folder else contextlib.nullcontext()

    def experiment_id(self, name: str = DEFAULT_EXPERIMENT, *, create: bool = True) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        if not create:
            raise UserError(f"experiment {name!r} does not exist in {self.uri}")
        folder = _local_store_dir(self.uri)
        location = (folder / "artifacts" / name).as_uri() if folder else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except Exception:  # another worker created it first
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def experiment_ids(self) -> list[str]:
        return [e.experiment_id for e in self.client.search_experiments()]

    @contextlib.contextmanager
    def run(self, *, experiment: str = DEFAULT_EXPERIMENT, name: str, tags: dict[str, Any] | None = None,
            parent_run_id: str | None = None, use_env_run: bool = True,
            killed_on: tuple[type[BaseException], ...] = ()) -> Iterator[Run]:
        """Open (or, under ``mlflow run``, adopt) a run; a crash marks it FAILED with the error as a tag.

        With ``parent_run_id`` the run is nested under that run, in the parent's experiment.  Exceptions in
        ``killed_on`` (e.g. a pruned trial) end the run as KILLED rather than FAILED.
        """
        env_run = env_run_id() if use_env_run else None
        tags = {k: str(v) for k, v in (tags or {}).items()}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        t0 = time.perf_counter()
        if env_run:
            run_id = env_run
            self.client.set_tag(run_id, "mlflow.runName", name)
        else:
            tags["mlflow.runName"] = name
            exp_id = (self.client.get_run(parent_run_id).info.experiment_id if parent_run_id
                      else self.experiment_id(experiment))
            mlrun = self.client.create_run(exp_id, run_name=name, tags=tags)
            run_id = mlrun.info.run_id
        self.seconds += time.perf_counter() - t0
        run = Run(self, run_id)
        if env_run:
            run.set_tags(tags)
        try:
            yield run
        except KeyboardInterrupt:
            self.client.set_tag(run_id, TAG_ERROR, "interrupted")
            self.client.set_terminated(run_id, "KILLED")
            raise
        except killed_on as err:
            self.client.set_tag(run_id, "killed_reason", f"{type(err).__name__}: {err}"[:5000])
            run.end("KILLED")
            raise
        except BaseException as err:
            run.fail(err)
            raise
        else:
            if run.status is None:
                t0 = time.perf_counter()
                self.client.set_terminated(run_id, "FINISHED")
                self.seconds += time.perf_counter() - t0

    # -- runs that outlive one process (study / grid parents) ---------------------------------------------
    def open_parent(self, *, experiment: str, name: str, tags: dict[str, Any]) -> str:
        """A parent run left open for workers; under ``mlflow run`` it is the run mlflow opened."""
        env_run = env_run_id()
        if env_run:
            self.attach(env_run).set_tags(tags | {"mlflow.runName": name})
            return env_run
        run = self.client.create_run(self.experiment_id(experiment), run_name=name,
                                     tags={k: str(v) for k, v in tags.items()} | {"mlflow.runName": name})
        return run.info.run_id

    def attach(self, run_id: str) -> Run:
        return Run(self, run_id)

    def reopen(self, run_id: str) -> None:
        self.client.update_run(run_id, status="RUNNING")

    def run_is_active(self, run_id: str) -> bool:
        """True when the run exists and has not been deleted (e.g. from the UI): only then can it be reopened."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id).info.lifecycle_stage == "active"
        except MlflowException:
            return False

    def close_run(self, run_id: str, status: str, *, error: str | None = None) -> None:
        if error:
            self.client.set_tag(run_id, TAG_ERROR, error[:5000])
        self.client.set_terminated(run_id, status)

    def run_status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    def run_info(self, run_id: str) -> dict[str, Any]:
        """Status, tags and latest metrics of a run; an unknown id is the user's mistake."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            raise UserError(f"no run with id {run_id!r} in {self.uri}") from None
        return {"status": run.info.status, "tags": dict(run.data.tags), "metrics": dict(run.data.metrics)}

    def run_config(self, run_id: str) -> dict[str, Any]:
        """The run's config.yaml artifact, parsed."""
        import yaml

        with tempfile.TemporaryDirectory(prefix="synthboost-cfg-") as tmp:
            local = fetch_artifact(self.uri, run_id, "config.yaml", tmp)
            if local is None:
                raise UserError(f"run {run_id} has no config.yaml")
            return yaml.safe_load(Path(local).read_text())

    # -- look-ups -----------------------------------------------------------------------------------------
    def search(self, filter_string: str, *, experiment_ids: list[str] | None = None, max_results: int = 1000,
               order_by: list[str] | None = None):
        t0 = time.perf_counter()
        try:
            return self.client.search_runs(experiment_ids or self.experiment_ids(), filter_string,
                                           max_results=max_results,
                                           order_by=order_by or ["attributes.start_time DESC"])
        finally:
            self.seconds += time.perf_counter() - t0

    def generator_runs(self, generator_key: str, *, max_results: int = 5) -> list[str]:
        """Runs that trained and wholly logged the generator with this key, newest first (the tag is set only
        after the upload, so a run killed while uploading is never among them)."""
        runs = self.search(f"tags.{TAG_GENERATOR_KEY} = '{generator_key}' and tags.{TAG_GENERATOR_TRAINED} = 'true'",
                           max_results=max_results)
        return [r.info.run_id for r in runs]

    def load_checkpoint(self, run_id: str, path: str = "generator/model.pt") -> dict:
        """A checkpoint, checked against the digest its run recorded after uploading it (older runs have none);
        a mismatch (a partly written or damaged file) raises ``CheckpointIncomplete``."""
        t0 = time.perf_counter()
        try:
            expected = self.client.get_run(run_id).data.tags.get(TAG_SHA256 + path)
            return _load_checkpoint(self.uri, run_id, path, expected)
        finally:
            self.seconds += time.perf_counter() - t0

    def find_model_run(self, kind: str, key: str) -> str | None:
        """A finished run that logged an auxiliary model (feature extractor, CLIP) of ``kind`` with ``key``."""
        runs = self.search(f"tags.aux_kind = '{kind}' and tags.aux_key = '{key}' and attributes.status = 'FINISHED'",
                           max_results=1)
        return runs[0].info.run_id if runs else None

    def finished_runs(self, kind: str, *, experiment_ids: list[str] | None = None):
        """Every FINISHED run of one kind (tag ``synthboost.kind``), in the given experiments or in all of them."""
        return self.search(kind_filter(kind), experiment_ids=experiment_ids, max_results=50000)

    def finished_cell_runs(self, experiment_id: str, *, regime: str, size: int, seed: int):
        """The FINISHED cell runs of one data draw (regime, size, seed) in one experiment: where the older runs of
        a re-run cell are (a filter on the store, not a scan of the whole experiment)."""
        where = (f"{kind_filter(KIND_EXPERIMENT)} and tags.regime = '{regime}' and tags.size = '{int(size)}' "
                 f"and tags.seed = '{int(seed)}'")
        return self.search(where, experiment_ids=[experiment_id], max_results=50000)

    def finished_config_run(self, experiment: str, config_key: str, *, tags: dict[str, str] | None = None):
        """The newest FINISHED run of ``experiment`` with this ``config_key`` (and these tags), or None: what a
        long bench re-run after a cut reads back instead of running again."""
        where = " and ".join([f"tags.{TAG_CONFIG_KEY} = '{config_key}'", "attributes.status = 'FINISHED'",
                              *(f"tags.{k} = '{v}'" for k, v in (tags or {}).items())])
        found = self.search(where, experiment_ids=[self.experiment_id(experiment)], max_results=1)
        return found[0] if found else None

    def mark_superseded(self, run_id: str, *, by: str, reason: str) -> None:
        """Tag ``run_id`` as superseded by the run ``by`` (nothing is deleted; the run stays readable)."""
        self.attach(run_id).set_tags({TAG_SUPERSEDED_BY: by, TAG_SUPERSEDED_REASON: reason})

    def timings(self, *, experiments: list[str] | None = None, before: int | None = None) -> list[dict[str, Any]]:
        """Every FINISHED cell run that logged its timings (``time/*`` and ``work/*`` metrics), as plain values with
        the tags that say whose they are (family, profile, classifier, size) and where they were measured;
        ``before`` (ms since the epoch): only the runs that had ended by then."""
        out = []
        ids = [self.experiment_id(e) for e in experiments] if experiments else None
        when = f" and attributes.end_time < {int(before)}" if before is not None else ""
        for r in self.search(kind_filter(KIND_EXPERIMENT) + " and metrics.`time/cell` >= 0" + when,
                             experiment_ids=ids, max_results=50000):
            t, m = r.data.tags, r.data.metrics
            if t.get(TAG_TIMINGS_DISTURBED) == "true":
                continue
            out.append({"family": t.get("model", ""), "profile": t.get("profile", ""),
                        "classifier": t.get("classifier", ""), "size": int(t.get("size") or 0),
                        "cpu": t.get("machine.cpu", ""), "threads": int(t.get("machine.threads") or 0),
                        "precision": r.data.params.get("clf.precision", "fp32"),
                        "recipe": r.data.params.get("clf.recipe", "fair"),
                        "time": {k[5:]: v for k, v in m.items() if k.startswith("time/")},
                        "work": {k[5:]: v for k, v in m.items() if k.startswith("work/")}})
        return out


@functools.lru_cache(maxsize=16)
def _load_checkpoint(uri: str, run_id: str, path: str, sha256: str | None = None) -> dict:
    """Download and load a checkpoint once per process (studies reuse one generator many times)."""
    import hashlib

    import torch

    # an explicit folder that is removed afterwards: without dst_path MLflow leaves a temp copy of every
    # checkpoint it downloads
    with tempfile.TemporaryDirectory(prefix="synthboost-ckpt-") as tmp:
        local = fetch_artifact(uri, run_id, path, tmp)
        if local is None:
            raise UserError(f"run {run_id} has no {path}; it holds no generator checkpoint")
        data = Path(local).read_bytes()
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise CheckpointIncomplete(f"run {run_id}'s {path} ({len(data)} bytes) does not match the digest "
                                       "recorded after its upload")
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def cached_model(tracker: Tracker, *, kind: str, key: str, name: str,
                 train: Callable[[], tuple[dict, dict[str, float], dict[str, Any]]],
                 experiment: str = MODELS_EXPERIMENT) -> tuple[dict, str]:
    """An auxiliary model (feature extractor, CLIP) trained once per ``key`` and kept as an MLflow run.

    ``train()`` returns ``(state, metrics, params)``; the state is saved as ``model/model.pt``.  Later calls
    with the same kind and key load it from that run instead of training again; workers asking at once wait for
    the one training it (``Tracker.exclusive``).  Returns (state, run_id).
    """
    with tracker.exclusive(f"{kind}-{key}"):  # workers starting together: one trains it, the others load it
        found = tracker.find_model_run(kind, key)
        if found is None:
            return _train_model(tracker, kind=kind, key=key, name=name, train=train, experiment=experiment)
    return tracker.load_checkpoint(found, "model/model.pt"), found


def _train_model(tracker: Tracker, *, kind: str, key: str, name: str, train, experiment: str) -> tuple[dict, str]:
    with tracker.run(experiment=experiment, name=name, tags={"aux_kind": kind, "aux_key": key,
                                                           TAG_KIND: KIND_MODEL, "git_commit": git_commit()},
                     use_env_run=False) as run:
        state, metrics, params = train()
        run.log_params(params)
        run.log_metrics(metrics)
        run.set_tags(run.log_checkpoint(state, artifact_path="model"))
    return state, run.id


class Run:
    """One MLflow run: batched logging helpers and the project's artifact layout."""

    def __init__(self, tracker: Tracker, run_id: str):
        self.tracker = tracker
        self.client = tracker.client
        self.id = run_id
        self.status: str | None = None

    @contextlib.contextmanager
    def _timed(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.tracker.seconds += time.perf_counter() - t0

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_str(v)) for k, v in params.items()]
        with self._timed():
            for i in range(0, len(items), MAX_PARAMS):
                self.client.log_batch(self.id, params=items[i:i + MAX_PARAMS])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
        with self._timed():
            for i in range(0, len(items), MAX_TAGS):
                self.client.log_batch(self.id, tags=items[i:i + MAX_TAGS])

    def log_metrics(self, metrics: dict[str, float], *, step: int = 0) -> None:
        self.log_series([(step, metrics)])

    def log_series(self, rows: list[tuple[int, dict[str, float]]]) -> None:
        """Many (step, {name: value}) rows in as few ``log_batch`` calls as MLflow allows."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, int(step)) for step, m in rows for k, v in m.items()]
        with self._timed():
            for i in range(0, len(items), MAX_METRICS):
                self.client.log_batch(self.id, metrics=items[i:i + MAX_METRICS])

    def log_file(self, local: str | Path, artifact_path: str | None = None) -> None:
        with self._timed():
            self.client.log_artifact(self.id, str(local), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        with self._timed():
            self.client.log_text(self.id, text, artifact_file)

    def log_figure(self, figure, artifact_file: str) -> None:
        with self._timed():
            self.client.log_figure(self.id, figure, artifact_file)
        import matplotlib.pyplot as plt

        plt.close(figure)  # pyplot-made figures (Optuna's) would otherwise pile up in memory

    def log_png(self, png: bytes, artifact_file: str) -> None:
        folder, _, fname = artifact_file.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, fname).write_bytes(png)
            self.log_file(Path(tmp, fname), folder or None)

    def log_checkpoint(self, state: dict, *, artifact_path: str = "generator",
                       config_yaml: str | None = None) -> dict[str, str]:
        """Upload ``model.pt`` (and ``config.yaml``) under ``artifact_path``; returns the digest tag to set once
        the checkpoint counts as complete.  A full disk raises ``DiskFull`` (one line, how to resume)."""
        import hashlib

        import torch

        buf = io.BytesIO()
        torch.save(state, buf)  # into memory first: a full disk then fails in a plain write, with its errno
        data = buf.getvalue()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                Path(tmp, "model.pt").write_bytes(data)
                if config_yaml is not None:
                    Path(tmp, "config.yaml").write_text(config_yaml)
                with self._timed():
                    self.client.log_artifacts(self.id, tmp, artifact_path)
        except OSError as err:
            if err.errno not in _NO_SPACE:
                raise
            raise DiskFull(f"no space left writing the {artifact_path} checkpoint ({len(data) / 1e6:.1f} MB): "
                           f"{err.strerror}; free some space, then re-run the same command to resume") from None
        return {f"{TAG_SHA256}{artifact_path}/model.pt": hashlib.sha256(data).hexdigest()}

    def fail(self, err: BaseException) -> None:
        msg = f"{type(err).__name__}: {err}"
        try:
            self.client.set_tag(self.id, TAG_ERROR, msg[:5000])
            self.client.set_terminated(self.id, "FAILED")
        finally:
            self.status = "FAILED"

    def end(self, status: str) -> None:
        """Terminate with an explicit status (e.g. KILLED for a pruned trial)."""
        self.client.set_terminated(self.id, status)
        self.status = status

    # -- MLflow-native records (the runs table's Dataset and Models columns; mlflow_native.py) -------------
    def log_dataset(self, split, *, name: str, source: str, context: str = "training") -> None:
        """The run's real split (train + validation) as an MLflow dataset input: ``name``, the project's
        full-content digest (its first 36 characters, MLflow's limit; the whole in the profile), ``source`` (the
        data folder) and the per-class counts."""
        from . import mlflow_native
        from .data import CLASS_NAMES

        dataset = mlflow_native.split_dataset(name=name, digest=split.digest, source=source,
                                              train_y=split.train_y.numpy(), val_y=split.val_y.numpy(),
                                              class_names=CLASS_NAMES)
        inputs = [mlflow_native.dataset_input(dataset, context)]
        with self._timed():
            try:
                self.client.log_inputs(self.id, datasets=inputs)
            except Exception as err:
                # MLflow looks the dataset up, then inserts it: two workers logging the same new split at once both
                # insert, and the loser gets a unique-key error.  Now it exists, so asking again links it.
                if not _duplicate_key(err):
                    raise
                self.client.log_inputs(self.id, datasets=inputs)

    def log_generator_model(self, state: dict, *, name: str, tags: dict[str, Any] | None = None) -> str:
        """A trained generator's checkpoint as an MLflow model of this run: a pyfunc whose ``predict(labels)``
        returns images (``mlflow_native``), shown in the runs table's Models column and loadable with
        ``mlflow.pyfunc.load_model("models:/<id>")``.  Returns the model id.

        Logged through this tracker's client (as ``log_model(name=…)`` does through the fluent API, which would
        take the experiment and store from process-wide state): create the LoggedModel in the run's experiment,
        link it as the run's output, upload, mark it READY."""
        import torch
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.models import Model

        from . import mlflow_native

        with self._timed():
            exp_id = self.client.get_run(self.id).info.experiment_id
            model = self.client.create_logged_model(exp_id, name=name, source_run_id=self.id,
                                                    tags={k: str(v) for k, v in (tags or {}).items()},
                                                    model_type=mlflow_native.MODEL_TYPE)
            try:
                with tempfile.TemporaryDirectory(prefix="synthboost-model-") as tmp:
                    torch.save(state, Path(tmp) / "model.pt")
                    meta = Model(artifact_path=model.artifact_location, run_id=self.id, model_id=model.model_id,
                                 model_uuid=model.model_id)
                    mlflow_native.save_generator_model(Path(tmp) / "model", checkpoint=Path(tmp) / "model.pt",
                                                       mlflow_model=meta)
                    size = sum(f.stat().st_size for f in Path(tmp, "model").rglob("*") if f.is_file())
                    try:
                        self.client.log_model_artifacts(model.model_id, str(Path(tmp) / "model"))
                    except OSError as err:  # as for the checkpoint: one line, the run FAILED, how to resume
                        if err.errno not in _NO_SPACE:
                            raise
                        raise DiskFull(f"no space left writing the generator model ({size / 1e6:.1f} MB): "
                                       f"{err.strerror}; free some space, then re-run the same command to "
                                       "resume") from None
                self.client.log_outputs(self.id, [LoggedModelOutput(model.model_id, step=0)])
            except BaseException:
                self.client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
                raise
            self.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        return model.model_id

    def log_model_input(self, source_run_id: str) -> str | None:
        """Record the MLflow model(s) ``source_run_id`` logged (a reused generator) as inputs of this run, so
        the run links to the model it sampled from; None when that run logged none (older runs)."""
        from mlflow.entities import LoggedModelInput

        with self._timed():
            outputs = self.client.get_run(source_run_id).outputs
            ids = [o.model_id for o in (outputs.model_outputs if outputs else [])]
            if ids:
                self.client.log_inputs(self.id, models=[LoggedModelInput(i) for i in ids])
        return ids[0] if ids else None


def _param_str(value: Any) -> str:
    text = str(list(value)) if isinstance(value, tuple) else str(value)
    return text[:6000]


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


# ---------------------------------------------------------------- reading runs back (the report)
def runs_frame(tracker: Tracker, experiment_names: list[str] | None = None, *, kind: str = "experiment"):
    """Every FINISHED run tagged ``synthboost.kind = kind`` in the named experiments, one pandas row per run.

    ``None`` means every active experiment.  Columns follow ``mlflow.search_runs``: ``run_id``,
    ``experiment_id``, ``experiment`` (its name), ``run_name``, ``status``, ``start_time``, ``artifact_uri``,
    then ``metrics.<name>``, ``params.<name>``, ``tags.<name>``.  It is one paginated ``search_runs`` over all
    the experiments with the filter applied by the store — never a per-run ``get_run`` — so it works against
    any tracking server.  An unknown experiment name raises ``UserError``.
    """
    import gc

    import pandas as pd

    client = tracker.client
    t0 = time.perf_counter()
    ids = _experiments_named(tracker, experiment_names)
    rows: list[dict[str, Any]] = []
    if ids:
        # SQL stores build ~110 ORM objects per run; pausing the cyclic GC while they pile up makes the
        # query ~2-3x faster (it is re-enabled at once, nothing here forms cycles worth collecting)
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            for r in _paged_runs(client, list(ids), kind_filter(kind)):
                row = {"run_id": r.info.run_id, "experiment_id": r.info.experiment_id,
                       "experiment": ids.get(r.info.experiment_id, ""), "run_name": r.info.run_name,
                       "status": r.info.status, "start_time": r.info.start_time,
                       "artifact_uri": r.info.artifact_uri}
                row.update({f"metrics.{k}": v for k, v in r.data.metrics.items()})
                row.update({f"params.{k}": v for k, v in r.data.params.items()})
                row.update({f"tags.{k}": v for k, v in r.data.tags.items()})
                rows.append(row)
        finally:
            if gc_was_on:
                gc.enable()
    tracker.seconds += time.perf_counter() - t0
    base = ["run_id", "experiment_id", "experiment", "run_name", "status", "start_time", "artifact_uri"]
    return pd.DataFrame.from_records(rows, columns=None if rows else base)


def unfinished_runs(tracker: Tracker, experiment_names: list[str] | None = None, *,
                    kind: str = "experiment") -> list[dict[str, str]]:
    """The runs of one kind that are not FINISHED (RUNNING, FAILED, KILLED) in the named experiments, each as
    ``run_id``, ``run_name``, ``status``, ``experiment``: what ``runs_frame`` leaves out, for a report to say so."""
    ids = _experiments_named(tracker, experiment_names)
    if not ids:
        return []
    found = _paged_runs(tracker.client, list(ids), kind_filter(kind, finished=False)
                        + " and attributes.status != 'FINISHED'")
    return [{"run_id": r.info.run_id, "run_name": r.info.run_name or "", "status": r.info.status,
             "experiment": ids.get(r.info.experiment_id, ""),
             "origin": r.data.tags.get(TAG_LEDGER_ORIGIN, r.info.run_id)} for r in found]


def _experiments_named(tracker: Tracker, names: list[str] | None) -> dict[str, str]:
    """{experiment id: name} for the named experiments (None: every active one); an unknown name -> UserError."""
    known: dict[str, str] = {}
    token = None
    while True:
        page = tracker.client.search_experiments(max_results=1000, page_token=token)
        known.update({e.name: e.experiment_id for e in page})
        token = page.token
        if not token:
            break
    names = list(known) if names is None else list(dict.fromkeys(names))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"no experiment named {', '.join(map(repr, unknown))} in {tracker.uri} "
                        f"(experiments: {', '.join(sorted(known)) or 'none'})")
    return {known[n]: n for n in names}


def experiment_names(tracker: Tracker) -> set[str]:
    """The names of the store's active experiments."""
    return set(_experiments_named(tracker, None).values())


def _paged_runs(client, experiment_ids: list[str], filter_string: str = "") -> Iterator:
    """Every run matching ``filter_string`` in the experiments, page by page (no cap on the count)."""
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=5000, page_token=token)
        yield from page
        token = page.token
        if not token:
            break


# ---------------------------------------------------------------- the ledger's side of the store (ledger.py)
#: on a run imported from a ledger: the id it had in the store it was first recorded in (its id in the ledger)
TAG_LEDGER_ORIGIN = "ledger.origin_run_id"
#: on an imported run that trained a generator whose weights the ledger did not carry: the grid trains it anew
TAG_LEDGER_CHECKPOINT = "ledger.checkpoint"
#: on an imported run: the artifacts its ledger record listed as left behind (comma-separated), so a re-export of
#: the imported run writes the same record
TAG_LEDGER_LEFT = "ledger.left_behind"
#: tags whose value is a run id: the ledger writes them as origin ids and maps them back to local ids on import
RUN_ID_TAGS = ("mlflow.parentRunId", TAG_SUPERSEDED_BY, TAG_GENERATOR_RUN_ID)


def ledger_runs(tracker: Tracker, experiment_names: list[str] | None, *, generators: bool = False) -> list:
    """The FINISHED runs of every kind in the named experiments (None: all), the runs imported from a ledger, and
    the parent runs they nest under (a grid's or study's parent may still be open or killed): what a ledger keeps.  With ``generators`` also the
    runs that logged a whole generator but did not finish (a cell cut off while sampling): later cells reuse it."""
    ids = list(_experiments_named(tracker, experiment_names))
    if not ids:
        return []
    runs = {r.info.run_id: r for r in _paged_runs(tracker.client, ids, "attributes.status = 'FINISHED'")}
    # a run that came from a ledger goes back into it, finished or not (a cut-off cell whose generator others reuse)
    for r in _paged_runs(tracker.client, ids, f"tags.`{TAG_LEDGER_ORIGIN}` LIKE '%'"):
        runs.setdefault(r.info.run_id, r)
    if generators:
        for r in _paged_runs(tracker.client, ids, f"tags.{TAG_GENERATOR_TRAINED} = 'true'"):
            runs.setdefault(r.info.run_id, r)
    for r in list(runs.values()):
        parent = r.data.tags.get("mlflow.parentRunId")
        if parent and parent not in runs:
            with contextlib.suppress(Exception):  # a parent deleted from the store: the run is kept unnested
                runs[parent] = tracker.client.get_run(parent)
    return sorted(runs.values(), key=lambda r: (r.info.start_time or 0, r.info.run_id))


def origin_ids(tracker: Tracker) -> dict[str, str]:
    """{origin id: local run id} for every run of the store (a run never imported is its own origin)."""
    ids = list(_experiments_named(tracker, None))
    out: dict[str, str] = {}
    for r in _paged_runs(tracker.client, ids) if ids else ():
        out[r.data.tags.get(TAG_LEDGER_ORIGIN, r.info.run_id)] = r.info.run_id
    return out


def run_head(tracker: Tracker, run) -> dict[str, Any]:
    """What one search returns of a run, as the ledger writes it: its origin id, experiment, name, status, times,
    params, tags (origin ids) and each metric's latest value (``latest``) — enough to tell an unchanged run."""
    info, data = run.info, run.data
    return {"run_id": data.tags.get(TAG_LEDGER_ORIGIN, info.run_id),
            "experiment": tracker.client.get_experiment(info.experiment_id).name, "run_name": info.run_name,
            "status": info.status, "start_time": info.start_time, "end_time": info.end_time,
            "params": dict(sorted(data.params.items())), "tags": _origin_tags(data.tags),
            "latest": dict(sorted(data.metrics.items()))}


def run_record(tracker: Tracker, run, *, keep: Callable[[str, int], bool], dst: Path) -> dict[str, Any]:
    """One run as plain data: ``run_head`` with every metric's whole history instead of its latest value; the
    artifacts ``keep(path, size)`` selects are copied under ``dst`` (their paths listed), the others only listed
    as left behind."""
    client = tracker.client
    info, data = run.info, run.data
    metrics = {}
    for key in sorted(data.metrics):
        history = client.get_metric_history(info.run_id, key)
        metrics[key] = [[m.step, m.timestamp, m.value] for m in sorted(history, key=lambda m: (m.step, m.timestamp))]
    carried, left = [], [p for p in data.tags.get(TAG_LEDGER_LEFT, "").split(",") if p]
    pending = [""]
    while pending:
        for f in client.list_artifacts(info.run_id, pending.pop() or None):
            if f.is_dir:
                pending.append(f.path)
            elif keep(f.path, f.file_size or 0):
                (dst / f.path).parent.mkdir(parents=True, exist_ok=True)
                client.download_artifacts(info.run_id, f.path, str((dst / f.path).parent))
                carried.append(f.path)
            else:
                left.append(f.path)
    record = run_head(tracker, run)
    del record["latest"]
    return record | {"metrics": metrics, "artifacts": sorted(carried), "left_behind": sorted(set(left))}


def _origin_tags(tags: dict[str, str]) -> dict[str, str]:
    """A run's tags as the store it was first recorded in had them (an import's own marks taken back out)."""
    out = {k: v for k, v in sorted(tags.items()) if k not in (TAG_LEDGER_ORIGIN, TAG_LEDGER_CHECKPOINT, TAG_LEDGER_LEFT)}
    if tags.get(TAG_LEDGER_CHECKPOINT) == "not carried":
        out[TAG_GENERATOR_TRAINED] = "true"
    return dict(sorted(out.items()))


def create_from_record(tracker: Tracker, record: dict[str, Any], *, tags: dict[str, str], src: Path) -> str:
    """A new run in this store holding ``record`` (its tags already mapped to local ids): same experiment, name,
    times, status, params, metric histories, and the carried artifacts from ``src``.  Returns its id."""
    from mlflow.entities import Metric, Param

    client = tracker.client
    run_id = client.create_run(tracker.experiment_id(record["experiment"]), start_time=record["start_time"],
                               tags=tags | {TAG_LEDGER_ORIGIN: record["run_id"],
                                            TAG_LEDGER_LEFT: ",".join(record["left_behind"])},
                               run_name=record["run_name"]).info.run_id
    params = [Param(k, v) for k, v in record["params"].items()]
    for i in range(0, len(params), MAX_PARAMS):
        client.log_batch(run_id, params=params[i:i + MAX_PARAMS])
    metrics = [Metric(k, v, ts, step) for k, rows in record["metrics"].items() for step, ts, v in rows]
    for i in range(0, len(metrics), MAX_METRICS):
        client.log_batch(run_id, metrics=metrics[i:i + MAX_METRICS])
    for path in record["artifacts"]:
        folder = path.rpartition("/")[0]
        client.log_artifact(run_id, str(src / path), folder or None)
    # a parent still open where it was recorded (its grid was cut off with the machine) runs nowhere now
    status = record["status"] if record["status"] in ("FINISHED", "FAILED", "KILLED") else "KILLED"
    client.set_terminated(run_id, status, end_time=record["end_time"])
    return run_id


def set_run_tags(tracker: Tracker, run_id: str, tags: dict[str, str]) -> None:
    Run(tracker, run_id).set_tags(tags)


def run_tags(tracker: Tracker, run_id: str) -> dict[str, str]:
    return dict(tracker.client.get_run(run_id).data.tags)


def has_artifact(tracker: Tracker, run_id: str, path: str) -> bool:
    """Whether the run holds the artifact ``path`` (one listing of its folder, nothing downloaded)."""
    folder = path.rpartition("/")[0]
    return any(f.path == path for f in tracker.client.list_artifacts(run_id, folder or None))


def download_artifact(tracker: Tracker, run_id: str, path: str, dst: str | Path) -> Path | None:
    """Copy one artifact of one run into the folder ``dst``; None when the run has no such artifact."""
    t0 = time.perf_counter()
    try:
        local = fetch_artifact(tracker.uri, run_id, path, dst)
        return None if local is None else Path(local)
    finally:
        tracker.seconds += time.perf_counter() - t0


_NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # a full disk here is not the store's outage


class _Missing(Exception):
    """The run does not list the artifact asked for."""


def fetch_artifact(uri: str, run_id: str, path: str, dst: str | Path) -> str | None:
    """Download one artifact of one run into the folder ``dst``: its local path, or None when the run holds no
    such file.  A failed download of a file the run does list (a server restarted mid-transfer, a 5xx while
    its database comes back) is an outage, retried up to ``SYNTHBOOST_OUTAGE_SECONDS`` — never taken for a
    missing file, which would fail a trial for nothing."""
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    def attempt() -> str:
        try:
            return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, tracking_uri=uri,
                                                       dst_path=str(dst))
        except Exception as err:  # MLflow raises several types for a missing artifact (OSError, MlflowException, …)
            if outage.unreachable(err) or isinstance(err, OSError) and err.errno in _NO_SPACE:
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
