"""A grid: every model × regime × size × seed × classifier × mix cell, run through the work queue (queue.py).

A *unit* is one generator with every cell that reuses it, so no two workers train the same one; a cell whose
FINISHED run carries its ``config_key`` is skipped, so the same command resumes a grid (docs/grid.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pydantic

from . import classifiers, cost, generators, queue, supersede
from .cell import config_key, make_config
from .config import PROFILES, REGIMES, MixConfig, Profile, Regime, as_dict, build, config, load_yaml
from .errors import ResourceError, UserError
from .study import TUNING_SEEDS, BestParams, TunedStudies, split_fixed, studies_dir
from .tracking import KIND_EXPERIMENT, KIND_GRID, TAG_CONFIG_KEY, TAG_SUPERSEDED_BY, TAG_TUNED_STUDY, TAG_VARIANT


@config
class GridSpec:
    """studies/grid.yaml: the axes of the grid and the mix settings of every generator cell."""

    experiment: str = "grid"
    profile: Profile = "quick"
    # "all" (every baseline and family, a family with variants once per variant, no controls), names, or
    # {model: M, name: LABEL, gen: {key: value}, clf: {key: value}} for one configured variant
    models: list[Any] = pydantic.Field(default_factory=lambda: ["all"])
    regimes: list[Regime] = pydantic.Field(default_factory=lambda: list(REGIMES))
    sizes: list[int] = pydantic.Field(default_factory=lambda: [1000, 5000])
    seeds: list[int] = pydantic.Field(default_factory=lambda: [0, 1, 2], min_length=1)
    classifiers: list[str] = pydantic.Field(default_factory=lambda: ["cnn"])
    # each: mix.* values, or {from_study: NAME[, missing: error|skip]} for a study's best (NAME may be a template
    # of {model}, {regime}, {profile}: each variant's own study); docs/grid.md
    mixes: list[dict[str, Any]] = pydantic.Field(default_factory=lambda: [{"ratio": 1.0, "strategy": "balance"}])
    # model or variant name -> its own sizes (e.g. the real-only learning curves beyond the generators' sizes), or
    # regime -> sizes for it (e.g. each regime's full pool)
    sizes_for: dict[str, list[int] | dict[Regime, list[int]]] = pydantic.Field(default_factory=dict)
    # model or variant name -> its own mixes instead of the grid's (e.g. the seed protocol's 1:1 mix for its variants)
    mixes_for: dict[str, list[dict[str, Any]]] = pydantic.Field(default_factory=dict)
    # model or variant name -> its own regimes instead of the grid's (e.g. a variant on `high` only)
    regimes_for: dict[str, list[Regime]] = pydantic.Field(default_factory=dict)
    # other grid files beside this one, in the same experiment (e.g. another profile): planned with it as one
    include: list[str] = pydantic.Field(default_factory=list)
    # selectors ({models, regimes, sizes, profiles}: lists) in the order their units run, the rest last; within
    # one, size by size and seed by seed, so a sitting cut short leaves whole comparisons
    order: list[dict[str, list[Any]]] = pydantic.Field(default_factory=list)
    fixed: dict[str, Any] = pydantic.Field(default_factory=dict)  # section.key -> value for every cell
    gen_metrics: bool = False

    profiles: ClassVar[dict] = {}


@dataclass
class Variant:
    name: str
    model: str
    gen: dict[str, Any] = field(default_factory=dict)
    clf: dict[str, Any] = field(default_factory=dict)  # e.g. the strong recipe under a generator's mix


def load_grid(path: str | Path | None, *, profile: str | None = None) -> GridSpec:
    path = Path(path) if path else studies_dir() / "grid.yaml"
    values = load_yaml(path)
    if profile is not None:
        if profile not in PROFILES:
            raise UserError(f"unknown profile {profile!r} (choose from: {', '.join(PROFILES)})")
        values["profile"] = profile
    spec = build(GridSpec, values, prefix=path.name)
    for c in spec.classifiers:
        classifiers.get(c)
    known = {n for v in variants(spec) for n in (v.name, v.model)}  # also validates model names
    for field_name in ("sizes_for", "mixes_for", "regimes_for"):
        unknown = sorted(set(getattr(spec, field_name)) - known)
        if unknown:
            raise UserError(f"{path.name}: {field_name} names {', '.join(map(repr, unknown))}, not a model or "
                            f"variant of this grid (have: {', '.join(sorted(known))})")
    split_fixed(spec.fixed)
    parts = [_included(path, name, spec.experiment) for name in spec.include]
    spec.include = [str(part_path) for part_path, _ in parts]  # absolute: plan() reads them from anywhere
    known |= {n for _, part in parts for v in variants(part) for n in (v.name, v.model)}
    for sel in spec.order:
        _check_selector(sel, path.name, known)
    return spec


def _included(path: Path, name: str, experiment: str) -> tuple[Path, GridSpec]:
    """An included grid file, beside ``path``: it must exist, run in the same experiment and include none."""
    part_path = (path.parent / name).resolve()
    if not part_path.is_file():
        raise UserError(f"{path.name}: include {name!r}: no such grid file beside it")
    part = load_grid(part_path)
    if part.experiment != experiment or part.include:
        raise UserError(f"{path.name}: include {name!r} must run in experiment {experiment!r} and include no "
                        f"other file (it runs in {part.experiment!r}"
                        + (f" and includes {', '.join(part.include)})" if part.include else ")"))
    return part_path, part


SELECTOR_KEYS = ("models", "regimes", "sizes", "profiles")


def _check_selector(sel: dict, where: str, known: set[str]) -> None:
    unknown = set(sel) - set(SELECTOR_KEYS)
    if unknown or not sel or not all(isinstance(v, list) for v in sel.values()):
        raise UserError(f"{where}: an order entry takes lists under {', '.join(SELECTOR_KEYS)}, got {sel}")
    for key, allowed in (("models", known), ("regimes", REGIMES), ("profiles", PROFILES)):
        bad = [v for v in sel.get(key, []) if v not in allowed]
        if bad:
            raise UserError(f"{where}: order names {key} {', '.join(map(repr, bad))}, not of this grid "
                            f"(choose from: {', '.join(sorted(allowed))})")


def _selected(sel: dict, unit: Unit) -> bool:
    return all(getattr(unit, attr) in sel[key] or (key == "models" and unit.model in sel[key])
               for key, attr in (("models", "variant"), ("regimes", "regime"), ("sizes", "size"),
                                 ("profiles", "profile")) if key in sel)


def in_order(units: list[Unit], order: list[dict]) -> list[Unit]:
    """``units`` in the grid's ``order`` (see GridSpec.order); unchanged without one."""
    if not order:
        return units

    def rank(i_unit):
        i, u = i_unit
        group = next((g for g, sel in enumerate(order) if _selected(sel, u)), len(order))
        return group, u.size, u.seed, i
    return [u for _, u in sorted(enumerate(units), key=rank)]


