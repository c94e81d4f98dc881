"""What one synthetic image is worth (report/exchange.py): the curve fits on hand-made numbers, the interval's
coverage on simulated seeds, and the two controls measured end to end on real data (held-out real images ≈ 1 real
image each, noise ≤ 0)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synthboost.report import exchange as ex
from synthboost.report.frame import CELL

X = np.array([425.0, 850.0, 1700.0, 3400.0, 8500.0])  # real training images of sizes 500 … 10,000


def law(n, a=0.88, b=0.20, c=0.5):
    return a - b * (n / X[0]) ** -c


def frame(points: list[tuple[str, int, int, float, float, float]], *, per_class: bool = True) -> pd.DataFrame:
    """A tidy runs frame of (model, size, seed, accuracy, n_real, n_synthetic) rows: balanced classes, every
    class's recall = the accuracy (or not measured), one recipe."""
    rows = []
    for model, size, seed, acc, n_real, n_syn in points:
        row = {c: "" for c in CELL} | {"protocol": "fair", "variant": model, "model": model, "profile": "smoke",
                                       "regime": "balanced", "size": size, "classifier": "svm", "mix_ratio": 1.0,
                                       "mix_strategy": "uniform", "mix_weight": 1.0, "recipe": "r1", "seed": seed,
                                       "accuracy": acc, "n_real": n_real, "n_synthetic": n_syn}
        if model == "none":
            row["mix_ratio"] = 0.0
        for k in range(10):
            row |= {f"recall_{k}": acc if per_class else np.nan, f"real_{k}": n_real / 10, f"synthetic_{k}": n_syn / 10}
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
def test_the_rate_inverts_each_seeds_curve(kind):
    fits = [ex.fit_curve(X, law(X) + shift, kind=kind) for shift in (-0.01, 0.0, 0.02)]  # seeds of unequal draws
    for truth in (-0.3, 0.25, 1.0, 4.0):
        mix = [law(850 + truth * 850) + shift for shift in (-0.01, 0.0, 0.02)]  # each seed as its own curve says
        rate = ex.paired_rate(fits, mix, [850.0] * 3, [850.0] * 3)
        assert rate.censored == "" and rate.estimate == pytest.approx(truth, abs=0.01)
        assert rate.low == pytest.approx(truth, abs=0.01) and rate.high == pytest.approx(truth, abs=0.01)


def test_beyond_the_measured_range_the_size_is_censored_never_extrapolated():
    fits = [ex.fit_curve(X, law(X))] * 2
    above = ex.paired_rate(fits, [law(X[-1]) + 0.01] * 2, [850.0] * 2, [850.0] * 2)
    below = ex.paired_rate(fits, [law(X[0]) - 0.01] * 2, [850.0] * 2, [850.0] * 2)
    assert (above.censored, above.estimate, above.high) == (ex.ABOVE, pytest.approx((X[-1] - 850) / 850), np.inf)
    assert (below.censored, below.estimate, below.low) == (ex.BELOW, pytest.approx((X[0] - 850) / 850), -np.inf)
    # a mix better than the curve's largest size: a lower bound, said so in the table and the report
    runs = frame(curve() + [("heldout", 1000, s, law(X[-1]) + 0.02, 850.0, 850.0) for s in range(3)])
    row = ex.exchange_rates(runs).table.query("`class` == 'all'").iloc[0]
    assert row["censored"] == ex.ABOVE and row["n_equivalent"] == pytest.approx(X[-1])
    assert row["exchange_rate"] == pytest.approx((X[-1] - 850) / 850)
    overall, _ = ex.display(ex.exchange_rates(runs))
    assert overall["equivalent real"].iloc[0] == "> 8,500" and overall["exchange rate [95%]"].iloc[0].startswith(">")


