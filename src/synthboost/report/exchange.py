"""What one synthetic image is worth: a mix's accuracy read off the real-only learning curve of its own seeds.

A seed's draws are nested across sizes and its mix trains on its baseline's very draw, so each mix is read only
against its own seed's curve; the interval inverts a paired t-test (bootstrap intervals covered 78% on 3 seeds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..regimes import CLASS_NAMES, NUM_CLASSES
from .frame import BASELINES, CELL, regime_rank, row_mix

MIN_SIZES = 3
GRID = 1024  # log-spaced points a seed's fit is evaluated on (between them: linear in log-size)
RATE_GRID = 2048  # rates the paired test is evaluated at, across the range every seed's curve covers
LEVEL = 0.95
#: the fewest synthetic images a seed's mix needs for a rate: at least MIN_SYNTHETIC and MIN_SYNTHETIC_SHARE of its
#: real images — read on log-size, the equivalent size's seed noise grows with the real count, and the rate divides
#: it by the synthetic count (a 1× mix's interval is ~10× narrower than a 0.1× mix's)
MIN_SYNTHETIC = 10
MIN_SYNTHETIC_SHARE = 0.1
TOO_FEW, NO_SYNTHETIC = "too few synthetic images", "no synthetic images"
NO_SHARED_SEED = "no seed shared with the curve"
#: what one curve is drawn from (its runs' sizes and seeds are the points)
CURVE = ["protocol", "profile", "regime", "classifier", "recipe"]
#: the real-only runs a curve is made of: the plain recipe's and the strong recipe's
CURVE_MODELS = ("none", "none-strong")
#: the sizes the issue asks a curve to have (plus the full pool): what the report suggests running when short
LADDER = (1000, 2000, 3000, 4000, 5000, 10000)
ABOVE, BELOW = "above", "below"  # censoring: the mix is beyond the curve's largest / below its smallest size


def min_synthetic(n_real) -> np.ndarray:
    """The fewest synthetic images that price a mix of ``n_real`` real images (see ``MIN_SYNTHETIC``)."""
    return np.maximum(MIN_SYNTHETIC, MIN_SYNTHETIC_SHARE * np.asarray(n_real, dtype=float))


@dataclass
class Fit:
    """One fitted curve: its kind, its values on a log grid over the measured range (non-decreasing), and the
    leave-one-size-out errors of both candidates (accuracy units; NaN where not computable)."""

    kind: str
    grid: np.ndarray  # real training images, log-spaced from the smallest measured size to the largest
    values: np.ndarray  # shape (GRID,)
    errors: dict[str, float] = field(default_factory=dict)
    params: tuple = ()

    def __call__(self, n) -> np.ndarray:
        """The curve at real sizes ``n`` inside its range (linear in log-size between grid points)."""
        return np.interp(np.log(n), np.log(self.grid), self.values)


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
#: projection), so a fit is a few array operations, not an iterative optimiser (scipy's curve_fit took ~2.5 ms per
#: fit here, and a curve is fitted once per seed and left-out size)
EXPONENTS = np.exp(np.linspace(np.log(0.02), np.log(4.0), 400))


def power_law(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares (a, b, c) of ``y ≈ a − b·(x/x₀)^(−c)`` with b ≥ 0 (non-decreasing), x₀ = ``x[0]``, per
    column of ``y`` (shape (3,) for a vector, (3, B) for columns)."""
    y2 = y if y.ndim == 2 else y[:, None]
    powers = (x / x[0])[None, :] ** -EXPONENTS[:, None]  # (C, m)
    pc = powers - powers.mean(axis=1, keepdims=True)
    yc = y2 - y2.mean(axis=0)
    # per exponent, y ≈ a − b·p is a straight line in p: its least-squares slope, made ≥ 0 (a decreasing law is
    # no learning curve: b = 0 is a flat line at the mean)
    b = np.maximum(-(pc @ yc) / np.square(pc).sum(axis=1, keepdims=True), 0.0)  # (C, B)
    a = y2.mean(axis=0)[None] + b * powers.mean(axis=1, keepdims=True)
    sse = np.square(y2[None] - (a[:, None, :] - b[:, None, :] * powers[:, :, None])).sum(axis=1)  # (C, B)
    best = sse.argmin(axis=0)
    cols = np.arange(y2.shape[1])
    coef = np.stack([a, b], axis=1)  # (C, 2, B)
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


