"""Optuna studies over the mix knobs and a family's declared tunables, each trial an MLflow child run.

The study stores its spec in itself, so a worker needs only its name and the storage; the queue's part (budget,
heartbeats, workers) is queue.py's, this module's the spec, the search space, the objective and the summary.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import pydantic

from . import classifiers, generators, queue
from .config import (Choice, FloatRange, IntRange, MixConfig, Profile, Regime, Tunable, build, config, load_yaml,
                     unflatten)
from .data import check_folds, regime_counts
from .errors import ResourceError, UserError
from .tracking import KIND_STUDY, TAG_TUNED_BUDGET, TAG_TUNED_STUDY, env_run_id

FIXED_SECTIONS = ("data", "mix", "clf", "gen")
OBJECTIVES = ("val/balanced_accuracy", "val/macro_f1", "val/accuracy")
#: the draws a study tunes on by default: never a seed the grids report (0–2), so a tuned cell re-run on a report
#: seed is not judged on the draw its choice was made on (``synthboost grid`` refuses that overlap)
TUNING_SEEDS = (100,)
#: regimes with a long tail: their holdout validation split has only a few images in the tail classes (2–3 on
#: ``high``/1,000), so a study there selects by k-fold within the pool unless its file says otherwise
TAIL_REGIMES = ("high", "semi")
#: the started trials (complete, pruned, failed) a study may use to reach its complete ones: ``n_trials`` × this
MAX_TRIALS_FACTOR = 3
#: what a study stored before these fields existed did: holdout everywhere, a budget of *started* trials
LEGACY = {"counts": "started", "selection": {"tail_kfold": None}}


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
class SelectionSpec:
    """How a trial is scored: on the regime's stratified holdout, or the mean over ``kfold`` stratified folds of
    its pool (a long-tailed regime: ``tail_kfold`` unless ``kfold`` is given); docs/studies.md."""

    kfold: int | None = None
    tail_kfold: int | None = 3

    def folds(self, regime: str) -> int | None:
        """The folds a trial on ``regime`` runs (None: the holdout)."""
        return self.kfold if self.kfold is not None or regime not in TAIL_REGIMES else self.tail_kfold

    def label(self, regime: str) -> str:
        k = self.folds(regime)
        return "holdout" if k is None else f"{k}-fold"


@config
class StudySpec:
    """One YAML file under studies/: fixed context, budget, objective, sampler, pruner, search space."""

    model: str | None = None
    regime: Regime = "high"
    size: int = pydantic.Field(default=1000, ge=100, le=60000)
    classifier: str = "cnn"
    profile: Profile = "quick"
    seeds: list[int] = pydantic.Field(default_factory=lambda: list(TUNING_SEEDS), min_length=1)  # the draws tuned on
    # the study ends when this many trials are COMPLETE (pruned and failed ones do not count toward it), so every
    # study's choice rests on the same number of scored trials ...
    n_trials: int = pydantic.Field(default=20, ge=1)
    # ... or when this many have been started in all, so that a study whose trials keep failing stops
    # (None: MAX_TRIALS_FACTOR × n_trials)
    max_trials: int | None = pydantic.Field(default=None, ge=1)
    counts: Literal["complete", "started"] = "complete"  # "started": a study stored before complete trials counted
    # strong: the classifier's strong recipe (none-strong's) under every trial — the mix is tuned where it will be
    # judged against the strong baseline; the study's default name gains "-strong" and a grid re-runs it so
    recipe: Literal["plain", "strong"] = "plain"
    objective: Literal["val/balanced_accuracy", "val/macro_f1", "val/accuracy"] = "val/balanced_accuracy"
    sampler: SamplerSpec = pydantic.Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = pydantic.Field(default_factory=PrunerSpec)
    selection: SelectionSpec = pydantic.Field(default_factory=SelectionSpec)
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
    check_selection(spec)
    return spec


def check_selection(spec: StudySpec) -> None:
    """k-fold selection: k ≥ 2, and no more folds than the smallest class of any seed's draw has images."""
    k = spec.selection.folds(spec.regime)
    if k is None:
        return
    for seed in spec.seeds:
        check_folds(regime_counts(spec.regime, spec.size, seed), k, where=f"{spec.regime}/{spec.size} seed {seed}")


def budget_label(spec: StudySpec) -> str:
    """What "the same tuning budget" means between two studies (trials, objective, selection): the report compares
    a tuned generator only with tuned baselines of the same label."""
    trials = f"{spec.n_trials} trials" if spec.counts == "started" else f"{spec.n_trials} complete trials"
    recipe = ", strong recipe" if spec.recipe == "strong" else ""
    return f"{trials} of {spec.objective}, {spec.selection.label(spec.regime)}{recipe}"


