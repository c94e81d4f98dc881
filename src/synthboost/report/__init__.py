"""Read the tracking store back and compare models: tables, plots, claims, Markdown/HTML/CSV.

Everything comes from one ``search_runs`` query (``tracking.runs_frame``) into pandas, so the report works
against any MLflow server; study trials are left out unless asked for.  A *cell* is one variant × regime × size
× classifier × mix setting (and profile, protocol and classifier recipe); its runs on different seeds give mean ±
std.  A *gain* is a paired difference: each generator run minus the baseline run (``none``, ``none-strong``,
``oversample``) on the same data draw, seed, classifier, profile, protocol and classifier recipe (the hash of its
resolved ``clf.*``), averaged over the paired seeds with a 95% t-interval and a paired t-test p; the stronger
baselines are also compared with ``none`` ("baseline vs plain baseline"), and a generator run from its study's
best with the baselines run from their studies' best with the same tuning budget ("tuned, same budget").  A cell without its baseline of its
recipe is listed, never given an invented gain.  Claims get a verdict — holds, does not hold, inconclusive —
from those intervals.  Runs tagged ``uses_external_data`` (e.g. a ``clip`` run whose CLIP trained on the official
train set) are never paired or pooled: they get a section of their own; so do runs that learned from an
unlabelled pool (``ssvae``), paired only with the ``pseudo-label`` baseline on the same images.  The report is
written to a folder and logged as an MLflow run.

One module per step, in the order the data flows:

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
