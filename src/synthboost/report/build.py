"""The whole report: query the store, tidy, analyse, check the claims, draw, write the files, log them as a run.

Every step is one call into the module that owns it, timed in ``ReportResult.seconds``.
"""

from __future__ import annotations

import dataclasses
import datetime
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import tracking
from ..errors import UserError
from ..timing import timed
from . import render
from . import costs
from .claims import Claim, goal, seed
from .convergence import convergence
from .coverage import Coverage, load_plan, plan_coverage
from .exchange import Exchange, exchange_rates
from .figures import draw, sample_grids
from .frame import check_recipes, select_current, select_models, select_runs, split_external, split_unlabeled, tidy
from .stats import Analysis, analyse_apart, analyse_unlabeled, check_baselines

REPORTS_EXPERIMENT = "synthboost-reports"


@dataclass
class ReportResult:
    out_dir: Path
    files: dict[str, Path]
    tables: dict[str, pd.DataFrame]
    claims: list[Claim]
    figures: dict[str, bytes]  # name -> PNG
    experiments: list[str]
    n_runs: int
    run_id: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    analysis: Analysis | None = None  # the statistics behind the tables
    exchange: Exchange | None = None  # what one synthetic image is worth (exchange.py)
    coverage: Coverage | None = None  # the plan's cells the store holds and lacks (coverage.py)


def protocol_claims(analysis: Analysis) -> list[Claim]:
    """The seed study's claims; with several protocols in the store, judged on each apart, side by side.  Then
    the science goal (claims/goal.py), judged on the fair protocol's runs: tuned mixes exist only there."""
    protocols = analysis.protocols()
    fair = analysis.of_protocol("fair") if len(protocols) > 1 and "fair" in protocols else analysis
    if len(protocols) <= 1:
        return seed.claims(analysis) + goal.claims(fair)
    return [dataclasses.replace(c, key=f"{c.key} {p}", statement=f"{c.statement} [{p} protocol]")
            for p in protocols for c in seed.claims(analysis.of_protocol(p))] + goal.claims(fair)


def build_report(*, experiments: list[str] | None, out_dir: Path, formats: set[str], tracker,
                 log_to_mlflow: bool = True, include_studies: bool = False, include_superseded: bool = False,
                 models: list[str] | None = None, plan: Path | None = None,
                 storage_url: str | None = None) -> ReportResult:
    """Query the store, compare, write ``out_dir`` (report.md / report.html / CSVs) and log it as an MLflow run.

    ``experiments=None`` reads every experiment holding experiment runs (or the ``plan``'s, when one is given)."""
    render.check_formats(formats)
    spec = load_plan(plan, experiments) if plan is not None else None  # a bad plan fails before the store is read
    if spec is not None and experiments is None:
        experiments = [spec.experiment]
    seconds: dict[str, float] = {}
    with timed(seconds, "query"):
        frame = tracking.runs_frame(tracker, experiments)
        unfinished = tracking.unfinished_runs(tracker, experiments)
    if frame.empty:
        where = f"experiment(s) {', '.join(map(repr, experiments))}" if experiments else tracker.uri
        raise UserError(f"no finished experiment runs in {where}; record some with `synthboost run` first")

    with timed(seconds, "tables"):
        runs = tidy(frame)
        if runs.empty:
            raise UserError("the selected runs carry no test metrics (were they written by `synthboost run`?)")
        runs, left_out = select_current(select_runs(runs, include_studies=include_studies),
                                        include_superseded=include_superseded)
        runs = select_models(runs, models)
        check_recipes(runs)
        runs, external = split_external(runs)
        runs, pooled = split_unlabeled(runs)  # ssvae and its pool baseline: paired apart
        analysis = analyse_apart(runs, external)
        analysis.unlabeled = analyse_unlabeled(pooled)
        check_baselines(analysis)
        current = analysis.current()  # a superseded cell (--include-superseded) is shown, never claimed
        claim_list = protocol_claims(current)
        analysis.convergence = convergence(current.runs)
        rates = exchange_rates(current.runs)
        coverage = plan_coverage(frame, spec, name=Path(plan).name, storage_url=storage_url) if spec else None

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = sorted(runs["experiment"].unique())
    meta = {"experiments": names, "n_runs": len(runs), "n_cells": len(analysis.results),
            "study_trials": int((runs["study"] != "").sum()), "external_runs": len(external),
            "unlabeled_runs": len(pooled),
            "superseded_left_out": left_out, "superseded_included": int((runs["superseded"] != "").sum()),
            "store": store_label(tracker.uri), "when": datetime.datetime.now().isoformat(timespec="seconds"),
            "unfinished": unfinished}
    figures: dict[str, bytes] = {}
    if formats & {"md", "html"}:  # CSV alone needs no figures
        with tempfile.TemporaryDirectory() as tmp:
            with timed(seconds, "grids"):
                grids = sample_grids(tracker, runs, Path(tmp))
            with timed(seconds, "plots"):
                figures = draw(analysis, grids, exchange=rates)

    with timed(seconds, "write"):
        tables = render.csv_tables(analysis, claim_list, exchange=rates, costs=costs.cost_table(runs))
        if coverage is not None:
            tables["missing_cells.csv"] = coverage.missing
        files = render.write(out_dir, formats, analysis=analysis, claim_list=claim_list, figures=figures, meta=meta,
                             tables=tables, exchange=rates, coverage=coverage)

    run_id = None
    if log_to_mlflow:
        with timed(seconds, "log"):
            run_id = log_report(tracker, files, meta=meta, claim_list=claim_list)
    return ReportResult(out_dir=out_dir, files=files, tables={k.removesuffix(".csv"): v for k, v in tables.items()},
                        claims=claim_list, figures=figures, experiments=names, n_runs=len(runs), run_id=run_id,
                        seconds=seconds, analysis=analysis, exchange=rates, coverage=coverage)


def store_label(uri: str) -> str:
    """How a report names its store: no absolute path of this machine (project-relative or file name), no password."""
    if uri.startswith("sqlite:///"):
        prefix, path = "sqlite:///", uri[len("sqlite:///"):]
        if not path or path.startswith(":memory:"):
            return uri
    elif uri.startswith("file:"):
        prefix, path = "file:", urllib.parse.unquote(urllib.parse.urlsplit(uri).path)
    elif "://" not in uri:
        prefix, path = "", uri
    else:
        return tracking.redact(uri)
    resolved = Path(path).resolve()
    try:
        return prefix + resolved.relative_to(tracking.project_root()).as_posix()
    except ValueError:
        return prefix + "…/" + resolved.name


def log_report(tracker, files: dict[str, Path], *, meta: dict, claim_list: list[Claim]) -> str:
    """The report as an MLflow run (tag ``synthboost.kind = report``; under ``mlflow run``, the run it opened)."""
    name = f"report: {', '.join(meta['experiments'])} ({meta['n_runs']} runs)"[:250]
    tags = {tracking.TAG_KIND: tracking.KIND_REPORT, "report.experiments": ",".join(meta["experiments"]),
            "report.runs": meta["n_runs"], "report.study_trials": meta.get("study_trials", 0),
            "report.superseded_left_out": meta.get("superseded_left_out", 0),
            "git_commit": tracking.git_commit()}
    tags |= {f"claim.{c.key}": c.verdict for c in claim_list}
    with tracker.run(experiment=REPORTS_EXPERIMENT, name=name, tags=tags) as run:
        run.log_metrics({"report/runs": meta["n_runs"], "report/cells": meta["n_cells"]})
        for rel, path in files.items():
            folder = rel.rpartition("/")[0]
            run.log_file(path, folder or None)
    return run.id
