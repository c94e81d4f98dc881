"""What one synthetic image is worth: a mix's accuracy read off the real-only learning curve.

A *curve* is the mean test accuracy (or one class's test recall) of the untuned real-only runs against the real
training images they trained on, per protocol × profile × regime × classifier × classifier recipe — `none` on the
plain recipe, `none-strong` on the strong one — from at least ``MIN_SIZES`` sizes.  Two fits compete per curve:

* ``pchip``: the means made monotone (isotonic regression, weighted by seeds), then a shape-preserving cubic
  (PCHIP) on log-size — it passes through every (monotone) mean and never overshoots;
* ``power``: a saturating power law ``a − b·(n/n₀)^(−c)``, b ≥ 0 (least squares: for each c of a fine grid,
  a and b are linear — see ``EXPONENTS``).

The one with the smaller leave-one-size-out error (each interior size predicted from the others) is chosen; the
power law needs 4 sizes for that (3 parameters fitted on the rest), so on 3 sizes the interpolation is used.
In the table, ``censored`` = "above" makes ``n_equivalent`` and ``exchange_rate`` lower bounds (the curve's largest
size), "below" upper bounds; interval ends of ±inf mean resamples left the curve's range on that side.

A mix cell's *equivalent real size* is the real training count at which the chosen curve reaches the mix's mean
accuracy; outside the curve's measured range it is only a bound ("> largest", "< smallest": censored, never
extrapolated).  Its *exchange rate* is (equivalent − real) / synthetic images: 1 = a synthetic image is worth a
real one, 0 = worth nothing, < 0 = it hurts.  The 95% interval is a percentile bootstrap: the curve's per-seed
values at each size and the mix's per-seed values are resampled, the chosen fit refitted and inverted, so it
carries the seeds' and the fit's uncertainty (the fit's kind stays the one chosen on the full data).  Per class,
the same from the curves of ``test/recall_<k>`` against the class's own real training images, and the class's
synthetic images (in ``high`` the class counts are drawn per seed: the curve uses their mean over seeds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..regimes import CLASS_NAMES, NUM_CLASSES
from .frame import BASELINES, CELL, regime_rank, row_mix

MIN_SIZES = 3
BOOTSTRAP = 400  # resamples; the interval's ends move by well under its width from run to run at this count
GRID = 1024  # log-spaced points the fits are evaluated (and inverted) on
#: what one curve is drawn from (its runs' sizes and seeds are the points)
CURVE = ["protocol", "profile", "regime", "classifier", "recipe"]
#: the real-only runs a curve is made of: the plain recipe's and the strong recipe's
CURVE_MODELS = ("none", "none-strong")
#: the sizes the issue asks a curve to have (plus the full pool): what the report suggests running when short
LADDER = (1000, 2000, 3000, 4000, 5000, 10000)
ABOVE, BELOW = "above", "below"  # censoring: the mix is beyond the curve's largest / below its smallest size


@dataclass
class Fit:
    """One fitted curve: its kind, its values on a log grid over the measured range (non-decreasing), and the
    leave-one-size-out errors of both candidates (accuracy units; NaN where not computable)."""

    kind: str
    grid: np.ndarray  # real training images, log-spaced from the smallest measured size to the largest
    values: np.ndarray  # shape (GRID,) or (GRID, B) for bootstrap refits
    errors: dict[str, float] = field(default_factory=dict)
    params: tuple = ()

    def inverse(self, y) -> np.ndarray:
        """The real size at which the curve first reaches ``y`` (per column for bootstrap fits); −inf below the
        curve's smallest value, +inf above its largest."""
        v = self.values if self.values.ndim == 2 else self.values[:, None]
        y = np.broadcast_to(np.asarray(y, dtype=float), (v.shape[1],))
        i = np.clip((v < y[None, :]).sum(axis=0), 1, len(self.grid) - 1)  # first grid point reaching y
        cols = np.arange(v.shape[1])
        lo, hi = v[i - 1, cols], v[i, cols]
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.clip(np.where(hi > lo, (y - lo) / (hi - lo), 0.0), 0.0, 1.0)
        lg = np.log(self.grid)
        n = np.exp(lg[i - 1] + t * (lg[i] - lg[i - 1]))
        n = np.where(y < v[0], -np.inf, np.where(y > v[-1], np.inf, n))
        n = np.where(np.isnan(y) | np.isnan(v).any(axis=0), np.nan, n)
        return n if self.values.ndim == 2 else n[0]

    def __call__(self, n) -> np.ndarray:
        """The curve at real sizes ``n`` inside its range (linear in log-size between grid points)."""
        v = self.values if self.values.ndim == 1 else self.values[:, 0]
        return np.interp(np.log(n), np.log(self.grid), v)


