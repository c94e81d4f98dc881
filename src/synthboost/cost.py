"""What the rest of a grid costs on this machine: per part of a cell, a rate (seconds per unit of work) times its work.

A family's rate comes from its own runs on this CPU and thread count, else its calibration here (``grid
--calibrate``), else it is unknown — never borrowed from another family, whose networks cost something else.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import work

PARTS = ("gen", "sample", "classifier", "quality")  # what a cell is priced in; "overhead" rides with the classifier
SOURCES = ("runs", "calibration", "unknown")
CALIBRATION_FILE = "calibration.json"
CALIBRATION_FORMAT = 1


@dataclass(frozen=True)
class CellWork:
    """One planned cell: who it is (family, profile, classifier, size) and the work of each of its parts."""

    family: str
    profile: str
    classifier: str
    size: int
    group: int  # the grid unit (one worker's job) it belongs to
    gen_key: str | None = None  # cells with the same key share one generator
    gen_images: float = 0.0  # work of training that generator (counted once per key)
    sampled: float = 0.0  # synthetic images drawn for the cell (the sample grid is added once per key)
    pool_key: str | None = None  # cells with the same key share one draw (sample_cache): it is priced once
    classifier_work: float = 0.0
    quality: bool = False
    precision: str = "fp32"  # what its classifier trains in here (clf.amp resolved); priced from runs in it
    recipe: str = "fair"  # clf.recipe: the seed recipe is another network, priced from its own runs
    key: str = ""  # the cell's config key (the grid's), to name its own estimate

    @property
    def rate_key(self) -> str:
        return f"{self.family}|{self.profile}|{self.classifier}"


GRID_SAMPLES = 100  # the 10×10 sample grid every generator run draws once


# ---------------------------------------------------------------- rates from runs
@dataclass(frozen=True)
class Record:
    """The timings of one finished cell (from the store, or from a calibration)."""

    family: str
    profile: str
    classifier: str
    size: int
    time: dict[str, float]
    work: dict[str, float]
    cpu: str = ""
    threads: int = 0
    precision: str = "fp32"  # the run's clf.precision (runs from before it computed in fp32)
    recipe: str = "fair"  # the run's clf.recipe (runs from before it had one: fair)

    @property
    def rate_key(self) -> str:
        return f"{self.family}|{self.profile}|{self.classifier}"

    def rate(self, part: str) -> float | None:
        """Seconds per unit of work of ``part`` (per cell for quality and the cell's fixed costs)."""
        t, w = self.time, self.work
        if part == "gen":
            return t["gen"] / w["gen_images"] if w.get("gen_images") and "gen" in t else None
        if part == "sample":
            return t["sample"] / w["sampled"] if w.get("sampled") and "sample" in t else None
        if part == "classifier":
            return t["classifier"] / w["classifier"] if w.get("classifier") and "classifier" in t else None
        if part == "quality":
            return t.get("quality")
        if part == "overhead":  # the cell's wall time besides its parts (a reused generator's load included)
            if "cell" not in t:
                return None
            trained_gen = t.get("gen", 0.0) if w.get("gen_images") else 0.0
            sampled = t.get("sample", 0.0) if w.get("sampled") else 0.0
            return max(0.0, t["cell"] - trained_gen - sampled - t.get("classifier", 0.0) - t.get("quality", 0.0))
        raise ValueError(part)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def nearest_rate(records: Iterable[Record], part: str, size: int) -> float | None:
    """The mean rate of ``part`` over the records at the size nearest ``size`` (on a log scale) that have it."""
    have = [(r.size, x) for r in records if (x := r.rate(part)) is not None]
    if not have:
        return None
    best = min(have, key=lambda sx: (abs(math.log(sx[0] / size)), sx[0]))[0]
    xs = [x for s, x in have if s == best]
    return sum(xs) / len(xs)


# ---------------------------------------------------------------- calibration file
def calibration_path() -> Path:
    from .tracking import tracking_dir  # only the folder: tracking/ is git-ignored and machine-local

    return tracking_dir() / CALIBRATION_FILE


def load_calibration(path: Path | None = None) -> dict[str, Any]:
    path = path or calibration_path()
    if not path.is_file():
        return {"format": CALIBRATION_FORMAT, "machines": {}}
    data = json.loads(path.read_text())
    if data.get("format") != CALIBRATION_FORMAT:
        return {"format": CALIBRATION_FORMAT, "machines": {}}
    return data


MEASURED_FORMAT = "%Y-%m-%d %H:%M"


def save_calibration(records: list[Record], *, path: Path | None = None, m: dict[str, Any] | None = None,
                     cpu_share: float | None = None) -> Path:
    """Add (replace) this machine's records per family/profile/classifier, with ``cpu_share`` (CPU time / wall
    time: far below 1 on a busy machine, whose wall times are inflated); other machines' stay."""
    path = path or calibration_path()
    m = m or work.machine()
    data = load_calibration(path)
    entry = data["machines"].setdefault(work.machine_key(m), {"cpu": m["cpu"], "threads": m["threads"], "records": {}})
    fresh: dict[str, list] = {}
    for r in records:
        fresh.setdefault(r.rate_key, []).append(r.to_json())
    entry["records"].update(fresh)
    entry["measured"] = time.strftime(MEASURED_FORMAT)
    if cpu_share is not None:
        entry["cpu_share"] = round(cpu_share, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True))
    return path


