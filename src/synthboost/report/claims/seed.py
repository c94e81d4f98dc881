"""The seed study's claims, judged from 95% intervals of the accuracy gains over `none` (and the stronger baselines).

(1) DVAE and VQ-VAE give the largest gains; (2a) gains are largest for small sizes; (2b) gains are largest in the
high-imbalance regime; (3) DVAE improves accuracy in the high regime by up to 10 points; (4) some generator beats
`none` (the plain real-only run: what the uncorrected per-cell gains alone would suggest, corrected),
`none-strong`, `oversample`.  ``claims(analysis)`` gives them in that order.

Cells of one seed share its data draw and its `none` run, so they are averaged per seed before an interval is taken.
"""

from __future__ import annotations

import math

import pandas as pd

from ..frame import BASELINES, CELL, CONTROLS, cell_name, ordered_regimes, recipe_diff
from ..stats import MATCHED, MIN_SEEDS, TUNED, Analysis, accuracy_gains, holm, t_interval
from . import FAILS, HOLDS, INCONCLUSIVE, Claim, ci, few_note, interval_verdict, mean_interval, pp, untestable

TOP = ("dvae", "vqvae")  # claim (1)'s families
CLAIM_3_GAIN = 0.10  # "up to 10 points": some interval must start at +10 pp
ALPHA = 0.05  # family-wise error rate of claim (4) over its cells
#: a data cell: what two families' runs must share to be compared in claim (1)
DATA_CELL = ["protocol", "profile", "regime", "size", "classifier", "recipe"]
UNITS = "seeds"  # claims (1)–(2b): one value per seed, its cells averaged (they share its draw and baseline runs)


def _gen_diffs(analysis: Analysis) -> pd.DataFrame:
    """Per-seed accuracy differences of the generator cells to `none` on their recipe."""
    d = analysis.diffs
    if d.empty or "accuracy" not in d:
        return pd.DataFrame(columns=[*CELL, "seed", "accuracy"])
    keep = ((d["baseline"] == "none") & (d["comparison"] == MATCHED) & ~d["model"].isin(BASELINES)
            & ~d["model"].isin(CONTROLS))  # controls bracket the gains, they are no family
    return d.loc[keep & d["accuracy"].notna(), [*CELL, "seed", "accuracy"]]


def _top(df: pd.DataFrame, column: str) -> pd.Series:
    """The row with the largest ``column`` (by the mean gain when no row has one, e.g. single-seed intervals)."""
    values = df[column] if df[column].notna().any() else df["mean"]
    return df.loc[values.idxmax()]


def _low(t: tuple) -> float:
    """Sort key of a (label, n, mean, lo, hi) test by its lower bound; no interval sorts first."""
    return -math.inf if pd.isna(t[3]) else t[3]


def _seeds(units: pd.Series | pd.DataFrame) -> int:
    return units.index.get_level_values("seed").nunique() if len(units) else 0