def fit_curve(x, y, *, weights=None, kind: str | None = None, errors: dict | None = None) -> Fit:
    """The chosen fit of mean values ``y`` at real sizes ``x`` (ascending, ≥ 3): the candidate with the smaller
    leave-one-size-out error, or ``kind`` when given (``errors``: already computed)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    weights = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    errors = loso_errors(x, y, weights) if errors is None else errors
    if kind is None:
        kind = "power" if errors["power"] < errors["pchip"] else "pchip"  # NaN (too few sizes) -> pchip
    grid = _grid(x)
    if kind == "power":
        params = power_law(x, y)
        return Fit("power", grid, _power_values(params, x[0], grid), errors, tuple(float(p) for p in params))
    return Fit(kind, grid, np.maximum.accumulate(monotone(x, y, weights=weights, at=grid)), errors)


def seed_fits(x: np.ndarray, y: np.ndarray) -> list[Fit]:
    """One fit per seed (columns of ``x``, ``y``: sizes × seeds), all of the kind whose leave-one-size-out error,
    pooled over the seeds, is smaller; each fit carries the pooled errors."""
    per_seed = [loso_errors(x[:, s], y[:, s], np.ones(len(x))) for s in range(x.shape[1])]
    errors = {k: float(np.sqrt(np.mean([e[k] ** 2 for e in per_seed]))) for k in ("pchip", "power")}
    kind = "power" if errors["power"] < errors["pchip"] else "pchip"  # NaN (too few sizes) -> pchip
    return [fit_curve(x[:, s], y[:, s], kind=kind, errors=errors) for s in range(x.shape[1])]


# ---------------------------------------------------------------- the paired rate
@dataclass
class Rate:
    """An exchange rate: the estimate (a bound where ``censored``) and its 95% interval (NaN on one seed)."""

    estimate: float
    low: float
    high: float
    censored: str


def _crossing(r: np.ndarray, f: np.ndarray, a: int, b: int) -> float:
    """Where ``f`` (linear between grid points ``a`` and ``b``) is 0."""
    return float(r[a] + (r[b] - r[a]) * f[a] / (f[a] - f[b])) if f[a] != f[b] else float(r[b])


def paired_rate(fits: list[Fit], mix, real, synthetic, *, level: float = LEVEL) -> Rate | None:
    """The exchange rate of a mix against its seeds' own curves (per-seed arguments, one order); None out of range."""
    from scipy import stats

    mix, real, syn = (np.asarray(a, dtype=float) for a in (mix, real, synthetic))
    low = max((f.grid[0] - n) / s for f, n, s in zip(fits, real, syn))  # every seed stays inside its curve
    high = min((f.grid[-1] - n) / s for f, n, s in zip(fits, real, syn))
    if not low < high:
        return None
    r = np.linspace(low, high, RATE_GRID)
    at = real[None, :] + r[:, None] * syn[None, :]
    d = mix[None, :] - np.column_stack([f(np.clip(at[:, s], f.grid[0], f.grid[-1])) for s, f in enumerate(fits)])
    mean = d.mean(axis=1)  # non-increasing in r: each seed's curve rises with its size
    reached = mean <= 0
    if reached[0]:
        estimate, censored = low, BELOW if mean[0] < 0 else ""
    elif not reached.any():
        estimate, censored = high, ABOVE
    else:
        i = int(reached.argmax())
        estimate, censored = _crossing(r, mean, i - 1, i), ""
    k = len(mix)
    if k < 2:
        return Rate(estimate, math.nan, math.nan, censored)
    # accepted: |mean| ≤ t·sd/√k (written without the division, so that sd = 0 needs no case of its own)
    excess = np.abs(mean) - stats.t.ppf(0.5 + level / 2, k - 1) * d.std(axis=1, ddof=1) / math.sqrt(k)
    accepted = np.flatnonzero(excess <= 0)
    if len(accepted) == 0:  # nothing between grid points: a one-sided bound, or (seeds that agree) the estimate
        lo, hi = {ABOVE: (high, math.inf), BELOW: (-math.inf, low)}.get(censored, (estimate, estimate))
    else:
        a, b = accepted[0], accepted[-1]
        lo = -math.inf if a == 0 else _crossing(r, excess, a - 1, a)
        hi = math.inf if b == len(r) - 1 else _crossing(r, excess, b, b + 1)
        if not censored:  # the estimate is accepted, even where it falls between grid points
            lo, hi = min(lo, estimate), max(hi, estimate)
    return Rate(estimate, lo, hi, censored)