def variants(spec: GridSpec) -> list[Variant]:
    out: list[Variant] = []
    for entry in spec.models:
        if entry == "all":
            out += [Variant(b, b) for b in generators.BASELINES]
            for fam in generators.FAMILIES:
                if generators.is_control(fam):  # controls are measurements of the exchange rate, asked for by name
                    continue
                extra = getattr(generators.get(fam), "variants", None)
                out += [Variant(n, fam, dict(g)) for n, g in extra.items()] if extra else [Variant(fam, fam)]
        elif isinstance(entry, str):
            if entry not in generators.model_names():
                raise UserError(f"grid: unknown model {entry!r} (choose from: {', '.join(generators.model_names())})")
            out.append(Variant(entry, entry))
        elif isinstance(entry, dict):
            unknown = set(entry) - {"model", "name", "gen", "clf"}
            if unknown or "model" not in entry:
                raise UserError(f"grid: a model entry needs 'model' (and optional 'name', 'gen', 'clf'), got {entry}")
            if entry["model"] not in generators.model_names():
                raise UserError(f"grid: unknown model {entry['model']!r}")
            out.append(Variant(entry.get("name", entry["model"]), entry["model"], dict(entry.get("gen") or {}),
                               dict(entry.get("clf") or {})))
        else:
            raise UserError(f"grid: cannot read model entry {entry!r}")
    names = [v.name for v in out]
    if len(names) != len(set(names)):
        raise UserError(f"grid: duplicate model names {sorted({n for n in names if names.count(n) > 1})}")
    return out


# ---------------------------------------------------------------- mix settings
TEMPLATE_FIELDS = ("model", "regime", "profile")


