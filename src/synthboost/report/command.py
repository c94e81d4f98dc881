"""``synthboost report``: which experiments to read, the report built, and what it says on the terminal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .. import queue, tracking
from ..errors import UserError
from .build import REPORTS_EXPERIMENT, build_report
from .coverage import load_plan
from .render import parse_formats


def report_command(*, experiments: list[str] | None, out: str, formats: str, include_studies: bool,
                   include_superseded: bool, models: list[str] | None, skip_missing: bool, plan: str | None,
                   storage: str | None, say: Callable[[str], None]) -> None:
    """Build the report of ``experiments`` (None: every one; with ``plan`` alone, the plan's) into ``out`` and
    ``say`` what it found; ``skip_missing`` leaves out the named experiments the store does not hold."""
    wanted = parse_formats(formats)  # a typo fails before the store is touched
    plan_path = None
    if plan is not None:
        plan_path = Path(plan)
        if not plan_path.is_file():
            raise UserError(f"--plan {plan}: no such grid file (e.g. studies/verdict.yaml)")
        storage = storage or queue.default_storage()
    if skip_missing and plan_path and not experiments:  # what the report would read: the plan's experiment
        experiments = [load_plan(plan_path, None).experiment]
    if skip_missing and experiments:
        held = tracking.experiment_names(tracking.Tracker())
        missing = [e for e in experiments if e not in held]
        experiments = [e for e in experiments if e in held]
        if missing:
            say(f"not in the store, left out: {', '.join(missing)}")
        if not experiments:
            say(f"nothing to report; {out} left as it is")
            return
    result = build_report(experiments=experiments or None, out_dir=Path(out), formats=wanted,
                          tracker=tracking.Tracker(), include_studies=include_studies,
                          include_superseded=include_superseded, models=models or None, plan=plan_path,
                          storage_url=storage)
    say(f"report on {', '.join(result.experiments)} ({result.n_runs} runs) written to {result.out_dir}: "
        + ", ".join(sorted(result.files, key=lambda f: (f.count("/"), f))))
    for c in result.claims:
        say(f"  ({c.key}) {c.statement}: {c.verdict} ({c.evidence()})")
    if result.coverage is not None:
        cov = result.coverage
        say(f"plan {cov.plan}: {cov.finished} of {cov.planned} cells FINISHED"
            + (f", {cov.planned - cov.finished} missing (missing_cells.csv)" if cov.planned > cov.finished else ""))
    if result.run_id:
        where = "the run `mlflow run` opened" if tracking.env_run_id() else REPORTS_EXPERIMENT
        say(f"logged as MLflow run {result.run_id} ({where}; tag {tracking.TAG_KIND} = {tracking.KIND_REPORT}); "
            "open it with `synthboost ui`")
