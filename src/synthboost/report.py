"""Read the tracking store back and compare models: tables, plots, claims, Markdown/HTML/CSV.

Everything comes from one ``search_runs`` query (``tracking.runs_frame``) into pandas, so the report works
against any MLflow server.  A *cell* is one variant × regime × size × classifier × mix setting (and profile);
its runs on different seeds give mean ± std.  A *gain* is a paired difference: each run minus the real-only
baseline run (``none``, and ``none-strong`` / ``oversample`` when present) on the same data draw, seed,
classifier and profile, averaged over the paired seeds with a 95% t-interval.  A cell without its baseline is
listed, never given an invented gain.  The report is written to a folder and logged as an MLflow run.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import re
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import generators, tracking
from .errors import UserError

REPORTS_EXPERIMENT = "synthboost-reports"
FORMATS = ("md", "html", "csv")
#: the real-only controls a gain is measured against, strongest last; `none` is the seed study's baseline
BASELINES: tuple[str, ...] = tuple(dict.fromkeys(("none", "none-strong", "oversample", *generators.BASELINES)))
METRICS = {"accuracy": "test/accuracy", "balanced_accuracy": "test/balanced_accuracy",
           "macro_f1": "test/macro_f1", "minority_recall": "test/minority_recall"}
LABELS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1",
          "minority_recall": "minority recall"}
QUALITY = {"fid": "gen/fid", "cas_cnn": "gen/cas_cnn",  # generator quality, when it was measured
           "label_consistency": "gen/label_consistency"}
QUALITY_LABELS = {"fid": "FID (classifier features; lower is better)",
                  "cas_cnn": "CAS, CNN (train synthetic, test real)",
                  "label_consistency": "label consistency (extractor agrees with the requested class)"}
#: what makes a cell (its seeds are the repeats); `setup` hashes gen.* and clf.* so tuned trials stay apart
CELL = ["variant", "model", "profile", "regime", "size", "classifier", "mix_ratio", "mix_strategy", "mix_weight",
        "mix_filter", "setup"]
#: what a baseline run must share with a run for their difference to be a paired gain
PAIR = ["profile", "regime", "size", "classifier", "seed", "data_digest"]
MIN_SEEDS = 3
REGIME_ORDER = ("balanced", "semi", "high")
CLAIM_3_POINTS = 9.5  # "up to 10 points" holds when the best DVAE gain rounds to 10 points or more
FEW = "†"


@dataclass
class Claim:
    key: str
    statement: str
    verdict: str  # "holds" | "does not hold" | "not testable" | for the baseline findings: "beaten …" / "not beaten"
    detail: str


@dataclass
class ReportResult:
    out_dir: Path
    files: dict[str, Path]
    tables: dict[str, pd.DataFrame]
    claims: list[Claim]
    figures: dict[str, bytes]  # name -> PNG
    experiments: list[str]
    n_runs: int
    run_id: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def parse_formats(text: str) -> set[str]:
    """``"md,html"`` -> {"md", "html"}; an unknown or empty format is a ``UserError``."""
    chosen = {part.strip().lower() for part in text.split(",") if part.strip()}
    unknown = sorted(chosen - set(FORMATS))
    if unknown or not chosen:
        raise UserError(f"unknown format {', '.join(map(repr, unknown)) or repr(text)} "
                        f"(choose a comma-separated subset of {', '.join(FORMATS)})")
    return chosen


# ---------------------------------------------------------------- runs -> tidy frame
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
    runs["variant"] = col("tags.variant").where(lambda s: s.notna() & (s != ""), runs["model"])
    runs["profile"] = col("tags.profile", "params.profile").fillna("")
    runs["regime"] = col("tags.regime", "params.data.regime")
    runs["size"] = pd.to_numeric(col("tags.size", "params.data.size"), errors="coerce")
    runs["classifier"] = col("tags.classifier", "params.classifier")
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


# ---------------------------------------------------------------- tables
@dataclass
class Analysis:
    runs: pd.DataFrame
    per_seed: pd.DataFrame
    results: pd.DataFrame
    gains: pd.DataFrame  # long: CELL + baseline + metric + n, mean, std, ci_low, ci_high, few_seeds, seeds
    missing: pd.DataFrame
    baselines: list[str]  # baselines with at least one run


def _regime_key(s: pd.Series) -> pd.Series:
    return s.map(lambda r: (REGIME_ORDER.index(r), "") if r in REGIME_ORDER else (len(REGIME_ORDER), r))


def _sort_cells(df: pd.DataFrame) -> pd.DataFrame:
    order = {b: i for i, b in enumerate(BASELINES)}
    key = df.assign(_r=_regime_key(df["regime"]), _b=df["model"].map(lambda m: order.get(m, len(order))))
    extra = ["baseline"] if "baseline" in df else []
    key = key.sort_values(["_r", "size", "classifier", "profile", "_b", "variant", "mix_ratio", "mix_strategy",
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
    values = metrics + [q for q in QUALITY if q in runs]
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
    results = _sort_cells(keys.join(results).reset_index(drop=True))

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
        gains = _sort_cells(gains[columns])
    else:
        gains = pd.DataFrame(columns=columns)

    mcols = CELL + ["baseline", "seeds", "paired_seeds", "missing_seeds"]
    if missing_parts:
        missing = pd.concat(missing_parts).rename_axis("cell").reset_index()
        missing["seeds"] = cells.size().reindex(missing["cell"]).to_numpy()
        missing["paired_seeds"] = missing["seeds"] - missing["missing_count"]
        missing = keys.reindex(missing["cell"]).reset_index(drop=True).join(missing.drop(columns=["cell",
                                                                                                "missing_count"]))
        missing = _sort_cells(missing[mcols])
    else:
        missing = pd.DataFrame(columns=mcols)
    return Analysis(runs=runs.drop(columns=["cell", "pair"]), per_seed=per_seed, results=results, gains=gains,
                    missing=missing, baselines=present)


def _cell_name(row) -> str:
    return f"{row['variant']} {row['regime']}/{row['size']} {row['classifier']} {_row_mix(row)}"


def _row_mix(row) -> str:
    """``mix_label`` of a cell row (results, runs or gains)."""
    return mix_label(row["mix_ratio"], row["mix_strategy"], row["mix_weight"], baseline=row["model"] in BASELINES,
                     filter_=row.get("mix_filter", ""))


def mix_label(ratio: float, strategy: str, weight: float, *, baseline: bool = False, filter_: str = "") -> str:
    if baseline or ratio == 0:
        return "real only"
    return f"{ratio:g}×{strategy}" + (f" w={weight:g}" if weight != 1 else "") + (f" {filter_}" if filter_ else "")


def _check_baselines(analysis: Analysis) -> None:
    """No generator cell has any paired baseline: there is no gain to report, so say what to run."""
    gen_cells = analysis.results[~analysis.results["model"].isin(BASELINES)]
    if gen_cells.empty:
        return
    if (~analysis.gains["model"].isin(BASELINES)).any():
        return
    miss = analysis.missing[~analysis.missing["model"].isin(BASELINES)]
    needed = ", ".join(f"`{b}`" for b in dict.fromkeys(miss["baseline"])) or "`none`"
    examples = [f"{_cell_name(r)} seeds {r['missing_seeds']}" for _, r in
                miss.drop_duplicates(subset=CELL).head(3).iterrows()]
    more = len(miss.drop_duplicates(subset=CELL)) - len(examples)
    raise UserError(f"no real-only baseline run shares data, seed, classifier and profile with any generator run: "
                    f"missing baselines {needed} for {'; '.join(examples)}" + (f" and {more} more cells" if more > 0
                                                                               else "")
                    + " — record them with `synthboost run --model none --regime R --size N --seed S`")


# ---------------------------------------------------------------- claims
def _pp(x: float) -> str:
    return f"{100 * x:+.1f} pp"


def _ci(lo: float, hi: float) -> str:
    return "no interval (1 seed)" if pd.isna(lo) else f"95% CI [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def _acc_gains(analysis: Analysis, baseline: str = "none") -> pd.DataFrame:
    g = analysis.gains
    return g[(g["baseline"] == baseline) & (g["metric"] == "accuracy") & ~g["model"].isin(BASELINES)]


def _few_note(df: pd.DataFrame) -> str:
    k = int(df["few_seeds"].sum())
    return f" ({k} of these {len(df)} cells have fewer than {MIN_SEEDS} seeds.)" if k else ""


def claim_best_families(analysis: Analysis) -> Claim:
    statement = "DVAE and VQ-VAE give the largest gains"
    acc = _acc_gains(analysis)
    fams = sorted(acc["model"].unique())
    absent = [f for f in ("dvae", "vqvae") if f not in fams]
    if absent:
        return Claim("1", statement, "not testable",
                     f"no {' or '.join(absent)} runs with a paired `none` baseline "
                     f"(families with gains: {', '.join(fams) or 'none'})")
    if len(fams) < 3:
        return Claim("1", statement, "not testable", "no other generator family with a paired `none` baseline "
                                                     "to compare DVAE and VQ-VAE with")
    ctx = ["profile", "regime", "size", "classifier"]
    table = acc.groupby(["model", *ctx])["mean"].mean().reset_index().pivot_table(index=ctx, columns="model",
                                                                                  values="mean")
    shared = table.dropna()
    if len(shared):
        scores, basis = shared.mean(), f"over the {len(shared)} data cell(s) where every family ran"
    else:
        scores, basis = table.mean(), "over each family's own cells (no data cell holds every family)"
    ranking = scores.sort_values(ascending=False)
    listing = ", ".join(f"{m} {_pp(v)}" for m, v in ranking.items())
    top = list(ranking.index[:2])
    detail = f"Mean accuracy gain over `none`, {basis}: {listing}."
    if set(top) == {"dvae", "vqvae"}:
        if ranking["dvae"] > 0 and ranking["vqvae"] > 0:
            return Claim("1", statement, "holds", detail + _few_note(acc))
        return Claim("1", statement, "does not hold",
                     detail + " DVAE and VQ-VAE rank first, but they do not improve on `none`." + _few_note(acc))
    where = "; ".join(f"{f} ranks {list(ranking.index).index(f) + 1} of {len(ranking)}" for f in ("dvae", "vqvae"))
    return Claim("1", statement, "does not hold",
                 detail + f" The largest gains come from {' and '.join(top)}; {where}." + _few_note(acc))


def _series_trend(acc: pd.DataFrame, axis: str) -> tuple[pd.DataFrame, list[str]]:
    """Cells of generator settings that were run at two or more values of ``axis``."""
    series = [c for c in CELL if c != axis]
    spread = acc.groupby(series)[axis].transform("nunique")
    return acc[spread >= 2], series


def claim_small_sizes(analysis: Analysis) -> Claim:
    statement = "Gains are largest for small sizes"
    acc = _acc_gains(analysis)
    if acc.empty:
        return Claim("2a", statement, "not testable", "no generator run with a paired `none` baseline")
    if acc["size"].nunique() < 2:
        return Claim("2a", statement, "not testable",
                     f"every generator cell with a paired `none` baseline has the same size ({acc['size'].iloc[0]})")
    sub, series = _series_trend(acc, "size")
    if sub.empty:
        return Claim("2a", statement, "not testable", "no generator setting was run at two or more sizes")
    by_size = sub.groupby("size")["mean"].mean().sort_index()
    g = sub.groupby(series, sort=False)
    best_small = sub.loc[g["mean"].idxmax(), "size"].to_numpy() == g["size"].min().to_numpy()
    listing = ", ".join(f"{s}: {_pp(v)}" for s, v in by_size.items())
    detail = (f"Mean accuracy gain over `none` by size, over {len(best_small)} setting(s) run at two or more "
              f"sizes: {listing}. The smallest size gives the largest gain in {int(best_small.sum())} of "
              f"{len(best_small)} settings.")
    verdict = "holds" if by_size.idxmax() == by_size.index[0] and by_size.iloc[0] > 0 else "does not hold"
    return Claim("2a", statement, verdict, detail + _few_note(sub))


def claim_high_regime(analysis: Analysis) -> Claim:
    statement = "Gains are largest in the high-imbalance regime"
    acc = _acc_gains(analysis)
    if "high" not in set(acc["regime"]):
        return Claim("2b", statement, "not testable", "no generator run in the high regime with a paired "
                                                      "`none` baseline")
    if acc["regime"].nunique() < 2:
        return Claim("2b", statement, "not testable", "generator runs with a paired `none` baseline exist in the "
                                                      "high regime only")
    sub, series = _series_trend(acc, "regime")
    sub = sub[(sub["regime"] == "high").groupby([sub[c] for c in series]).transform("any")]
    if sub.empty:
        return Claim("2b", statement, "not testable", "no generator setting was run in the high regime and in "
                                                      "another regime")
    by_regime = sub.groupby("regime")["mean"].mean()
    by_regime = by_regime.reindex(_ordered_regimes(by_regime.index))
    best_high = sub.loc[sub.groupby(series, sort=False)["mean"].idxmax(), "regime"].to_numpy() == "high"
    listing = ", ".join(f"{r}: {_pp(v)}" for r, v in by_regime.items())
    detail = (f"Mean accuracy gain over `none` by regime, over {len(best_high)} setting(s) run in `high` and "
              f"another regime: {listing}. `high` gives the largest gain in {int(best_high.sum())} of "
              f"{len(best_high)} settings.")
    verdict = "holds" if by_regime.idxmax() == "high" and by_regime["high"] > 0 else "does not hold"
    return Claim("2b", statement, verdict, detail + _few_note(sub))


def claim_dvae_high(analysis: Analysis) -> Claim:
    statement = "DVAE improves accuracy in the high regime by up to 10 points"
    acc = _acc_gains(analysis)
    dvae = acc[acc["model"] == "dvae"]
    if dvae.empty:
        return Claim("3", statement, "not testable", "no DVAE run with a paired `none` baseline")
    high = dvae[dvae["regime"] == "high"]
    if high.empty:
        return Claim("3", statement, "not testable", "no DVAE run in the high regime with a paired `none` baseline")
    best = high.loc[high["mean"].idxmax()]
    detail = (f"Largest DVAE accuracy gain over `none` in the high regime: {_pp(best['mean'])}, "
              f"{_ci(best['ci_low'], best['ci_high'])} ({_cell_name(best)}, {best['n']} seed(s)); "
              f"mean over all {len(high)} DVAE high-regime cell(s): {_pp(high['mean'].mean())}.")
    if 100 * best["mean"] >= CLAIM_3_POINTS:
        return Claim("3", statement, "holds", detail + _few_note(high))
    if best["mean"] <= 0:
        note = " DVAE does not improve accuracy in the high regime at all."
    else:
        reach = " (its interval reaches 10 points, the mean does not)" if best["ci_high"] >= 0.10 else ""
        note = f" That is short of 10 points{reach}."
    return Claim("3", statement, "does not hold", detail + note + _few_note(high))


def claim_beats(analysis: Analysis, baseline: str) -> Claim:
    statement = f"Generators that beat `{baseline}`"
    if baseline not in analysis.baselines:
        return Claim(f"4-{baseline}", statement, "not testable", f"no `{baseline}` runs in the selected experiments")
    acc = _acc_gains(analysis, baseline)
    if acc.empty:
        return Claim(f"4-{baseline}", statement, "not testable",
                     f"no generator run shares data, seed, classifier and profile with a `{baseline}` run")
    sig = acc[acc["ci_low"] > 0]
    ahead = acc[(acc["mean"] > 0) & ~(acc["ci_low"] > 0)]
    parts = []
    if len(sig):
        parts.append(f"better with the 95% interval above 0 in {len(sig)} of {len(acc)} cells: "
                     + "; ".join(f"{_cell_name(r)} {_pp(r['mean'])} {_ci(r['ci_low'], r['ci_high'])}"
                                 for _, r in sig.iterrows()))
    if len(ahead):
        parts.append(f"ahead on average but within noise in {len(ahead)} cell(s): "
                     + "; ".join(f"{_cell_name(r)} {_pp(r['mean'])}" for _, r in ahead.iterrows()))
    behind = len(acc) - len(sig) - len(ahead)
    if behind:
        best = acc.loc[acc["mean"].idxmax()]
        parts.append(f"not ahead in {behind} cell(s)" + ("" if len(sig) or len(ahead)
                                                         else f" (best: {_cell_name(best)} {_pp(best['mean'])})"))
    detail = f"Accuracy gain over `{baseline}`: " + "; ".join(parts) + "." + _few_note(acc)
    if len(sig):
        return Claim(f"4-{baseline}", statement, "beaten by " + ", ".join(dict.fromkeys(sig["variant"])), detail)
    return Claim(f"4-{baseline}", statement, "not beaten", detail)


def claims(analysis: Analysis) -> list[Claim]:
    return [claim_best_families(analysis), claim_small_sizes(analysis), claim_high_regime(analysis),
            claim_dvae_high(analysis), claim_beats(analysis, "none-strong"), claim_beats(analysis, "oversample")]


# ---------------------------------------------------------------- plots
def _series_labels(results: pd.DataFrame) -> pd.Series:
    """The variant's name, plus the mix (and setup) when one variant has several of them."""
    varying = [c for c in ("profile", "mix_ratio", "mix_strategy", "mix_weight", "mix_filter", "setup")
               if (results.groupby("variant")[c].nunique() > 1).any()]
    label = results["variant"].astype(str)
    if any(c.startswith("mix") for c in varying):
        label = label + " " + results.apply(_row_mix, axis=1)
    if "setup" in varying:
        label = label + " #" + results["setup"]
    if "profile" in varying:
        label = label + " (" + results["profile"] + ")"
    return label