def claim_best_families(analysis: Analysis) -> Claim:
    statement = "DVAE and VQ-VAE give the largest gains"
    d = _gen_diffs(analysis)
    fams = sorted(d["model"].unique())
    absent = [f for f in TOP if f not in fams]
    if absent:
        return untestable("1", statement, f"no {' or '.join(absent)} runs with a `none` baseline on their recipe "
                                          f"(families with gains: {', '.join(fams) or 'none'})")
    others = [f for f in fams if f not in TOP]
    if not others:
        return untestable("1", statement, "no other generator family with a `none` baseline to compare DVAE and "
                                          "VQ-VAE with")
    # one gain per family, data cell and seed (a family's variants and mixes in that cell averaged)
    g = d.groupby([*DATA_CELL, "seed", "model"])["accuracy"].mean().unstack("model")
    ran = g.notna().groupby(level=DATA_CELL).any()
    common = ran.index[ran.all(axis=1)]
    if not len(common):
        return untestable("1", statement, f"no data cell (regime, size, classifier, recipe) holds every family "
                                          f"({', '.join(fams)}) with a `none` baseline")
    pairs = g[g.index.droplevel("seed").isin(common)].dropna()
    if pairs.empty:
        return untestable("1", statement, f"no seed on which every family ran in the {len(common)} data cell(s) "
                                          f"they share")
    units = pairs.groupby(level="seed").mean()  # one value per seed: its cells share its draw and `none` runs
    seeds = len(units)
    ranking = pairs.mean().sort_values(ascending=False)
    detail = (f"Mean accuracy gain over `none` on the {len(common)} data cell(s) where all {len(fams)} families ran "
              f"({len(pairs)} cell × seed pairs, averaged per seed: {seeds} seed(s)): "
              + ", ".join(f"{m} {pp(v)}" for m, v in ranking.items()) + ".")
    tests = []  # (label, n, mean, lo, hi)
    for top in TOP:
        tests.append((f"{top} over `none`", *mean_interval(units[top])))
        tests += [(f"{top} − {f}", *mean_interval(units[top] - units[f])) for f in others]
    detail += " " + "; ".join(f"{label} {pp(m)} {ci(lo, hi)}" for label, _, m, lo, hi in tests) + "."
    n = seeds
    if seeds < MIN_SEEDS:
        label, _, _, lo, hi = min(tests, key=_low)
        return Claim("1", statement, INCONCLUSIVE, detail + f" Fewer than {MIN_SEEDS} seeds: inconclusive whatever "
                                                            f"the means.", n, UNITS, lo, hi)
    if all(t[3] > 0 for t in tests):
        label, _, _, lo, hi = min(tests, key=_low)
        return Claim("1", statement, HOLDS, detail + f" Every interval lies above 0 (the narrowest margin: {label}).",
                     n, UNITS, lo, hi)
    against = [t for t in tests if t[4] < 0]
    if against:
        label, _, _, lo, hi = min(against, key=lambda t: t[4])
        return Claim("1", statement, FAILS, detail + f" {label} lies below 0: "
                     + ("it does not improve on `none`." if "over" in label else "another family gives more."),
                     n, UNITS, lo, hi)
    label, _, _, lo, hi = min(tests, key=_low)
    return Claim("1", statement, INCONCLUSIVE, detail + f" {label} straddles 0.", n, UNITS, lo, hi)


def _trend(analysis: Analysis, axis: str, favoured) -> tuple[pd.Series, pd.DataFrame]:
    """Per setting run at several values of ``axis`` and per seed: the gain at the favoured value minus the others'."""
    d = _gen_diffs(analysis)
    series = [c for c in CELL if c != axis]
    # one integer id per setting: a groupby on a dozen string columns costs more than the rest of the claim
    ids = pd.factorize(pd.Series(["\x1f".join(map(str, t)) for t in d[series].itertuples(index=False, name=None)],
                                 dtype=object))[0]
    df = d.assign(_s=ids).groupby(["_s", axis, "seed"], sort=False)["accuracy"].mean().reset_index()
    fav = favoured(df)
    top = df[fav].groupby(["_s", "seed"])["accuracy"].mean()
    rest = df[~fav].groupby(["_s", "seed"])["accuracy"].mean()
    units = (top - rest).dropna()
    return units, df[df["_s"].isin(units.index.get_level_values("_s"))]


def _per_seed(units: pd.Series) -> pd.Series:
    """The settings' differences averaged per seed: a seed's settings share its draw and its `none` runs."""
    return units.groupby(level="seed").mean()


