"""Claims: a study's statements checked against the statistics, one module per study (``seed.py``: the seed study).

A claim's verdict is "holds", "does not hold" or "not testable" (a baseline finding: "beaten by …" or "not
beaten"); its detail gives the numbers.  The helpers below word those numbers the same way for every study.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..stats import MIN_SEEDS


@dataclass
class Claim:
    key: str
    statement: str
    verdict: str  # "holds" | "does not hold" | "not testable" | for the baseline findings: "beaten …" / "not beaten"
    detail: str


def pp(x: float) -> str:
    """A gain (a fraction) in percentage points."""
    return f"{100 * x:+.1f} pp"


def ci(lo: float, hi: float) -> str:
    """A gain's 95% interval in percentage points (none with a single seed)."""
    return "no interval (1 seed)" if pd.isna(lo) else f"95% CI [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def few_note(df: pd.DataFrame) -> str:
    """How many of the gain cells a claim rests on have too few seeds (nothing when none has)."""
    k = int(df["few_seeds"].sum())
    return f" ({k} of these {len(df)} cells have fewer than {MIN_SEEDS} seeds.)" if k else ""