def _ordered_regimes(values) -> list[str]:
    return sorted(set(values), key=lambda r: (REGIME_ORDER.index(r), "") if r in REGIME_ORDER
                  else (len(REGIME_ORDER), r))


def _colors(labels: list[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}


def fig_accuracy_vs_size(results: pd.DataFrame):
    from matplotlib.figure import Figure

    res = results.assign(label=_series_labels(results))
    regimes = _ordered_regimes(res["regime"])
    classifiers = sorted(res["classifier"].unique())
    labels = list(dict.fromkeys(res.sort_values("model", key=lambda m: ~m.isin(BASELINES))["label"]))
    colors = _colors(labels)
    fig = Figure(figsize=(4.2 * len(regimes) + 2.4, 3.3 * len(classifiers) + 0.4), layout="constrained")
    axes = fig.subplots(len(classifiers), len(regimes), squeeze=False, sharex=True, sharey=True)
    sizes = sorted(res["size"].unique())
    for i, clf in enumerate(classifiers):
        for j, regime in enumerate(regimes):
            ax = axes[i][j]
            cell = res[(res["classifier"] == clf) & (res["regime"] == regime)]
            for label, g in cell.groupby("label", sort=False):
                g = g.sort_values("size")
                mean, std = 100 * g["accuracy_mean"], 100 * g["accuracy_std"].fillna(0)
                base = g["model"].iloc[0] in BASELINES
                ax.errorbar(g["size"], mean, yerr=std, marker="o", ms=4, lw=1.6, capsize=2, ls="--" if base else "-",
                            color=colors[label], label=label)  # the bar shows the spread where a band cannot
                ax.fill_between(g["size"], mean - std, mean + std, color=colors[label], alpha=0.15, lw=0)
            if len(sizes) > 1 and sizes[-1] / sizes[0] >= 4:
                ax.set_xscale("log")
            ax.set_xticks(sizes, [str(s) for s in sizes], fontsize=8)
            ax.minorticks_off()
            ax.set_title(f"{regime} — {clf}", fontsize=10)
            ax.grid(alpha=0.3)
            if i == len(classifiers) - 1:
                ax.set_xlabel("real training images (size)")
            if j == 0:
                ax.set_ylabel("test accuracy (%)")
    handles = {lab: h for ax in axes.flat for h, lab in zip(*ax.get_legend_handles_labels())}
    fig.legend(list(handles.values()), list(handles), loc="outside right center", fontsize=8,
               title="mean ± std over seeds", title_fontsize=8, frameon=False)
    return fig


def fig_gain_heatmap(gains: pd.DataFrame):
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    acc = gains[(gains["baseline"] == "none") & (gains["metric"] == "accuracy")]
    if acc.empty:
        return None
    table = acc.groupby(["variant", "regime"])["mean"].mean().unstack("regime") * 100
    table = table[_ordered_regimes(table.columns)]
    table = table.loc[table.mean(axis=1).sort_values(ascending=False).index]
    values = table.to_numpy(dtype=float)
    lim = max(float(np.nanmax(np.abs(values))), 0.5)
    fig = Figure(figsize=(1.6 * table.shape[1] + 3.0, 0.45 * table.shape[0] + 1.6), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="RdBu", norm=TwoSlopeNorm(0, -lim, lim), aspect="auto")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            ax.text(j, i, "—" if np.isnan(v) else f"{v:+.1f}", ha="center", va="center", fontsize=9,
                    color="white" if not np.isnan(v) and abs(v) > 0.6 * lim else "black")
    ax.set_xticks(range(table.shape[1]), table.columns)
    ax.set_yticks(range(table.shape[0]), table.index)
    ax.set_title("accuracy gain over 'none' (pp; mean over sizes, classifiers, mixes)", fontsize=9)
    fig.colorbar(im, ax=ax, label="pp")
    return fig


def fig_quality_vs_gain(results: pd.DataFrame, gains: pd.DataFrame):
    from matplotlib.figure import Figure

    acc = gains[(gains["baseline"] == "none") & (gains["metric"] == "accuracy") & ~gains["model"].isin(BASELINES)]
    qualities = [q for q in QUALITY if f"{q}_mean" in results and results[f"{q}_mean"].notna().any()]
    if acc.empty or not qualities:
        return None
    data = acc.merge(results[CELL + [f"{q}_mean" for q in qualities]], on=CELL, how="left")
    data = data[data[[f"{q}_mean" for q in qualities]].notna().any(axis=1)]
    if data.empty:
        return None
    variants = list(dict.fromkeys(data["variant"]))
    colors = _colors(variants)
    fig = Figure(figsize=(4.6 * len(qualities) + 1.8, 3.8), layout="constrained")
    axes = fig.subplots(1, len(qualities), squeeze=False)[0]
    for ax, q in zip(axes, qualities):
        for v, g in data[data[f"{q}_mean"].notna()].groupby("variant", sort=False):
            err = np.vstack([100 * (g["mean"] - g["ci_low"]), 100 * (g["ci_high"] - g["mean"])])
            ax.errorbar(g[f"{q}_mean"], 100 * g["mean"], yerr=np.nan_to_num(err), fmt="o", ms=5, capsize=2,
                        color=colors[v], label=v)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel(QUALITY_LABELS[q], fontsize=9)
        ax.set_ylabel("accuracy gain over 'none' (pp, 95% CI)", fontsize=9)
        ax.grid(alpha=0.3)
    handles = {lab: h for ax in axes for h, lab in zip(*ax.get_legend_handles_labels())}
    fig.legend(list(handles.values()), list(handles), loc="outside right center", fontsize=8, frameon=False)
    return fig


def fig_sample_grids(grids: dict[str, tuple[Path, str]]):
    from matplotlib.figure import Figure
    from matplotlib.image import imread

    if not grids:
        return None
    cols = min(len(grids), 4)
    rows = math.ceil(len(grids) / cols)
    fig = Figure(figsize=(5.0 * cols, 4.4 * rows), layout="constrained")  # ~ the grids' own pixels at 100 dpi
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (variant, (path, caption)) in zip(axes.flat, grids.items()):
        ax.imshow(imread(path))
        ax.set_title(f"{variant}\n{caption}", fontsize=8)
    return fig


def _sample_grids(tracker, runs: pd.DataFrame, folder: Path) -> dict[str, tuple[Path, str]]:
    """``samples/grid.png`` of one run per generator variant (the latest that has one)."""
    grids = {}
    gen = runs[~runs["model"].isin(BASELINES)].sort_values("start_time", ascending=False)
    for variant, g in gen.groupby("variant", sort=True):
        for _, r in g.head(3).iterrows():  # a run without the artifact (e.g. crashed upload): try the next
            path = tracking.download_artifact(tracker, r["run_id"], "samples/grid.png", _mkdir(folder / r["run_id"]))
            if path is not None:
                grids[variant] = (path, f"run {r['run_id'][:8]} · {r['regime']}/{r['size']} seed {r['seed']}")
                break
    return grids


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------- rendering
def _fmt_metric(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "—"
    return f"{100 * mean:.1f}" + ("" if pd.isna(std) else f" ± {100 * std:.1f}")


def _fmt_gain(mean: float, lo: float, hi: float) -> str:
    if pd.isna(mean):
        return "—"
    return f"{100 * mean:+.1f}" + (" (1 seed)" if pd.isna(lo) else f" [{100 * lo:+.1f}, {100 * hi:+.1f}]")


def _id_columns(df: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """The columns that name a cell, shown only when they tell cells apart."""
    out = pd.DataFrame({"variant": df["variant"]})
    if (results["variant"] != results["model"]).any():
        out["model"] = df["model"]
    if results["profile"].nunique() > 1:
        out["profile"] = df["profile"]
    out["regime"], out["size"], out["classifier"] = df["regime"], df["size"], df["classifier"]
    out["mix"] = df.apply(_row_mix, axis=1) if len(df) else []
    if (results.groupby([c for c in CELL if c != "setup"])["setup"].nunique() > 1).any():
        out["setup"] = df["setup"]
    return out


def display_results(analysis: Analysis) -> pd.DataFrame:
    res = analysis.results
    out = _id_columns(res, res)
    out["seeds"] = [f"{n}{FEW if few else ''}" for n, few in zip(res["seeds"], res["few_seeds"])]
    for m in METRICS:
        if f"{m}_mean" in res:
            out[LABELS[m]] = [_fmt_metric(a, b) for a, b in zip(res[f"{m}_mean"], res[f"{m}_std"])]
    for q in QUALITY:
        if f"{q}_mean" in res and res[f"{q}_mean"].notna().any():
            out[f"gen/{q}"] = ["—" if pd.isna(a) else f"{a:.3g}" for a in res[f"{q}_mean"]]
    return out


def display_gains(analysis: Analysis) -> pd.DataFrame:
    g = analysis.gains
    if g.empty:
        return pd.DataFrame()
    keys = CELL + ["baseline"]
    wide = g.set_index(keys + ["metric"])[["mean", "ci_low", "ci_high", "n"]].unstack("metric")
    flat = _sort_cells(wide.index.to_frame(index=False))
    wide = wide.reindex(pd.MultiIndex.from_frame(flat[keys]))
    out = _id_columns(flat, analysis.results)
    out["vs"] = flat["baseline"].to_numpy()
    n = wide["n"].max(axis=1).to_numpy()  # pairs of the metric with the most (minority recall may be absent)
    out["pairs"] = [f"{int(k)}{FEW if k < MIN_SEEDS else ''}" for k in n]
    for m in METRICS:
        if ("mean", m) in wide:
            out[f"Δ {LABELS[m]}"] = [_fmt_gain(a, lo, hi) for a, lo, hi in
                                     zip(wide[("mean", m)], wide[("ci_low", m)], wide[("ci_high", m)])]
    return out.reset_index(drop=True)


def display_missing(analysis: Analysis) -> pd.DataFrame:
    mi = analysis.missing
    if mi.empty:
        return pd.DataFrame()
    out = _id_columns(mi, analysis.results)
    out["missing baseline"] = mi["baseline"].to_numpy()
    out["seeds without it"] = mi["missing_seeds"].to_numpy()
    out["consequence"] = ["no gain reported" if p == 0 else f"gain over {p} of {s} seeds"
                          for p, s in zip(mi["paired_seeds"], mi["seeds"])]
    return out


def _md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return ""

    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


FIGURE_TITLES = {
    "accuracy_vs_size": "Test accuracy vs size, per regime (one line per variant, band = ± std over seeds)",
    "gain_heatmap": "Accuracy gain over `none`, variant × regime",
    "quality_vs_gain": "Generator quality vs accuracy gain over `none`",
    "sample_grids": "Sample grids, one run per variant (one row per class)",
}


def _intro(meta: dict) -> list[str]:
    return [f"Experiments: {', '.join(meta['experiments'])} — {meta['n_runs']} finished experiment runs, "
            f"{meta['n_cells']} cells (store `{meta['uri']}`, generated {meta['when']}).",
            "Metrics are on the official test set, in %, mean ± std over seeds. A gain is the paired difference "
            "to a real-only baseline run on the same data draw, seed, classifier and profile, in percentage "
            f"points (pp): mean over the paired seeds with a 95% t-interval. {FEW} marks cells with fewer than "
            f"{MIN_SEEDS} seeds."]


def render_md(analysis: Analysis, claim_list: list[Claim], figures: dict[str, bytes], meta: dict,
              plot_paths: dict[str, str]) -> str:
    intro, how = _intro(meta)
    parts = ["# synthboost report", "", intro, "", how, "", "## Claims", ""]
    for c in claim_list:
        parts.append(f"- **({c.key}) {c.statement} — {c.verdict}.** {c.detail}")
    parts += ["", "## Plots", ""]
    for name, rel in plot_paths.items():
        parts += [f"**{FIGURE_TITLES[name]}**", "", f"![{name}]({rel})", ""]
    missing_figs = [FIGURE_TITLES[n] for n in FIGURE_TITLES if n not in figures]
    if missing_figs:
        parts += [f"Not drawn (no data for them): {'; '.join(missing_figs)}.", ""]
    parts += ["## Results (test set, %, mean ± std over seeds)", "", _md_table(display_results(analysis)), ""]
    gains = display_gains(analysis)
    parts += ["## Gains over the real-only baselines (pp, mean [95% CI] over paired seeds)", "",
              _md_table(gains) if not gains.empty else "No cell has a paired baseline.", ""]
    missing = display_missing(analysis)
    parts += ["## Missing baselines", "",
              _md_table(missing) if not missing.empty else "None: every cell has all its baseline runs.", ""]
    return "\n".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1400px;color:#222;
padding:0 1rem;line-height:1.45}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0} th,td{padding:.25rem .6rem;border-bottom:1px solid #eee;
text-align:left;white-space:nowrap} th{background:#f5f5f5;position:sticky;top:0}
tbody tr:hover{background:#fafafa} .meta{color:#555;font-size:.9rem}
.claim{margin:.6rem 0;padding:.5rem .8rem;border-left:4px solid #999;background:#fafafa}
.v{font-weight:600;padding:.05rem .45rem;border-radius:3px;color:#fff;background:#777}
.v.holds,.v.beaten{background:#2e7d32} .v.not-hold,.v.not-beaten{background:#c62828}
.v.not-testable{background:#757575} code{background:#f0f0f0;padding:0 .2rem;border-radius:3px}
figure{margin:1rem 0} figcaption{font-weight:600;margin-bottom:.3rem}
img{max-width:100%;border:1px solid #eee}
"""


def _verdict_class(verdict: str) -> str:
    if verdict == "holds":
        return "holds"
    if verdict == "does not hold":
        return "not-hold"
    if verdict == "not testable":
        return "not-testable"
    return "beaten" if verdict.startswith("beaten") else "not-beaten"


def _html_table(df: pd.DataFrame, empty: str) -> str:
    if df.empty:
        return f"<p>{html.escape(empty)}</p>"
    return df.to_html(index=False, escape=True, border=0, na_rep="—")


def render_html(analysis: Analysis, claim_list: list[Claim], figures: dict[str, bytes], meta: dict) -> str:
    def esc(text: str) -> str:  # the texts are shared with Markdown: `code` spans become <code>
        return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))

    body = ["<h1>synthboost report</h1>", *(f'<p class="meta">{esc(t)}</p>' for t in _intro(meta)), "<h2>Claims</h2>"]
    for c in claim_list:
        body.append(f'<div class="claim"><b>({esc(c.key)}) {esc(c.statement)}</b> '
                    f'<span class="v {_verdict_class(c.verdict)}">{esc(c.verdict)}</span><br>{esc(c.detail)}</div>')
    body.append("<h2>Plots</h2>")
    for name, png in figures.items():
        data = base64.b64encode(png).decode()
        body.append(f'<figure id="{name}"><figcaption>{esc(FIGURE_TITLES[name])}</figcaption>'
                    f'<img alt="{name}" src="data:image/png;base64,{data}"></figure>')
    missing_figs = [FIGURE_TITLES[n] for n in FIGURE_TITLES if n not in figures]
    if missing_figs:
        body.append(f"<p>Not drawn (no data for them): {esc('; '.join(missing_figs))}.</p>")
    body += ["<h2>Results (test set, %, mean ± std over seeds)</h2>", _html_table(display_results(analysis), ""),
             "<h2>Gains over the real-only baselines (pp, mean [95% CI] over paired seeds)</h2>",
             _html_table(display_gains(analysis), "No cell has a paired baseline."),
             "<h2>Missing baselines</h2>",
             _html_table(display_missing(analysis), "None: every cell has all its baseline runs.")]
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>synthboost report</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")


def _csv_tables(analysis: Analysis, claim_list: list[Claim]) -> dict[str, pd.DataFrame]:
    claims_df = pd.DataFrame([{"claim": c.key, "statement": c.statement, "verdict": c.verdict, "detail": c.detail}
                              for c in claim_list])
    runs = analysis.runs.drop(columns=["start_time"])
    return {"runs.csv": runs, "results.csv": analysis.results, "gains.csv": analysis.gains,
            "missing_baselines.csv": analysis.missing, "claims.csv": claims_df}


# ---------------------------------------------------------------- the whole report
def build_report(*, experiments: list[str] | None, out_dir: Path, formats: set[str], tracker,
                 log_to_mlflow: bool = True) -> ReportResult:
    """Query the store, compare, write ``out_dir`` (report.md / report.html / CSVs) and log it as an MLflow run.

    ``experiments=None`` reads every experiment holding experiment runs.  Raises ``UserError`` for an unknown
    experiment, a selection without finished experiment runs, an unknown format, or when no generator cell has
    any real-only baseline to be compared with.
    """
    import tempfile

    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise UserError(f"unknown format {', '.join(map(repr, unknown)) or '(none given)'} "
                        f"(choose a subset of {', '.join(FORMATS)})")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    frame = tracking.runs_frame(tracker, experiments)
    seconds["query"] = time.perf_counter() - t0
    if frame.empty:
        where = f"experiment(s) {', '.join(map(repr, experiments))}" if experiments else tracker.uri
        raise UserError(f"no finished experiment runs in {where}; record some with `synthboost run` first")

    t0 = time.perf_counter()
    runs = tidy(frame)
    if runs.empty:
        raise UserError("the selected runs carry no test metrics (were they written by `synthboost run`?)")
    analysis = analyse(runs)
    _check_baselines(analysis)
    claim_list = claims(analysis)
    seconds["tables"] = time.perf_counter() - t0

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = sorted(runs["experiment"].unique())
    meta = {"experiments": names, "n_runs": len(runs), "n_cells": len(analysis.results), "uri": tracker.uri,
            "when": datetime.datetime.now().isoformat(timespec="seconds")}
    figures: dict[str, bytes] = {}
    if formats & {"md", "html"}:  # CSV alone needs no figures
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            grids = _sample_grids(tracker, runs, Path(tmp))
            seconds["grids"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            figures = _figures(analysis, grids)
            seconds["plots"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    files: dict[str, Path] = {}
    if "md" in formats:
        plot_paths = {}
        for name, png in figures.items():
            path = _mkdir(out_dir / "plots") / f"{name}.png"
            path.write_bytes(png)
            files[f"plots/{name}.png"] = path
            plot_paths[name] = f"plots/{name}.png"
        files["report.md"] = out_dir / "report.md"
        files["report.md"].write_text(render_md(analysis, claim_list, figures, meta, plot_paths))
    if "html" in formats:
        files["report.html"] = out_dir / "report.html"
        files["report.html"].write_text(render_html(analysis, claim_list, figures, meta))
    tables = _csv_tables(analysis, claim_list)
    if "csv" in formats:
        for fname, df in tables.items():
            files[fname] = out_dir / fname
            df.to_csv(files[fname], index=False)
    seconds["write"] = time.perf_counter() - t0

    run_id = None
    if log_to_mlflow:
        t0 = time.perf_counter()
        run_id = _log_report(tracker, files, meta=meta, claim_list=claim_list)
        seconds["log"] = time.perf_counter() - t0
    return ReportResult(out_dir=out_dir, files=files, tables={k.removesuffix(".csv"): v for k, v in tables.items()},
                        claims=claim_list, figures=figures, experiments=names, n_runs=len(runs), run_id=run_id,
                        seconds=seconds)


def _figures(analysis: Analysis, grids: dict[str, tuple[Path, str]]) -> dict[str, bytes]:
    made = {"accuracy_vs_size": fig_accuracy_vs_size(analysis.results),
            "gain_heatmap": fig_gain_heatmap(analysis.gains),
            "quality_vs_gain": fig_quality_vs_gain(analysis.results, analysis.gains),
            "sample_grids": fig_sample_grids(grids)}
    return {name: _png(fig) for name, fig in made.items() if fig is not None}


def _png(fig) -> bytes:
    """One render: the constrained layout fits legends and labels, so no second, "tight" pass is needed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _log_report(tracker, files: dict[str, Path], *, meta: dict, claim_list: list[Claim]) -> str:
    """The report as an MLflow run: tag ``synthboost.kind = report``, artifacts as in the output folder."""
    name = f"report: {', '.join(meta['experiments'])} ({meta['n_runs']} runs)"[:250]
    tags = {"synthboost.kind": "report", "report.experiments": ",".join(meta["experiments"]),
            "report.runs": meta["n_runs"], "git_commit": tracking.git_commit()}
    tags |= {f"claim.{c.key}": c.verdict for c in claim_list}
    with tracker.run(experiment=REPORTS_EXPERIMENT, name=name, tags=tags) as run:
        run.log_metrics({"report/runs": meta["n_runs"], "report/cells": meta["n_cells"]})
        for rel, path in files.items():
            folder = rel.rpartition("/")[0]
            run.log_file(path, folder or None)
    return run.id
