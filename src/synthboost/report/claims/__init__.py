"""Claims: a study's statements checked against the statistics, one module per study (``seed.py``: the seed study).

Every claim gets a verdict (holds, does not hold, inconclusive) decided from 95% intervals, never from a mean or a
maximum alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..stats import MIN_SEEDS, t_interval

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE)


@dataclass
class Claim:
    key: str
    statement: str
    verdict: str  # one of VERDICTS
    detail: str
    n: int | None = None  # how many units the deciding interval rests on
    unit: str = "seeds"  # what n counts
    ci_low: float = math.nan  # the deciding 95% interval (a fraction; shown in pp)
    ci_high: float = math.nan
    level: float = 0.95  # of the deciding interval: above 95% where it was corrected for picking the best of several

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"a claim's verdict is one of {VERDICTS}, got {self.verdict!r}")

    def evidence(self) -> str:
        """``n = 3 seeds, 95% CI [+9.1, +13.0] pp`` — or what is missing."""
        if self.n is None:
            return "n = 0, no interval"
        return (f"n = {self.n} {self.unit}, " + ci(self.ci_low, self.ci_high, self.level)
                + ("" if pd.isna(self.ci_low) else " pp"))


def pp(x: float) -> str:
    """A gain (a fraction) in percentage points."""
    return f"{100 * x:+.1f} pp"


def ci(lo: float, hi: float, level: float = 0.95) -> str:
    """A gain's interval (95% unless ``level``) in percentage points (none with a single seed)."""
    return "no interval (1 seed)" if pd.isna(lo) else f"{100 * level:.3g}% CI [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def few_note(df: pd.DataFrame) -> str:
    """How many of the gain cells a claim rests on have too few seeds (nothing when none has)."""
    k = int(df["few_seeds"].sum())
    return f" ({k} of these {len(df)} cells have fewer than {MIN_SEEDS} seeds.)" if k else ""


def untestable(key: str, statement: str, why: str) -> Claim:
    """Nothing to judge the claim on: inconclusive, and the detail says what is missing."""
    return Claim(key, statement, INCONCLUSIVE, f"Not testable here: {why}.")


def interval_verdict(lo: float, hi: float, threshold: float, seeds: int) -> str:
    """holds above ``threshold``, does not hold below it, inconclusive when the interval straddles it or
    rests on fewer than ``MIN_SEEDS`` seeds."""
    if seeds < MIN_SEEDS or pd.isna(lo):
        return INCONCLUSIVE
    if lo > threshold:
        return HOLDS
    if hi < threshold:
        return FAILS
    return INCONCLUSIVE


def mean_interval(values) -> tuple[int, float, float, float]:
    """n, mean and 95% t-interval of a sample of differences."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    mean = float(v.mean()) if n else math.nan
    std = float(v.std(ddof=1)) if n >= 2 else math.nan
    lo, hi = t_interval(mean, std, n)
    return n, mean, float(lo), float(hi)