# ---------------------------------------------------------------- the two candidate fits
def _grid(x: np.ndarray) -> np.ndarray:
    return np.exp(np.linspace(np.log(x[0]), np.log(x[-1]), GRID))


def monotone(x: np.ndarray, y: np.ndarray, *, weights=None, at: np.ndarray) -> np.ndarray:
    """Isotonic regression of ``y`` (columns: curves), then PCHIP on log ``x``, evaluated at ``at``."""
    from scipy.interpolate import PchipInterpolator
    from scipy.optimize import isotonic_regression

    y2 = y if y.ndim == 2 else y[:, None]
    iso = np.column_stack([isotonic_regression(col, weights=weights).x for col in y2.T])
    out = PchipInterpolator(np.log(x), iso, axis=0)(np.log(at))
    return out if y.ndim == 2 else out[:, 0]


#: exponents the power law's c is searched over; for each, a and b are a linear least-squares solve (variable
#: projection), so a fit — and hundreds of bootstrap refits at once — is a few array operations, not an iterative
#: optimiser per resample (scipy's curve_fit took ~2.5 ms per fit here: a second per curve at 400 resamples)
EXPONENTS = np.exp(np.linspace(np.log(0.02), np.log(4.0), 400))


def power_law(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares (a, b, c) of ``y ≈ a − b·(x/x₀)^(−c)`` with b ≥ 0 (non-decreasing), x₀ = ``x[0]``, per
    column of ``y`` (shape (3,) for a vector, (3, B) for columns)."""
    y2 = y if y.ndim == 2 else y[:, None]
    powers = (x / x[0])[None, :] ** -EXPONENTS[:, None]  # (C, m)
    design = np.stack([np.ones_like(powers), -powers], axis=2)  # (C, m, 2)
    coef = np.linalg.pinv(design) @ y2[None]  # (C, 2, B)
    coef[:, 1] = np.maximum(coef[:, 1], 0.0)  # a decreasing law is no learning curve: b = 0 is a flat line …
    flat = coef[:, 1] == 0.0
    coef[:, 0] = np.where(flat, y2.mean(axis=0)[None], coef[:, 0])  # … at the mean
    sse = np.square(design @ coef - y2[None]).sum(axis=1)  # (C, B)
    best = sse.argmin(axis=0)
    cols = np.arange(y2.shape[1])
    out = np.stack([coef[best, 0, cols], coef[best, 1, cols], EXPONENTS[best]])
    return out if y.ndim == 2 else out[:, 0]


def _power_values(params: np.ndarray, x0: float, at: np.ndarray) -> np.ndarray:
    a, b, c = (np.asarray(p)[None] for p in params)
    values = a - b * (at[:, None] / x0) ** -c
    return values if np.ndim(params[0]) else values[:, 0]


def loso_errors(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """Root-mean-square error of predicting each interior size's mean from the other sizes, per candidate."""
    inner = range(1, len(x) - 1)
    err: dict[str, list[float]] = {"pchip": [], "power": []}
    for i in inner:
        keep = np.arange(len(x)) != i
        err["pchip"].append(float(monotone(x[keep], y[keep], weights=weights[keep], at=x[i:i + 1])[0]) - y[i])
        if keep.sum() >= 3:  # three parameters: the law through three points still predicts a fourth
            p = power_law(x[keep], y[keep])
            err["power"].append(float(_power_values(p, x[keep][0], x[i:i + 1])[0]) - y[i])
    return {k: float(np.sqrt(np.mean(np.square(v)))) if v else math.nan for k, v in err.items()}


def fit_curve(x, y, *, weights=None, kind: str | None = None) -> Fit:
    """The chosen fit of mean values ``y`` at real sizes ``x`` (ascending, ≥ 3): the candidate with the smaller
    leave-one-size-out error, or ``kind`` when given."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    weights = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    errors = loso_errors(x, y, weights)
    if kind is None:
        kind = "power" if errors["power"] < errors["pchip"] else "pchip"  # NaN (too few sizes) -> pchip
    grid = _grid(x)
    if kind == "power":
        params = power_law(x, y)
        return Fit("power", grid, _power_values(params, x[0], grid), errors, tuple(float(p) for p in params))
    return Fit(kind, grid, np.maximum.accumulate(monotone(x, y, weights=weights, at=grid)), errors)


def refit(fit: Fit, x: np.ndarray, ys: np.ndarray, *, weights: np.ndarray) -> Fit:
    """``fit``'s kind refitted on each column of ``ys`` (bootstrap resamples of the means): values (GRID, B)."""
    if fit.kind == "power":
        values = _power_values(power_law(x, ys), x[0], fit.grid)
    else:
        values = monotone(x, ys, weights=weights, at=fit.grid)
    return Fit(fit.kind, fit.grid, np.maximum.accumulate(values, axis=0), fit.errors, fit.params)


# ---------------------------------------------------------------- the table
@dataclass
class Exchange:
    """The exchange table (one row per curve × mix cell × class, ``class`` = "all" for accuracy), the curves
    (one row per curve × class: sizes, seeds, the chosen fit and both candidates' errors) and, per curve key that
    has mixes but too few sizes, what to run."""

    table: pd.DataFrame
    curves: pd.DataFrame
    missing: list[str]

    @property
    def empty(self) -> bool:
        return self.table.empty


def _per_seed(runs: pd.DataFrame, keys: list[str], values: list[str]) -> pd.DataFrame:
    return runs.groupby([*keys, "seed"], sort=False, dropna=False)[values].mean().reset_index()


def _boot_means(groups: list[np.ndarray], rng: np.random.Generator, b: int) -> np.ndarray:
    """(len(groups), b): means of ``b`` resamples (with replacement) of each group's per-seed values."""
    out = np.empty((len(groups), b))
    for i, g in enumerate(groups):
        out[i] = g[rng.integers(0, len(g), size=(b, len(g)))].mean(axis=1)
    return out


def _bounds(samples: np.ndarray) -> tuple[float, float]:
    s = samples[~np.isnan(samples)]
    if len(s) == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(s, [2.5, 97.5], method="inverted_cdf")  # no interpolation: ±inf (censored) stays
    return float(lo), float(hi)


def exchange_rates(runs: pd.DataFrame, *, bootstrap: int = BOOTSTRAP, seed: int = 0) -> Exchange:
    """The exchange table of the tidy ``runs`` (``frame.tidy``; the own-data runs): see the module's text."""
    rng = np.random.default_rng(seed)
    if "n_real" not in runs or runs.empty:
        return Exchange(pd.DataFrame(), pd.DataFrame(), [])
    runs = runs[(runs["tuned"] == "") if "tuned" in runs else slice(None)]
    is_mix = (~runs["model"].isin(BASELINES) | (runs["model"] == "oversample")) & (runs["n_synthetic"] > 0)
    mixes = runs[is_mix & runs["n_real"].notna()]
    real = runs[runs["model"].isin(CURVE_MODELS) & runs["n_real"].notna()]
    metrics = [("all", "accuracy", "n_real", "n_synthetic")] + [
        (str(k), f"recall_{k}", f"real_{k}", f"synthetic_{k}") for k in range(NUM_CLASSES)]
    values = [m[1] for m in metrics] + [m[2] for m in metrics] + [m[3] for m in metrics[1:]] + ["n_synthetic"]
    values = list(dict.fromkeys(values))
    rows, curves, missing = [], [], []
    curve_groups = dict(list(real.groupby([*CURVE, "model"], sort=False)))
    mix_cells = list(mixes.groupby(CELL, sort=False, dropna=False))
    wanted = {tuple(cell[c] for c in CURVE) for cell in (dict(zip(CELL, k)) for k, _ in mix_cells)}
    for key in sorted(wanted, key=lambda k: (k[0], k[1], regime_rank(k[2]), k[3], k[4])):
        have = {m: g for (*ck, m), g in curve_groups.items() if tuple(ck) == key}
        usable = {m: g for m, g in have.items() if g["size"].nunique() >= MIN_SIZES}
        if not usable:
            missing.append(_missing_text(key, have, mixes))
            continue
        for model, g in usable.items():
            ps = _per_seed(g, ["size"], values).sort_values("size")
            sizes = sorted(ps["size"].unique())
            by_size = [ps[ps["size"] == s] for s in sizes]
            for label, metric, real_col, syn_col in metrics:
                if ps[metric].isna().all():
                    continue
                x = np.array([d[real_col].mean() for d in by_size])
                groups = [d[metric].dropna().to_numpy() for d in by_size]
                if any(len(v) == 0 for v in groups) or np.any(np.diff(x) <= 0):
                    continue
                w = np.array([len(v) for v in groups], dtype=float)
                y = np.array([v.mean() for v in groups])
                fit = fit_curve(x, y, weights=w)
                boot = refit(fit, x, _boot_means(groups, rng, bootstrap), weights=w)
                curves.append({**dict(zip(CURVE, key)), "baseline": model, "class": label,
                               "sizes": ",".join(map(str, sizes)), "min_seeds": int(w.min()), "fit": fit.kind,
                               "error_pchip": fit.errors["pchip"], "error_power": fit.errors["power"],
                               "n_low": x[0], "n_high": x[-1]})
                for cell_key, cells in mix_cells:
                    cell = dict(zip(CELL, cell_key))
                    if tuple(cell[c] for c in CURVE) != key:
                        continue
                    per_seed = _per_seed(cells, [], [metric, real_col, syn_col])
                    v = per_seed[metric].dropna().to_numpy()
                    n_real, n_syn = float(per_seed[real_col].mean()), float(per_seed[syn_col].mean())
                    if len(v) == 0 or n_syn <= 0:
                        continue
                    n_eq = float(fit.inverse(v.mean()))
                    censored = ABOVE if n_eq == np.inf else BELOW if n_eq == -np.inf else ""
                    n_eq = x[-1] if censored == ABOVE else x[0] if censored == BELOW else n_eq  # then a bound
                    n_boot = boot.inverse(_boot_means([v], rng, bootstrap)[0])
                    lo, hi = _bounds(n_boot)
                    rows.append({**cell, "baseline": model, "class": label, "seeds": len(v), "n_real": n_real,
                                 "n_synthetic": n_syn, "value": float(v.mean()), "fit": fit.kind,
                                 "curve_sizes": ",".join(map(str, sizes)), "censored": censored,
                                 "n_low": x[0], "n_high": x[-1], "n_equivalent": n_eq, "n_equivalent_low": lo,
                                 "n_equivalent_high": hi, "exchange_rate": (n_eq - n_real) / n_syn,
                                 "rate_low": (lo - n_real) / n_syn, "rate_high": (hi - n_real) / n_syn})
    return Exchange(pd.DataFrame(rows), pd.DataFrame(curves), missing)


def _missing_text(key: tuple, have: dict, mixes: pd.DataFrame) -> str:
    protocol, profile, regime, classifier, recipe = key
    present = sorted({int(s) for g in have.values() for s in g["size"].unique()})
    mix_sizes = sorted({int(s) for s in mixes.loc[(mixes[CURVE] == pd.Series(dict(zip(CURVE, key)))).all(axis=1),
                                                  "size"]})
    suggest = [s for s in sorted(set(LADDER) | set(mix_sizes)) if s not in present][:max(1, MIN_SIZES - len(present))]
    base = "/".join(have) or "`none` (or `none-strong`)"
    where = f"{regime}, {classifier}, {profile}, {protocol} protocol, recipe {recipe or '—'}"
    return (f"{where}: the real-only curve ({base}) has sizes {', '.join(map(str, present)) or 'none'} — "
            f"{MIN_SIZES} are needed; run `synthboost run --model none --regime {regime} --classifier {classifier} "
            f"--profile {profile} --size N` (≥ 3 seeds, the mixes' clf.* values) at N = "
            f"{', '.join(map(str, suggest))}")


# ---------------------------------------------------------------- how the report shows it
def fmt_size(n: float, censored: str) -> str:
    return {ABOVE: "> ", BELOW: "< "}.get(censored, "") + f"{n:,.0f}"


def fmt_rate(rate: float, lo: float, hi: float, censored: str) -> str:
    text = {ABOVE: "> ", BELOW: "< "}.get(censored, "") + f"{rate:.2f}"
    if np.isnan(lo) or np.isnan(hi):
        return text
    end = lambda v: "−∞" if v == -np.inf else "+∞" if v == np.inf else f"{v:.2f}"  # noqa: E731
    return f"{text} [{end(lo)}, {end(hi)}]"


def display(ex: Exchange) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the overall table, the per-class rates) as the report shows them."""
    t = ex.table
    if t.empty:
        return pd.DataFrame(), pd.DataFrame()
    t = t.assign(mix=t.apply(row_mix, axis=1), rate=[fmt_rate(*a) for a in zip(t["exchange_rate"], t["rate_low"],
                                                                                  t["rate_high"], t["censored"])])
    ident = ["regime", "classifier", "baseline", "variant", "size", "mix"]
    overall = t[t["class"] == "all"]
    out = overall[ident].copy()
    if t["protocol"].nunique() > 1:
        out.insert(0, "protocol", overall["protocol"])
    out["seeds"] = overall["seeds"].to_numpy()
    out["accuracy"] = [f"{100 * v:.1f}" for v in overall["value"]]
    out["real + synthetic"] = [f"{r:,.0f} + {s:,.0f}" for r, s in zip(overall["n_real"], overall["n_synthetic"])]
    out["fit"] = overall["fit"].to_numpy()
    out["equivalent real"] = [fmt_size(n, c) for n, c in zip(overall["n_equivalent"], overall["censored"])]
    out["exchange rate [95%]"] = overall["rate"].to_numpy()
    per_class = t[t["class"] != "all"].pivot_table(index=ident, columns="class", values="rate", aggfunc="first")
    per_class = per_class.rename(columns=lambda k: f"{k} {CLASS_NAMES[int(k)]}").reset_index()
    return out.reset_index(drop=True), per_class
