"""Statistics -> figures: accuracy vs size, the gain heatmap, quality vs gain, and the runs' own sample grids.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot) and handed on as PNG bytes; a figure
without data to show is not drawn.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .. import tracking
from .frame import BASELINES, CELL, QUALITY, ordered_regimes, regime_rank, row_mix
from .exchange import ABOVE, BELOW, Exchange
from .stats import TUNED, Analysis, accuracy_gains

QUALITY_LABELS = {"fid": "FID (classifier features; lower is better)",
                  "cas_cnn": "CAS, CNN (train synthetic, test real)",
                  "label_consistency": "label consistency (extractor agrees with the requested class)"}
FIGURE_TITLES = {
    "accuracy_vs_size": "Test accuracy vs size, per regime (one line per variant, band = ± std over seeds)",
    "gain_heatmap": "Accuracy gain over `none` (or `none-strong`, for mixes on its recipe), variant × regime",
    "quality_vs_gain": "Generator quality vs accuracy gain over `none`",
    "sample_grids": "Sample grids, one run per variant (one row per class)",
    "exchange_rate": "What one synthetic image is worth: exchange rate against the real-only curve "
                     "(95% paired t-interval)",
}
#: figures shown in a section of their own, not under "Plots"
SECTION_FIGURES = ("exchange_rate",)


def sample_grids(tracker, runs: pd.DataFrame, folder: Path) -> dict[str, tuple[Path, str]]:
    """``samples/grid.png`` of one run per generator variant (the latest that has one)."""
    grids = {}
    gen = runs[~runs["model"].isin(BASELINES)].sort_values("start_time", ascending=False)
    for variant, g in gen.groupby("variant", sort=True):
        for _, r in g.head(3).iterrows():  # a run without the artifact (e.g. crashed upload): try the next
            dst = folder / r["run_id"]
            dst.mkdir(parents=True, exist_ok=True)
            path = tracking.download_artifact(tracker, r["run_id"], "samples/grid.png", dst)
            if path is not None:
                grids[variant] = (path, f"run {r['run_id'][:8]} · {r['regime']}/{r['size']} seed {r['seed']}")
                break
    return grids


def grid_runs(runs: pd.DataFrame, has_grid) -> set[str]:
    """The runs whose sample grid a report may show: per experiment, variant and kind of run, the latest with a grid.

    Kinds are those a report's flags take or leave, so any selection's latest is one of them."""
    gen = runs[~runs["model"].isin(BASELINES)].sort_values("start_time", ascending=False)
    classes = [gen["experiment"], gen["variant"], gen["study"] != "", gen["superseded_by"] != "", gen["external_data"]]
    picks = (next((run_id for run_id in g["run_id"] if has_grid(run_id)), None)
             for _, g in gen.groupby(classes, sort=False))
    return {run_id for run_id in picks if run_id is not None}


def draw(analysis: Analysis, grids: dict[str, tuple[Path, str]], *,
         exchange: Exchange | None = None) -> dict[str, bytes]:
    """Every figure there is data for, by name (the keys of ``FIGURE_TITLES``), as PNG bytes."""
    made = {"accuracy_vs_size": fig_accuracy_vs_size(analysis.results),
            "gain_heatmap": fig_gain_heatmap(analysis.gains),
            "quality_vs_gain": fig_quality_vs_gain(analysis.results, analysis.gains),
            "sample_grids": fig_sample_grids(grids),
            "exchange_rate": None if exchange is None else fig_exchange_rate(exchange)}
    return {name: _png(fig) for name, fig in made.items() if fig is not None}


def _png(fig) -> bytes:
    """One render: the constrained layout fits legends and labels, so no second, "tight" pass is needed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _series_labels(results: pd.DataFrame) -> pd.Series:
    """The variant's name, plus the mix (and setup) when one variant has several of them."""
    varying = [c for c in ("profile", "mix_ratio", "mix_strategy", "mix_weight", "mix_filter", "setup")
               if (results.groupby("variant")[c].nunique() > 1).any()]
    label = results["variant"].astype(str)
    if any(c.startswith("mix") for c in varying):
        label = label + " " + results.apply(row_mix, axis=1)
    if "setup" in varying:
        label = label + " #" + results["setup"]
    if "profile" in varying:
        label = label + " (" + results["profile"] + ")"
    if "superseded" in results:  # --include-superseded: an old cell never reads like the current one
        label = label + results["superseded"].map(lambda s: f" [{s}]" if s else "")
    return label


