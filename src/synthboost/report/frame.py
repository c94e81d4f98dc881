"""Runs -> tidy frame: one row per finished experiment run, with the columns that name its cell.

A *cell* is one variant × regime × size × classifier × mix setting (and profile and setup); its runs on
different seeds are the repeats.  This module also says how a cell is named in the report's texts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import generators, tracking

#: the real-only controls a gain is measured against, strongest last; `none` is the seed study's baseline
BASELINES: tuple[str, ...] = tuple(dict.fromkeys(("none", "none-strong", "oversample", *generators.BASELINES)))
METRICS = {"accuracy": "test/accuracy", "balanced_accuracy": "test/balanced_accuracy",
           "macro_f1": "test/macro_f1", "minority_recall": "test/minority_recall"}
QUALITY = {"fid": "gen/fid", "cas_cnn": "gen/cas_cnn",  # generator quality, when it was measured
           "label_consistency": "gen/label_consistency"}
#: what makes a cell (its seeds are the repeats); `setup` hashes gen.* and clf.* so tuned trials stay apart
CELL = ["protocol", "variant", "model", "profile", "regime", "size", "classifier", "mix_ratio", "mix_strategy",
        "mix_weight", "mix_filter", "setup"]
#: ``protocol``: how the classifier's budget was set — ``fair`` (a fixed number of optimizer steps per cell),
#: ``seed`` (the seed study's recipe: epochs over the mixed set), ``legacy`` (CNN runs recorded before budgets
#: were fixed, also epochs over the mixed set).  Runs of different protocols are never paired or pooled.
PROTOCOLS = ("fair", "seed", "legacy")
REGIME_ORDER = ("balanced", "semi", "high")


def tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run with typed columns: the cell keys, seed, data digest, the four test metrics, quality."""
    def col(name: str, fallback: str | None = None) -> pd.Series:
        s = frame[name] if name in frame else pd.Series(np.nan, index=frame.index, dtype=object)
        if fallback is not None and fallback in frame:
            s = s.where(s.notna(), frame[fallback])
        return s

    runs = pd.DataFrame({"run_id": col("run_id"), "experiment": col("experiment"), "run_name": col("run_name"),
                         "start_time": col("start_time")})
    runs["model"] = col("tags.model", "params.model")
    runs["variant"] = col(f"tags.{tracking.TAG_VARIANT}").where(lambda s: s.notna() & (s != ""), runs["model"])
    runs["profile"] = col("tags.profile", "params.profile").fillna("")
    runs["regime"] = col("tags.regime", "params.data.regime")
    runs["size"] = pd.to_numeric(col("tags.size", "params.data.size"), errors="coerce")
    runs["classifier"] = col("tags.classifier", "params.classifier")
    recipe = col("params.clf.recipe")
    # scikit-learn models have no step budget, so every run of theirs is on the fair protocol
    runs["protocol"] = recipe.where(recipe.notna(), np.where(runs["classifier"] == "cnn", "legacy", "fair"))
    runs["clf_steps"] = pd.to_numeric(col("metrics.train/clf_steps"), errors="coerce")
    runs["seed"] = pd.to_numeric(col("tags.seed", "params.seed"), errors="coerce")
    runs["data_digest"] = col("tags.data_digest").fillna("")
    runs["mix_ratio"] = pd.to_numeric(col("params.mix.ratio"), errors="coerce").fillna(0.0)
    runs["mix_strategy"] = col("params.mix.strategy").fillna("uniform")
    runs["mix_weight"] = pd.to_numeric(col("params.mix.synthetic_weight"), errors="coerce").fillna(1.0)
    # "" (no filter, or runs from before mix.filter existed) or e.g. "confidence≥0.5"
    kind = col("params.mix.filter").fillna("none")
    threshold = col("params.mix.filter_threshold").fillna("").astype(str)
    runs["mix_filter"] = np.where(kind == "none", "", kind + "≥" + threshold)
    setup_cols = sorted(c for c in frame.columns if c.startswith(("params.gen.", "params.clf.")))
    if setup_cols:
        hashed = pd.util.hash_pandas_object(frame[setup_cols].fillna("").astype(str), index=False)
        runs["setup"] = [f"{h:016x}"[:6] for h in hashed]
    else:
        runs["setup"] = ""
    for short, name in METRICS.items():
        runs[short] = pd.to_numeric(col(f"metrics.{name}"), errors="coerce")
    for short, name in QUALITY.items():
        if f"metrics.{name}" in frame:
            runs[short] = pd.to_numeric(frame[f"metrics.{name}"], errors="coerce")
    runs = runs.dropna(subset=["model", "regime", "size", "classifier", "seed", "accuracy"])
    runs = runs.astype({"size": int, "seed": int})
    return runs.reset_index(drop=True)


def regime_rank(regime: str) -> tuple[int, str]:
    """Sort key of a regime: the known ones in ``REGIME_ORDER``, then any other by name."""
    return (REGIME_ORDER.index(regime), "") if regime in REGIME_ORDER else (len(REGIME_ORDER), regime)


def ordered_regimes(values) -> list[str]:
    return sorted(set(values), key=regime_rank)


def mix_label(ratio: float, strategy: str, weight: float, *, baseline: bool = False, filter_: str = "") -> str:
    if baseline or ratio == 0:
        return "real only"
    return f"{ratio:g}×{strategy}" + (f" w={weight:g}" if weight != 1 else "") + (f" {filter_}" if filter_ else "")


def row_mix(row) -> str:
    """``mix_label`` of a cell row (results, runs or gains)."""
    return mix_label(row["mix_ratio"], row["mix_strategy"], row["mix_weight"], baseline=row["model"] in BASELINES,
                     filter_=row.get("mix_filter", ""))


def cell_name(row) -> str:
    """A cell row in a few words, e.g. ``dvae high/500 cnn 1×uniform``."""
    return f"{row['variant']} {row['regime']}/{row['size']} {row['classifier']} {row_mix(row)}"