def test_the_power_law_is_chosen_when_the_curve_is_one_and_the_interpolation_when_it_is_not():
    fit = ex.fit_curve(X, law(X))
    assert fit.kind == "power" and fit.errors["power"] < 1e-3 < fit.errors["pchip"]
    s_shaped = np.array([0.60, 0.61, 0.70, 0.80, 0.81])  # slow, fast, saturated: no power law (concave in log n)
    assert ex.fit_curve(X, s_shaped).kind == "pchip"
    three = ex.fit_curve(X[:3], law(X[:3]))  # three sizes: nothing to compare the law on, so the interpolation
    assert three.kind == "pchip" and np.isnan(three.errors["power"])


def test_the_interval_contains_the_true_rate():
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


def test_a_class_is_read_against_its_own_count_on_each_seed():
    # on `high` the class counts are drawn per seed: here class 2 holds 2% of seed 0's images, 10% of seed 1's and
    # 30% of seed 2's (a minority, then a majority), its recall follows its own count, a balancing mix adds 3×, 1×
    # and 0.2× that count, and each of its synthetic images is worth half a real one (averaging the counts over
    # the seeds, as before, read 1.68)
    truth, share = 0.5, {0: 0.02, 1: 0.10, 2: 0.30}
    runs = frame(curve() + [("vae", 1000, s, 0.8, 850.0, 850.0) for s in range(3)])
    count = runs["seed"].map(share) * runs["n_real"]
    synthetic = runs["seed"].map({0: 3.0, 1: 1.0, 2: 0.2}) * count * (runs["n_synthetic"] > 0)
    worth = count + truth * synthetic
    runs = runs.assign(real_2=count, synthetic_2=synthetic, recall_2=worth / (worth + 30))
    row = ex.exchange_rates(runs).table.query("`class` == '2'").iloc[0]
    assert row["censored"] == "" and row["exchange_rate"] == pytest.approx(truth, abs=0.05)
    assert row["rate_low"] <= truth <= row["rate_high"]


def coverage(truth: float, reps: int, *, seeds: int = 3, run_sd: float = 0.005, draw_sd: float = 0.0) -> float:
    """The share of ``reps`` simulated studies whose 95% interval holds ``truth``: each seed measures the curve
    ``law`` at every size of X and a mix of 850 real + 850 synthetic images worth ``truth`` real ones each; every
    run adds its own noise (``run_sd``), and the mix shares its draw's luck with its baseline at 850 (``draw_sd``)."""
    rng = np.random.default_rng(11)
    x = np.column_stack([X] * seeds)
    at_850 = (X == 850.0)[:, None]
    hits = []
    for _ in range(reps):
        draw = draw_sd * rng.standard_normal(seeds)
        y = law(x) + run_sd * rng.standard_normal(x.shape) + at_850 * draw[None, :]
        mix = law(850 + truth * 850) + run_sd * rng.standard_normal(seeds) + draw
        rate = ex.paired_rate(ex.seed_fits(x, y), mix, [850.0] * seeds, [850.0] * seeds)
        hits.append(rate.low <= truth <= rate.high)
    return float(np.mean(hits))


@pytest.mark.parametrize("truth, draw_sd", [(0.5, 0.0), (2.0, 0.0), (0.5, 0.01)])
def test_the_95pc_interval_covers_the_true_rate_on_three_simulated_seeds(truth, draw_sd):
    # 300 studies of 3 seeds: a 95% interval must hold the truth in ≥ 90% of them (binomial sd 1.3 pp); the
    # percentile bootstrap used before held it in 78% (truth 0.5 and 2.0) on the same simulation
    covered = coverage(truth, 300, draw_sd=draw_sd)
    assert covered >= 0.90, covered


def simulated(rng: np.random.Generator, truth: float, seed_sd: float) -> pd.DataFrame:
    """Runs of 3 seeds drawn as ``coverage`` draws them, each seed's curve and mix moved alike by its own draw
    (``seed_sd``: a seed's draws are nested, so a hard draw is hard at every size)."""
    points = []
    for s in range(3):
        shift = seed_sd * rng.standard_normal()
        points += [("none", int(n / 0.85), s, law(n) + shift + 0.005 * rng.standard_normal(), n, 0) for n in X]
        points.append(("vae", 1000, s, law(850 + truth * 850) + shift + 0.005 * rng.standard_normal(), 850.0, 850.0))
    return frame(points, per_class=False)


