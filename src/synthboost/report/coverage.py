"""What a grid plan names that the store does not hold yet: the report of a long grid lists its missing cells.

A cell is done by the grid's own test (a FINISHED run with its ``config_key``), so the report and
``synthboost grid --dry-run`` agree on what is left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

TITLE = "Cells the plan names"


@dataclass
class Coverage:
    plan: str  # the grid file's name
    experiment: str
    planned: int
    finished: int
    missing: pd.DataFrame  # variant, regime, size, classifier, mix, seeds (one row per group)
    waiting: list[str] = field(default_factory=list)  # templated studies not run yet: their cells are not planned

    def text(self) -> str:
        out = (f"The plan `{self.plan}` (experiment `{self.experiment}`) names {self.planned} cells; "
               f"{self.finished} are FINISHED in this store, {self.planned - self.finished} are missing"
               + (" (listed below; re-run the same grid command to add them)." if self.planned > self.finished
                  else "."))
        if self.waiting:
            out += (f" Not planned yet: the tuned cells of {len(self.waiting)} studies not run "
                    f"({', '.join(self.waiting[:8])}{', …' if len(self.waiting) > 8 else ''}).")
        return out


def load_plan(path: str | Path, experiments: list[str] | None):
    """The grid file ``path``, whose experiment must be among the report's ``experiments`` (None: the plan's)."""
    from .. import grid
    from ..errors import UserError

    spec = grid.load_grid(path)
    if experiments is not None and spec.experiment not in experiments:
        raise UserError(f"--plan {Path(path).name} runs in experiment {spec.experiment!r}, which the report does not "
                        f"read ({', '.join(experiments)}); add --experiment {spec.experiment}")
    return spec


def plan_coverage(frame: pd.DataFrame, spec, *, name: str, storage_url: str) -> Coverage:
    """The cells of the grid ``spec`` (file ``name``) that ``frame`` — the store's finished experiment runs
    (``tracking.runs_frame``: ``experiment``, ``tags.*``) — lacks in the plan's experiment."""
    from .. import grid
    from ..study import TunedStudies

    studies = TunedStudies(storage_url)
    units = grid.plan(spec, storage_url, studies=studies)
    held = frame if frame.empty else frame[frame["experiment"] == spec.experiment]
    done = set(held.get("tags.config_key", pd.Series(dtype=str)).dropna())
    rows = [{"variant": u.variant, "regime": u.regime, "size": u.size, "classifier": c.classifier,
             "mix": c.mix_label, "seed": u.seed}
            for u in units for c in u.cells if c.key not in done]
    planned = sum(len(u.cells) for u in units)
    cols = ["variant", "regime", "size", "classifier", "mix"]
    # rows come in the plan's order (variant, regime, size, seed); groupby(sort=False) keeps it
    missing = (pd.DataFrame(rows).groupby(cols, sort=False)["seed"]
               .agg(lambda s: ", ".join(map(str, sorted(s)))).reset_index().rename(columns={"seed": "seeds missing"})
               if rows else pd.DataFrame(columns=[*cols, "seeds missing"]))
    return Coverage(plan=name, experiment=spec.experiment, planned=planned, finished=planned - len(rows),
                    missing=missing, waiting=sorted(studies.waiting))
