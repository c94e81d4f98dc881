"""What one synthetic image is worth (report/exchange.py): the curve fits on hand-made numbers, and the two
controls measured end to end on real data (held-out real images ≈ 1 real image each, noise ≤ 0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synthboost.report import exchange as ex
from synthboost.report.frame import CELL

X = np.array([425.0, 850.0, 1700.0, 3400.0, 8500.0])  # real training images of sizes 500 … 10,000


def law(n, a=0.88, b=0.20, c=0.5):
    return a - b * (n / X[0]) ** -c


def frame(points: list[tuple[str, int, int, float, float, float]]) -> pd.DataFrame:
    """A tidy runs frame of (model, size, seed, accuracy, n_real, n_synthetic) rows: balanced classes, every
    class's recall = the accuracy, one recipe."""
    rows = []
    for model, size, seed, acc, n_real, n_syn in points:
        row = {c: "" for c in CELL} | {"protocol": "fair", "variant": model, "model": model, "profile": "smoke",
                                       "regime": "balanced", "size": size, "classifier": "svm", "mix_ratio": 1.0,
                                       "mix_strategy": "uniform", "mix_weight": 1.0, "recipe": "r1", "seed": seed,
                                       "accuracy": acc, "n_real": n_real, "n_synthetic": n_syn}
        if model == "none":
            row["mix_ratio"] = 0.0
        for k in range(10):
            row |= {f"recall_{k}": acc, f"real_{k}": n_real / 10, f"synthetic_{k}": n_syn / 10}
        rows.append(row)
    return pd.DataFrame(rows)


def curve(noise: float = 0.0, seeds: int = 3, x=X, f=law) -> list:
    rng = np.random.default_rng(1)
    return [("none", int(n / 0.85), s, f(n) + noise * rng.standard_normal(), n, 0) for n in x for s in range(seeds)]


# ---------------------------------------------------------------- the fits
def test_the_interpolation_is_monotone_and_passes_through_the_curves_own_points():
    y = np.array([0.70, 0.76, 0.79, 0.81, 0.84])
    fit = ex.fit_curve(X, y, kind="pchip")
    np.testing.assert_allclose(fit(X), y, atol=1e-6)  # through every point
    assert np.all(np.diff(fit.values) >= 0)
    wobbly = np.array([0.70, 0.77, 0.75, 0.81, 0.84])  # a seed dip: made monotone first (isotonic), never undone
    fit = ex.fit_curve(X, wobbly, kind="pchip")
    assert np.all(np.diff(fit.values) >= 0)
    np.testing.assert_allclose(fit(X), [0.70, 0.76, 0.76, 0.81, 0.84], atol=1e-6)  # the pooled means


@pytest.mark.parametrize("kind", ["pchip", "power"])
def test_the_equivalent_size_inverts_the_fit(kind):
    fit = ex.fit_curve(X, law(X), kind=kind)
    n = np.array([500.0, 1234.0, 3000.0, 8000.0])
    np.testing.assert_allclose([fit.inverse(v) for v in fit(n)], n, rtol=2e-3)


def test_beyond_the_measured_range_the_size_is_censored_never_extrapolated():
    fit = ex.fit_curve(X, law(X))
    assert fit.inverse(law(X[-1]) + 0.01) == np.inf and fit.inverse(law(X[0]) - 0.01) == -np.inf
    # a mix better than the curve's largest size: a lower bound, said so in the table and the report
    runs = frame(curve() + [("heldout", 1000, s, law(X[-1]) + 0.02, 850.0, 850.0) for s in range(3)])
    row = ex.exchange_rates(runs, bootstrap=50).table.query("`class` == 'all'").iloc[0]
    assert row["censored"] == ex.ABOVE and row["n_equivalent"] == X[-1]
    assert row["exchange_rate"] == pytest.approx((X[-1] - 850) / 850)
    overall, _ = ex.display(ex.exchange_rates(runs, bootstrap=50))
    assert overall["equivalent real"].iloc[0] == "> 8,500" and overall["exchange rate [95%]"].iloc[0].startswith(">")


def test_the_power_law_is_chosen_when_the_curve_is_one_and_the_interpolation_when_it_is_not():
    fit = ex.fit_curve(X, law(X))
    assert fit.kind == "power" and fit.errors["power"] < 1e-3 < fit.errors["pchip"]
    s_shaped = np.array([0.60, 0.61, 0.70, 0.80, 0.81])  # slow, fast, saturated: no power law (concave in log n)
    assert ex.fit_curve(X, s_shaped).kind == "pchip"
    three = ex.fit_curve(X[:3], law(X[:3]))  # three sizes: nothing to compare the law on, so the interpolation
    assert three.kind == "pchip" and np.isnan(three.errors["power"])