def _trend_claim(key: str, statement: str, axis: str, units: pd.Series, used: pd.DataFrame, favoured_name: str,
                 order) -> Claim:
    seeds = _seeds(units)
    n, mean, lo, hi = mean_interval(_per_seed(units))
    by = used.groupby(axis)["accuracy"].mean()
    by = by.reindex(order(by.index))
    settings = used.groupby("_s")
    means = used.groupby(["_s", axis])["accuracy"].mean()
    best = means.groupby(level="_s").idxmax().map(lambda t: t[1])
    fav_values = used[used["_fav"]].groupby("_s")[axis].first()
    wins = int((best == fav_values.reindex(best.index)).sum())
    detail = (f"Mean accuracy gain over `none` by {axis}, over {settings.ngroups} generator setting(s) run at two "
              f"or more {axis}s: " + ", ".join(f"{v}: {pp(g)}" for v, g in by.items())
              + f". {favoured_name.capitalize()} gives the largest gain in {wins} of {settings.ngroups} settings. "
              f"Gain at {favoured_name} minus the mean gain at the other {axis}s, per setting and seed, averaged "
              f"per seed: {pp(mean)} {ci(lo, hi)} ({len(units)} setting × seed pairs, {seeds} seed(s)).")
    verdict = interval_verdict(lo, hi, 0.0, seeds)
    if seeds < MIN_SEEDS:
        detail += f" Fewer than {MIN_SEEDS} seeds: inconclusive whatever the means."
    elif verdict == INCONCLUSIVE:
        detail += " The interval straddles 0."
    return Claim(key, statement, verdict, detail, n, UNITS, lo, hi)


def claim_small_sizes(analysis: Analysis) -> Claim:
    statement = "Gains are largest for small sizes"
    acc = accuracy_gains(analysis.gains)
    if acc.empty:
        return untestable("2a", statement, "no generator run with a `none` baseline on its recipe")
    if acc["size"].nunique() < 2:
        return untestable("2a", statement, f"every generator cell with a `none` baseline has the same size "
                                           f"({acc['size'].iloc[0]})")

    def smallest(df: pd.DataFrame) -> pd.Series:
        return df["size"] == df.groupby("_s")["size"].transform("min")

    units, used = _trend(analysis, "size", smallest)
    if units.empty:
        return untestable("2a", statement, "no generator setting was run at two or more sizes on the same seeds")
    used = used.assign(_fav=smallest(used))
    return _trend_claim("2a", statement, "size", units, used, "the smallest size", sorted)


def claim_high_regime(analysis: Analysis) -> Claim:
    statement = "Gains are largest in the high-imbalance regime"
    acc = accuracy_gains(analysis.gains)
    if "high" not in set(acc["regime"]):
        return untestable("2b", statement, "no generator run in the high regime with a `none` baseline on its "
                                           "recipe")
    if acc["regime"].nunique() < 2:
        return untestable("2b", statement, "generator runs with a `none` baseline exist in the high regime only")

    def high(df: pd.DataFrame) -> pd.Series:
        return df["regime"] == "high"

    units, used = _trend(analysis, "regime", high)
    if units.empty:
        return untestable("2b", statement, "no generator setting was run in the high regime and in another regime "
                                           "on the same seeds")
    used = used.assign(_fav=high(used))
    return _trend_claim("2b", statement, "regime", units, used, "`high`", ordered_regimes)