def trial_limit(spec: StudySpec) -> int:
    """How many trials a study may start in all to reach its ``n_trials`` complete ones."""
    return spec.max_trials if spec.max_trials is not None else MAX_TRIALS_FACTOR * spec.n_trials


def default_name(spec: StudySpec) -> str:
    """``{model}-{regime}-{size}-{profile}``; ``{model}-strong-…`` for a study on the strong recipe."""
    return f"{spec.model}{'-strong' if spec.recipe == 'strong' else ''}-{spec.regime}-{spec.size}-{spec.profile}"


def stored_spec(text: str) -> StudySpec:
    """The spec a study stored (its user attribute ``synthboost.spec``); a field it predates takes ``LEGACY``'s
    value — what that study actually did — not today's default."""
    values = json.loads(text)
    for key, legacy in LEGACY.items():
        if isinstance(legacy, dict):
            values[key] = {**legacy, **(values.get(key) or {})}
        else:
            values.setdefault(key, legacy)
    return build(StudySpec, values)


def fixed_overrides(spec: StudySpec) -> dict[str, dict[str, Any]]:
    """Every trial's fixed values by section: the strong recipe's clf.* (``recipe: strong``), then ``fixed``."""
    out = split_fixed(spec.fixed)
    if spec.recipe == "strong":
        strong = classifiers.get(spec.classifier).Config.strong.get(spec.profile, {})
        out["clf"] = {**strong, **out.get("clf", {})}
    return out


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
    return unflatten(fixed, sections=FIXED_SECTIONS, what="fixed key")


# ---------------------------------------------------------------- a study's best, for a grid's from_study mixes
@dataclass(frozen=True)
class BestParams:
    """A study's best trial as a grid cell runs it: its mix.*, gen.* and clf.* over the study's fixed values (its
    best was chosen under them)."""

    study: str
    model: str  # the model it tuned
    mix: dict[str, Any]
    gen: dict[str, Any]
    clf: dict[str, Any]
    budget: str  # budget_label: the report compares tuned cells of the same budget only
    seeds: tuple[int, ...]  # the draws it tuned on

    @property
    def tags(self) -> dict[str, str]:
        return {TAG_TUNED_STUDY: self.study, TAG_TUNED_BUDGET: self.budget}


class TunedStudies:
    """The studies a grid's ``from_study`` mixes name, each read once; ``waiting`` collects the names that do not
    exist (or have no complete trial) yet where the grid allows it (``missing: skip``)."""

    def __init__(self, storage_url: str):
        self.storage_url, self._best, self.waiting = storage_url, {}, set()

    def best(self, name: str, *, required: bool = True) -> BestParams | None:
        if name not in self._best:
            self._best[name] = self._load(name)
        found = self._best[name]
        if isinstance(found, str):
            if required:
                raise UserError(found)
            self.waiting.add(name)
            return None
        return found

    def found(self) -> dict[str, BestParams]:
        """The studies read so far that have a best trial, by name."""
        return {name: best for name, best in self._best.items() if not isinstance(best, str)}

    def _load(self, name: str) -> BestParams | str:
        import optuna

        try:
            study = optuna.load_study(study_name=name, storage=queue.open_storage(self.storage_url))
            best = study.best_params
        except KeyError:
            return f"grid: no study named {name!r} in {queue.redact(self.storage_url)}"
        except ValueError:
            return f"grid: study {name!r} has no complete trial yet"
        spec = stored_spec(study.user_attrs["synthboost.spec"])
        split, fixed = unflatten(best), fixed_overrides(spec)
        sections = {s: {**fixed.get(s, {}), **split.get(s, {})} for s in ("mix", "gen", "clf")}
        return BestParams(study=name, model=spec.model, **sections, budget=budget_label(spec),
                          seeds=tuple(spec.seeds))