# ---------------------------------------------------------------- the table
@dataclass
class Exchange:
    """The exchange table (curve × mix cell × class), the curves with both fits' errors, and what to run next."""

    table: pd.DataFrame
    curves: pd.DataFrame
    missing: list[str]

    @property
    def empty(self) -> bool:
        return self.table.empty


def _per_seed(runs: pd.DataFrame, keys: list[str], values: list[str]) -> pd.DataFrame:
    return runs.groupby([*keys, "seed"], sort=False, dropna=False)[values].mean().reset_index()


def exchange_rates(runs: pd.DataFrame) -> Exchange:
    """The exchange table of the tidy ``runs`` (``frame.tidy``; the own-data runs): see the module's text."""
    if "n_real" not in runs or runs.empty:
        return Exchange(pd.DataFrame(), pd.DataFrame(), [])
    runs = runs[(runs["tuned"] == "") if "tuned" in runs else slice(None)]
    is_mix = ~runs["model"].isin(BASELINES) | ((runs["model"] == "oversample") & (runs["n_synthetic"] > 0))
    mixes = runs[is_mix & runs["n_real"].notna()]
    real = runs[runs["model"].isin(CURVE_MODELS) & runs["n_real"].notna()]
    metrics = [("all", "accuracy", "n_real", "n_synthetic")] + [
        (str(k), f"recall_{k}", f"real_{k}", f"synthetic_{k}") for k in range(NUM_CLASSES)]
    values = list(dict.fromkeys(v for m in metrics for v in m[1:]))
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
            table = _per_seed(g, ["size"], values).set_index(["size", "seed"]).unstack("seed").sort_index()
            sizes = list(table.index)
            for label, metric, real_col, syn_col in metrics:
                # sizes × seeds, only the seeds measured at every size: each seed's own curve
                y = table[metric]
                y = y.loc[:, y.notna().all()]
                x = table[real_col][y.columns]
                if y.empty or x.isna().any().any() or (np.diff(x.to_numpy(), axis=0) <= 0).any():
                    continue
                fits = seed_fits(x.to_numpy(), y.to_numpy())
                fit = fits[0]
                n_low, n_high = float(x.iloc[0].mean()), float(x.iloc[-1].mean())
                curves.append({**dict(zip(CURVE, key)), "baseline": model, "class": label,
                               "sizes": ",".join(map(str, sizes)), "min_seeds": y.shape[1], "fit": fit.kind,
                               "error_pchip": fit.errors["pchip"], "error_power": fit.errors["power"],
                               "n_low": n_low, "n_high": n_high})
                by_seed = dict(zip(y.columns, fits))
                for cell_key, cells in mix_cells:
                    cell = dict(zip(CELL, cell_key))
                    if tuple(cell[c] for c in CURVE) != key:
                        continue
                    per_seed = _per_seed(cells, [], [metric, real_col, syn_col]).dropna(subset=[metric])
                    if per_seed.empty:
                        continue
                    shared = per_seed[per_seed["seed"].isin(by_seed)]
                    priced = shared[shared[syn_col] >= min_synthetic(shared[real_col])]
                    note = ("" if len(priced) else NO_SHARED_SEED if shared.empty
                            else NO_SYNTHETIC if (shared[syn_col] == 0).all() else TOO_FEW)
                    used = priced if len(priced) else per_seed
                    n_real, n_syn = float(used[real_col].mean()), float(used[syn_col].mean())
                    rate = None if note else paired_rate([by_seed[s] for s in priced["seed"]], priced[metric],
                                                         priced[real_col], priced[syn_col])
                    if rate is None and not note:
                        continue  # the seeds' curve ranges share no rate (their counts differ too much)
                    rate = rate or Rate(math.nan, math.nan, math.nan, "")
                    eq = [n_real + v * n_syn for v in (rate.estimate, rate.low, rate.high)]
                    rows.append({**cell, "baseline": model, "class": label, "seeds": len(used), "n_real": n_real,
                                 "n_synthetic": n_syn, "value": float(used[metric].mean()), "fit": fit.kind,
                                 "curve_sizes": ",".join(map(str, sizes)), "censored": rate.censored,
                                 "n_low": n_low, "n_high": n_high, "n_equivalent": eq[0],
                                 "n_equivalent_low": eq[1], "n_equivalent_high": eq[2],
                                 "exchange_rate": rate.estimate, "rate_low": rate.low, "rate_high": rate.high,
                                 "note": note})
    return Exchange(pd.DataFrame(rows), pd.DataFrame(curves), missing)