def _colors(labels: list[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}


def fig_accuracy_vs_size(results: pd.DataFrame):
    from matplotlib.figure import Figure

    res = results.assign(label=_series_labels(results))
    regimes = ordered_regimes(res["regime"])
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

    # gains over `none` (and, for mixes on the strong recipe, over `none-strong`) on the run's own recipe, not
    # tuned-vs-tuned rows; one row per protocol × variant × baseline, so protocols never share a row
    acc = gains[gains["baseline"].isin(["none", "none-strong"]) & (gains["metric"] == "accuracy")
                & (gains["comparison"] != TUNED)]
    if acc.empty:
        return None
    protocol = acc["protocol"] if "protocol" in acc else pd.Series("fair", index=acc.index)
    label = (acc["variant"].astype(str) + " vs " + acc["baseline"].astype(str)
             + np.where(protocol == "fair", "", " [" + protocol.astype(str) + " protocol]"))
    table = acc.assign(label=label).groupby(["label", "regime"])["mean"].mean().unstack("regime") * 100
    table = table[ordered_regimes(table.columns)]
    table = table.loc[table.mean(axis=1).sort_values(ascending=False).index]
    values = table.to_numpy(dtype=float)
    lim = max(float(np.nanmax(np.abs(values))), 0.5)
    width = 1.6 * table.shape[1] + 1.5 + 0.07 * max(map(len, table.index))  # room for the row labels
    fig = Figure(figsize=(max(width, 6.0), 0.45 * table.shape[0] + 1.6), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="RdBu", norm=TwoSlopeNorm(0, -lim, lim), aspect="auto")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            ax.text(j, i, "—" if np.isnan(v) else f"{v:+.1f}", ha="center", va="center", fontsize=9,
                    color="white" if not np.isnan(v) and abs(v) > 0.6 * lim else "black")
    ax.set_xticks(range(table.shape[1]), table.columns)
    ax.set_yticks(range(table.shape[0]), table.index)
    ax.set_title("accuracy gain over the baseline of the same recipe\n(pp; mean over sizes, classifiers, mixes)",
                 fontsize=9)
    fig.colorbar(im, ax=ax, label="pp")
    return fig


def fig_quality_vs_gain(results: pd.DataFrame, gains: pd.DataFrame):
    from matplotlib.figure import Figure

    acc = accuracy_gains(gains)
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


def fig_exchange_rate(exchange: Exchange):
    """One panel per real-only curve: each mix's exchange rate and 95% interval; a censored rate is a triangle."""
    from matplotlib.figure import Figure

    t = exchange.table
    t = t[(t["class"] == "all") & t["exchange_rate"].notna()] if not t.empty else t
    if t.empty:
        return None
    t = t.assign(label=t["variant"].astype(str) + " " + t["size"].astype(str) + " " + t.apply(row_mix, axis=1),
                 panel=t["regime"] + " — " + t["classifier"] + " vs " + t["baseline"]
                 + np.where(t["protocol"] == "fair", "", " [" + t["protocol"] + "]"))
    panels = list(dict.fromkeys(t.sort_values("regime", key=lambda s: s.map(regime_rank))["panel"]))
    rows = max(len(g) for _, g in t.groupby("panel"))
    fig = Figure(figsize=(5.2 * len(panels), 0.38 * rows + 1.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        g = t[t["panel"] == panel].reset_index(drop=True)
        y = np.arange(len(g))
        low = (g["n_low"] - g["n_real"]) / g["n_synthetic"]
        high = (g["n_high"] - g["n_real"]) / g["n_synthetic"]
        rate = g["exchange_rate"].to_numpy()  # a bound where censored
        lo = np.where(np.isfinite(g["rate_low"]), g["rate_low"], low)  # an unbounded end stops at the curve's edge
        hi = np.where(np.isfinite(g["rate_high"]), g["rate_high"], high)
        ax.hlines(y, lo, hi, color="tab:blue", lw=2)
        marker = np.where(g["censored"] == ABOVE, ">", np.where(g["censored"] == BELOW, "<", "o"))
        for m in set(marker):
            ax.plot(rate[marker == m], y[marker == m], m, color="tab:blue", ms=7, ls="none")
        ax.axvline(0, color="grey", lw=0.8)
        ax.axvline(1, color="tab:green", lw=0.8, ls="--")
        ax.set_yticks(y, g["label"], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("real images one synthetic image is worth", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    return fig
