"""Tidy frame -> statistics: per-cell mean ± std, paired gains with 95% t-intervals and p, missing baselines.

A *gain* pairs a run with the baseline run of the same data draw, seed and classifier recipe; a cell whose baseline
is missing is listed, never given an invented gain.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import generators
from ..errors import UserError
from .frame import (BASELINES, CELL, CONTROLS, METRICS, QUALITY, cell_name, recipe_diff, recipe_labels, recipe_values,
                    regime_rank)

#: what a baseline run must share with a run for a paired gain ("baseline vs plain baseline" pairs on this alone);
#: with ``is_superseded``, superseded runs pair only with superseded baselines
PAIR = ["protocol", "profile", "regime", "size", "classifier", "seed", "data_digest", "is_superseded"]
#: what a generator run must share: the recipe too, and ``tuned`` (a tuned mix meets baselines of its budget only)
MATCH = PAIR + ["recipe", "tuned"]
#: fewer seeds than this are flagged, and leave a claim inconclusive
MIN_SEEDS = 3
#: the real-only controls: a generator cell needs one of them on its own recipe (or is listed as missing `none`)
REAL_ONLY = ("none", "none-strong")
MATCHED, PLAIN = "matched recipe", "baseline vs plain baseline"  # the ``comparison`` column of the gains
#: a generator run from its study's best against a baseline run from *its* study's best with the same tuning
#: budget (``tuned``): the recipes differ on purpose — each is what that budget found — and the row says so
TUNED = "tuned, same budget"


@dataclass
class Analysis:
    runs: pd.DataFrame
    per_seed: pd.DataFrame
    results: pd.DataFrame
    gains: pd.DataFrame  # long: CELL + baseline, baseline_recipe, comparison, metric + n, mean, std, ci, p, seeds
    missing: pd.DataFrame
    baselines: list[str]  # baselines with at least one run
    #: the paired differences themselves, one row per cell × baseline × baseline recipe × seed (CELL columns,
    #: ``baseline``, ``baseline_recipe``, ``seed`` and one column per metric): what the claims' intervals pool
    diffs: pd.DataFrame = field(default_factory=pd.DataFrame)
    recipes: dict[str, str] = field(default_factory=dict)  # recipe hash -> its label (frame.recipe_labels)
    #: cells of the runs that used external data (``frame.split_external``): their own mean ± std, never paired
    #: with a baseline or pooled into a claim; ``external_sources`` says what the external data was
    external: pd.DataFrame = field(default_factory=pd.DataFrame)
    external_sources: list[str] = field(default_factory=list)
    #: cells against their twins at a larger step budget (convergence.py; set by build_report)
    convergence: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: the runs that learned from an unlabelled pool (``frame.split_unlabeled``: ssvae, pseudo-label), analysed
    #: apart: each paired only with the pool baseline on the same images (``analyse_unlabeled``); None when none
    unlabeled: Analysis | None = None

    def protocols(self) -> list[str]:
        return sorted(set(self.results["protocol"]))

    def of_protocol(self, protocol: str) -> Analysis:
        """The part of the analysis on one protocol (its claims are judged apart from the others')."""
        def keep(df: pd.DataFrame) -> pd.DataFrame:
            return df[df["protocol"] == protocol].reset_index(drop=True) if "protocol" in df else df

        runs = keep(self.runs)
        return Analysis(runs=runs, per_seed=self.per_seed, results=keep(self.results), gains=keep(self.gains),
                        missing=keep(self.missing), baselines=[b for b in self.baselines if (runs["model"] == b).any()],
                        diffs=keep(self.diffs), recipes=self.recipes)

    def current(self) -> Analysis:
        """The part of the analysis on current runs (claims and exchange rates never read superseded ones)."""
        def keep(df: pd.DataFrame) -> pd.DataFrame:
            return df[df["superseded"] == ""].reset_index(drop=True) if "superseded" in df else df

        runs = keep(self.runs)
        return dataclasses.replace(self, runs=runs, results=keep(self.results), gains=keep(self.gains),
                                   missing=keep(self.missing), diffs=keep(self.diffs),
                                   baselines=[b for b in self.baselines if (runs["model"] == b).any()])

    def recipe(self, recipe: str) -> str:
        """How the report names a recipe hash."""
        return self.recipes.get(recipe, recipe)


def sort_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of cells in the report's order: regime, size, classifier, profile, baselines first, then the mix."""
    order = {b: i for i, b in enumerate(BASELINES)}
    key = df.assign(_r=df["regime"].map(regime_rank), _b=df["model"].map(lambda m: order.get(m, len(order))))
    tuned = ["tuned"] if "tuned" in df else []  # a variant's default row before its tuned one
    extra = [c for c in ("baseline", "baseline_recipe") if c in df]
    key = key.sort_values(["protocol", "_r", "size", "classifier", "profile", "_b", "variant", *tuned, "mix_ratio",
                           "mix_strategy", "mix_weight", "mix_filter", "setup", "recipe", *extra], kind="stable")
    return key.drop(columns=["_r", "_b"]).reset_index(drop=True)


def t_interval(mean, std, n, level: float = 0.95) -> tuple:
    """Student-t interval (95% unless ``level``) of a mean of ``n`` paired differences (NaN below 2)."""
    from scipy.special import stdtrit  # Student t quantile; scipy.stats would add ~1 s of imports

    n = np.asarray(n, dtype=float)
    dof = np.where(n >= 2, n - 1, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stdtrit(dof, 1 - (1 - level) / 2) * np.asarray(std, dtype=float) / np.sqrt(n)
    return np.asarray(mean, dtype=float) - half, np.asarray(mean, dtype=float) + half


def t_pvalue(mean, std, n):
    """Two-sided p-value of the paired t-test "mean difference = 0" (``scipy.stats.ttest_1samp`` on the
    differences); NaN below 2 pairs, 0 for a non-zero mean with no spread."""
    from scipy.special import stdtr

    mean, std, n = (np.asarray(a, dtype=float) for a in (mean, std, n))
    dof = np.where(n >= 2, n - 1, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = mean / (std / np.sqrt(n))
        p = 2 * stdtr(dof, -np.abs(t))
    return np.where(np.isnan(dof), np.nan, p)


def holm(p: pd.Series) -> pd.Series:
    """Holm–Bonferroni adjusted p-values (NaN stays NaN): reject where the adjusted p < α keeps the
    family-wise error rate at α over all the tests given."""
    valid = p.dropna().sort_values(kind="stable")
    m = len(valid)
    adjusted = (valid * (m - np.arange(m))).cummax().clip(upper=1.0)
    return adjusted.reindex(p.index)


def _seeds_text(s: pd.Series) -> str:
    return ",".join(map(str, sorted(set(s.astype(int)))))  # ints even where a concat made the column float


def _recipe_distance(recipe_values: dict[str, dict[str, str]]):
    """How many ``clf.*`` values two recipes differ in (a key one of them lacks counts as a difference)."""
    def distance(a: str, b: str) -> int:
        x, y = recipe_values.get(a, {}), recipe_values.get(b, {})
        return sum(x.get(k) != y.get(k) for k in x.keys() | y.keys())
    return distance


def _pairs(per_seed: pd.DataFrame, baseline: str, metrics: list[str], recipe_of: pd.Series,
           distance=lambda a, b: 0, name_of=str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(paired differences, unpaired targets) of every cell compared with ``baseline``.

    Stronger baselines meet the ``none`` recipe *nearest* their own, not a 2×-budget row."""
    base_rows = per_seed[per_seed["model"] == baseline]
    is_gen = ~per_seed["model"].isin(BASELINES)
    parts, lost = [], []
    # generators with synthetic images (a mix that added none is the real-only run again: no evidence either way);
    # a default generator against the default baseline of its recipe
    gens = per_seed[is_gen & ~per_seed["no_synthetic"]]
    default = gens[gens["tuned"] == ""]
    if len(gens):
        base_default = base_rows[base_rows["tuned"] == ""]
        _one_baseline(default, base_default, "match", baseline, name_of)
        base = base_default.groupby("match")[metrics].mean()
        hit = default["match"].isin(base.index)
        paired = default[hit]
        if len(paired):
            d = paired[metrics].to_numpy() - base.loc[paired["match"], metrics].to_numpy()
            parts.append(pd.DataFrame(d, columns=metrics).assign(
                cell=paired["cell"].to_numpy(), seed=paired["seed"].to_numpy(),
                baseline_recipe=recipe_of.reindex(paired["cell"]).to_numpy(), comparison=MATCHED))
        here = set(zip(base_default["protocol"], base_default["recipe"]))
        real_rows = per_seed[per_seed["model"].isin(REAL_ONLY) & (per_seed["tuned"] == "")]
        real = set(zip(real_rows["protocol"], real_rows["recipe"]))
        key = list(zip(default["protocol"], default["recipe"]))
        applies = np.array([k in here or (baseline == "none" and k not in real) for k in key], dtype=bool)
        lost.append(default[~hit.to_numpy() & applies].assign(_on=default["recipe"]))
        # tuned generators against the tuned baselines of their budget, on the same data and seed
        tuned_base = base_rows[base_rows["tuned"] != ""]
        tuned_gens = gens[gens["tuned"] != ""]
        if len(tuned_base) and len(tuned_gens):
            _one_baseline(tuned_gens, tuned_base, ["pair", "tuned"], baseline, name_of)
            base = tuned_base.groupby(["pair", "tuned", "recipe"])[metrics].mean().reset_index()
            merged = tuned_gens[["cell", "pair", "tuned", "seed", *metrics]].merge(
                base, on=["pair", "tuned"], suffixes=("", "_b"))
            if len(merged):
                d = merged[metrics].to_numpy() - merged[[f"{m}_b" for m in metrics]].to_numpy()
                parts.append(pd.DataFrame(d, columns=metrics).assign(
                    cell=merged["cell"].to_numpy(), seed=merged["seed"].to_numpy(),
                    baseline_recipe=merged["recipe"].to_numpy(), comparison=TUNED))
            has = set(zip(base["pair"], base["tuned"]))
            unmatched = [k not in has for k in zip(tuned_gens["pair"], tuned_gens["tuned"])]
            lost.append(tuned_gens[unmatched].assign(_on="tuned: " + tuned_gens["tuned"]))
    # the stronger baselines against the plain one, whatever their recipe
    if baseline == "none":
        others = per_seed[~is_gen & (per_seed["model"] != "none")]
        if len(others):
            base = base_rows.groupby(["pair", "recipe"])[metrics].mean().reset_index()
            merged = others[["cell", "pair", "seed", "recipe", *metrics]].merge(base, on="pair", suffixes=("", "_b"))
            if len(merged):
                gap = pd.Series([distance(a, b) for a, b in zip(merged["recipe"], merged["recipe_b"])],
                                index=merged.index)
                merged = merged[gap == gap.groupby(merged["cell"]).transform("min")]
                d = merged[metrics].to_numpy() - merged[[f"{m}_b" for m in metrics]].to_numpy()
                parts.append(pd.DataFrame(d, columns=metrics).assign(
                    cell=merged["cell"].to_numpy(), seed=merged["seed"].to_numpy(),
                    baseline_recipe=merged["recipe_b"].to_numpy(), comparison=PLAIN))
            lost.append(others[~others["pair"].isin(base["pair"])].assign(_on="any"))
    diffs = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return diffs.assign(baseline=baseline) if len(diffs) else diffs, pd.concat(lost) if lost else per_seed.iloc[:0]


def _one_baseline(gens: pd.DataFrame, base_rows: pd.DataFrame, on, baseline: str, name_of) -> None:
    """Each generator run meets at most one ``baseline`` cell on ``on``: two cells (e.g. two `oversample` mixes,
    or a default and a re-tuned one) would be averaged into a baseline nobody ran — ``UserError`` naming them."""
    on = [on] if isinstance(on, str) else on
    used = base_rows.merge(gens[on].drop_duplicates(), on=on)
    cells = used.groupby(on)["cell"].unique()
    several = cells[cells.map(len) > 1]
    if several.empty:
        return
    gen = gens.merge(several.index.to_frame(index=False), on=on).iloc[0]
    raise UserError(f"{len(several.iloc[0])} `{baseline}` cells match the same generator runs (e.g. "
                    f"{name_of(gen['cell'])}, seed {int(gen['seed'])}): "
                    + "; ".join(name_of(c) for c in several.iloc[0])
                    + " — a gain pairs one cell with one cell: report them from separate experiments, or mark the "
                      "older one superseded (`synthboost supersede`)")


def analyse(runs: pd.DataFrame) -> Analysis:
    metrics = [m for m in METRICS if m in runs]
    values = metrics + [q for q in QUALITY if q in runs] + (["clf_steps"] if "clf_steps" in runs else [])
    if "recipe" not in runs:  # a frame from before recipes (tests that build one by hand)
        runs = runs.assign(recipe="", clf="")
    if "tuned" not in runs:
        runs = runs.assign(tuned="")
    if "superseded" not in runs:
        runs = runs.assign(superseded="")
    if "no_synthetic" not in runs:
        runs = runs.assign(no_synthetic=False)
    runs = runs.assign(is_superseded=runs["superseded"] != "")
    # integer ids for CELL, PAIR and MATCH: later groupbys and merges use one int column instead of ten strings
    # (pandas' string factorising dominated the report's time)
    runs = runs.assign(cell=runs.groupby(CELL, sort=False).ngroup(), pair=runs.groupby(PAIR, sort=False).ngroup(),
                       match=runs.groupby(MATCH, sort=False).ngroup())
    keys = runs.drop_duplicates("cell").set_index("cell")[CELL]

    grouped = runs.groupby(["cell", "pair"], sort=False)
    per_seed = grouped[values].mean()
    per_seed["runs"] = grouped.size()
    per_seed["seed"] = grouped["seed"].first()
    per_seed["match"] = grouped["match"].first()  # a cell has one recipe, so (cell, pair) fixes the match
    per_seed["no_synthetic"] = grouped["no_synthetic"].all()
    per_seed = per_seed.reset_index()
    for c in ("model", "protocol", "recipe", "tuned"):
        per_seed[c] = keys[c].reindex(per_seed["cell"]).to_numpy()

    cells = per_seed.groupby("cell", sort=False)
    results = cells[values].agg(["mean", "std"])
    results.columns = [f"{m}_{stat}" for m, stat in results.columns]
    results["seeds"] = cells.size()
    results["runs"] = cells["runs"].sum()
    results["few_seeds"] = results["seeds"] < MIN_SEEDS
    # a mix that added no synthetic image on any seed (e.g. a minority-only mix on balanced data): shown as such,
    # never paired; one that added none on some seeds is paired on the others only
    results["no_synthetic"] = cells["no_synthetic"].all()
    results = sort_cells(keys.join(results).reset_index(drop=True))

    values_of = {r: recipe_values(t) for r, t in runs.drop_duplicates("recipe")[["recipe", "clf"]].itertuples(
        index=False)} if "clf" in runs else {}
    present = [b for b in BASELINES if (runs["model"] == b).any()]

    def name_of(cell: int) -> str:
        row = keys.loc[cell]
        return cell_name(row) + (f" tuned ({row['tuned']})" if row["tuned"] else "")

    diff_parts, missing_parts = [], []
    for baseline in dict.fromkeys(["none", *present]):
        diffs, lost = _pairs(per_seed, baseline, metrics, keys["recipe"], _recipe_distance(values_of), name_of)
        if len(diffs):
            diff_parts.append(diffs)
        if not lost.empty:
            g = lost.groupby(["cell", "_on"], sort=False)
            missing_parts.append(pd.DataFrame({"baseline": baseline, "missing_seeds": g["seed"].agg(_seeds_text),
                                               "missing_count": g.size()}))
    diff_cols = CELL + ["baseline", "baseline_recipe", "comparison", "seed", *metrics]
    if diff_parts:
        diffs = pd.concat(diff_parts, ignore_index=True)
        diffs = keys.reindex(diffs["cell"]).reset_index(drop=True).join(diffs.drop(columns="cell"))[diff_cols]
    else:
        diffs = pd.DataFrame(columns=diff_cols)

    gkeys = CELL + ["baseline", "baseline_recipe", "comparison"]
    columns = gkeys + ["metric", "n", "mean", "std", "ci_low", "ci_high", "p_value", "few_seeds", "seeds"]
    if len(diffs):
        # one groupby on integer ids: the cell, and the (baseline, baseline recipe) it was compared with
        comp = diffs.groupby(["baseline", "baseline_recipe"], sort=False).ngroup()
        by = [diffs.groupby(CELL, sort=False).ngroup().rename("_c"), comp.rename("_k")]
        grouped = diffs.groupby(by, sort=False)
        stats_ = grouped[metrics].agg(["count", "mean", "std"])
        long = stats_.stack(level=0).rename_axis(["_c", "_k", "metric"]).reset_index()
        long = long.rename(columns={"count": "n"}).dropna(subset=["mean"])
        ident = grouped[gkeys].first()
        ident["seeds"] = grouped["seed"].agg(_seeds_text)
        gains = long.merge(ident.reset_index(), on=["_c", "_k"]).drop(columns=["_c", "_k"])
        gains["n"] = gains["n"].astype(int)
        gains["ci_low"], gains["ci_high"] = t_interval(gains["mean"], gains["std"], gains["n"])
        gains["p_value"] = t_pvalue(gains["mean"], gains["std"], gains["n"])
        gains["few_seeds"] = gains["n"] < MIN_SEEDS
        gains = sort_cells(gains[columns])
    else:
        gains = pd.DataFrame(columns=columns)

    mcols = CELL + ["baseline", "on_recipe", "seeds", "paired_seeds", "missing_seeds"]
    if missing_parts:
        missing = pd.concat(missing_parts).reset_index()
        missing["seeds"] = cells.size().reindex(missing["cell"]).to_numpy()
        missing["paired_seeds"] = missing["seeds"] - missing["missing_count"]
        # what the missing baseline must have: the cell's own recipe ("any" for baseline vs plain baseline,
        # "tuned: <budget>" for a tuned generator without the tuned baseline of its budget)
        missing["on_recipe"] = missing["_on"]
        missing = keys.reindex(missing["cell"]).reset_index(drop=True).join(missing.drop(columns=["cell", "_on",
                                                                                                "missing_count"]))
        missing = sort_cells(missing[mcols])
    else:
        missing = pd.DataFrame(columns=mcols)
    return Analysis(runs=runs.drop(columns=["cell", "pair", "match"]), per_seed=per_seed, results=results, gains=gains,
                    missing=missing, baselines=present, diffs=diffs, recipes=recipe_labels(runs))


def analyse_apart(runs: pd.DataFrame, external: pd.DataFrame) -> Analysis:
    """``analyse`` of the own-data runs, with the external-data runs' cells summarised on their own beside it."""
    analysis = analyse(runs)
    if len(external):
        analysis.external = analyse(external).results
        analysis.external_sources = sorted(set(external["external_source"]) - {""})
        analysis.recipes = {**recipe_labels(external), **analysis.recipes}
    return analysis


def analyse_unlabeled(runs: pd.DataFrame) -> Analysis | None:
    """``analyse`` of the runs that learned from an unlabelled pool: paired with ``pseudo-label`` on that pool only."""
    if runs.empty:
        return None
    pooled = runs.assign(data_digest=runs["data_digest"].astype(str) + " + " + runs["unlabeled"].astype(str)
                         + " unlabeled")
    out = analyse(pooled)
    out.missing = out.missing[out.missing["baseline"].isin(generators.POOL_BASELINES)].reset_index(drop=True)
    return out


def accuracy_gains(gains: pd.DataFrame, baseline: str = "none", *, comparison: str = MATCHED) -> pd.DataFrame:
    """The generator cells' accuracy gains over ``baseline`` (rows of ``Analysis.gains``) of one comparison
    (``MATCHED``: on their own recipe; ``TUNED``: tuned against tuned with the same budget)."""
    # the controls (held-out real images, noise) bracket the gains; they are no generator family
    return gains[(gains["baseline"] == baseline) & (gains["metric"] == "accuracy") & ~gains["model"].isin(BASELINES)
                 & ~gains["model"].isin(CONTROLS) & (gains["comparison"] == comparison)]


def check_baselines(analysis: Analysis) -> None:
    """No generator cell has any paired baseline: there is no gain to report, so say what to run."""
    gen_cells = analysis.results[~analysis.results["model"].isin(BASELINES)]
    if gen_cells.empty:
        return
    if (~analysis.gains["model"].isin(BASELINES)).any():
        return
    miss = analysis.missing[~analysis.missing["model"].isin(BASELINES)]
    runs = analysis.runs
    is_base = runs["model"].isin(BASELINES)
    gen_protocols = set(runs.loc[~is_base, "protocol"])
    base_protocols = set(runs.loc[is_base, "protocol"])
    if base_protocols and not gen_protocols & base_protocols:
        raise UserError(f"the generator runs use the {'/'.join(sorted(gen_protocols))} protocol and the baselines "
                        f"the {'/'.join(sorted(base_protocols))} one: a gain is never paired across protocols — "
                        f"record the baselines with the generators' recipe (e.g. `synthboost run --model none "
                        f"--set clf.recipe={sorted(gen_protocols)[0] if gen_protocols - {'legacy'} else 'fair'}`)")
    gen_recipes = runs.loc[~is_base, "recipe"]
    base_recipes = runs.loc[is_base & runs["protocol"].isin(gen_protocols), "recipe"]
    if len(base_recipes) and not set(gen_recipes) & set(base_recipes):
        want, have = gen_recipes.mode().iloc[0], base_recipes.mode().iloc[0]
        sets = recipe_diff(runs, have, want)
        raise UserError(f"no baseline run shares the generator runs' classifier recipe (params.clf.*): the generators "
                        f"use {analysis.recipe(want)}, the baselines {analysis.recipe(have)} — a gain is never "
                        f"paired across recipes; record `none` with the generators' clf.* values (e.g. `synthboost "
                        f"run --model none {sets or '--set clf.…'}`)")
    needed = ", ".join(f"`{b}`" for b in dict.fromkeys(miss["baseline"])) or "`none`"
    examples = [f"{cell_name(r)} seeds {r['missing_seeds']}" for _, r in
                miss.drop_duplicates(subset=CELL).head(3).iterrows()]
    more = len(miss.drop_duplicates(subset=CELL)) - len(examples)
    raise UserError(f"no real-only baseline run shares data, seed, classifier, profile and recipe with any generator "
                    f"run: missing baselines {needed} for {'; '.join(examples)}"
                    + (f" and {more} more cells" if more > 0 else "")
                    + " — record them with `synthboost run --model none --regime R --size N --seed S` and the "
                      "generators' --set clf.* values")
