"""Statistics, claims and figures -> report.md (plots beside it), report.html (plots inside it) and CSV tables.

The Markdown and the HTML say the same things in the same words: the display tables and the intro are shared.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd

from ..errors import UserError
from .claims import Claim
from . import convergence as convergence_mod
from . import costs as cost_mod
from . import exchange as exchange_mod
from .exchange import Exchange
from .coverage import TITLE as COVERAGE_TITLE, Coverage
from .figures import FIGURE_TITLES, SECTION_FIGURES
from .frame import CELL, METRICS, QUALITY, row_mix
from .stats import MATCHED, MIN_SEEDS, TUNED, Analysis, sort_cells

FORMATS = ("md", "html", "csv")
LABELS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1",
          "minority_recall": "minority recall"}
FEW = "†"


def parse_formats(text: str) -> set[str]:
    """``"md,html"`` -> {"md", "html"}; an unknown or empty format is a ``UserError``."""
    chosen = {part.strip().lower() for part in text.split(",") if part.strip()}
    unknown = sorted(chosen - set(FORMATS))
    if unknown or not chosen:
        raise UserError(f"unknown format {', '.join(map(repr, unknown)) or repr(text)} "
                        f"(choose a comma-separated subset of {', '.join(FORMATS)})")
    return chosen


def check_formats(formats: set[str]) -> None:
    """A chosen set of formats (e.g. from ``parse_formats``) names only known ones and at least one."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise UserError(f"unknown format {', '.join(map(repr, unknown)) or '(none given)'} "
                        f"(choose a subset of {', '.join(FORMATS)})")