# ---------------------------------------------------------------- creating / resuming a study
def prepare(spec: StudySpec, *, name: str, storage_url: str, experiment: str, tracker) -> Any:
    """Create or resume the study and its MLflow parent run; returns the optuna Study.

    Under the storage's lock: the same command started on several machines at once makes one study, one parent.
    """
    with queue.budget_lock(storage_url):
        study = queue.create_study(name, storage_url, direction="maximize")
        old = study.user_attrs.get("synthboost.spec")
        new = spec_json(spec)
        if old is not None:  # a study stored before a field existed: what it did (LEGACY)
            old = spec_json(stored_spec(old))
        budget = {"n_trials": 0, "max_trials": 0}  # the budget may grow on resume; nothing else may change
        if old is not None and {**json.loads(old), **budget} != {**json.loads(new), **budget}:
            raise UserError(f"study {name!r} exists with a different spec; choose another --name to start afresh")
        study.set_user_attr("synthboost.spec", new)  # a higher n_trials on resume raises the budget
        study.set_metric_names([spec.objective])
        parent, created = queue.open_parent_run(
            study, tracker, experiment=experiment, name=f"study {name}", kind=KIND_STUDY, storage_url=storage_url,
            tags={"model": spec.model, "regime": spec.regime, "size": spec.size, "profile": spec.profile,
                  "classifier": spec.classifier})
    if created:
        flat = {f"study.{k}": (json.dumps(v) if isinstance(v, (dict, list)) else v)
                for k, v in json.loads(new).items() if k not in budget}  # the budget may grow on resume: a tag
        tracker.attach(parent).log_params(flat)
    tracker.attach(parent).set_tags({"study.n_trials": spec.n_trials, "study.max_trials": trial_limit(spec)})
    return study


def spec_json(spec: StudySpec) -> str:
    import dataclasses

    return json.dumps(dataclasses.asdict(spec), sort_keys=True, default=str)


# ---------------------------------------------------------------- the objective
def suggest(trial, space: dict[str, Tunable]) -> dict[str, dict[str, Any]]:
    """The trial's values for the search space, by section: ``{"mix": {"ratio": 0.5}, …}``."""
    values: dict[str, Any] = {}
    for key, t in space.items():
        if isinstance(t, Choice):
            values[key] = trial.suggest_categorical(key, list(t.values))
        elif isinstance(t, IntRange):
            values[key] = trial.suggest_int(key, t.low, t.high, log=t.log)
        else:
            values[key] = trial.suggest_float(key, t.low, t.high, log=t.log)
    return unflatten(values)