def calibration_share(data: dict[str, Any], m: dict[str, Any]) -> float | None:
    """The CPU share the calibration of this machine got (None when unrecorded)."""
    return data["machines"].get(work.machine_key(m), {}).get("cpu_share")


def calibration_time(data: dict[str, Any], m: dict[str, Any]) -> float | None:
    """When this machine's calibration was measured (seconds since the epoch; None when unrecorded)."""
    measured = data["machines"].get(work.machine_key(m), {}).get("measured")
    return time.mktime(time.strptime(measured, MEASURED_FORMAT)) if measured else None  # written in local time


def calibration_records(data: dict[str, Any], m: dict[str, Any]) -> tuple[list[Record], list[str]]:
    """This machine's calibrated records, and the keys of calibrations made elsewhere (which are not used)."""
    mine = data["machines"].get(work.machine_key(m))
    others = [k for k in data["machines"] if k != work.machine_key(m)]
    if mine is None:
        return [], others
    return [Record(**r) for rs in mine["records"].values() for r in rs], others


CALIBRATION_SIZE = 300  # small enough that every family's cell takes seconds to a minute in quick


def calibrate(units, *, profile: str, gen_metrics: bool, path: Path | None = None,
              log=None) -> tuple[Path, list[Record]]:
    """Time the planned ``units`` (``grid.calibration_units``) in a throw-away store, step floors off so a family
    costs its per-image rate, not a floor's minutes, and keep the timings as this machine's calibration."""
    import tempfile

    from . import generators
    from .cell import make_config
    from .pipeline import feature_extractor, run_experiment
    from .tracking import Tracker

    wall0, cpu0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="synthboost-calibrate-") as tmp:
        tracker = Tracker(f"sqlite:///{tmp}/mlflow.db")
        # what a worker pays once, not per cell: the data, the store, torch's first kernels, the metrics' extractor
        warm = make_config(model="none", size=CALIBRATION_SIZE, profile=profile, overrides={"clf": {"steps": 5}})
        run_experiment(warm, tracker=tracker, experiment="warm-up", use_env_run=False, progress=False)
        if gen_metrics:
            feature_extractor(tracker, profile=profile)
        for u in units:
            floors = {k: 0 for k in ("min_steps", "min_g_steps")
                      if not generators.is_baseline(u.model)
                      and k in {f.name for f in dataclasses.fields(generators.get(u.model).Config)}}
            for c in u.cells:
                if floors:
                    c = dataclasses.replace(c, overrides={**c.overrides, "gen": {**c.overrides.get("gen", {}),
                                                                                 **floors}})
                if log:
                    log(f"calibrating {u.variant} ({c.classifier}, {c.mix_label})")
                run_experiment(u.cell_config(c), tracker=tracker, experiment="calibration", use_env_run=False,
                               progress=False)
        records = [Record(**r) for r in tracker.timings(experiments=["calibration"])]
    share = (time.process_time() - cpu0) / max(1e-9, time.perf_counter() - wall0)
    return save_calibration(records, path=path, cpu_share=share), records


# ---------------------------------------------------------------- the estimate
@dataclass
class FamilyEstimate:
    family: str
    cells: int = 0
    parts: int = 0  # what it is priced in: a generator's training, a draw, a classifier, quality metrics
    unknown: int = 0
    seconds: float = 0.0
    sources: set[str] = field(default_factory=set)

    @property
    def source(self) -> str:
        known = [s for s in SOURCES[:2] if s in self.sources]
        if not known:
            return "unknown"
        return "+".join(known) + (f" ({self.unknown} parts unknown)" if self.unknown else "")


