"""The demo (``synthboost demo``, ``make demo``): does a generator's synthetic data help on real Fashion-MNIST?

Generator-quality metrics are left out unless asked for: their extractor's one-off training takes longer than the
whole demo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import cell, pipeline
from .report import ReportResult, build_report
from .report.render import display_gains, display_results
from .stages import StageFn, silent

#: the demo's cell: the regime where synthetic data has the most to give, at a size a CPU trains in seconds
DEMO_CELL = {"regime": "high", "size": 1000, "seed": 0}
#: (model, mix) of each run; the baseline first, so the report pairs the generator run with it
DEMO_RUNS = (("none", {}), ("vae", {"mix_ratio": 1.0, "mix_strategy": "balance"}))
#: the demo shows the tool, not the verdict: it trains the profile's epochs without the step floor (520 steps on this
#: cell, not 1,040), which keeps it under two minutes on a 2-core CPU; both runs still train the same steps
DEMO_OVERRIDES = {"clf": {"min_steps": 0}}


@dataclass
class DemoResult:
    runs: list[pipeline.RunResult]
    report: ReportResult

    def tables(self) -> dict[str, pd.DataFrame]:
        """The report's results and gains tables, as the report shows them (test set, %, pp)."""
        return {"results": display_results(self.report.analysis), "gains": display_gains(self.report.analysis)}


def run_demo(*, tracker, out_dir: Path, profile: str = "quick", experiment: str = "demo", gen_metrics: bool = False,
             progress: bool = False, stage: StageFn = silent) -> DemoResult:
    """The demo's runs and report; every config is validated before the first run opens."""
    configs = [cell.make_config(model=model, profile=profile, gen_metrics=gen_metrics, overrides=DEMO_OVERRIDES,
                                **DEMO_CELL, **mix)
               for model, mix in DEMO_RUNS]
    runs = []
    for i, cfg in enumerate(configs, 1):
        stage(f"run {i}/{len(configs)}", cell.run_name(cfg) + f" ({cfg.profile} profile)")
        runs.append(pipeline.run_experiment(cfg, tracker=tracker, experiment=experiment, use_env_run=False,
                                            progress=progress, stage=stage))
    stage("report", f"results and gains over the real-only baseline, from experiment {experiment!r} "
                    f"(every run in it) into {out_dir}")
    report = build_report(experiments=[experiment], out_dir=out_dir, formats={"md", "csv"}, tracker=tracker)
    return DemoResult(runs=runs, report=report)