@dataclass(frozen=True)
class MixSetting:
    """One resolved entry of a grid's mixes: fixed mix.* values, or a study's best (its gen.* and clf.* apply to
    the model it tuned only)."""

    label: str
    mix: dict[str, Any]
    gen: dict[str, Any] = field(default_factory=dict)
    clf: dict[str, Any] = field(default_factory=dict)
    study_model: str | None = None  # the model its study tuned; None for fixed values
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_best(cls, best: BestParams) -> MixSetting:
        return cls(label=f"best of {best.study}", mix=best.mix, gen=best.gen, clf=best.clf, study_model=best.model,
                   tags=best.tags)


@dataclass(frozen=True)
class StudyTemplate:
    """A templated ``from_study`` entry, resolved per variant and regime."""

    name: str
    missing: str  # error | skip


def _mix_settings(mixes: list[dict[str, Any]], studies: TunedStudies) -> list[MixSetting | StudyTemplate]:
    """Fixed mixes as they are, ``from_study`` entries resolved to that study's best params (a templated name
    stays a template)."""
    out: list[MixSetting | StudyTemplate] = []
    for m in mixes:
        if "from_study" not in m:
            unknown = set(m) - {f.name for f in dataclasses.fields(MixConfig)}  # e.g. filter, filter_threshold
            if unknown:
                raise UserError(f"grid: unknown mix key(s) {sorted(unknown)}")
            out.append(MixSetting(label=json.dumps(m, sort_keys=True), mix=dict(m)))
            continue
        name, missing = m["from_study"], m.get("missing", "error")
        if set(m) - {"from_study", "missing"} or missing not in ("error", "skip"):
            raise UserError(f"grid: a from_study mix takes only 'missing: error|skip' besides the name, got {m}")
        if "{" not in str(name):
            if "missing" in m:
                raise UserError(f"grid: 'missing' is for a templated from_study (e.g. \"{{model}}-{{regime}}-1000-"
                                f"quick\"), not for {name!r}")
            out.append(MixSetting.from_best(studies.best(name)))
            continue
        try:
            str(name).format(**dict.fromkeys(TEMPLATE_FIELDS, "x"))
        except (KeyError, IndexError, ValueError):
            raise UserError(f"grid: from_study template {name!r} may use only "
                            f"{', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}") from None
        out.append(StudyTemplate(name, missing))
    return out


def _settings_for(model: str, mixes: list[MixSetting | StudyTemplate], *, regime: str, profile: str,
                  studies: TunedStudies) -> list[MixSetting | None]:
    """The mix settings a variant of ``model`` runs on ``regime`` (None: a baseline's real-only cell).

    A baseline runs the best of its own studies beside its default cell, a generator every fixed mix and every
    generator study's best (a baseline's study tunes no mix a generator could use); a template names the
    variant's own study, and `none` has none."""
    resolved: list[MixSetting] = []
    for mx in mixes:
        if isinstance(mx, MixSetting):
            resolved.append(mx)
        elif model != "none":
            name = mx.name.format(model=model, regime=regime, profile=profile)
            best = studies.best(name, required=mx.missing == "error")
            if best is not None:
                if best.model != model:
                    raise UserError(f"grid: study {name!r} tuned {best.model!r}, not {model!r}; the "
                                    f"template {mx.name!r} must name each model's own study")
                resolved.append(MixSetting.from_best(best))
    if generators.is_baseline(model):
        return [None] + [mx for mx in resolved if mx.study_model == model]
    return [mx for mx in resolved if mx.study_model is None or not generators.is_baseline(mx.study_model)]


# ---------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Cell:
    """One planned cell of a unit: a classifier under one mix setting."""

    classifier: str
    overrides: dict[str, dict[str, Any]]
    key: str  # its config_key
    mix_label: str
    tags: dict[str, str]  # the tuning study's, for a cell run from its own study's best
    identity: tuple  # supersede.config_identity


