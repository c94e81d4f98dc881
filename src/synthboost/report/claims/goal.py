"""The project's science goal, judged like a claim: does the best tuned mix beat the tuned strong baseline?

On ``high``/1,000: ≥ 3 pp balanced accuracy (interval above 0) and ≥ 10 pp on the weakest class's recall.  The best
tuned mix is chosen on validation alone; the test set only judges the choice.
"""

from __future__ import annotations

import pandas as pd

from ...regimes import CLASS_NAMES, NUM_CLASSES
from ..frame import BASELINES, CELL, CONTROLS, cell_name
from ..stats import MIN_SEEDS, Analysis
from . import FAILS, HOLDS, INCONCLUSIVE, Claim, ci, mean_interval, pp, untestable

REGIME, SIZE = "high", 1000
ACCURACY_TARGET, RECALL_TARGET = 0.03, 0.10
#: what a generator run and its tuned baseline run share for their difference to be a paired one
PAIR_ON = ["protocol", "profile", "classifier", "seed", "data_digest", "tuned"]


def goal_verdict(n: int, mean: float, lo: float, hi: float, target: float) -> str:
    if n < MIN_SEEDS or pd.isna(lo):
        return INCONCLUSIVE
    if mean >= target and lo > 0:
        return HOLDS
    if hi < target:
        return FAILS
    return INCONCLUSIVE


def _best_tuned(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series, int] | None:
    """The runs of the tuned generator cell with the best mean validation balanced accuracy, that cell's key
    row, and how many tuned generator cells there were to choose from."""
    empty = runs["no_synthetic"] if "no_synthetic" in runs else False  # a mix that added nothing is no candidate
    gens = runs[~runs["model"].isin(BASELINES) & ~runs["model"].isin(CONTROLS) & (runs["tuned"] != "")
                & runs["val_balanced_accuracy"].notna() & ~empty]
    if gens.empty:
        return None
    cell = gens.groupby(CELL, sort=False, dropna=False).ngroup()
    val = gens["val_balanced_accuracy"].groupby(cell).mean()
    chosen = gens[cell == val.idxmax()]
    return chosen, chosen.iloc[0], len(val)


def claims(analysis: Analysis) -> list[Claim]:
    key_a = "goal-accuracy"
    text_a = (f"The best tuned mix beats tuned `none-strong` by ≥ {100 * ACCURACY_TARGET:.0f} pp balanced accuracy "
              f"on {REGIME}/{SIZE:,}")
    key_b, text_b = "goal-weakest", (f"… and lifts the weakest class's recall by ≥ {100 * RECALL_TARGET:.0f} pp")
    runs = analysis.runs
    runs = runs[(runs["regime"] == REGIME) & (runs["size"] == SIZE)]
    if "superseded" in runs:
        runs = runs[runs["superseded"] == ""]
    picked = _best_tuned(runs) if len(runs) else None
    if picked is None:
        why = (f"no generator run from a study's best on {REGIME}/{SIZE:,} with a validation score (a grid with "
               "`mixes: [{from_study: …}]`, e.g. studies/tuned-high.yaml)")
        return [untestable(key_a, text_a, why), untestable(key_b, text_b, why)]
    chosen, row, n_cells = picked
    base = runs[(runs["model"] == "none-strong") & (runs["tuned"] != "")]
    if base.empty:
        why = (f"no `none-strong` run from its study's best on {REGIME}/{SIZE:,} "
               "(`synthboost study --model none-strong`)")
        return [untestable(key_a, text_a, why), untestable(key_b, text_b, why)]
    recalls = [f"recall_{k}" for k in range(NUM_CLASSES)]
    value_cols = ["balanced_accuracy", *recalls]
    pairs = chosen.groupby(PAIR_ON)[value_cols].mean().join(
        base.groupby(PAIR_ON)[value_cols].mean(), rsuffix="_base", how="inner")
    picked_text = (f"Best tuned mix by validation balanced accuracy: {cell_name(row)} "
                   f"({100 * chosen['val_balanced_accuracy'].mean():.1f}% on validation, mean of "
                   f"{len(chosen)} run(s); {n_cells} tuned generator cell(s) to choose from).")
    if pairs.empty:
        why = (f"{cell_name(row)} shares no data draw, seed and tuning budget with a tuned `none-strong` run "
               "(run both from studies of the same trial budget)")
        return [untestable(key_a, text_a, why), untestable(key_b, text_b, why)]

    diff = pairs["balanced_accuracy"] - pairs["balanced_accuracy_base"]
    n, mean, lo, hi = mean_interval(diff)
    verdict = goal_verdict(n, mean, lo, hi, ACCURACY_TARGET)
    detail_a = (f"{picked_text} Against tuned `none-strong` on the same data and seeds: {pp(mean)} balanced "
                f"accuracy, {ci(lo, hi)}; the goal needs ≥ {pp(ACCURACY_TARGET)} with the interval above 0.")
    claim_a = Claim(key_a, text_a, verdict, detail_a, n, "seeds", lo, hi)

    weakest = int(pd.Series({k: pairs[f"recall_{k}_base"].mean() for k in range(NUM_CLASSES)}).idxmin())
    lift = pairs[f"recall_{weakest}"] - pairs[f"recall_{weakest}_base"]
    n_b, mean_b, lo_b, hi_b = mean_interval(lift)
    detail_b = (f"Weakest class of tuned `none-strong`: {weakest} ({CLASS_NAMES[weakest]}), test recall "
                f"{100 * pairs[f'recall_{weakest}_base'].mean():.1f}%. The mix ({cell_name(row)}) changes it by "
                f"{pp(mean_b)}, {ci(lo_b, hi_b)}; the goal needs ≥ {pp(RECALL_TARGET)} with the interval above 0.")
    claim_b = Claim(key_b, text_b, goal_verdict(n_b, mean_b, lo_b, hi_b, RECALL_TARGET), detail_b, n_b, "seeds",
                    lo_b, hi_b)
    return [claim_a, claim_b]