def test_the_bootstrap_interval_contains_the_true_rate():
    # each synthetic image worth half a real one: the mix of 850 real + 850 synthetic does as 1,275 real
    truth = 0.5
    rng = np.random.default_rng(3)
    mix = [("vae", 1000, s, law(850 + truth * 850) + 0.002 * rng.standard_normal(), 850.0, 850.0)
           for s in range(5)]
    result = ex.exchange_rates(frame(curve(noise=0.002, seeds=5) + mix))
    row = result.table.query("`class` == 'all'").iloc[0]
    assert row["censored"] == "" and row["rate_low"] <= truth <= row["rate_high"]
    assert row["rate_high"] - row["rate_low"] < 0.4 and abs(row["exchange_rate"] - truth) < 0.1
    per_class = result.table.query("`class` != 'all'")
    assert len(per_class) == 10 and ((per_class["rate_low"] <= truth) & (truth <= per_class["rate_high"])).all()


def test_a_short_curve_says_which_sizes_to_run_instead_of_a_rate():
    runs = frame([r for r in curve() if r[4] in (425.0, 850.0)] + [("vae", 1000, s, 0.8, 850.0, 850.0)
                                                                    for s in range(3)])
    result = ex.exchange_rates(runs)
    assert result.empty and len(result.missing) == 1
    text = result.missing[0]
    assert "balanced, svm" in text and "sizes 500, 1000" in text and "--model none" in text and "N = 2000" in text


def test_the_report_counts_real_training_images_as_the_run_did(split):
    from synthboost.config import DataConfig
    from synthboost.data import make_split, regime_counts, train_counts

    assert sum(train_counts(split.counts)) == len(split.train_y)  # balanced/300, the 15% holdout
    counts = regime_counts("high", 1000, 2)
    folds = make_split(DataConfig(regime="high", size=1000, kfold=3, fold=1), seed=2)
    assert train_counts(counts, kfold=3, fold=1) == np.bincount(folds.train_y.numpy(), minlength=10).tolist()


def test_the_controls_are_never_a_family_in_the_claims():
    from synthboost.report.stats import accuracy_gains

    gains = pd.DataFrame({"baseline": "none", "metric": "accuracy", "comparison": "matched recipe",
                          "model": ["vae", "heldout", "noise"]})
    assert list(accuracy_gains(gains)["model"]) == ["vae"]


# ---------------------------------------------------------------- end to end, on real data
@pytest.mark.slow
def test_heldout_real_images_are_worth_one_real_image_and_noise_nothing(tracker, tmp_path):
    """Linear SVM, balanced: real-only at 500, 1,000, 2,000, 4,000 (3 seeds), then the controls at 1,000 with a
    1× mix, so that heldout's 850 + 850 images land inside the curve (at its 2,000 point).  The SVM trains in about
    a second per run and its balanced curve rises steadily over these sizes (≈ 77 → 82%), so three seeds pin the
    rate to about ±0.4 (measured: heldout 1.04 [0.71, 1.48], noise −0.42 [−∞, −0.26])."""
    from synthboost.pipeline import make_config, run_experiment
    from synthboost.report import build_report

    exp = "exchange-e2e"
    for size in (500, 1000, 2000, 4000):
        for seed in range(3):
            cfg = make_config(model="none", classifier="svm", regime="balanced", size=size, seed=seed, profile="smoke")
            run_experiment(cfg, tracker=tracker, experiment=exp, progress=False)
    for model in ("heldout", "noise"):
        for seed in range(3):
            cfg = make_config(model=model, classifier="svm", regime="balanced", size=1000, seed=seed,
                              profile="smoke", mix_ratio=1.0)
            run_experiment(cfg, tracker=tracker, experiment=exp, progress=False)
    result = build_report(experiments=[exp], out_dir=tmp_path, formats={"md", "csv"}, tracker=tracker,
                          log_to_mlflow=False)
    table = result.exchange.table
    rate = table[table["class"] == "all"].set_index("variant")
    held, noise = rate.loc["heldout"], rate.loc["noise"]
    assert held["n_real"] == 850 and held["n_synthetic"] == 850
    assert held["censored"] == "" and held["rate_low"] <= 1.0 <= held["rate_high"], held
    assert noise["exchange_rate"] <= 0.1 and noise["rate_low"] < 0.0, noise
    md = (tmp_path / "report.md").read_text()
    assert "## What one synthetic image is worth" in md and "![exchange_rate](plots/exchange_rate.png)" in md
    assert (tmp_path / "exchange.csv").is_file() and (tmp_path / "plots" / "exchange_rate.png").stat().st_size > 5000
    # the controls are no family: no claim compares them (claim 1 sees no family at all here)
    assert "heldout" not in {c.detail for c in result.claims if c.key == "1"}