@dataclass
class Estimate:
    families: dict[str, FamilyEstimate]
    group_seconds: dict[int, float]
    machine: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    #: each cell's own estimate by its key (the generator's training and a shared draw on the first cell of
    #: their key in the order given); None when a part of it is unknown
    cell_seconds: dict[str, float | None] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return sum(f.seconds for f in self.families.values())

    @property
    def parts(self) -> int:
        return sum(f.parts for f in self.families.values())

    @property
    def unknown(self) -> int:
        return sum(f.unknown for f in self.families.values())

    def wall_seconds(self, workers: int) -> float:
        """The known work spread over ``workers`` one-thread processes, each taking the next grid unit (a
        generator and its cells) as it frees up; the longest first (LPT), as a queue of many units nearly does."""
        loads = [0.0] * max(1, workers)
        for s in sorted(self.group_seconds.values(), reverse=True):
            heapq.heapreplace(loads, loads[0] + s)
        return max(loads)


#: the parts whose rate depends on the classifier's precision and recipe (the overhead includes its evaluation)
PRECISION_PARTS = ("classifier", "overhead")


def estimate(cells: list[CellWork], *, records: list[Record], calibration: list[Record],
             m: dict[str, Any] | None = None, trained_keys: set[str] = frozenset(),
             drawn_keys: set[str] = frozenset()) -> Estimate:
    """Each cell's parts priced from its own family's runs (``records``: those of this machine), else from its
    family's ``calibration``, else counted unknown.  A generator key and a pool key are priced once; keys in
    ``trained_keys`` (already trained) and ``drawn_keys`` (already drawn) cost nothing."""
    m = m or work.machine()
    by_key: dict[str, list[Record]] = {}
    cal_by_key: dict[str, list[Record]] = {}
    for r in records:
        by_key.setdefault(r.rate_key, []).append(r)
    for r in calibration:
        cal_by_key.setdefault(r.rate_key, []).append(r)

    @functools.cache
    def rate(key: str, part: str, size: int, precision: str, recipe: str) -> tuple[float | None, str]:
        for source, table in (("runs", by_key), ("calibration", cal_by_key)):
            recs = table.get(key, [])
            if part in PRECISION_PARTS:  # a bf16 classifier step is not priced from fp32 ones (1.6x apart here),
                # nor a step of the seed recipe's small CNN from the fair one's (0.075 vs 0.097 s here)
                recs = [r for r in recs if r.precision == precision and r.recipe == recipe]
            x = nearest_rate(recs, part, size)
            if x is not None:
                return x, source
        return None, "unknown"

    families: dict[str, FamilyEstimate] = {}
    groups: dict[int, float] = {}
    per_cell: dict[str, float | None] = {}
    seen_gen: set[str] = set(trained_keys)
    seen_pool: set[str] = set(drawn_keys)
    for c in cells:
        fam = families.setdefault(c.family, FamilyEstimate(c.family))
        fam.cells += 1
        parts: list[tuple[str, float]] = [("classifier", c.classifier_work)]
        drawn = c.pool_key is not None and c.pool_key in seen_pool
        if c.pool_key is not None:
            seen_pool.add(c.pool_key)
        if c.gen_key is not None and c.gen_key not in seen_gen:
            seen_gen.add(c.gen_key)
            parts.append(("gen", c.gen_images))
            parts.append(("sample", (0.0 if drawn else c.sampled) + GRID_SAMPLES))
        elif c.sampled and not drawn:
            parts.append(("sample", c.sampled))
        if c.quality:
            parts.append(("quality", 1.0))
        total: float | None = 0.0  # the cell's own: None once a part of it is unknown
        for part, amount in parts:
            fam.parts += 1
            x, source = rate(c.rate_key, part, c.size, c.precision, c.recipe)
            if part == "classifier" and x is not None:  # a cell's fixed costs come with its classifier part
                over, _ = rate(c.rate_key, "overhead", c.size, c.precision, c.recipe)
                x = None if over is None else x
                seconds = None if x is None else x * amount + over
            else:
                seconds = None if x is None else x * amount
            if seconds is None:
                fam.unknown += 1
                fam.sources.add("unknown")
                total = None
                continue
            fam.sources.add(source)
            fam.seconds += seconds
            groups[c.group] = groups.get(c.group, 0.0) + seconds
            total = None if total is None else total + seconds
        per_cell[c.key] = total
    return Estimate(families=families, group_seconds=groups, machine=m, cell_seconds=per_cell)


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def report_lines(est: Estimate, *, workers: int) -> list[str]:
    """The dry-run's table: per family its cells, parts, estimate and the estimate's source; then the totals."""
    lines = [f"{'family':<12} {'cells':>6} {'parts':>6} {'estimate':>10}  source"]
    for f in est.families.values():
        shown = "—" if f.unknown == f.parts else format_duration(f.seconds)
        lines.append(f"{f.family:<12} {f.cells:>6} {f.parts:>6} {shown:>10}  {f.source}")
    known = "" if not est.unknown else "at least "
    lines.append(f"total: {known}{est.seconds / 3600:.1f} core-hours; wall time {known}"
                 f"{format_duration(est.wall_seconds(workers))} with {workers} worker(s) "
                 f"(one thread each; timings for {work.machine_key(est.machine)})")
    if est.unknown:
        lines.append(f"{est.unknown} of {est.parts} parts unknown (no runs of their family on this machine and no "
                     "calibration): `synthboost grid --calibrate` measures them")
    else:
        lines.append(f"0 of {est.parts} parts unknown")
    lines += est.notes
    return lines