@dataclass(frozen=True)
class Unit:
    """One generator (variant, regime, size, seed) and every cell that reuses it: one worker's job."""

    # the field order is the queue's payload (a unit's user attribute, compared on resume): never reorder
    variant: str
    model: str
    regime: str
    size: int
    seed: int
    profile: str
    gen_metrics: bool
    cells: tuple[Cell, ...]

    @property
    def id(self) -> str:
        return f"{self.variant}|{self.regime}|{self.size}|{self.seed}|{self.profile}"

    def payload(self) -> dict[str, Any]:
        """What the queue keeps of it (``json.dumps`` of this)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_payload(cls, text: str) -> Unit:
        values = json.loads(text)
        cells = tuple(Cell(**{**c, "identity": tuple(c["identity"])}) for c in values.pop("cells"))
        return cls(**values, cells=cells)

    def cell_config(self, cell: Cell):
        return make_config(model=self.model, classifier=cell.classifier, regime=self.regime, size=self.size,
                           seed=self.seed, profile=self.profile, overrides=cell.overrides,
                           gen_metrics=self.gen_metrics)


def sizes_of(spec: GridSpec, variant: Variant, regime: str) -> list[int]:
    """A variant's sizes on ``regime``: ``sizes_for`` its name, else its model, else the grid's."""
    sizes = spec.sizes_for.get(variant.name, spec.sizes_for.get(variant.model, spec.sizes))
    return sizes.get(regime, spec.sizes) if isinstance(sizes, dict) else sizes


def plan(spec: GridSpec, storage_url: str, *, studies: TunedStudies | None = None) -> list[Unit]:
    """Every unit with its cells, each cell validated into a config (bad values fail here, before any run);
    ``studies.waiting`` then names the templated studies whose tuned cells are not planned yet."""
    studies = studies or TunedStudies(storage_url)
    fixed = split_fixed(spec.fixed)
    units = []
    for v, regime, size, seed, settings in _expand(spec, studies):
        cells = tuple(_plan_cell(spec, v, regime, size, seed, clf, mx, fixed)
                      for clf in spec.classifiers for mx in settings)
        if cells:  # none: a variant whose only mixes are studies not run yet (`missing: skip`)
            units.append(Unit(variant=v.name, model=v.model, regime=regime, size=size, seed=seed,
                              profile=spec.profile, gen_metrics=spec.gen_metrics, cells=cells))
    for part in spec.include:
        units += plan(load_grid(part), storage_url, studies=studies)
    seen: dict[str, int] = {}
    for i, u in enumerate(units):  # a cell planned twice (an included file repeating one) would count twice
        for c in u.cells:
            if (j := seen.setdefault(c.key, i)) != i:
                raise UserError(f"grid {spec.experiment}: {u.id} plans a cell that {units[j].id} plans "
                                "too; name each cell in one file")
    return in_order(units, spec.order)


def _expand(spec: GridSpec, studies: TunedStudies) -> Iterator[tuple[Variant, str, int, int, list[MixSetting | None]]]:
    """Every (variant, regime, size, seed) of the grid with the mix settings its cells run, after the per-variant
    ``regimes_for``, ``mixes_for`` and ``sizes_for`` (a variant's name first, then its model)."""
    mixes = _mix_settings(spec.mixes, studies)
    own_mixes = {name: _mix_settings(m, studies) for name, m in spec.mixes_for.items()}
    for v in variants(spec):
        for regime in spec.regimes_for.get(v.name, spec.regimes_for.get(v.model, spec.regimes)):
            v_mixes = own_mixes.get(v.name, own_mixes.get(v.model, mixes))
            settings = _settings_for(v.model, v_mixes, regime=regime, profile=spec.profile, studies=studies)
            for size in sizes_of(spec, v, regime):
                for seed in spec.seeds:
                    yield v, regime, size, seed, settings


def cell_overrides(v: Variant, mx: MixSetting | None, fixed: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A cell's overrides: the grid's ``fixed``, then the variant's gen.*/clf.*, then the mix setting (a study's
    gen.*/clf.* only on the model it tuned; a baseline takes no gen.* and only its own study's mix.*)."""
    overrides = {s: dict(kv) for s, kv in fixed.items()}
    own = mx is not None and mx.study_model == v.model
    clf_values = {**v.clf, **(mx.clf if own else {})}
    if clf_values:
        overrides["clf"] = {**overrides.get("clf", {}), **clf_values}
    if generators.is_baseline(v.model):
        overrides.pop("gen", None)
        overrides.pop("mix", None)
        if own and mx.mix:  # oversample's tuned ratio
            overrides["mix"] = dict(mx.mix)
    else:
        gen = {**overrides.get("gen", {}), **v.gen}
        if own:
            gen.update(mx.gen)
        overrides["gen"] = gen
        overrides["mix"] = {**overrides.get("mix", {}), **mx.mix}
    return overrides


def _plan_cell(spec: GridSpec, v: Variant, regime: str, size: int, seed: int, clf: str, mx: MixSetting | None,
               fixed: dict[str, dict[str, Any]]) -> Cell:
    overrides = cell_overrides(v, mx, fixed)
    cfg = make_config(model=v.model, classifier=clf, regime=regime, size=size, seed=seed, profile=spec.profile,
                      overrides=overrides, gen_metrics=spec.gen_metrics)
    tags = dict(mx.tags) if mx and mx.study_model == v.model else {}  # tuned only by its own study
    return Cell(classifier=clf, overrides=overrides, key=config_key(cfg), mix_label=mx.label if mx else "real only",
                tags=tags, identity=supersede.config_identity(cfg, variant=v.name,
                                                              tuned_study=tags.get(TAG_TUNED_STUDY, "")))


# ---------------------------------------------------------------- store look-ups
def _finished_runs(tracker, experiment_id: str) -> dict[str, Any]:
    """config_key -> every FINISHED cell run in the grid's experiment."""
    runs = tracker.finished_runs(KIND_EXPERIMENT, experiment_ids=[experiment_id])
    return {r.data.tags.get(TAG_CONFIG_KEY, ""): r for r in runs}


def _finished_keys(tracker, experiment_id: str) -> dict[str, float]:
    """config_key -> duration (s) of every FINISHED cell run in the grid's experiment."""
    return {key: _seconds(r) for key, r in _finished_runs(tracker, experiment_id).items()}


def _seconds(run) -> float:
    return ((run.info.end_time or 0) - (run.info.start_time or 0)) / 1000


@dataclass
class GridStatus:
    cells: int
    done: int
    units_left: int


def status(spec: GridSpec, units: list[Unit], tracker) -> GridStatus:
    done_keys = _finished_keys(tracker, tracker.experiment_id(spec.experiment))
    cells = done = left = 0
    for u in units:
        missing = [c for c in u.cells if c.key not in done_keys]
        cells += len(u.cells)
        done += len(u.cells) - len(missing)
        left += bool(missing)
    return GridStatus(cells=cells, done=done, units_left=left)


def superseded(spec: GridSpec, units: list[Unit], tracker, *, mark: bool) -> supersede.Sweep:
    """The older runs of re-run cells in the grid's experiment (supersede.py); ``mark`` tags those whose cell's
    current run is FINISHED."""
    runs = tracker.finished_runs(KIND_EXPERIMENT, experiment_ids=[tracker.experiment_id(spec.experiment)])
    found = supersede.sweep(((c.identity, c.key) for u in units for c in u.cells), runs)
    if mark:
        supersede.apply(tracker, found.marks)
    return found


def calibration_units(spec: GridSpec, storage_url: str, *, size: int = cost.CALIBRATION_SIZE) -> list[Unit]:
    """The units ``cost.calibrate`` times: one small cell per family and classifier recipe of the grid (its first
    variant, every classifier and mix; balanced, seed 0, ``size`` images)."""
    first: dict[tuple[str, str], Variant] = {}
    for v in variants(spec):  # the seed recipe is another network: a cell of its own
        first.setdefault((v.model, v.clf.get("recipe", "fair")), v)
    small = build(GridSpec, as_dict(spec) | {
        "models": [{"model": v.model, "name": v.name, "gen": v.gen, "clf": v.clf} for v in first.values()],
        "regimes": ["balanced"], "sizes": [size], "sizes_for": {}, "mixes_for": {}, "regimes_for": {},
        "include": [], "order": [], "seeds": [0],
        "experiment": "calibration"})
    return plan(small, storage_url)  # the storage only to read studies' best mixes (from_study)


# ---------------------------------------------------------------- the dry run
def dry_run(spec: GridSpec, storage_url: str, *, workers: int, tracker, say) -> None:
    """``grid --dry-run``: cells done and to run, tuned cells waiting, runs to supersede, and the rest's cost."""
    studies = TunedStudies(storage_url)
    units = plan(spec, storage_url, studies=studies)
    st = status(spec, units, tracker)
    profiles = ", ".join(dict.fromkeys([spec.profile] + [u.profile for u in units]))
    say(f"grid {spec.experiment} ({profiles}): {st.cells} cells in {len(units)} units; {st.done} done, "
        f"{st.cells - st.done} to run ({st.units_left} units)")
    if studies.waiting:
        say(waiting_line(studies.waiting))
    old = superseded(spec, units, tracker, mark=False)
    if old.marks or old.pending or old.already:
        say(f"{len(old.marks) + old.pending} older runs of re-run cells will be marked superseded "
            f"({len(old.marks)} when the grid starts, {old.pending} as their cells finish); "
            f"{old.already} are marked superseded")
    if old.reverted:
        say(f"{old.reverted} cells' runs under the planned config are themselves marked superseded (a "
            "change reverted?): their newer runs are left unmarked; re-run those cells or re-tag by hand")
    for line in cost.report_lines(cost.estimate_grid(units, tracker, experiment=spec.experiment),
                                  workers=workers):
        say(line)


# ---------------------------------------------------------------- running
def prepare(spec: GridSpec, units: list[Unit], *, storage_url: str, tracker):
    """Create/resume the grid's study and parent run; enqueue every unit that still has missing cells."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with queue.budget_lock(storage_url):  # the same grid started on several machines at once: one study, one parent
        study = queue.create_study(f"grid-{spec.experiment}", storage_url)
        # a grid keeps its parent on a resume even when `mlflow run` opened a new run for it (a study moves)
        parent, _ = queue.open_parent_run(study, tracker, experiment=spec.experiment, name=f"grid {spec.experiment}",
                                          kind=KIND_GRID, storage_url=storage_url, tags={"profile": spec.profile},
                                          follow_env_run=False)
        queue.recover_stale_trials(study, tracker)
        done_keys = _finished_keys(tracker, tracker.experiment_id(spec.experiment))
        running = {t.user_attrs.get("unit_id") for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        want = [(u.id, json.dumps(u.payload())) for u in units
                if u.id not in running and any(c.key not in done_keys for c in u.cells)]
        # the queue is first in, first out: units left waiting that are not the head of the plan's list are
        # withdrawn and the whole list queued afresh, in the plan's order
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if [(t.user_attrs.get("unit_id"), t.user_attrs.get("unit")) for t in waiting] != want[:len(waiting)]:
            queue.withdraw(study, waiting, reason=f"re-queued in the order of the plan ({len(want)} units)")
            waiting = []
        for uid, payload in want[len(waiting):]:
            study.enqueue_trial({}, user_attrs={"unit": payload, "unit_id": uid}, skip_if_exists=False)
    return study, parent


class TimeUp(KeyboardInterrupt):
    """The grid's time limit passed while a unit ran: raised in the running cell, which ends KILLED as on Ctrl-C."""


@contextlib.contextmanager
def _cut_at(deadline: float | None) -> Iterator[None]:
    """Raise TimeUp in this (main) thread at ``deadline`` (time.time()) while the block runs."""
    if deadline is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def cut(signum, frame):
        raise TimeUp

    before = signal.signal(signal.SIGALRM, cut)
    signal.setitimer(signal.ITIMER_REAL, max(deadline - time.time(), 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


@dataclass
class WorkCounts:
    """What one worker did: cells run, skipped (done already) and failed, and units cut at the time limit."""

    ran: int = 0
    skipped: int = 0
    failed: int = 0
    cut: int = 0


def work(name: str, storage_url: str, *, experiment: str, progress=None,
         deadline: float | None = None) -> WorkCounts:
    """Pull units until the queue is empty, or until ``deadline`` (time.time()): then no unit starts and the one
    running is cut, its unfinished cells left to the next grid."""
    from optuna.trial import TrialState

    from .tracking import Tracker

    study = queue.load_study(name, storage_url, what="grid study")
    tracker = Tracker()
    parent = queue.parent_run_id(study)
    exp_id = tracker.experiment_id(experiment)
    counts = WorkCounts()
    for trial in queue.next_trials(study, storage_url, tracker, until=deadline):  # only the enqueued units
        if "unit" not in trial.user_attrs:  # another machine took the last unit between check and ask
            study.tell(trial, state=TrialState.FAIL)
            continue
        unit = Unit.from_payload(trial.user_attrs["unit"])
        failures = []
        try:
            with queue.Heartbeat(trial), _cut_at(deadline):
                _run_unit(unit, trial=trial, tracker=tracker, parent=parent, experiment=experiment,
                          done_keys=_finished_keys(tracker, exp_id), counts=counts, failures=failures,
                          progress=progress)
        except TimeUp:  # its finished cells stay; the rest wait in the queue (as on Ctrl-C) for the next grid
            queue.interrupted(study, trial, reason="cut at the grid's time limit")
            counts.cut += 1
            break
        except KeyboardInterrupt:  # the cell's run ended KILLED; the unit fails and waits for a resume
            queue.interrupted(study, trial)
            raise
        if failures:
            trial.set_user_attr("fail_reason", "; ".join(failures)[:2000])
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, float(len(unit.cells)))
    return counts


def _run_unit(unit: Unit, *, trial, tracker, parent: str, experiment: str, done_keys, counts: WorkCounts,
              failures: list[str], progress) -> None:
    for cell in unit.cells:
        if cell.key in done_keys:
            counts.skipped += 1
            if progress:
                progress(1)
            continue
        try:
            _run_cell(unit, cell, trial=trial, tracker=tracker, parent=parent, experiment=experiment)
            counts.ran += 1
        except ResourceError:  # the disk or a store is gone: stop here; the unit is retried on resume
            raise
        except Exception as err:  # recorded as a FAILED run with the reason; the grid goes on
            failures.append(f"{cell.classifier}/{cell.mix_label}: {type(err).__name__}: {err}")
            counts.failed += 1
            print(f"cell {unit.id} {failures[-1]}", file=sys.stderr)
        if progress:
            progress(1)


def _run_cell(unit: Unit, cell: Cell, *, trial, tracker, parent: str, experiment: str) -> None:
    from .pipeline import run_experiment

    run_experiment(unit.cell_config(cell), tracker=tracker, experiment=experiment, parent_run_id=parent,
                   use_env_run=False, progress=False,
                   on_start=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id),
                   extra_tags={TAG_VARIANT: unit.variant, "grid": f"grid-{experiment}",
                               "optuna.trial_number": trial.number, **cell.tags})
    try:  # the cell's older runs (another config_key) are superseded by this one, now that it is FINISHED
        runs = tracker.finished_cell_runs(tracker.experiment_id(experiment), regime=unit.regime, size=unit.size,
                                          seed=unit.seed)
        found = supersede.sweep([(cell.identity, cell.key)], runs, protected={c.key for c in unit.cells})
        supersede.apply(tracker, found.marks)
    except Exception as err:  # the cell itself is done; the next grid's sweep marks what this missed
        print(f"warning: cell {unit.id} could not mark its older runs superseded ({type(err).__name__}: "
              f"{err}); the next `synthboost grid` will", file=sys.stderr)


def default_workers() -> int:
    """``grid --workers``'s default: 1, or one per core on a CUDA host, where each cell waits on the host's Python,
    not on the GPU (docs/performance.md)."""
    import os

    import torch

    return len(os.sched_getaffinity(0)) if torch.cuda.is_available() else 1


@dataclass(frozen=True)
class GridOutcome:
    """What ``run_grid`` did, counted in cells."""

    experiment: str
    study: str  # the grid's Optuna study: its work queue
    parent_run_id: str
    cells: int
    done_before: int
    done: int
    timed_out: bool
    time_limit: float | None
    marked_superseded: int  # older runs of re-run cells marked in this sitting
    waiting_studies: list[str]  # templated studies not run yet: their tuned cells are not planned

    @property
    def ran_now(self) -> int:
        return self.done - self.done_before

    @property
    def missing(self) -> int:
        return self.cells - self.done

    def summary_lines(self) -> list[str]:
        lines = []
        if self.timed_out:
            lines.append(f"time limit ({self.time_limit:g} s) reached: no unit started after it, the units running "
                         "were cut (their unfinished cells re-run next time)")
        lines.append(f"grid {self.experiment}: {self.ran_now} cells run now, {self.done_before} were already done, "
                     f"{self.missing} missing of {self.cells}; parent run {self.parent_run_id} "
                     f"(Optuna study {self.study})" + ("; re-run the same command to finish" if self.missing else ""))
        if self.waiting_studies:
            lines.append(waiting_line(self.waiting_studies))
        if self.marked_superseded:
            lines.append(f"{self.marked_superseded} older runs of re-run cells marked superseded (tag "
                         f"{TAG_SUPERSEDED_BY}); the report leaves them out")
        return lines


def run_grid(spec: GridSpec, *, storage_url: str, workers: int = 1, show_progress: bool = True,
             time_limit: float | None = None) -> GridOutcome:
    """Run the grid's missing cells; with ``time_limit`` (seconds from now) no unit starts after it and the units
    running then are cut (their cells re-run by the next grid), so a sitting ends on time."""
    from tqdm.auto import tqdm

    from .tracking import Tracker

    deadline = None if time_limit is None else time.time() + time_limit
    tracker = Tracker()
    studies = TunedStudies(storage_url)
    units = plan(spec, storage_url, studies=studies)
    check_tuning_draws(spec, studies)
    first = superseded(spec, units, tracker, mark=True)
    before = status(spec, units, tracker)
    study, parent = prepare(spec, units, storage_url=storage_url, tracker=tracker)
    name = study.study_name
    remaining = before.cells - before.done
    try:
        with tqdm(total=remaining, desc="cells", disable=None if show_progress else True) as bar:
            if workers <= 1:
                work(name, storage_url, experiment=spec.experiment, progress=bar.update, deadline=deadline)
            else:
                exp = tracker.experiment_id(spec.experiment)
                keys = {c.key for u in units for c in u.cells}
                seen = before.done

                def show_finished() -> None:
                    nonlocal seen
                    now = len(set(_finished_keys(tracker, exp)) & keys)
                    bar.update(max(0, now - seen))
                    seen = max(seen, now)

                limit = ["--deadline", repr(deadline)] if deadline is not None else []
                codes = queue.run_workers("grid-worker", workers, name=name, storage_url=storage_url,
                                          args=lambda i: ["--experiment", spec.experiment, *limit],
                                          while_waiting=show_finished)
                if any(codes):
                    print(f"warning: worker exit codes {codes}; re-run to resume", file=sys.stderr)
            # the same grid on other machines: wait for their units (taking over any whose worker died), but not
            # past the time limit
            if deadline is None or time.time() < deadline:
                queue.wait_for_others(study, storage_url, tracker, lambda: work(
                    name, storage_url, experiment=spec.experiment, progress=bar.update, deadline=deadline))
    except KeyboardInterrupt:
        queue.park_parent(study, tracker)
        raise
    after = status(spec, units, tracker)
    timed_out = deadline is not None and time.time() >= deadline and after.done < after.cells
    last = superseded(spec, units, tracker, mark=True)  # what a cell could not mark as it finished (see _run_cell)
    marked = last.already + len(last.marks) - first.already
    if after.done == after.cells:
        tracker.close_run(parent, "FINISHED")
    else:
        tracker.close_run(parent, "FAILED", error=f"{after.cells - after.done} cells missing"
                          + (f" at the time limit ({time_limit:g} s)" if timed_out else "") + "; re-run to resume")
    return GridOutcome(experiment=spec.experiment, study=name, parent_run_id=parent, cells=after.cells,
                       done_before=before.done, done=after.done, timed_out=timed_out, time_limit=time_limit,
                       marked_superseded=marked, waiting_studies=sorted(studies.waiting))


def check_tuning_draws(spec: GridSpec, studies: TunedStudies) -> None:
    """A tuned cell must not be re-run on a draw its study tuned on: that seed would score the choice on the very
    images it was chosen for (a ``UserError`` naming the studies and seeds otherwise)."""
    overlap = {name: sorted(set(best.seeds) & set(spec.seeds)) for name, best in studies.found().items()
               if set(best.seeds) & set(spec.seeds)}
    if overlap:
        which = "; ".join(f"{name} tuned on seed(s) {seeds}" for name, seeds in sorted(overlap.items()))
        raise UserError(f"grid {spec.experiment}: its seeds {spec.seeds} include the draws its studies tuned on "
                        f"({which}); re-run those studies on other seeds (the default: {list(TUNING_SEEDS)}) "
                        "under a new name, or drop those seeds from the grid")


def waiting_line(names) -> str:
    """What a templated from_study with ``missing: skip`` left out, and how to add it."""
    names = sorted(names)
    shown = ", ".join(names[:6]) + (f", … ({len(names)} in all)" if len(names) > 6 else "")
    return (f"tuned cells wait for {len(names)} studies not run yet ({shown}); run them (`synthboost study --model "
            "M --regime R`), then the same grid command adds their cells")