def claim_dvae_high(analysis: Analysis) -> Claim:
    statement = "DVAE improves accuracy in the high regime by up to 10 points"
    acc = accuracy_gains(analysis.gains)
    dvae = acc[acc["model"] == "dvae"]
    if dvae.empty:
        return untestable("3", statement, "no DVAE run with a `none` baseline on its recipe")
    high = dvae[dvae["regime"] == "high"]
    if high.empty:
        return untestable("3", statement, "no DVAE run in the high regime with a `none` baseline on its recipe")
    decided = high[high["n"] >= MIN_SEEDS].copy()
    # the best of m cells: each interval at level 1 − 0.05/m (Bonferroni), so the one picked still covers at 95%
    m = max(len(decided), 1)
    decided["adj_low"], decided["adj_high"] = t_interval(decided["mean"], decided["std"], decided["n"], 1 - ALPHA / m)
    reached = decided[decided["adj_low"] >= CLAIM_3_GAIN]
    if len(reached):
        best, verdict = reached.loc[reached["adj_low"].idxmax()], HOLDS
        why = (f" Its interval, Bonferroni-corrected for picking the best of {m} cell(s): "
               f"{ci(best['adj_low'], best['adj_high'], 1 - ALPHA / m)}, starts at +{100 * CLAIM_3_GAIN:.0f} pp or "
               f"above.")
        detail = (f"Best DVAE accuracy gain over `none` in the high regime: {pp(best['mean'])}, "
                  f"{ci(best['ci_low'], best['ci_high'])} uncorrected ({cell_name(best)}, {best['n']} seed(s)), of "
                  f"{len(high)} DVAE high-regime cell(s).{why}" + few_note(high))
        return Claim("3", statement, verdict, detail, int(best["n"]), "seeds", best["adj_low"], best["adj_high"],
                     level=1 - ALPHA / m)
    elif (decided["ci_low"] >= CLAIM_3_GAIN).any():
        best, verdict = decided.loc[decided["ci_low"].idxmax()], INCONCLUSIVE
        why = (f" Its 95% interval starts at +{100 * CLAIM_3_GAIN:.0f} pp or above, but not once corrected for "
               f"picking the best of {m} cells (Bonferroni: {ci(best['adj_low'], best['adj_high'], 1 - ALPHA / m)}).")
    elif len(decided) == len(high) and (high["ci_high"] < CLAIM_3_GAIN).all():
        best, verdict = _top(high, "ci_high"), FAILS
        why = (" DVAE does not improve accuracy in the high regime at all." if (high["ci_high"] < 0).all() else
               f" Every DVAE high-regime cell's interval ends short of {100 * CLAIM_3_GAIN:.0f} points.")
    else:
        best, verdict = _top(high, "ci_high"), INCONCLUSIVE
        few = high[high["n"] < MIN_SEEDS]
        if (few["ci_low"] >= CLAIM_3_GAIN).any():
            why = (f" An interval starts at +{100 * CLAIM_3_GAIN:.0f} pp or above, but on fewer than {MIN_SEEDS} "
                   f"seeds, which decide nothing.")
        elif len(few):
            why = (f" No interval on {MIN_SEEDS} or more seeds starts at +{100 * CLAIM_3_GAIN:.0f} pp, and {len(few)} "
                   f"cell(s) have fewer than {MIN_SEEDS} seeds.")
        else:
            why = (f" No interval starts at +{100 * CLAIM_3_GAIN:.0f} pp, and the best one reaches "
                   f"{100 * CLAIM_3_GAIN:.0f} points.")
    detail = (f"Best DVAE accuracy gain over `none` in the high regime: {pp(best['mean'])}, "
              f"{ci(best['ci_low'], best['ci_high'])} ({cell_name(best)}, {best['n']} seed(s)), of {len(high)} DVAE "
              f"high-regime cell(s).{why}")
    return Claim("3", statement, verdict, detail, int(best["n"]), "seeds", best["ci_low"], best["ci_high"])


def _p(p: float) -> str:
    return "p n/a" if pd.isna(p) else f"p = {p:.2g}"


