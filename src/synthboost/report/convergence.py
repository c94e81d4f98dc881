"""Does the classifier's budget converge?  A cell against its twin at a larger step budget, paired per seed.

*Converged* only when the whole 95% interval lies within ±``TOLERANCE``: a mean under the tolerance decides nothing.
"""

from __future__ import annotations

import pandas as pd

from .frame import BASELINES, recipe_values, row_mix
from .stats import t_interval

TOLERANCE = 0.003  # 0.3 pp: what "converged" allows
BUDGET_KEYS = ("min_steps", "steps", "epochs")
TWIN = ["protocol", "model", "profile", "regime", "size", "classifier", "mix_ratio", "mix_strategy", "mix_weight",
        "mix_filter", "tuned", "superseded", "gen_setup", "_rest"]
CONVERGED, MOVED, NOT_SHOWN = "converged", "moved", "not shown"
COLUMNS = ["model", "variant", "twin", "regime", "size", "classifier", "mix", "tuned", "steps", "twin_steps", "n",
           "mean", "ci_low", "ci_high", "verdict"]


def convergence(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell and larger-budget twin: the paired accuracy difference (twin − cell) over seeds."""
    if runs.empty or "clf" not in runs or "clf_steps" not in runs:
        return pd.DataFrame(columns=COLUMNS)
    rest = ["; ".join(f"{k}={v}" for k, v in sorted(recipe_values(t).items()) if k not in BUDGET_KEYS)
            for t in runs["clf"]]
    runs = runs.assign(_rest=rest, gen_setup=runs["gen_setup"] if "gen_setup" in runs else "")
    rows = []
    for _, group in runs.groupby(TWIN, sort=False, dropna=False):
        if group["recipe"].nunique() < 2:
            continue
        steps = group.groupby("recipe")["clf_steps"].mean().sort_values()
        per_seed = group.groupby(["recipe", "seed", "data_digest"])["accuracy"].mean()
        small = steps.index[0]
        for twin in steps.index[1:]:
            if not steps[twin] > steps[small]:
                continue
            d = (per_seed[twin] - per_seed[small]).dropna()
            n, mean, std = len(d), d.mean(), d.std(ddof=1)
            lo, hi = (float(v) for v in t_interval(mean, std, n))
            verdict = (NOT_SHOWN if n < 2 else CONVERGED if -TOLERANCE < lo and hi < TOLERANCE else
                       MOVED if lo > 0 or hi < 0 else NOT_SHOWN)
            first = group[group["recipe"] == small].iloc[0]
            rows.append({"model": first["model"], "variant": first["variant"],
                         "twin": group.loc[group["recipe"] == twin, "variant"].iloc[0], "regime": first["regime"],
                         "size": first["size"], "classifier": first["classifier"], "mix": row_mix(first),
                         "tuned": first["tuned"], "steps": steps[small], "twin_steps": steps[twin], "n": n,
                         "mean": mean, "ci_low": lo, "ci_high": hi, "verdict": verdict})
    return pd.DataFrame(rows, columns=COLUMNS)


def texts(table: pd.DataFrame) -> list[str]:
    """The section's words: how it is judged, and whether any mix was measured at two budgets."""
    out = [f"Each cell that also ran at a larger step budget (same everything else), paired per seed: the larger "
           f"budget's accuracy minus the cell's, mean [95% CI] in pp. *{CONVERGED}*: the whole interval lies within "
           f"±{100 * TOLERANCE:.1f} pp; *{MOVED}*: it excludes 0; *{NOT_SHOWN}*: neither (the mean alone decides "
           "nothing)."]
    if table.empty:
        out.append("No cell was run at a second step budget: convergence is not measured here.")
    elif table["model"].isin(BASELINES).all():
        out.append("No mix was run at a second step budget: convergence is measured on real-only runs only, and a "
                   "mix's (with more images per step) is not shown.")
    return out


def display(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return pd.DataFrame()

    def gain(m, lo, hi) -> str:
        return f"{100 * m:+.2f}" + ("" if pd.isna(lo) else f" [{100 * lo:+.2f}, {100 * hi:+.2f}]")

    return pd.DataFrame({"variant": table["variant"], "twin": table["twin"], "regime": table["regime"],
                         "size": table["size"], "classifier": table["classifier"], "mix": table["mix"],
                         "steps": [f"{a:.0f} → {b:.0f}" for a, b in zip(table["steps"], table["twin_steps"])],
                         "seeds": table["n"],
                         "Δ accuracy (twin − cell)": [gain(*r) for r in zip(table["mean"], table["ci_low"],
                                                                           table["ci_high"])],
                         "verdict": table["verdict"]}).reset_index(drop=True)