# ---------------------------------------------------------------- a grid's missing cells, priced
def cell_work(unit, cell, *, group: int) -> CellWork:
    """The work of one planned cell (a ``grid.Unit`` and one of its cells), from its config, loading no data."""
    from . import classifiers
    from .cell import workload  # deferred: data and torch, which the CLI's start-up does not need

    cfg = unit.cell_config(cell)
    load = workload(cfg)
    clf = work.classifier_work(cfg.clf, n_budget=load.epoch_images, n_total=load.n_real + load.n_added)
    common = dict(family=cfg.model, profile=cfg.profile, classifier=cfg.classifier, size=cfg.data.size, group=group,
                  classifier_work=clf, precision=classifiers.training_precision(cfg.clf),
                  recipe=getattr(cfg.clf, "recipe", "fair"), key=cell.key)
    if cfg.gen is None:
        return CellWork(**common)
    return CellWork(**common, gen_key=load.generator_identity, pool_key=load.pool_identity,
                    gen_images=work.generator_images(cfg.gen, load.n_real), sampled=float(load.n_added),
                    quality=cfg.gen_metrics)


def estimate_grid(units, tracker, *, experiment: str, calibration: Path | None = None,
                  as_of: int | None = None) -> Estimate:
    """The missing cells' cost: each family's own runs on this machine, else its calibration, else unknown.

    ``as_of`` (ms since the epoch) replays the estimate the store gave then: only runs ended by then price, only
    cells finished by then are done, and the cells go in the order they ran since (a generator's training is on
    the cell that trained it) — to check an estimate against the cells measured after it (bench/grid_cost.py)."""
    from . import generators
    from .tracking import KIND_EXPERIMENT, TAG_CONFIG_KEY

    runs = {r.data.tags.get(TAG_CONFIG_KEY, ""): r
            for r in tracker.finished_runs(KIND_EXPERIMENT, experiment_ids=[tracker.experiment_id(experiment)])}
    done_keys = {k for k, r in runs.items() if as_of is None or (r.info.end_time or 0) < as_of}
    m = work.machine()
    records = [Record(**r) for r in tracker.timings(before=as_of)]
    mine = [r for r in records if (r.cpu, r.threads) == (m["cpu"], m["threads"])]
    cal_data = load_calibration(calibration)
    calibrated, elsewhere = calibration_records(cal_data, m)
    measured = calibration_time(cal_data, m)
    late = as_of is not None and calibrated and (measured is None or measured * 1000 > as_of)
    if late:  # a replay prices as the store stood then: a calibration made since did not exist
        calibrated = []
    cells, trained, drawn = [], set(), set()
    for group, u in enumerate(units):
        for c in u.cells:
            done = c.key in done_keys
            if done and generators.is_baseline(u.model):  # nothing of it is shared with a missing cell
                continue
            w = cell_work(u, c, group=group)
            if not done:
                cells.append(w)
            elif w.gen_key is not None:  # a finished cell: its generator is trained and its pool drawn (and kept)
                trained.add(w.gen_key)
                drawn.add(w.pool_key)
    if as_of is not None:  # cells measured since, as they ran; the others after them, in the plan's order
        cells.sort(key=lambda w: runs[w.key].info.start_time if w.key in runs else float("inf"))
    est = estimate(cells, records=mine, calibration=calibrated, m=m, trained_keys=trained, drawn_keys=drawn)
    if late:
        when = time.strftime(MEASURED_FORMAT, time.localtime(measured)) if measured else "at an unknown time"
        est.notes.append(f"this machine's calibration (measured {when}) is newer than the replayed moment: not used")
    if len(records) > len(mine):
        est.notes.append(f"{len(records) - len(mine)} timed runs from another CPU or thread count are not used")
    share = calibration_share(cal_data, m)
    if calibrated and share is not None and share < 0.8:
        est.notes.append(f"the calibration got {share:.0%} of a core (a busy machine): its figures are wall times at "
                         "that load; calibrate again when the machine is quiet for an idle-machine estimate")
    if elsewhere and not calibrated:
        est.notes.append(f"calibration(s) for {'; '.join(elsewhere)} not used: "
                         f"this machine is {work.machine_key(m)}")
    return est