def test_a_mix_is_read_against_its_own_seeds_curve():
    # seeds whose draws differ by ±1 pp at every size (curve and mix alike) tell nothing about the rate: paired by
    # seed, every interval is what it is without them (unpaired, they widened it)
    def widths(seed_sd: float) -> list[float]:
        rng = np.random.default_rng(5)
        rows = [ex.exchange_rates(simulated(rng, 0.5, seed_sd)).table.iloc[0] for _ in range(10)]
        return [r["rate_high"] - r["rate_low"] for r in rows]

    np.testing.assert_allclose(widths(0.01), widths(0.0), rtol=1e-6)


def test_a_handful_of_synthetic_images_gets_no_rate():
    # 850 real + 40 synthetic: fewer than 10% of the real images, so the seeds' noise divided by 40 is no rate
    few = [("vae", 1000, s, law(850), 850.0, 40.0) for s in range(3)] + [
        ("cvae", 1000, s, law(850), 850.0, 0.0) for s in range(3)]
    result = ex.exchange_rates(frame(curve() + few))
    table = result.table.query("`class` == 'all'").set_index("variant")
    assert table.loc["vae", "note"] == ex.TOO_FEW and np.isnan(table.loc["vae", "exchange_rate"])
    assert table.loc["cvae", "note"] == ex.NO_SYNTHETIC
    overall, per_class = ex.display(result)
    assert dict(zip(overall["variant"], overall["exchange rate [95%]"])) == {
        "vae": "too few synthetic images", "cvae": "no synthetic images"}
    assert dict(zip(per_class["variant"], per_class["1 Trouser"])) == {  # 4 of a class's 85: too few there too
        "vae": "too few synthetic images", "cvae": "no synthetic images"}


def test_a_short_curve_says_which_sizes_to_run_instead_of_a_rate():
    runs = frame([r for r in curve() if r[4] in (425.0, 850.0)] + [("vae", 1000, s, 0.8, 850.0, 850.0)
                                                                    for s in range(3)])
    result = ex.exchange_rates(runs)
    assert result.empty and len(result.missing) == 1
    text = result.missing[0]
    assert "balanced, svm" in text and "sizes 500, 1000" in text and "--model none " in text and "N = 2000" in text


def test_a_short_strong_curve_asks_for_none_strong_runs():
    short = [("none-strong", *r[1:]) for r in curve() if r[4] in (425.0, 850.0)]
    mix = [("vae", 1000, s, 0.8, 850.0, 850.0) for s in range(3)]
    text = ex.exchange_rates(frame(short + mix)).missing[0]
    assert "(none-strong) has sizes 500, 1000" in text and "--model none-strong " in text
    # no curve run at all: the mixes' classifier recipe (the strong one's values) says which baseline to run
    mixes = frame(mix).assign(classifier="cnn", clf="augment=shift_flip; class_weight=balanced; epochs=40")
    text = ex.exchange_rates(pd.concat([frame(curve()[:1]), mixes])).missing
    assert len(text) == 1 and "--model none-strong " in text[0] and "cnn" in text[0]


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
    a second per run and its balanced curve rises steadily over these sizes (≈ 77 → 82%); on three seeds the paired
    t-interval (2 degrees of freedom) is wide (measured: heldout 1.14 [0.58, +∞], noise −0.43 [−∞, −0.26])."""
    from synthboost.cell import make_config
    from synthboost.pipeline import run_experiment
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
    # the controls are no family: no claim names them (claim 1 sees no family at all here)
    assert result.claims and not [c.key for c in result.claims if re.search(r"\b(heldout|noise)\b", c.detail)]
