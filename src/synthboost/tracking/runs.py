"""The objects that write runs: ``Tracker`` (one store), ``Run`` (one run's logging), the auxiliary-model cache."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import CheckpointIncomplete, DiskFull, UserError
from .store import (NO_SPACE_ERRNOS, check_reachable, fetch_artifact, file_lock, git_commit, local_store_dir,
                    open_client, tracking_uri)
from .tags import (DEFAULT_EXPERIMENT, KIND_EXPERIMENT, KIND_MODEL, MODELS_EXPERIMENT, TAG_CONFIG_KEY, TAG_ERROR,
                   TAG_GENERATOR_KEY, TAG_GENERATOR_TRAINED, TAG_KIND, TAG_SHA256, TAG_SUPERSEDED_BY,
                   TAG_SUPERSEDED_REASON, TAG_TIMINGS_DISTURBED, kind_filter)

MAX_PARAMS, MAX_METRICS, MAX_TAGS = 100, 1000, 100  # MLflow's per-log_batch limits


def env_run_id() -> str | None:
    """The run ``mlflow run`` opened for this process (it exports ``MLFLOW_RUN_ID``), if any."""
    return os.environ.get("MLFLOW_RUN_ID") or None


def _duplicate_key(err: BaseException) -> bool:
    """A store's unique-key violation (PostgreSQL's or SQLite's wording), as MLflow passes it on."""
    text = str(err)
    return "duplicate key value violates unique constraint" in text or "UNIQUE constraint failed" in text


class Tracker:
    """A thin wrapper over ``MlflowClient`` for one tracking URI."""

    def __init__(self, uri: str | None = None):
        self.uri = uri or tracking_uri()
        check_reachable(self.uri)
        self.client = open_client(self.uri)
        self.seconds = 0.0  # wall time spent in MLflow calls (for the overhead benchmark)
        # name -> a lock every worker of this store shares (the work queue lends its storage's; see exclusive)
        self.lock_factory: Callable[[str], contextlib.AbstractContextManager] | None = None

    def exclusive(self, name: str) -> contextlib.AbstractContextManager:
        """A lock every process on this store shares (e.g. to train one generator once).

        The work queue's when it lent one (``lock_factory``), a file lock beside a SQLite store, else none."""
        if self.lock_factory is not None:
            return self.lock_factory(name)
        folder = local_store_dir(self.uri)
        return file_lock(folder / "locks" / f"{name}.lock") if folder else contextlib.nullcontext()

    def experiment_id(self, name: str = DEFAULT_EXPERIMENT, *, create: bool = True) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        if not create:
            raise UserError(f"experiment {name!r} does not exist in {self.uri}")
        folder = local_store_dir(self.uri)
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
        """Open (or, under ``mlflow run``, adopt) a run, nested under ``parent_run_id`` if given.

        A crash marks it FAILED with the error as a tag; exceptions in ``killed_on`` (a pruned trial) end it KILLED.
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

    # runs that outlive one process (study / grid parents)
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

    # look-ups
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
        """Runs that trained and wholly logged the generator with this key, newest first.

        The tag is set only after the upload, so a run killed while uploading is never among them."""
        runs = self.search(f"tags.{TAG_GENERATOR_KEY} = '{generator_key}' and tags.{TAG_GENERATOR_TRAINED} = 'true'",
                           max_results=max_results)
        return [r.info.run_id for r in runs]

    def load_checkpoint(self, run_id: str, path: str = "generator/model.pt") -> dict:
        """A checkpoint, checked against the digest its run recorded after the upload (``CheckpointIncomplete``)."""
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
        """The FINISHED cell runs of one data draw (regime, size, seed) in one experiment, filtered by the store."""
        where = (f"{kind_filter(KIND_EXPERIMENT)} and tags.regime = '{regime}' and tags.size = '{int(size)}' "
                 f"and tags.seed = '{int(seed)}'")
        return self.search(where, experiment_ids=[experiment_id], max_results=50000)

    def finished_config_run(self, experiment: str, config_key: str, *, tags: dict[str, str] | None = None):
        """The newest FINISHED run of ``experiment`` with this ``config_key`` (and these tags), or None.

        A long bench re-run after a cut reads it back instead of running again."""
        where = " and ".join([f"tags.{TAG_CONFIG_KEY} = '{config_key}'", "attributes.status = 'FINISHED'",
                              *(f"tags.{k} = '{v}'" for k, v in (tags or {}).items())])
        found = self.search(where, experiment_ids=[self.experiment_id(experiment)], max_results=1)
        return found[0] if found else None

    def mark_superseded(self, run_id: str, *, by: str, reason: str) -> None:
        """Tag ``run_id`` as superseded by the run ``by`` (nothing is deleted; the run stays readable)."""
        self.attach(run_id).set_tags({TAG_SUPERSEDED_BY: by, TAG_SUPERSEDED_REASON: reason})

    def timings(self, *, experiments: list[str] | None = None, before: int | None = None) -> list[dict[str, Any]]:
        """The ``time/*`` and ``work/*`` metrics of every FINISHED cell run, with whose and where they are.

        ``before`` (ms since the epoch) keeps only the runs that had ended by then."""
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
    """An auxiliary model (feature extractor, CLIP) trained once per ``key`` and kept as an MLflow run: (state, run id).

    ``train()`` returns ``(state, metrics, params)``; later calls with the same kind and key load ``model/model.pt``.
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
        """Upload ``model.pt`` (and ``config.yaml``) under ``artifact_path``: the digest tag to set once it is whole.

        A full disk raises ``DiskFull`` (one line, how to resume)."""
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
            if err.errno not in NO_SPACE_ERRNOS:
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

    # MLflow-native records: the runs table's Dataset and Models columns (mlflow_native.py)
    def log_dataset(self, split, *, name: str, source: str, context: str = "training") -> None:
        """The run's real split (train + validation) as an MLflow dataset input, with its digest and class counts."""
        from .. import mlflow_native
        from ..data import CLASS_NAMES

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
        """A trained generator as an MLflow pyfunc model of this run (``mlflow_native``): the model id.

        Logged through this tracker's client, as the fluent ``log_model`` would through process-wide state."""
        import torch
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.models import Model

        from .. import mlflow_native

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
                        if err.errno not in NO_SPACE_ERRNOS:
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
        """Record the MLflow model ``source_run_id`` logged (a reused generator) as an input of this run, or None."""
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

