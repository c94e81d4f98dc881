"""Read the tracking store back and compare models: tables, plots, claims, Markdown/HTML/CSV.

Everything comes from one ``search_runs`` query into pandas, so the report works against any MLflow server.  One
module per step, in the order the data flows:

==================  =====================================================================================
``frame.py``        runs -> tidy frame: one row per run, the columns that name its cell (``CELL``)
``stats.py``        per-cell mean ± std, matched paired gains with 95% intervals and p, missing baselines, Holm
``claims/``         a study's claims judged on those numbers: ``Claim`` and its three verdicts, ``seed.py``
``exchange.py``     what one synthetic image is worth: each mix read off the real-only curve (equivalent real size)
``costs.py``        what the runs cost: core-hours per family from their own timings
``coverage.py``     what a grid plan names that the store lacks (``--plan``)
``figures.py``      the plots, as PNG bytes
``render.py``       Markdown, HTML and CSV files
``build.py``        ``build_report``: the steps above in order, timed, and the report logged as an MLflow run
``command.py``      ``synthboost report``: the experiments to read, ``build_report``, the lines it prints
==================  =====================================================================================
"""

from __future__ import annotations

from .build import REPORTS_EXPERIMENT, ReportResult, build_report
from .claims import Claim
from .command import report_command
from .frame import CELL, mix_label, tidy
from .render import FORMATS, parse_formats
from .stats import Analysis, analyse

__all__ = ["CELL", "FORMATS", "REPORTS_EXPERIMENT", "Analysis", "Claim", "ReportResult", "analyse", "build_report",
           "mix_label", "parse_formats", "report_command", "tidy"]
