"""Optuna studies over the mix knobs and a family's declared tunables, each trial an MLflow child run.

Layout: the study is an MLflow parent run (or the run ``mlflow run`` opened); every trial is a nested child
run tagged ``optuna.trial_number`` / ``optuna.study_name``; the Optuna trial carries the MLflow run id as the
user attribute ``mlflow_run_id`` and the study carries the parent's id, so each is found from the other.
Trial state maps to run status: COMPLETE -> FINISHED, PRUNED -> KILLED, FAIL -> FAILED (tag ``error``).

Storage is the work queue.  The embedded default is a JournalStorage file under ``tracking/`` (safe for
several processes; SQLite is not); any Optuna storage URL (PostgreSQL for many machines) works too.  The
study's spec is stored in the study itself, so a worker needs only the study name and the storage URL.
Workers use ask/tell so that the study-wide trial budget is exact: on a journal file the check-and-ask is
done under a file lock.  Optuna 5's JournalStorage has no heartbeat, so liveness is one mechanism for every
storage: each running trial records its worker (host:pid) and a heartbeat timestamp; a trial whose worker
is gone (dead pid on this host, or a heartbeat older than the grace period) is marked FAIL, its MLflow run
is closed as FAILED, and the same parameters are enqueued again as a retry.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

import pydantic

from . import classifiers, generators
from .config import Choice, FloatRange, IntRange, MixConfig, Tunable, build, config, load_yaml
from .errors import TrackingUnavailable, UserError

HEARTBEAT_SECONDS = 15.0
GRACE_SECONDS = 120.0
OBJECTIVES = ("val/balanced_accuracy", "val/macro_f1", "val/accuracy")


# ---------------------------------------------------------------- the study file
@config
class SamplerSpec:
    name: Literal["tpe", "random"] = "tpe"
    seed: int = 0
    n_startup_trials: int = pydantic.Field(default=5, ge=0)


@config
class PrunerSpec:
    name: Literal["median", "none"] = "median"
    n_startup_trials: int = pydantic.Field(default=3, ge=0)
    n_warmup_steps: int = pydantic.Field(default=2, ge=0)


@config
class StudySpec:
    """One YAML file under studies/: fixed context, budget, objective, sampler, pruner, search space."""

    model: str | None = None
    regime: Literal["balanced", "semi", "high"] = "high"
    size: int = pydantic.Field(default=1000, ge=100, le=60000)
    classifier: str = "cnn"
    profile: Literal["smoke", "quick", "paper"] = "quick"
    seeds: list[int] = pydantic.Field(default_factory=lambda: [0], min_length=1)
    n_trials: int = pydantic.Field(default=20, ge=1)
    objective: Literal["val/balanced_accuracy", "val/macro_f1", "val/accuracy"] = "val/balanced_accuracy"
    sampler: SamplerSpec = pydantic.Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = pydantic.Field(default_factory=PrunerSpec)
    # key -> null (the declared range) | {low, high[, log]} | {choices: [...]}; "gen.*" = every declared one
    search_space: dict[str, Any] = pydantic.Field(default_factory=dict)
    fixed: dict[str, Any] = pydantic.Field(default_factory=dict)  # section.key -> value for every trial
    # generator quality (gen/*) per trial: off, because mix-only trials reuse one generator and would recompute
    # its FID/CAS every time (minutes per trial on a CPU); `synthboost evaluate --run-id` adds it to any trial
    gen_metrics: bool = False

    profiles: ClassVar[dict] = {}


def studies_dir() -> Path:
    """The study files shipped with the code (a source checkout's studies/), else ./studies."""
    here = Path(__file__).resolve().parents[2] / "studies"
    return here if here.is_dir() else Path.cwd() / "studies"


def load_spec(*, model: str, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> StudySpec:
    """studies/<model>.yaml if it exists, else studies/default.yaml (or ``path``), then CLI overrides."""
    _check_model(model)
    if path is None:
        candidate = studies_dir() / f"{model}.yaml"
        path = candidate if candidate.is_file() else studies_dir() / "default.yaml"
    values = load_yaml(path)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    values["model"] = model
    spec = build(StudySpec, values, prefix=Path(path).name)
    _check_model(spec.model)
    classifiers.get(spec.classifier)
    resolve_space(spec)  # validates the search space against the declared tunables
    split_fixed(spec.fixed)
    return spec


def _check_model(model: str) -> None:
    if model not in generators.model_names():
        raise UserError(f"unknown model {model!r} (choose from: {', '.join(generators.model_names())})")


def declared_tunables(model: str, classifier: str) -> dict[str, Tunable]:
    """Every knob a study may search for this model and classifier, by its dotted name."""
    out = {f"clf.{k}": v for k, v in classifiers.get(classifier).Config.tunables.items()}
    if model in generators.OVERSAMPLING:  # the ratio sizes its copies of real images
        out["mix.ratio"] = MixConfig.tunables["ratio"]
    if not generators.is_baseline(model):
        out.update({f"mix.{k}": v for k, v in MixConfig.tunables.items()})
        out.update({f"gen.{k}": v for k, v in generators.get(model).Config.tunables.items()})
    return out


def resolve_space(spec: StudySpec) -> dict[str, Tunable]:
    declared = declared_tunables(spec.model, spec.classifier)
    space: dict[str, Tunable] = {}
    for key, narrow in spec.search_space.items():
        section, _, name = key.partition(".")
        if name == "*":
            space.update({k: v for k, v in declared.items() if k.startswith(section + ".")})
            continue
        if key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise UserError(f"search-space key {key} is not a declared tunable of model {spec.model!r} with "
                            f"classifier {spec.classifier!r} (declared: {known})")
        space[key] = _narrow(key, declared[key], narrow)
    return space


def _narrow(key: str, base: Tunable, narrow: Any) -> Tunable:
    if narrow is None:
        return base
    if not isinstance(narrow, dict):
        raise UserError(f"search-space {key}: expected null or a mapping with low/high or choices")
    try:
        if isinstance(base, Choice):
            values = tuple(narrow["choices"])
            if not set(values) <= set(base.values):
                raise UserError(f"search-space {key}: choices must be among {list(base.values)}")
            return Choice(values)
        low, high = narrow.get("low", base.low), narrow.get("high", base.high)
        if not base.low <= low <= high <= base.high:
            raise UserError(f"search-space {key}: range [{low}, {high}] must lie within the declared "
                            f"[{base.low}, {base.high}]")
        cls = IntRange if isinstance(base, IntRange) else FloatRange
        return cls(low, high, log=narrow.get("log", base.log))
    except KeyError as err:
        raise UserError(f"search-space {key}: missing {err.args[0]!r}") from None


def split_fixed(fixed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"clf.epochs": 3}`` -> ``{"clf": {"epochs": 3}}``, checking the sections."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in fixed.items():
        section, dot, name = key.partition(".")
        if not dot or section not in ("data", "mix", "clf", "gen"):
            raise UserError(f"fixed key {key!r}: expected section.key with section data, mix, clf or gen")
        out.setdefault(section, {})[name] = value
    return out


# ---------------------------------------------------------------- storage
def default_storage() -> str:
    from .tracking import tracking_dir

    return os.environ.get("SYNTHBOOST_OPTUNA_STORAGE") or str(tracking_dir() / "optuna.journal")


def _is_journal(url: str) -> bool:
    return "://" not in url


def open_storage(url: str):
    """A JournalStorage for a file path, an RDBStorage for a database URL; unreachable -> UserError."""
    import optuna

    if _is_journal(url):
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


@contextlib.contextmanager
def _budget_lock(storage_url: str):
    """Serialise check-and-ask between processes on one machine (journal files); no-op for databases."""
    if not _is_journal(storage_url):
        yield
        return
    import fcntl

    with open(storage_url + ".budget-lock", "a") as fh:  # not ".lock": Optuna's own journal lock uses it
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---------------------------------------------------------------- creating / resuming a study
def prepare(spec: StudySpec, *, name: str, storage_url: str, experiment: str, tracker) -> Any:
    """Create or resume the study and its MLflow parent run; returns the optuna Study."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = open_storage(storage_url)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    old = study.user_attrs.get("synthboost.spec")
    new = spec_json(spec)
    if old is not None and {**json.loads(old), "n_trials": 0} != {**json.loads(new), "n_trials": 0}:
        raise UserError(f"study {name!r} exists with a different spec; choose another --name to start afresh")
    study.set_user_attr("synthboost.spec", new)  # a higher n_trials on resume raises the budget
    study.set_metric_names([spec.objective])
    parent = study.user_attrs.get("mlflow_parent_run_id")
    env_run = os.environ.get("MLFLOW_RUN_ID")
    tags = {"synthboost.kind": "study", "optuna.study_name": name, "optuna.storage": redact(storage_url),
            "model": spec.model, "regime": spec.regime, "size": spec.size, "profile": spec.profile,
            "classifier": spec.classifier}
    if parent is None or (env_run and env_run != parent) or not tracker.run_is_active(parent):
        parent = tracker.open_parent(experiment=experiment, name=f"study {name}", tags=tags)
        study.set_user_attr("mlflow_parent_run_id", parent)
        study.set_user_attr("mlflow_tracking_uri", tracker.uri)
        flat = {f"study.{k}": (json.dumps(v) if isinstance(v, (dict, list)) else v)
                for k, v in json.loads(new).items() if k != "n_trials"}  # n_trials may grow on resume: a tag
        tracker.attach(parent).log_params(flat)
    else:
        tracker.reopen(parent)
    tracker.attach(parent).set_tags({"study.n_trials": spec.n_trials})
    return study


def spec_json(spec: StudySpec) -> str:
    import dataclasses

    return json.dumps(dataclasses.asdict(spec), sort_keys=True, default=str)


# ---------------------------------------------------------------- the worker loop
def work(name: str, storage_url: str, *, worker_index: int = 0, progress: bool = False,
         use_cache: bool = True) -> int:
    """Pull trials until the study-wide budget is met; returns the number of trials this worker ran."""
    import optuna

    from .tracking import Tracker

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = open_storage(storage_url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise UserError(f"no study named {name!r} in {redact(storage_url)}") from None
    spec = build(StudySpec, json.loads(study.user_attrs["synthboost.spec"]))
    study.sampler = _sampler(spec, worker_index)
    study.pruner = _pruner(spec)
    tracker = Tracker()
    parent = study.user_attrs["mlflow_parent_run_id"]
    ran = 0
    while True:
        with _budget_lock(storage_url):
            recover_stale_trials(study, tracker)
            if not _should_start(study, spec.n_trials):
                break
            trial = study.ask()
        ran += 1
        _run_trial(study, trial, spec, tracker=tracker, parent=parent, progress=progress, use_cache=use_cache)
    return ran


def _sampler(spec: StudySpec, worker_index: int):
    import optuna

    seed = spec.sampler.seed + 7919 * worker_index  # workers must not propose identical points
    if spec.sampler.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.sampler.n_startup_trials)


def _pruner(spec: StudySpec):
    import optuna

    if spec.pruner.name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=spec.pruner.n_startup_trials,
                                       n_warmup_steps=spec.pruner.n_warmup_steps)


def budget_counts(study) -> dict[str, int]:
    """done (COMPLETE, PRUNED, FAIL not retried), running, waiting."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    done = sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and t.number not in retried))
    return {"done": done, "running": sum(t.state == TrialState.RUNNING for t in trials),
            "waiting": sum(t.state == TrialState.WAITING for t in trials)}


def _should_start(study, n_trials: int) -> bool:
    c = budget_counts(study)
    if c["waiting"]:
        return True  # a retry (or an enqueued trial) is owed
    return c["done"] + c["running"] < n_trials


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


class _Heartbeat:
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


def suggest(trial, space: dict[str, Tunable]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, t in space.items():
        if isinstance(t, Choice):
            value = trial.suggest_categorical(key, list(t.values))
        elif isinstance(t, IntRange):
            value = trial.suggest_int(key, t.low, t.high, log=t.log)
        else:
            value = trial.suggest_float(key, t.low, t.high, log=t.log)
        section, _, name = key.partition(".")
        out.setdefault(section, {})[name] = value
    return out


def _run_trial(study, trial, spec: StudySpec, *, tracker, parent: str, progress: bool, use_cache: bool = True) -> None:
    import optuna
    from optuna.trial import TrialState

    from . import pipeline

    values: list[float] = []
    try:
        with _Heartbeat(trial):
            overrides = suggest(trial, resolve_space(spec))
            for section, kv in split_fixed(spec.fixed).items():
                overrides.setdefault(section, {}).update({k: v for k, v in kv.items()
                                                         if k not in overrides.get(section, {})})
            for i, seed in enumerate(spec.seeds):
                cfg = pipeline.make_config(model=spec.model, classifier=spec.classifier, regime=spec.regime,
                                           size=spec.size, seed=seed, profile=spec.profile, overrides=overrides,
                                           gen_metrics=spec.gen_metrics)

                def on_epoch(epoch: int, m: dict[str, float], first: bool = i == 0) -> None:
                    # only the first seed's curve drives pruning (later seeds restart the epoch count)
                    if first and "val_balanced_accuracy" in m:
                        trial.report(m["val_balanced_accuracy"], epoch)
                        if trial.should_prune():
                            raise optuna.TrialPruned(f"pruned at epoch {epoch}")

                result = pipeline.run_experiment(
                    cfg, tracker=tracker, parent_run_id=parent, use_env_run=False, on_epoch=on_epoch,
                    progress=progress, killed_on=(optuna.TrialPruned,), use_cache=use_cache,
                    on_start=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id) if i == 0
                    else trial.set_user_attr(f"mlflow_run_id_seed{seed}", run_id),
                    extra_tags={"optuna.trial_number": trial.number, "optuna.study_name": study.study_name})
                values.append(result.metrics[spec.objective])
        study.tell(trial, sum(values) / len(values))
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
    except UserError as err:  # a sampled combination the configs reject: fail the trial, keep going
        trial.set_user_attr("fail_reason", str(err))
        study.tell(trial, state=TrialState.FAIL)
    except Exception as err:  # a diverging generator, a crash: the run is FAILED with the reason already
        trial.set_user_attr("fail_reason", f"{type(err).__name__}: {err}"[:2000])
        study.tell(trial, state=TrialState.FAIL)
        print(f"trial {trial.number} failed: {type(err).__name__}: {err}", file=sys.stderr)


# ---------------------------------------------------------------- running a whole study
def run_study(spec: StudySpec, *, name: str, storage_url: str, experiment: str, workers: int = 1,
              progress: bool = False, use_cache: bool = True) -> dict[str, Any]:
    """Create/resume, run ``workers`` processes (or this one), then summarise into the parent run."""
    import subprocess

    from .tracking import Tracker

    tracker = Tracker()
    study = prepare(spec, name=name, storage_url=storage_url, experiment=experiment, tracker=tracker)
    if workers <= 1:
        work(name, storage_url, progress=progress, use_cache=use_cache)
    else:
        procs = [subprocess.Popen([sys.executable, "-m", "synthboost", "study-worker", "--name", name,
                                   "--storage", storage_url, "--worker-index", str(i)]) for i in range(workers)]
        codes = [p.wait() for p in procs]
        if any(codes):
            print(f"warning: worker exit codes {codes}; re-run the same command to resume", file=sys.stderr)
    return finalize(study, tracker)


def finalize(study, tracker) -> dict[str, Any]:
    """Best value/params and Optuna's matplotlib plots into the parent run; the parent ends FINISHED."""
    from optuna.trial import TrialState

    parent = study.user_attrs["mlflow_parent_run_id"]
    trials = study.get_trials(deepcopy=False)
    states = {s.name: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED,
                                                                    TrialState.FAIL, TrialState.RUNNING)}
    summary: dict[str, Any] = {"study": study.study_name, "parent_run_id": parent, "trials": states}
    metrics = {f"study/n_{k.lower()}": v for k, v in states.items()}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        summary.update(best_value=best.value, best_params=best.params, best_trial=best.number,
                       best_run_id=best.user_attrs.get("mlflow_run_id"))
        metrics["best/value"] = best.value
        run = tracker.attach(parent)
        run.set_tags({"best_params": json.dumps(best.params, sort_keys=True), "best_trial": best.number,
                      "best_run_id": best.user_attrs.get("mlflow_run_id", "")})
        for fname, fig in _plots(study).items():
            run.log_figure(fig, f"optuna/{fname}")
    tracker.attach(parent).log_metrics(metrics)
    if not os.environ.get("MLFLOW_RUN_ID") == parent:  # `mlflow run` ends its own run
        tracker.close_run(parent, "FINISHED")
    return summary


def _plots(study) -> dict[str, Any]:
    """optuna.visualization.matplotlib figures; a plot Optuna cannot draw yet (too few trials) is skipped."""
    import warnings

    import matplotlib

    matplotlib.use("Agg", force=False)  # Optuna draws with pyplot; never open a window
    from optuna.visualization import matplotlib as ovm

    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the matplotlib backend is marked experimental
        for fname, fn in (("optimization_history.png", ovm.plot_optimization_history),
                          ("param_importances.png", ovm.plot_param_importances),
                          ("parallel_coordinate.png", ovm.plot_parallel_coordinate)):
            try:
                ax = fn(study)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_size_inches(9, 5)
            out[fname] = fig
    return out
