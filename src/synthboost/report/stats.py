"""Tidy frame -> statistics: per-cell mean ± std over seeds, paired gains with 95% t-intervals, missing baselines.

A *gain* is a paired difference: each run minus the real-only baseline run (``none``, and ``none-strong`` /
``oversample`` when present) on the same data draw, seed, classifier and profile, averaged over the paired
seeds with a 95% t-interval.  A cell without its baseline is listed, never given an invented gain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import UserError
from .frame import BASELINES, CELL, METRICS, QUALITY, cell_name, regime_rank

#: what a baseline run must share with a run for their difference to be a paired gain
PAIR = ["protocol", "profile", "regime", "size", "classifier", "seed", "data_digest"]
MIN_SEEDS = 3


@dataclass
class Analysis:
    runs: pd.DataFrame
    per_seed: pd.DataFrame
    results: pd.DataFrame
    gains: pd.DataFrame  # long: CELL + baseline + metric + n, mean, std, ci_low, ci_high, few_seeds, seeds
    missing: pd.DataFrame
    baselines: list[str]  # baselines with at least one run

    def protocols(self) -> list[str]:
        return sorted(set(self.results["protocol"]))

    def of_protocol(self, protocol: str) -> Analysis:
        """The part of the analysis on one protocol (its claims are judged apart from the others')."""
        def keep(df: pd.DataFrame) -> pd.DataFrame:
            return df[df["protocol"] == protocol].reset_index(drop=True) if "protocol" in df else df

        runs = keep(self.runs)
        return Analysis(runs=runs, per_seed=self.per_seed, results=keep(self.results), gains=keep(self.gains),
                        missing=keep(self.missing), baselines=[b for b in self.baselines if (runs["model"] == b).any()])


def sort_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of cells in the report's order: regime, size, classifier, profile, baselines first, then the mix."""
    order = {b: i for i, b in enumerate(BASELINES)}
    key = df.assign(_r=df["regime"].map(regime_rank), _b=df["model"].map(lambda m: order.get(m, len(order))))
    extra = ["baseline"] if "baseline" in df else []
    key = key.sort_values(["protocol", "_r", "size", "classifier", "profile", "_b", "variant", "mix_ratio", "mix_strategy",
                           "mix_weight", "mix_filter", "setup", *extra])
    return key.drop(columns=["_r", "_b"]).reset_index(drop=True)


def _t_interval(mean: pd.Series, std: pd.Series, n: pd.Series) -> tuple[pd.Series, pd.Series]:
    from scipy.special import stdtrit  # Student t quantile; scipy.stats would add ~1 s of imports

    dof = (n - 1).where(n >= 2)
    half = pd.Series(stdtrit(dof.to_numpy(dtype=float), 0.975), index=n.index) * std / np.sqrt(n)
    return mean - half, mean + half


def _gain_targets(per_seed: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Generators are compared with every baseline; the stronger baselines with ``none`` only."""
    is_gen = ~per_seed["model"].isin(BASELINES)
    return per_seed[is_gen | ((baseline == "none") & (per_seed["model"] != "none"))]


def analyse(runs: pd.DataFrame) -> Analysis:
    metrics = [m for m in METRICS if m in runs]
    values = metrics + [q for q in QUALITY if q in runs] + (["clf_steps"] if "clf_steps" in runs else [])
    # integer ids for a cell and for "same data, seed, classifier, profile": every later groupby and merge is
    # on one int column instead of ten string columns (pandas' string factorising dominated the report's time)
    runs = runs.assign(cell=runs.groupby(CELL, sort=False).ngroup(), pair=runs.groupby(PAIR, sort=False).ngroup())
    keys = runs.drop_duplicates("cell").set_index("cell")[CELL]

    grouped = runs.groupby(["cell", "pair"], sort=False)
    per_seed = grouped[values].mean()
    per_seed["runs"] = grouped.size()
    per_seed["seed"] = grouped["seed"].first()
    per_seed = per_seed.reset_index()
    per_seed["model"] = keys["model"].reindex(per_seed["cell"]).to_numpy()

    cells = per_seed.groupby("cell", sort=False)
    results = cells[values].agg(["mean", "std"])
    results.columns = [f"{m}_{stat}" for m, stat in results.columns]
    results["seeds"] = cells.size()
    results["runs"] = cells["runs"].sum()
    results["few_seeds"] = results["seeds"] < MIN_SEEDS
    results = sort_cells(keys.join(results).reset_index(drop=True))

    present = [b for b in BASELINES if (runs["model"] == b).any()]
    gain_parts, missing_parts = [], []
    for baseline in dict.fromkeys(["none", *present]):
        base = per_seed[per_seed["model"] == baseline].groupby("pair")[metrics].mean()
        targets = _gain_targets(per_seed, baseline)
        matched = targets["pair"].isin(base.index)
        lost = targets[~matched]
        if not lost.empty:
            miss = lost.groupby("cell", sort=False)["seed"].agg(lambda s: ",".join(map(str, sorted(s))))
            missing_parts.append(pd.DataFrame({"baseline": baseline, "missing_seeds": miss,
                                               "missing_count": lost.groupby("cell", sort=False).size()}))
        paired = targets[matched]
        if paired.empty:
            continue
        diff = paired[metrics].to_numpy() - base.loc[paired["pair"], metrics].to_numpy()
        diff = pd.DataFrame(diff, columns=metrics, index=paired.index).assign(cell=paired["cell"].to_numpy())
        stats_ = diff.groupby("cell", sort=False)[metrics].agg(["count", "mean", "std"])
        long = stats_.stack(level=0).rename_axis(["cell", "metric"]).reset_index()
        long = long.rename(columns={"count": "n"}).dropna(subset=["mean"])
        seeds = paired.groupby("cell", sort=False)["seed"].agg(lambda s: ",".join(map(str, sorted(s))))
        long["seeds"] = seeds.reindex(long["cell"]).to_numpy()
        gain_parts.append(long.assign(baseline=baseline))
    columns = CELL + ["baseline", "metric", "n", "mean", "std", "ci_low", "ci_high", "few_seeds", "seeds"]
    if gain_parts:
        gains = pd.concat(gain_parts, ignore_index=True)
        gains = keys.reindex(gains["cell"]).reset_index(drop=True).join(gains.drop(columns="cell"))
        gains["n"] = gains["n"].astype(int)
        gains["ci_low"], gains["ci_high"] = _t_interval(gains["mean"], gains["std"], gains["n"])
        gains["few_seeds"] = gains["n"] < MIN_SEEDS
        gains = sort_cells(gains[columns])
    else:
        gains = pd.DataFrame(columns=columns)

    mcols = CELL + ["baseline", "seeds", "paired_seeds", "missing_seeds"]
    if missing_parts:
        missing = pd.concat(missing_parts).rename_axis("cell").reset_index()
        missing["seeds"] = cells.size().reindex(missing["cell"]).to_numpy()
        missing["paired_seeds"] = missing["seeds"] - missing["missing_count"]
        missing = keys.reindex(missing["cell"]).reset_index(drop=True).join(missing.drop(columns=["cell",
                                                                                                "missing_count"]))
        missing = sort_cells(missing[mcols])
    else:
        missing = pd.DataFrame(columns=mcols)
    return Analysis(runs=runs.drop(columns=["cell", "pair"]), per_seed=per_seed, results=results, gains=gains,
                    missing=missing, baselines=present)


def accuracy_gains(gains: pd.DataFrame, baseline: str = "none") -> pd.DataFrame:
    """The generator cells' accuracy gains over ``baseline`` (rows of ``Analysis.gains``)."""
    return gains[(gains["baseline"] == baseline) & (gains["metric"] == "accuracy") & ~gains["model"].isin(BASELINES)]


def check_baselines(analysis: Analysis) -> None:
    """No generator cell has any paired baseline: there is no gain to report, so say what to run."""
    gen_cells = analysis.results[~analysis.results["model"].isin(BASELINES)]
    if gen_cells.empty:
        return
    if (~analysis.gains["model"].isin(BASELINES)).any():
        return
    miss = analysis.missing[~analysis.missing["model"].isin(BASELINES)]
    runs = analysis.runs
    gen_protocols = set(runs.loc[~runs["model"].isin(BASELINES), "protocol"])
    base_protocols = set(runs.loc[runs["model"].isin(BASELINES), "protocol"])
    if base_protocols and not gen_protocols & base_protocols:
        raise UserError(f"the generator runs use the {'/'.join(sorted(gen_protocols))} protocol and the baselines "
                        f"the {'/'.join(sorted(base_protocols))} one: a gain is never paired across protocols — "
                        f"record the baselines with the generators' recipe (e.g. `synthboost run --model none "
                        f"--set clf.recipe={sorted(gen_protocols)[0] if gen_protocols - {'legacy'} else 'fair'}`)")
    needed = ", ".join(f"`{b}`" for b in dict.fromkeys(miss["baseline"])) or "`none`"
    examples = [f"{cell_name(r)} seeds {r['missing_seeds']}" for _, r in
                miss.drop_duplicates(subset=CELL).head(3).iterrows()]
    more = len(miss.drop_duplicates(subset=CELL)) - len(examples)
    raise UserError(f"no real-only baseline run shares data, seed, classifier and profile with any generator run: "
                    f"missing baselines {needed} for {'; '.join(examples)}" + (f" and {more} more cells" if more > 0
                                                                               else "")
                    + " — record them with `synthboost run --model none --regime R --size N --seed S`")