def objective(trial, spec: StudySpec, *, study_name: str, tracker, parent: str, progress: bool,
              use_cache: bool = True) -> float:
    """One trial: the suggested values over the study's fixed ones, run on every seed; the mean objective.

    Each seed is one MLflow child run of ``parent``; the first seed's validation curve drives pruning.
    """
    import optuna

    from . import cell, pipeline

    overrides = suggest(trial, resolve_space(spec))
    for section, kv in fixed_overrides(spec).items():
        overrides[section] = kv | overrides.get(section, {})  # a suggested value wins over a fixed one
    values: list[float] = []
    k = spec.selection.folds(spec.regime)
    runs = [(seed, fold) for seed in spec.seeds for fold in ([None] if k is None else range(k))]
    for i, (seed, fold) in enumerate(runs):
        data = overrides.get("data", {}) | ({} if fold is None else {"kfold": k, "fold": fold})
        cfg = cell.make_config(model=spec.model, classifier=spec.classifier, regime=spec.regime,
                               size=spec.size, seed=seed, profile=spec.profile,
                               overrides=overrides | {"data": data}, gen_metrics=spec.gen_metrics)

        def on_epoch(epoch: int, m: dict[str, float], first: bool = i == 0) -> None:
            # only the first run's curve drives pruning (later seeds and folds restart the epoch count)
            if first and "val_balanced_accuracy" in m:
                trial.report(m["val_balanced_accuracy"], epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        attr = "mlflow_run_id" if i == 0 else f"mlflow_run_id_seed{seed}" + ("" if fold is None else f"_fold{fold}")
        result = pipeline.run_experiment(
            cfg, tracker=tracker, parent_run_id=parent, use_env_run=False, on_epoch=on_epoch,
            progress=progress, killed_on=(optuna.TrialPruned,), use_cache=use_cache,
            on_start=lambda run_id, attr=attr: trial.set_user_attr(attr, run_id),
            extra_tags={"optuna.trial_number": trial.number, "optuna.study_name": study_name})
        values.append(result.metrics[spec.objective])
    return sum(values) / len(values)


# ---------------------------------------------------------------- the worker loop
def work(name: str, storage_url: str, *, worker_index: int = 0, progress: bool = False,
         use_cache: bool = True) -> int:
    """Pull trials until the study-wide budget is met; returns the number of trials this worker ran."""
    from .tracking import Tracker

    study = queue.load_study(name, storage_url)
    spec = stored_spec(study.user_attrs["synthboost.spec"])
    study.sampler = make_sampler(spec, worker_index)
    study.pruner = _pruner(spec)
    tracker = Tracker()
    parent = queue.parent_run_id(study)
    ran = 0
    complete = spec.counts == "complete"
    for trial in queue.next_trials(study, storage_url, tracker, budget=spec.n_trials, complete=complete,
                                   limit=trial_limit(spec) if complete else None):
        ran += 1
        _run_trial(study, trial, spec, tracker=tracker, parent=parent, progress=progress, use_cache=use_cache)
    return ran


def make_sampler(spec: StudySpec, worker_index: int):
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


def _run_trial(study, trial, spec: StudySpec, *, tracker, parent: str, progress: bool, use_cache: bool = True) -> None:
    """The objective under a heartbeat, told to the study: its value, PRUNED, or FAIL with the reason."""
    import optuna
    from optuna.trial import TrialState

    try:
        with queue.Heartbeat(trial):
            value = objective(trial, spec, study_name=study.study_name, tracker=tracker, parent=parent,
                              progress=progress, use_cache=use_cache)
        study.tell(trial, value)
    except KeyboardInterrupt:  # the run already ended KILLED; the trial fails and waits for a resume
        queue.interrupted(study, trial)
        raise
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
    except ResourceError:  # the disk or a store is gone: stop here; the trial is retried on resume
        raise
    except UserError as err:  # a sampled combination the configs reject: fail the trial, keep going
        trial.set_user_attr("fail_reason", str(err))
        study.tell(trial, state=TrialState.FAIL)
        print(f"trial {trial.number} failed: {err}", file=sys.stderr)  # one line: no trial fails unexplained
    except Exception as err:  # a diverging generator, a crash: the run is FAILED with the reason already
        trial.set_user_attr("fail_reason", f"{type(err).__name__}: {err}"[:2000])
        study.tell(trial, state=TrialState.FAIL)
        print(f"trial {trial.number} failed: {type(err).__name__}: {err}", file=sys.stderr)


# ---------------------------------------------------------------- running a whole study
def run_study(spec: StudySpec, *, name: str, storage_url: str, experiment: str, workers: int = 1,
              progress: bool = False, use_cache: bool = True) -> dict[str, Any]:
    """Create/resume, run ``workers`` processes (or this one), wait for workers elsewhere (the same command on
    other machines), then summarise into the parent run."""
    from .tracking import Tracker

    tracker = Tracker()
    study = prepare(spec, name=name, storage_url=storage_url, experiment=experiment, tracker=tracker)
    try:
        if workers <= 1:
            work(name, storage_url, progress=progress, use_cache=use_cache)
        else:
            codes = queue.run_workers("study-worker", workers, name=name, storage_url=storage_url,
                                      args=lambda i: ["--worker-index", str(i)])
            if any(codes):
                print(f"warning: worker exit codes {codes}; re-run the same command to resume", file=sys.stderr)
        queue.wait_for_others(study, storage_url, tracker, lambda: work(name, storage_url, progress=progress,
                                                                        use_cache=use_cache))
    except KeyboardInterrupt:
        queue.park_parent(study, tracker)
        raise
    return finalize(study, tracker, storage_url=storage_url)


def finalize(study, tracker, *, storage_url: str) -> dict[str, Any]:
    """Best value/params and Optuna's matplotlib plots into the parent run; the parent ends FINISHED."""
    from optuna.trial import TrialState

    parent = queue.parent_run_id(study)
    trials = study.get_trials(deepcopy=False)
    states = {s.name: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED,
                                                                    TrialState.FAIL, TrialState.RUNNING)}
    # a trial whose worker died or was interrupted, run again as a retry: not a failure of the study
    retried = len({t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs})
    states["FAIL"] -= retried
    states["RETRIED"] = retried
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
    if len(complete) >= 3:  # how far the choice can be trusted: val↔test rank agreement into the parent run
        try:
            summary["agreement"] = agreement(study.study_name, storage_url, tracker=tracker).text()
        except UserError:  # fewer than 3 complete trials with a test score (e.g. runs still being written)
            pass
    if env_run_id() != parent:  # `mlflow run` ends its own run
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


def agreement(name: str, storage_url: str, *, tracker, log: bool = True, first: int | None = None):
    """How far study ``name``'s choice can be trusted: its val↔test rank agreement (``selection.study_agreement``)."""
    from . import selection

    study = queue.load_study(name, storage_url)
    return selection.study_agreement(study, stored_spec(study.user_attrs["synthboost.spec"]), tracker=tracker,
                                     log=log, first=first)