def claim_beats(analysis: Analysis, baseline: str, *, tuned: bool = False) -> Claim:
    """(4): some generator beats ``baseline`` on its recipe; with ``tuned``, some generator run from its study's
    best beats ``baseline`` run from its own study's best with the same tuning budget."""
    key, statement = f"4-{baseline}", f"Some generator beats `{baseline}`"
    if tuned:
        key, statement = f"{key}-tuned", f"Some tuned generator beats `{baseline}` tuned with the same budget"
    if baseline not in analysis.baselines:
        return untestable(key, statement, f"no `{baseline}` runs in the selected experiments")
    acc = accuracy_gains(analysis.gains, baseline, comparison=TUNED if tuned else MATCHED)
    if acc.empty and tuned:
        return untestable(key, statement, f"no generator run from a study's best shares data, seed and tuning "
                                          f"budget with a `{baseline}` run from its study's best (grid mixes "
                                          f"`{{from_study: …}}` of both studies)")
    if acc.empty:
        runs = analysis.runs
        base = runs.loc[runs["model"] == baseline, "recipe"].mode()
        gens = runs.loc[~runs["model"].isin(BASELINES), "recipe"].mode()
        hint = ""
        if len(base) and len(gens) and base.iloc[0] != gens.iloc[0]:
            sets = recipe_diff(runs, gens.iloc[0], base.iloc[0])
            hint = (f" (`{baseline}` runs on recipe {analysis.recipe(base.iloc[0])}; a mix on it: "
                    f"`synthboost run --model M {sets}`)") if sets else ""
        return untestable(key, statement, f"no generator run shares data, seed, classifier and recipe with a "
                                          f"`{baseline}` run{hint}")
    tested = acc[acc["n"] >= MIN_SEEDS].copy()
    few = len(acc) - len(tested)
    tested["holm"] = holm(tested["p_value"])
    beaten = tested[(tested["holm"] < ALPHA) & (tested["mean"] > 0)]
    m = len(tested)
    head = (f"Paired t-tests of the accuracy gain over `{baseline}` in {m} cell(s) with {MIN_SEEDS}+ seeds, "
            f"Holm-corrected at family-wise α = {ALPHA:g}")
    few_text = f" {few} cell(s) with fewer than {MIN_SEEDS} seeds were not tested." if few else ""

    def row_text(r) -> str:
        return (f"{cell_name(r)} {pp(r['mean'])} {ci(r['ci_low'], r['ci_high'])}, {_p(r['p_value'])}, "
                f"Holm {_p(r['holm'])[2:]}")

    if len(beaten):
        best = beaten.loc[beaten["holm"].idxmin()]
        detail = (f"Beaten by {', '.join(dict.fromkeys(beaten['variant']))}. {head}: "
                  + "; ".join(row_text(r) for _, r in beaten.iterrows()) + "." + few_text)
        return Claim(key, statement, HOLDS, detail, int(best["n"]), "seeds", best["ci_low"], best["ci_high"])
    if not few and m and (tested["ci_high"] < 0).all():
        best = _top(tested, "ci_high")
        detail = (f"Not beaten: `{baseline}` is ahead in every one of the {m} cell(s), every interval below 0 "
                  f"(closest: {row_text(best)}).")
        return Claim(key, statement, FAILS, detail, int(best["n"]), "seeds", best["ci_low"], best["ci_high"])
    if m:
        # closest to beating it: the gain above 0 with the smallest p; with none above 0, the nearest interval
        # (a cell significantly *behind* the baseline has a small p too, and is not close)
        ahead = tested[(tested["mean"] > 0) & tested["p_value"].notna()]
        best = ahead.loc[ahead["p_value"].idxmin()] if len(ahead) else _top(tested, "ci_high")
        uncorrected = int(((tested["ci_low"] > 0)).sum())
        detail = (f"Not beaten after the correction. {head}; closest: {row_text(best)}."
                  + (f" {uncorrected} cell(s) have an uncorrected interval above 0 — not enough over {m} tests."
                     if uncorrected else "") + few_text)
    else:
        best = acc.loc[acc["mean"].idxmax()]
        detail = (f"Not beaten, and not testable: every cell has fewer than {MIN_SEEDS} seeds (best: "
                  f"{cell_name(best)} {pp(best['mean'])} {ci(best['ci_low'], best['ci_high'])}).")
    return Claim(key, statement, INCONCLUSIVE, detail, int(best["n"]), "seeds", best["ci_low"], best["ci_high"])


def claims(analysis: Analysis) -> list[Claim]:
    out = [claim_best_families(analysis), claim_small_sizes(analysis), claim_high_regime(analysis),
           claim_dvae_high(analysis), claim_beats(analysis, "none"), claim_beats(analysis, "none-strong"),
           claim_beats(analysis, "oversample")]
    if "tuned" in analysis.runs and (analysis.runs["tuned"] != "").any():  # budget-fair: tuned against tuned
        out += [claim_beats(analysis, "none-strong", tuned=True), claim_beats(analysis, "oversample", tuned=True)]
    return out