def _curve_model(key: tuple, have: dict, mixes: pd.DataFrame) -> str:
    """The real-only model whose runs make the curve ``key``: the one already run, else `none-strong` when the
    mixes' classifier recipe carries the strong recipe's values, else `none`."""
    if have:
        return next(iter(have))
    from .. import classifiers
    from .frame import recipe_values

    protocol, profile, regime, classifier, recipe = key
    strong = getattr(classifiers.get(classifier).Config, "strong", {}).get(profile, {})
    clf = mixes.loc[mixes["recipe"] == recipe, "clf"] if "clf" in mixes else pd.Series(dtype=object)
    values = recipe_values(clf.iloc[0]) if len(clf) else {}
    return "none-strong" if strong and all(values.get(k) == str(v) for k, v in strong.items()) else "none"


def _missing_text(key: tuple, have: dict, mixes: pd.DataFrame) -> str:
    protocol, profile, regime, classifier, recipe = key
    present = sorted({int(s) for g in have.values() for s in g["size"].unique()})
    mix_sizes = sorted({int(s) for s in mixes.loc[(mixes[CURVE] == pd.Series(dict(zip(CURVE, key)))).all(axis=1),
                                                  "size"]})
    suggest = [s for s in sorted(set(LADDER) | set(mix_sizes)) if s not in present][:max(1, MIN_SIZES - len(present))]
    model = _curve_model(key, have, mixes)
    where = f"{regime}, {classifier}, {profile}, {protocol} protocol, recipe {recipe or '—'}"
    sizes = ", ".join(map(str, present)) or "none"
    return (f"{where}: the real-only curve ({'/'.join(have) or model}) has sizes {sizes} — {MIN_SIZES} are needed; "
            f"run `synthboost run --model {model} --regime {regime} --classifier {classifier} --profile {profile} "
            f"--size N` (≥ 3 seeds, the mixes' clf.* values) at N = {', '.join(map(str, suggest))}")


# ---------------------------------------------------------------- how the report shows it
def fmt_size(n: float, censored: str) -> str:
    return "—" if np.isnan(n) else {ABOVE: "> ", BELOW: "< "}.get(censored, "") + f"{n:,.0f}"


def fmt_rate(rate: float, lo: float, hi: float, censored: str, note: str = "") -> str:
    if note:
        return note
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
    t = t.assign(mix=t.apply(row_mix, axis=1), rate=[fmt_rate(*a) for a in zip(
        t["exchange_rate"], t["rate_low"], t["rate_high"], t["censored"], t["note"])])
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
