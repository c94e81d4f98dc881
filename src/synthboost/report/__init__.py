"""Read the tracking store back and compare models: tables, plots, claims, Markdown/HTML/CSV.

Everything comes from one ``search_runs`` query (``tracking.runs_frame``) into pandas, so the report works
against any MLflow server.  A *cell* is one variant × regime × size × classifier × mix setting (and profile);
its runs on different seeds give mean ± std.  A *gain* is a paired difference: each run minus the real-only
baseline run (``none``, and ``none-strong`` / ``oversample`` when present) on the same data draw, seed,
classifier and profile, averaged over the paired seeds with a 95% t-interval.  A cell without its baseline is
listed, never given an invented gain.  The report is written to a folder and logged as an MLflow run.

One module per step, in the order the data flows:

==================  =====================================================================================
``frame.py``        runs -> tidy frame: one row per run, the columns that name its cell (``CELL``)
``stats.py``        per-cell mean ± std, paired gains with 95% intervals, missing baselines (``analyse``)
``claims/``         a study's claims checked on those numbers: ``Claim``, and ``seed.py`` for the seed study
``figures.py``      the plots, as PNG bytes
``render.py``       Markdown, HTML and CSV files
``build.py``        ``build_report``: the steps above in order, timed, and the report logged as an MLflow run
==================  =====================================================================================
"""

from __future__ import annotations

from .build import REPORTS_EXPERIMENT, ReportResult, build_report
from .claims import Claim
from .frame import CELL, mix_label, tidy
from .render import FORMATS, parse_formats
from .stats import Analysis, analyse

__all__ = ["CELL", "FORMATS", "REPORTS_EXPERIMENT", "Analysis", "Claim", "ReportResult", "analyse", "build_report",
           "mix_label", "parse_formats", "tidy"]