def _fmt_metric(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "—"
    return f"{100 * mean:.1f}" + ("" if pd.isna(std) else f" ± {100 * std:.1f}")


def _fmt_gain(mean: float, lo: float, hi: float) -> str:
    if pd.isna(mean):
        return "—"
    return f"{100 * mean:+.1f}" + (" (1 seed)" if pd.isna(lo) else f" [{100 * lo:+.1f}, {100 * hi:+.1f}]")


def _id_columns(df: pd.DataFrame, results: pd.DataFrame, recipes: dict[str, str] | None = None) -> pd.DataFrame:
    """The columns that name a cell, shown only when they tell cells apart (``recipes``: how to name a recipe;
    without it, no recipe column)."""
    out = pd.DataFrame({"protocol": df["protocol"]}) if results["protocol"].nunique() > 1 else pd.DataFrame(index=df.index)
    out["variant"] = df["variant"]
    if (results["variant"] != results["model"]).any():
        out["model"] = df["model"]
    if results["profile"].nunique() > 1:
        out["profile"] = df["profile"]
    out["regime"], out["size"], out["classifier"] = df["regime"], df["size"], df["classifier"]
    out["mix"] = df.apply(row_mix, axis=1) if len(df) else []
    if (results.groupby([c for c in CELL if c != "setup"])["setup"].nunique() > 1).any():
        out["setup"] = df["setup"]
    if recipes is not None and results["recipe"].nunique() > 1:
        out["recipe"] = [recipes.get(r, r) for r in df["recipe"]]
    if "tuned" in results and (results["tuned"] != "").any():
        out["tuned"] = [t or "—" for t in df["tuned"]]
    if "superseded" in results and (results["superseded"] != "").any():
        out["superseded"] = [t or "—" for t in df["superseded"]]
    return out


def display_results(analysis: Analysis) -> pd.DataFrame:
    return _display_cells(analysis.results, analysis.recipes)


def display_external(analysis: Analysis) -> pd.DataFrame:
    """The cells of runs that used external data, as the results table shows cells (no gains: never paired)."""
    return pd.DataFrame() if analysis.external.empty else _display_cells(analysis.external, analysis.recipes)


EXTERNAL_TITLE = "Runs using external data (kept apart: never paired with a baseline, never in a claim)"


def external_note(analysis: Analysis) -> str:
    sources = "; ".join(analysis.external_sources) or "unspecified"
    return (f"These runs learned from more than their cell's real images (tag `uses_external_data`; {sources}), so "
            "a difference to a real-only baseline would not measure the synthetic images alone.")


UNLABELED_TITLE = ("Runs that learned from an unlabelled pool (kept apart: paired only with the `pseudo-label` "
                   "baseline on the same images, never with `none`, never in a claim)")


def unlabeled_note(analysis: Analysis) -> str:
    return ("These runs trained on unlabelled official-train images beyond their cell's labelled ones (tag "
            "`unlabeled_pool`: `ssvae`'s `gen.unlabeled_size`), so a gain over `none` would be semi-supervised "
            "learning, not synthetic data. Each is paired with `pseudo-label` on the same data draw, seed, recipe and "
            "pool — the very same images, labelled by the strong recipe where it is sure, at the same step budget: "
            "a Δ above zero says the generator made better use of those images than pseudo-labels did.")


def unlabeled_sections(analysis: Analysis) -> list[tuple[str, pd.DataFrame]]:
    """The unlabelled-pool section's tables (results, gains over the pool baseline, missing ones), by subtitle."""
    a = analysis.unlabeled
    if a is None:
        return []
    return [("Results", _display_cells(a.results, a.recipes)),
            ("Gains over the pool baseline (pp, mean [95% CI] over paired seeds)", display_gains(a)),
            ("Missing pool baselines", display_missing(a))]


def _display_cells(res: pd.DataFrame, recipes: dict[str, str]) -> pd.DataFrame:
    out = _id_columns(res, res, recipes)
    out["seeds"] = [f"{n}{FEW if few else ''}" for n, few in zip(res["seeds"], res["few_seeds"])]
    for m in METRICS:
        if f"{m}_mean" in res:
            out[LABELS[m]] = [_fmt_metric(a, b) for a, b in zip(res[f"{m}_mean"], res[f"{m}_std"])]
    for q in QUALITY:
        if f"{q}_mean" in res and res[f"{q}_mean"].notna().any():
            out[f"gen/{q}"] = ["—" if pd.isna(a) else f"{a:.3g}" for a in res[f"{q}_mean"]]
    if "clf_steps_mean" in res and res["clf_steps_mean"].notna().any():  # the classifier's optimizer steps
        out["steps"] = ["—" if pd.isna(a) else f"{a:.0f}" for a in res["clf_steps_mean"]]
    return out


def display_gains(analysis: Analysis) -> pd.DataFrame:
    g = analysis.gains
    if g.empty:
        return pd.DataFrame()
    keys = CELL + ["baseline", "baseline_recipe", "comparison"]
    wide = g.set_index(keys + ["metric"])[["mean", "ci_low", "ci_high", "n", "p_value"]].unstack("metric")
    flat = sort_cells(wide.index.to_frame(index=False))
    wide = wide.reindex(pd.MultiIndex.from_frame(flat[keys]))
    out = _id_columns(flat, analysis.results, analysis.recipes)
    several = analysis.results["recipe"].nunique() > 1
    out["vs"] = [b if c == MATCHED else f"{b}: {c}" + (f", recipe {analysis.recipe(r)}" if several else "")
                 for b, r, c in zip(flat["baseline"], flat["baseline_recipe"], flat["comparison"])]
    n = wide["n"].max(axis=1).to_numpy()  # pairs of the metric with the most (minority recall may be absent)
    out["pairs"] = [f"{int(k)}{FEW if k < MIN_SEEDS else ''}" for k in n]
    if ("p_value", "accuracy") in wide:
        out["p (accuracy)"] = ["—" if pd.isna(p) else f"{p:.2g}" for p in wide[("p_value", "accuracy")]]
    for m in METRICS:
        if ("mean", m) in wide:
            out[f"Δ {LABELS[m]}"] = [_fmt_gain(a, lo, hi) for a, lo, hi in
                                     zip(wide[("mean", m)], wide[("ci_low", m)], wide[("ci_high", m)])]
    return out.reset_index(drop=True)


def display_headline(analysis: Analysis) -> pd.DataFrame:
    """One row per cell: accuracy, its gain over each paired baseline and the minority-recall gain (``headline.md``).

    A tuned cell's gains are against the baselines tuned with the same budget, in columns of their own."""
    res = sort_cells(analysis.results)
    out = _id_columns(res, analysis.results)
    out["seeds"] = [f"{n}{FEW if few else ''}" for n, few in zip(res["seeds"], res["few_seeds"])]
    out["accuracy"] = [_fmt_metric(a, b) for a, b in zip(res["accuracy_mean"], res["accuracy_std"])]
    g = analysis.gains
    if g.empty:
        return out
    cells = pd.MultiIndex.from_frame(res[CELL])

    def gains_of(metric: str, baseline: str, tuned: bool) -> pd.DataFrame:
        kind = g["comparison"] == TUNED if tuned else g["comparison"] != TUNED
        sub = g[(g["metric"] == metric) & (g["baseline"] == baseline) & kind].set_index(CELL)
        return sub.reindex(cells)

    first: list[tuple[str, bool] | None] = [None] * len(res)  # the first baseline each cell is paired with
    for tuned in (False, True):
        for b in analysis.baselines:
            acc = gains_of("accuracy", b, tuned)
            if acc["mean"].notna().any():
                out[f"Δ accuracy vs {b}" + (" (tuned)" if tuned else "")] = [
                    _fmt_gain(a, lo, hi) for a, lo, hi in zip(acc["mean"], acc["ci_low"], acc["ci_high"])]
                first = [f or ((b, tuned) if pd.notna(m) else None) for f, m in zip(first, acc["mean"])]
    recall = {k: gains_of("minority_recall", *k) for k in set(first) - {None}}
    texts = ["—" if k is None or pd.isna(recall[k]["mean"].iloc[i]) else
             f"{_fmt_gain(*recall[k][['mean', 'ci_low', 'ci_high']].iloc[i])} ({k[0]}{', tuned' if k[1] else ''})"
             for i, k in enumerate(first)]
    if any(t != "—" for t in texts):
        out["Δ minority recall (vs)"] = texts
    return out.reset_index(drop=True)


def display_missing(analysis: Analysis) -> pd.DataFrame:
    mi = analysis.missing
    if mi.empty:
        return pd.DataFrame()
    out = _id_columns(mi, analysis.results)
    out["missing baseline"] = mi["baseline"].to_numpy()
    out["on recipe"] = ["any (baseline vs plain baseline)" if r == "any" else analysis.recipe(r)
                        for r in mi["on_recipe"]]
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


CONVERGENCE_TITLE = "Does the budget converge? (a larger step budget against the cell's)"
COST_TITLE = "What it cost (core-hours per family, from the runs' own timings)"
EXCHANGE_TITLE = "What one synthetic image is worth (exchange rate against the real-only curve)"


def exchange_texts(ex: Exchange | None) -> list[str]:
    """The exchange section's paragraphs (shared by Markdown and HTML)."""
    if ex is None:
        return []
    texts = ["Each mix's accuracy is read off the real-only learning curve of its regime, classifier and classifier "
             "recipe (`none` for the plain recipe, `none-strong` for the strong one), seed by seed: a mix is read "
             "against the curve of its own seed, whose draws it shares. The *exchange rate* r says each synthetic "
             "image is worth r real ones — 1: as much as a real one (the `heldout` control's mark), 0: nothing "
             "(`noise`'s), below 0: it hurts — and *equivalent real* is real + r × synthetic images. The curve is a "
             "monotone interpolation (isotonic values, PCHIP on log-size: `pchip`) or a saturating power law "
             "a − b·n^(−c) (`power`), whichever predicts left-out sizes better over the seeds; beyond the curve's "
             "measured sizes only a bound is given (> largest, < smallest), never an extrapolation. Brackets: 95% "
             "interval, every rate that a paired t-test over the seeds (mix − its seed's curve) does not reject "
             "(±∞: accepted up to the edge of the curve's range). A mix that adds fewer synthetic images than "
             f"max({exchange_mod.MIN_SYNTHETIC}, {exchange_mod.MIN_SYNTHETIC_SHARE:.0%} of its real images) gets no "
             "rate (\"too few synthetic images\"); per class, each seed's curve counts that seed's own images of the "
             "class. Sizes count real *training* images (the cell's size less its validation split). Under the "
             "CNN's fixed step budget a mix trains for the steps of its own real size, not of its equivalent size, "
             "so a rate measured there is what the images are worth at that budget."]
    if ex.empty and not ex.missing:
        texts.append("No mix cell has synthetic images with a real-only curve to read them against.")
    texts += [f"Not priced — {m}." for m in ex.missing]
    return texts


def display_exchange_curves(ex: Exchange) -> pd.DataFrame:
    c = ex.curves
    if c.empty:
        return pd.DataFrame()
    c = c[c["class"] == "all"]

    def err(v: float) -> str:
        return "—" if pd.isna(v) else f"{100 * v:.2f}"

    return pd.DataFrame({"regime": c["regime"], "classifier": c["classifier"], "baseline": c["baseline"],
                         "sizes": c["sizes"], "seeds (min)": c["min_seeds"], "fit": c["fit"],
                         "held-out error, pchip (pp)": [err(v) for v in c["error_pchip"]],
                         "held-out error, power (pp)": [err(v) for v in c["error_power"]]}).reset_index(drop=True)


def _intro(meta: dict) -> list[str]:
    return [f"Experiments: {', '.join(meta['experiments'])} — {meta['n_runs']} finished experiment runs, "
            f"{meta['n_cells']} cells (store `{meta['store']}`, generated {meta['when']}).",
            "Metrics are on the official test set, in %, mean ± std over seeds. A gain is the paired difference "
            "to a baseline run on the same data draw, seed, classifier, profile and classifier recipe (its "
            "resolved `clf.*`), in percentage points (pp): mean over the paired seeds with a 95% t-interval and "
            "a paired t-test p; a cell without a baseline of its recipe is listed under missing baselines, never "
            "paired with another recipe (the stronger baselines alone are also compared with `none`: baseline vs "
            "plain baseline; and a generator run from its study's best with the baselines run from their studies' "
            f"best with the same tuning budget: {TUNED}, whatever recipe each found). {FEW} marks cells with fewer "
            f"than {MIN_SEEDS} seeds.",
            "A claim holds or does not hold only when its 95% interval lies on one side of its threshold; "
            f"otherwise, or on fewer than {MIN_SEEDS} seeds, it is inconclusive. \"Some generator beats\" claims "
            "are Holm-corrected over their cells (family-wise α = 0.05). "
            + (f"{meta['study_trials']} study trials are included." if meta.get("study_trials") else
               "Study trials are left out (`--include-studies` adds them).")
            + (f" {meta['external_runs']} runs that used external data are listed apart at the end, never paired."
               if meta.get("external_runs") else "")
            + (f" {meta['unlabeled_runs']} runs that learned from an unlabelled pool (ssvae, pseudo-label) are "
               "reported apart, paired only with `pseudo-label` on the same images."
               if meta.get("unlabeled_runs") else "")
            + _superseded_note(meta) + _unfinished_note(meta)]


def _unfinished_note(meta: dict) -> str:
    """One sentence on the experiment runs that are not FINISHED: never read, and named (by the id they were first
    recorded under, which their ledger record keeps)."""
    runs = meta.get("unfinished") or []
    if not runs:
        return ""
    named = "; ".join(f"{r['status']} {r['origin'][:8]} ({r['run_name']})" for r in runs[:5])
    more = f" and {len(runs) - 5} more" if len(runs) > 5 else ""
    return (f" {len(runs)} experiment run{'s' if len(runs) != 1 else ''} not FINISHED {'are' if len(runs) != 1 else 'is'}"
            f" left out (it holds no final metrics; the report reads FINISHED runs only): "
            f"{named}{more}.")


def _superseded_note(meta: dict) -> str:
    """One sentence on the superseded runs (tag ``superseded_by``): how many were left out, or shown, and why."""
    n = meta.get("superseded_left_out", 0)
    if n:
        whose = "their cells were" if n != 1 else "its cell was"
        return (f" {n} superseded run{'s were' if n != 1 else ' was'} left out: {whose} re-run under a newer "
                "config or code version (tag `superseded_by`; `--include-superseded` shows them as cells of their own).")
    if meta.get("superseded_included"):
        return (f" {meta['superseded_included']} superseded runs are included as cells of their own (column "
                "`superseded`), never pooled with current runs nor counted in a claim.")
    return ""


def minority_note(runs: pd.DataFrame) -> str:
    """What "minority recall" averages, named: the classes each data cell's draw made minority, per seed where
    they differ (on `high` each seed draws its own long tail, so the Δ averages different classes per seed)."""
    if "minority" not in runs:
        return ""
    from ..regimes import CLASS_NAMES

    def names(text: str) -> str:
        return ", ".join(f"{k} {CLASS_NAMES[int(k)]}" for k in text.split(",") if k.strip().isdigit())

    parts = []
    known = runs[runs["minority"] != ""]
    for (regime, size), g in known.groupby(["regime", "size"], sort=False):
        by_seed = g.groupby("seed")["minority"].first()
        if by_seed.nunique() == 1:
            parts.append(f"{regime}/{size}: {names(by_seed.iloc[0])}")
        else:
            parts.append(f"{regime}/{size}, a different set per seed (the Δ averages different classes): "
                         + "; ".join(f"seed {s}: {names(m)}" for s, m in by_seed.items()))
    return ("Minority recall is the mean test recall of the classes a seed's draw made minority — " + "; ".join(parts)
            + ".") if parts else ""


def headline_md(analysis: Analysis, meta: dict) -> str:
    """The headline table with a line saying where it comes from (for docs/results.md)."""
    exps = ", ".join(f"`{e}`" for e in meta["experiments"])
    table = display_headline(analysis)
    recall = minority_note(analysis.runs) if "Δ minority recall (vs)" in table else ""
    return (f"{_md_table(table)}\n\n"
            f"Test accuracy in %, mean ± std over seeds; Δ in pp, mean [95% CI] over paired seeds ({FEW}: fewer than "
            f"{MIN_SEEDS}), uncorrected for the many cells (the report's claims say what survives the correction); "
            f"each gain pairs runs of one data draw, seed, classifier recipe and tuning (a tuned cell against the "
            f"baselines tuned with the same budget: the \"(tuned)\" columns). {recall + ' ' if recall else ''}"
            f"From {exps} in {meta['store']}, generated {meta['when']} by `synthboost report`.\n")


def render_md(analysis: Analysis, claim_list: list[Claim], figures: dict[str, bytes], meta: dict,
              plot_paths: dict[str, str], exchange: Exchange | None = None,
              tables_costs: pd.DataFrame | None = None, coverage: Coverage | None = None) -> str:
    parts = ["# synthboost report", ""]
    for text in _intro(meta):
        parts += [text, ""]
    if coverage is not None:  # before the claims: what they rest on is complete, or not
        parts += [f"## {COVERAGE_TITLE}", "", coverage.text(), ""]
        if not coverage.missing.empty:
            parts += [_md_table(coverage.missing), ""]
    parts += ["## Claims", ""]
    for c in claim_list:
        parts.append(f"- **({c.key}) {c.statement} — {c.verdict}** ({c.evidence()}). {c.detail}")
    parts += ["", "## Plots", ""]
    for name, rel in plot_paths.items():
        if name not in SECTION_FIGURES:
            parts += [f"**{FIGURE_TITLES[name]}**", "", f"![{name}]({rel})", ""]
    missing_figs = [FIGURE_TITLES[n] for n in FIGURE_TITLES if n not in figures and n not in SECTION_FIGURES]
    if missing_figs:
        parts += [f"Not drawn (no data for them): {'; '.join(missing_figs)}.", ""]
    parts += ["## Results (test set, %, mean ± std over seeds)", "", _md_table(display_results(analysis)), ""]
    gains = display_gains(analysis)
    parts += ["## Gains over the real-only baselines (pp, mean [95% CI] over paired seeds)", "",
              _md_table(gains) if not gains.empty else "No cell has a paired baseline.", ""]
    if exchange is not None:
        parts += [f"## {EXCHANGE_TITLE}", ""]
        for text in exchange_texts(exchange):
            parts += [text, ""]
        if "exchange_rate" in plot_paths:
            parts += [f"![exchange_rate]({plot_paths['exchange_rate']})", ""]
        overall, per_class = exchange_mod.display(exchange)
        if not overall.empty:
            parts += [_md_table(overall), "", "Curves and their fits:", "",
                      _md_table(display_exchange_curves(exchange)), "", "Per class (from each class's test-recall curve, in images of that class):", "",
                      _md_table(per_class), ""]
    parts += [f"## {CONVERGENCE_TITLE}", "", *(t + "\n" for t in convergence_mod.texts(analysis.convergence))]
    if not analysis.convergence.empty:
        parts += [_md_table(convergence_mod.display(analysis.convergence)), ""]
    cost = cost_mod.display(tables_costs) if tables_costs is not None else pd.DataFrame()
    if not cost.empty:
        parts += [f"## {COST_TITLE}", "", cost_mod.NOTE, "", _md_table(cost), ""]
    missing = display_missing(analysis)
    parts += ["## Missing baselines", "",
              _md_table(missing) if not missing.empty else "None: every cell has all its baseline runs.", ""]
    external = display_external(analysis)
    if not external.empty:
        parts += [f"## {EXTERNAL_TITLE}", "", external_note(analysis), "", _md_table(external), ""]
    if analysis.unlabeled is not None:
        parts += [f"## {UNLABELED_TITLE}", "", unlabeled_note(analysis), ""]
        for title, table in unlabeled_sections(analysis):
            parts += [f"### {title}", "", _md_table(table) if not table.empty else "None.", ""]
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
.v.holds{background:#2e7d32} .v.not-hold{background:#c62828} .v.inconclusive{background:#757575}
code{background:#f0f0f0;padding:0 .2rem;border-radius:3px}
figure{margin:1rem 0} figcaption{font-weight:600;margin-bottom:.3rem}
img{max-width:100%;border:1px solid #eee}
"""


def _verdict_class(verdict: str) -> str:
    return {"holds": "holds", "does not hold": "not-hold"}.get(verdict, "inconclusive")


def _html_table(df: pd.DataFrame, empty: str) -> str:
    if df.empty:
        return f"<p>{html.escape(empty)}</p>"
    return df.to_html(index=False, escape=True, border=0, na_rep="—")


def render_html(analysis: Analysis, claim_list: list[Claim], figures: dict[str, bytes], meta: dict,
                exchange: Exchange | None = None, tables_costs: pd.DataFrame | None = None,
                coverage: Coverage | None = None) -> str:
    def esc(text: str) -> str:  # the texts are shared with Markdown: `code` spans become <code>
        return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))

    body = ["<h1>synthboost report</h1>", *(f'<p class="meta">{esc(t)}</p>' for t in _intro(meta))]
    if coverage is not None:
        body += [f'<h2 id="coverage">{esc(COVERAGE_TITLE)}</h2>', f"<p>{esc(coverage.text())}</p>",
                 _html_table(coverage.missing, "")]
    body.append("<h2>Claims</h2>")
    for c in claim_list:
        body.append(f'<div class="claim"><b>({esc(c.key)}) {esc(c.statement)}</b> '
                    f'<span class="v {_verdict_class(c.verdict)}">{esc(c.verdict)}</span> ({esc(c.evidence())})'
                    f'<br>{esc(c.detail)}</div>')
    body.append("<h2>Plots</h2>")
    def figure(name: str, png: bytes) -> str:
        data = base64.b64encode(png).decode()
        return (f'<figure id="{name}"><figcaption>{esc(FIGURE_TITLES[name])}</figcaption>'
                f'<img alt="{name}" src="data:image/png;base64,{data}"></figure>')

    body += [figure(name, png) for name, png in figures.items() if name not in SECTION_FIGURES]
    missing_figs = [FIGURE_TITLES[n] for n in FIGURE_TITLES if n not in figures and n not in SECTION_FIGURES]
    if missing_figs:
        body.append(f"<p>Not drawn (no data for them): {esc('; '.join(missing_figs))}.</p>")
    body += ["<h2>Results (test set, %, mean ± std over seeds)</h2>", _html_table(display_results(analysis), ""),
             "<h2>Gains over the real-only baselines (pp, mean [95% CI] over paired seeds)</h2>",
             _html_table(display_gains(analysis), "No cell has a paired baseline."),
             *_html_exchange(exchange, figures, esc),
             f"<h2>{esc(CONVERGENCE_TITLE)}</h2>",
             *(f"<p>{esc(t)}</p>" for t in convergence_mod.texts(analysis.convergence)),
             _html_table(convergence_mod.display(analysis.convergence), ""),
             *([f"<h2>{esc(COST_TITLE)}</h2>", f"<p>{esc(cost_mod.NOTE)}</p>",
                _html_table(cost_mod.display(tables_costs), "")]
               if tables_costs is not None and not tables_costs.empty else []),
             "<h2>Missing baselines</h2>",
             _html_table(display_missing(analysis), "None: every cell has all its baseline runs.")]
    if not analysis.external.empty:
        body += [f"<h2>{esc(EXTERNAL_TITLE)}</h2>", f"<p>{esc(external_note(analysis))}</p>",
                 _html_table(display_external(analysis), "")]
    if analysis.unlabeled is not None:
        body += [f"<h2>{esc(UNLABELED_TITLE)}</h2>", f"<p>{esc(unlabeled_note(analysis))}</p>"]
        for title, table in unlabeled_sections(analysis):
            body += [f"<h3>{esc(title)}</h3>", _html_table(table, "None.")]
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>synthboost report</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")


def _html_exchange(exchange: Exchange | None, figures: dict[str, bytes], esc) -> list[str]:
    if exchange is None:
        return []
    out = [f"<h2>{esc(EXCHANGE_TITLE)}</h2>", *(f"<p>{esc(t)}</p>" for t in exchange_texts(exchange))]
    if "exchange_rate" in figures:
        data = base64.b64encode(figures["exchange_rate"]).decode()
        out.append(f'<figure id="exchange_rate"><img alt="exchange_rate" src="data:image/png;base64,{data}"></figure>')
    overall, per_class = exchange_mod.display(exchange)
    if not overall.empty:
        out += [_html_table(overall, ""), "<p>Curves and their fits:</p>",
                _html_table(display_exchange_curves(exchange), ""),
                "<p>Per class (from each class's test-recall curve, in images of that class):</p>",
                _html_table(per_class, "")]
    return out


def csv_tables(analysis: Analysis, claim_list: list[Claim], *, exchange: Exchange | None = None,
               costs: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    claims_df = pd.DataFrame([{"claim": c.key, "statement": c.statement, "verdict": c.verdict, "n": c.n,
                               "unit": c.unit, "ci_low": c.ci_low, "ci_high": c.ci_high, "ci_level": c.level,
                               "detail": c.detail}
                              for c in claim_list])
    runs = analysis.runs.drop(columns=["start_time"])
    tables = {"runs.csv": runs, "results.csv": analysis.results, "gains.csv": analysis.gains,
              "missing_baselines.csv": analysis.missing, "claims.csv": claims_df}
    if not analysis.external.empty:
        tables["external_results.csv"] = analysis.external
    if not analysis.convergence.empty:
        tables["convergence.csv"] = analysis.convergence
    if analysis.unlabeled is not None:
        tables |= {"unlabeled_results.csv": analysis.unlabeled.results, "unlabeled_gains.csv": analysis.unlabeled.gains,
                   "unlabeled_missing_baselines.csv": analysis.unlabeled.missing}
    if exchange is not None and not exchange.empty:
        tables["exchange.csv"], tables["exchange_curves.csv"] = exchange.table, exchange.curves
    if costs is not None and not costs.empty:
        tables["costs.csv"] = costs
    return tables


def write(out_dir: Path, formats: set[str], *, analysis: Analysis, claim_list: list[Claim], figures: dict[str, bytes],
          meta: dict, tables: dict[str, pd.DataFrame], exchange: Exchange | None = None,
          coverage: Coverage | None = None) -> dict[str, Path]:
    """Write the chosen formats into the folder ``out_dir``; the files written, by their path relative to it."""
    files: dict[str, Path] = {}
    if "md" in formats:
        plot_paths = {}
        for name, png in figures.items():
            path = out_dir / "plots" / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png)
            files[f"plots/{name}.png"] = path
            plot_paths[name] = f"plots/{name}.png"
        files["report.md"] = out_dir / "report.md"
        files["report.md"].write_text(render_md(analysis, claim_list, figures, meta, plot_paths, exchange,
                                                tables.get("costs.csv"), coverage))
        files["headline.md"] = out_dir / "headline.md"  # what `make readme` pastes into docs/results.md
        files["headline.md"].write_text(headline_md(analysis, meta))
    if "html" in formats:
        files["report.html"] = out_dir / "report.html"
        files["report.html"].write_text(render_html(analysis, claim_list, figures, meta, exchange,
                                                    tables.get("costs.csv"), coverage))
    if "csv" in formats:
        for fname, df in tables.items():
            files[fname] = out_dir / fname
            df.to_csv(files[fname], index=False)
    return files
