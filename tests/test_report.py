"""`synthboost report` on a store of runs logged directly through MlflowClient (known numbers, no training).

Experiment ``report-a`` is built so the seed study's claims hold; ``report-b`` so they fail (or are
inconclusive); ``report-nobase`` has generator runs and no baseline at all.  Every run carries its classifier
recipe (``clf.*``): plain for generators, ``none`` and ``oversample``, strong for ``none-strong``.  A second store
(``recipe_store``) mixes recipes, grid cells and study trials, and runs of unknown recipe; the verdict tests at the
end build their frames by hand.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from synthboost.cli import app

T_975_DF2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (3 paired seeds)
BASE = {("semi", 500): 0.80, ("high", 500): 0.70, ("high", 2000): 0.78, ("high", 1000): 0.75}
SEED_BASE = [0.0, 0.012, -0.007, 0.004]  # the data draw's effect on every model of that seed
NOISE = {"none": [0, 0, 0, 0], "vae": [0.004, -0.006, 0.001, 0], "dvae": [0.003, 0.007, -0.004, 0],
         "vqvae": [-0.005, 0.002, 0.006, 0.003], "oversample": [0.001, -0.002, 0.004, 0],
         "none-strong": [0.002, -0.001, 0.001, 0]}
GAINS_A = {"vae": {("semi", 500): 0.01, ("high", 500): 0.03, ("high", 2000): 0.01, ("high", 1000): 0.02},
           "dvae": {("semi", 500): 0.04, ("high", 500): 0.13, ("high", 2000): 0.05},
           "vqvae": {("semi", 500): 0.03, ("high", 500): 0.08, ("high", 2000): 0.04},
           "oversample": {("high", 500): 0.025}}
GAINS_B = {"vae": 0.05, "dvae": 0.02, "vqvae": 0.01, "none-strong": 0.03}
VARIANT = {"dvae": "dvae-gaussian"}
FID = {"vae": 20.0, "dvae": 5.0, "vqvae": 8.0}
#: the classifier recipes (resolved clf.* as `synthboost run` logs them): plain for generators, `none` and
#: `oversample`; the strong one for `none-strong` (the same network and budget, augment + class weights)
PLAIN_CLF = {"clf.epochs": "20", "clf.net": "vgg", "clf.lr": "0.002", "clf.augment": "none", "clf.class_weight": "none"}
STRONG_CLF = {**PLAIN_CLF, "clf.augment": "shift_flip", "clf.class_weight": "balanced"}


@pytest.fixture(scope="module")
def store():
    """A throw-away store (on tmpfs when there is one: SQLite commits then cost no fsync) with three experiments."""
    from synthboost.tracking import Tracker

    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    folder = Path(tempfile.mkdtemp(prefix="synthboost-report-", dir=shm))
    tracker = Tracker(f"sqlite:///{folder / 'mlflow.db'}")
    grids = {m: _grid_png(folder, m, i) for i, m in enumerate(FID)}  # every generator run has one, as in pipeline
    exp = tracker.experiment_id("report-a")
    for model in ("none", "vae", "dvae", "vqvae"):
        for (regime, size) in (("semi", 500), ("high", 500), ("high", 2000)):
            for seed in range(3):
                gain = GAINS_A.get(model, {}).get((regime, size), 0.0)
                _log(tracker, exp, model, regime, size, seed, gain, grid=grids.get(model))
    for seed in range(3):
        _log(tracker, exp, "oversample", "high", 500, seed, GAINS_A["oversample"][("high", 500)])
    for seed in range(2):  # no `none` at this size, and only 2 seeds
        _log(tracker, exp, "vae", "high", 1000, seed, GAINS_A["vae"][("high", 1000)], grid=grids["vae"])
    # a 4th seed without `none`
    _log(tracker, exp, "vqvae", "semi", 500, 3, GAINS_A["vqvae"][("semi", 500)], grid=grids["vqvae"])
    exp = tracker.experiment_id("report-b")
    for model in ("none", "vae", "dvae", "vqvae", "none-strong"):
        for seed in range(3):
            _log(tracker, exp, model, "high", 500, seed, GAINS_B.get(model, 0.0))
    _log(tracker, tracker.experiment_id("report-nobase"), "vae", "high", 500, 0, 0.02)
    yield tracker
    shutil.rmtree(folder, ignore_errors=True)


def _accuracy(model: str, regime: str, size: int, seed: int, gain: float) -> float:
    return BASE[(regime, size)] + SEED_BASE[seed] + gain + NOISE[model][seed]


def _log(tracker, exp_id: str, model: str, regime: str, size: int, seed: int, gain: float, *, grid=None,
         recipe: str | None = "fair", steps: int | None = None, clf: dict | None = None, tags: dict | None = None,
         variant: str | None = None) -> str:
    """One finished run; ``clf`` its clf.* params (default: the recipe of its model, see ``PLAIN_CLF``; ``{}``
    for none at all), ``recipe`` its clf.recipe (None: a legacy run), ``tags`` extra tags (study, grid)."""
    from mlflow.entities import Metric, Param

    client = tracker.client
    acc = _accuracy(model, regime, size, seed, gain)
    generator = model not in ("none", "none-strong", "oversample")
    tags = {"synthboost.kind": "experiment", "model": model, "variant": variant or VARIANT.get(model, model),
            "regime": regime, "size": str(size), "seed": str(seed), "profile": "quick", "classifier": "cnn",
            "data_digest": f"d-{regime}-{size}-{seed}", "minority_classes": "2,6", "config_key": f"k{seed}",
            **(tags or {})}
    params = {"model": model, "mix.ratio": "1.0" if generator else "0.0", "mix.strategy": "uniform",
              "mix.synthetic_weight": "1.0", "data.regime": regime, "data.size": str(size)}
    params |= dict(clf if clf is not None else STRONG_CLF if model == "none-strong" else PLAIN_CLF)
    if generator:
        params |= {"gen.latent_dim": "16", "gen.epochs": "30"}
    if recipe is not None and clf != {}:  # runs of the fair protocol and after (older runs have no clf.recipe)
        params["clf.recipe"] = recipe
    metrics = {"test/accuracy": acc, "test/balanced_accuracy": acc - 0.001, "test/macro_f1": acc - 0.01,
               "test/minority_recall": acc - 0.2, "val/accuracy": acc + 0.01}
    if generator:
        metrics |= {"gen/fid": FID[model] + seed, "gen/cas_cnn": 0.7 - FID[model] / 100}
    if steps is not None:
        metrics["train/clf_steps"] = steps
    run = client.create_run(exp_id, run_name=f"{model} {regime}/{size} seed={seed}", tags=tags)
    rid = run.info.run_id
    ts = int(time.time() * 1000)
    client.log_batch(rid, metrics=[Metric(k, v, ts, 0) for k, v in metrics.items()],
                     params=[Param(k, v) for k, v in params.items()])
    if grid is not None:
        client.log_artifact(rid, str(grid), "samples")
    client.set_terminated(rid, "FINISHED")
    return rid


def _grid_png(folder: Path, model: str, seed: int) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.add_subplot().imshow(np.random.default_rng(seed).integers(0, 255, (28, 28)), cmap="gray")
    path = folder / model / "grid.png"
    path.parent.mkdir()
    fig.savefig(path)
    return path


@pytest.fixture(scope="module")
def report_a(store, tmp_path_factory):
    from synthboost.report import build_report

    out = tmp_path_factory.mktemp("report-a")
    return build_report(experiments=["report-a"], out_dir=out, formats={"md", "html", "csv"}, tracker=store)


def _hand_gain(store, experiment: str, variant: str, regime: str, size: int, baseline: str = "none",
               metric: str = "test/accuracy") -> tuple[list[float], float, float, float]:
    """Paired differences straight from the store: same regime, size and seed (and data digest)."""
    exp = store.client.get_experiment_by_name(experiment).experiment_id

    def by_seed(v: str) -> dict[tuple[str, str], float]:
        runs = store.client.search_runs([exp], f"tags.variant = '{v}' and tags.regime = '{regime}' "
                                               f"and tags.size = '{size}'")
        return {(r.data.tags["seed"], r.data.tags["data_digest"]): r.data.metrics[metric] for r in runs}

    gen, base = by_seed(variant), by_seed(baseline)
    diffs = [gen[k] - base[k] for k in sorted(gen) if k in base]
    mean = float(np.mean(diffs))
    half = T_975_DF2 * float(np.std(diffs, ddof=1)) / np.sqrt(len(diffs))
    return diffs, mean, mean - half, mean + half


def test_rows_are_one_per_cell_with_seed_counts_and_few_seed_marks(report_a):
    res = report_a.tables["results"]
    got = {(r.variant, r.regime, r.size): r.seeds for r in res.itertuples()}
    expected = {(v, c[0], c[1]): 3 for v in ("none", "vae", "dvae-gaussian", "vqvae")
                for c in (("semi", 500), ("high", 500), ("high", 2000))}
    expected |= {("oversample", "high", 500): 3, ("vae", "high", 1000): 2, ("vqvae", "semi", 500): 4}
    assert got == expected
    few = res[res["few_seeds"]]
    assert [(r.variant, r.size) for r in few.itertuples()] == [("vae", 1000)]
    row = res[(res["variant"] == "dvae-gaussian") & (res["regime"] == "high") & (res["size"] == 500)].iloc[0]
    accs = [_accuracy("dvae", "high", 500, s, GAINS_A["dvae"][("high", 500)]) for s in range(3)]
    assert row["accuracy_mean"] == pytest.approx(np.mean(accs))
    assert row["accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
    md = report_a.files["report.md"].read_text()
    assert "| vae | vae | high | 1000 | cnn | 1×uniform | 2† |" in md  # the <3-seed mark in the table


@pytest.mark.parametrize("variant,regime,size,baseline", [
    ("dvae-gaussian", "high", 500, "none"), ("vae", "semi", 500, "none"), ("vqvae", "high", 2000, "none"),
    ("dvae-gaussian", "high", 500, "oversample"), ("oversample", "high", 500, "none"),
    ("vqvae", "semi", 500, "none"),  # 4 seeds, 3 of them paired
])
def test_gains_equal_paired_differences_from_the_store(store, report_a, variant, regime, size, baseline):
    diffs, mean, lo, hi = _hand_gain(store, "report-a", variant, regime, size, baseline)
    g = report_a.tables["gains"]
    row = g[(g["variant"] == variant) & (g["regime"] == regime) & (g["size"] == size) & (g["baseline"] == baseline)
            & (g["metric"] == "accuracy")]
    assert len(row) == 1
    row = row.iloc[0]
    assert row["n"] == len(diffs) == 3
    assert row["mean"] == pytest.approx(mean, abs=1e-12)
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    # the other metrics are paired the same way
    _, f1_mean, _, _ = _hand_gain(store, "report-a", variant, regime, size, baseline, metric="test/macro_f1")
    f1 = g[(g["variant"] == variant) & (g["regime"] == regime) & (g["size"] == size) & (g["baseline"] == baseline)
           & (g["metric"] == "macro_f1")].iloc[0]
    assert f1["mean"] == pytest.approx(f1_mean, abs=1e-12)


def test_headline_has_one_row_per_cell_with_its_gains_from_the_store(store, report_a):
    # headline.md is docs/results.md's table: one row per cell, the gain over each baseline as the store's pairs give it
    text = (report_a.out_dir / "headline.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| variant")]
    assert len(rows) == len(report_a.analysis.results)
    _, mean, lo, hi = _hand_gain(store, "report-a", "vae", "high", 500)
    vae = next(r for r in rows if r.startswith("| vae | vae | high | 500 |") or r.startswith("| vae | high | 500 |"))
    assert f"{100 * mean:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]" in vae
    assert "`report-a`" in text and "synthboost report" in text


def test_missing_baselines_are_listed_never_invented(report_a):
    g, mi = report_a.tables["gains"], report_a.tables["missing_baselines"]
    assert not mi.duplicated(subset=["variant", "regime", "size", "baseline"]).any()
    assert len(mi) == 9  # 7 generator cells lack `oversample`; vae/1000 lacks `none`, vqvae/semi one seed of it
    assert g[(g["variant"] == "vae") & (g["size"] == 1000)].empty  # no `none` at size 1000: no gain at all
    row = mi[(mi["variant"] == "vae") & (mi["size"] == 1000) & (mi["baseline"] == "none")].iloc[0]
    assert (row["missing_seeds"], row["paired_seeds"]) == ("0,1", 0)
    part = mi[(mi["variant"] == "vqvae") & (mi["regime"] == "semi") & (mi["baseline"] == "none")].iloc[0]
    assert (part["missing_seeds"], part["paired_seeds"], part["seeds"]) == ("3", 3, 4)
    # oversample ran at high/500 only: every other generator cell lacks it, and says so
    assert set(mi[mi["baseline"] == "oversample"]["size"]) == {500, 1000, 2000}
    assert not ((mi["baseline"] == "oversample") & (mi["regime"] == "high") & (mi["size"] == 500)).any()
    # every generator cell of report-a is on the plain recipe, and a missing baseline is missing on that recipe
    (plain,) = set(report_a.analysis.runs["recipe"])
    assert set(mi["on_recipe"]) == {plain}
    md = report_a.files["report.md"].read_text()
    section = md.split("## Missing baselines")[1]
    assert f"| vae | vae | high | 1000 | cnn | 1×uniform | none | {plain} | 0,1 | no gain reported |" in section
    assert f"| vqvae | vqvae | semi | 500 | cnn | 1×uniform | none | {plain} | 3 | gain over 3 of 4 seeds |" in section


def test_claims_hold_on_data_built_to_support_them(store, report_a):
    from scipy import stats

    verdicts = {c.key: c for c in report_a.claims}
    assert verdicts["1"].verdict == "holds", verdicts["1"].detail
    assert "on the 3 data cell(s) where all 3 families ran" in verdicts["1"].detail
    assert "dvae +7.5 pp, vqvae +5.1 pp, vae +1.6 pp" in verdicts["1"].detail
    # 3 cells × 3 seeds, averaged per seed: the cells of a seed share its draw and its `none` runs
    assert (verdicts["1"].n, verdicts["1"].unit) == (3, "seeds")
    assert "(9 cell × seed pairs, averaged per seed: 3 seed(s))" in verdicts["1"].detail
    assert verdicts["2a"].verdict == "holds", verdicts["2a"].detail
    assert "500: +8.1 pp, 2000: +3.4 pp" in verdicts["2a"].detail
    assert verdicts["2b"].verdict == "holds", verdicts["2b"].detail
    assert verdicts["3"].verdict == "holds", verdicts["3"].detail
    assert "+13.2 pp" in verdicts["3"].detail  # 0.13 + the mean of dvae's seed noise (0.002)
    # the deciding interval is the cell's own, Bonferroni-corrected for picking the best of dvae's 2 high cells
    # (level 97.5%): its lower bound is past +10 pp
    diffs, mean, _, _ = _hand_gain(store, "report-a", "dvae-gaussian", "high", 500)
    half = stats.t.ppf(1 - 0.05 / 4, 2) * np.std(diffs, ddof=1) / np.sqrt(3)
    lo, hi = mean - half, mean + half
    assert (verdicts["3"].n, verdicts["3"].ci_low, verdicts["3"].ci_high) == (3, pytest.approx(lo), pytest.approx(hi))
    assert lo >= 0.10 and verdicts["3"].level == pytest.approx(0.975)
    assert verdicts["4-none-strong"].verdict == "inconclusive"
    assert "no `none-strong` runs" in verdicts["4-none-strong"].detail
    assert verdicts["4-oversample"].verdict == "holds", verdicts["4-oversample"].detail
    assert verdicts["4-oversample"].detail.startswith("Beaten by dvae-gaussian, vqvae.")
    assert {c.verdict for c in report_a.claims} <= {"holds", "does not hold", "inconclusive"}
    md = report_a.files["report.md"].read_text()
    assert (f"**(3) DVAE improves accuracy in the high regime by up to 10 points — holds** (n = 3 seeds, 97.5% CI "
            f"[{100 * lo:+.1f}, {100 * hi:+.1f}] pp)") in md
    html = report_a.files["report.html"].read_text()
    assert '<span class="v holds">holds</span> (n = 3 seeds, 95% CI' in html
    claims_csv = report_a.tables["claims"].set_index("claim")
    assert claims_csv.loc["3", "ci_low"] == pytest.approx(lo) and claims_csv.loc["3", "n"] == 3


def test_claims_fail_or_are_inconclusive_on_contrary_data(store, tmp_path):
    from synthboost.report import build_report

    result = build_report(experiments=["report-b"], out_dir=tmp_path, formats={"md"}, tracker=store,
                          log_to_mlflow=False)
    verdicts = {c.key: c for c in result.claims}
    assert verdicts["1"].verdict == "does not hold"
    assert "vae +5.0 pp, dvae +2.2 pp, vqvae +1.1 pp" in verdicts["1"].detail
    assert "vqvae − vae lies below 0" in verdicts["1"].detail and verdicts["1"].ci_high < 0
    assert verdicts["2a"].verdict == "inconclusive" and "same size (500)" in verdicts["2a"].detail
    assert verdicts["2b"].verdict == "inconclusive" and "high regime only" in verdicts["2b"].detail
    assert verdicts["3"].verdict == "does not hold" and "short of 10 points" in verdicts["3"].detail
    assert verdicts["3"].ci_high < 0.10
    # the generators run the plain recipe, `none-strong` the strong one: they are never paired
    strong = verdicts["4-none-strong"]
    assert strong.verdict == "inconclusive" and strong.n is None, strong.detail
    assert "no generator run shares data, seed, classifier and recipe with a `none-strong` run" in strong.detail
    assert "--set clf.augment=shift_flip --set clf.class_weight=balanced" in strong.detail
    gains = result.analysis.gains
    assert not ((gains["baseline"] == "none-strong") & (gains["model"] != "none-strong")).any()
    # ...but `none-strong` itself is compared with `none`, and says it is baseline vs plain baseline
    vs_plain = gains[(gains["model"] == "none-strong") & (gains["metric"] == "accuracy")]
    assert list(vs_plain["baseline"]) == ["none"] and list(vs_plain["comparison"]) == ["baseline vs plain baseline"]
    assert verdicts["4-oversample"].verdict == "inconclusive"
    assert result.run_id is None and set(result.files) == {"report.md", "headline.md",
                                                           *(f"plots/{n}.png" for n in result.figures)}
    md = (tmp_path / "report.md").read_text()
    assert "| none: baseline vs plain baseline, recipe " in md and "augment=shift_flip, class_weight=balanced" in md


def test_plots_are_present_non_empty_pngs_and_embedded_in_the_html(report_a):
    assert set(report_a.figures) == {"accuracy_vs_size", "gain_heatmap", "quality_vs_gain", "sample_grids"}
    html = report_a.files["report.html"].read_text()
    for name, png in report_a.figures.items():
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000, name
        assert (report_a.out_dir / "plots" / f"{name}.png").read_bytes() == png
        assert f'<img alt="{name}" src="data:image/png;base64,' in html
    import matplotlib.image

    grid = matplotlib.image.imread(report_a.out_dir / "plots" / "sample_grids.png")
    assert grid.shape[1] > grid.shape[0] and grid.std() > 0.05  # three grids side by side, not a blank canvas


def test_report_is_logged_as_an_mlflow_run_the_ui_can_find(store, report_a):
    client = store.client
    exp = client.get_experiment_by_name("synthboost-reports")
    runs = client.search_runs([exp.experiment_id], "tags.`synthboost.kind` = 'report'")
    assert report_a.run_id in [r.info.run_id for r in runs]
    run = client.get_run(report_a.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["report.experiments"] == "report-a"
    assert run.data.tags["claim.3"] == "holds"
    names = {a.path for a in client.list_artifacts(report_a.run_id)}
    assert {"report.html", "report.md", "results.csv", "gains.csv", "missing_baselines.csv", "claims.csv",
            "runs.csv", "plots"} <= names
    csv = set(report_a.files) - {"report.md", "report.html"}
    assert {p.name for p in report_a.out_dir.glob("*.csv")} == {n for n in csv if n.endswith(".csv")}


def test_the_report_names_its_store_without_an_absolute_path_or_a_password(store, report_a, monkeypatch, tmp_path):
    from synthboost.report.build import store_label

    folder = Path(store.uri.removeprefix("sqlite:///")).parent  # outside the project: named by the file alone
    for name in ("report.md", "report.html"):
        text = report_a.files[name].read_text()
        assert "sqlite:///…/mlflow.db" in text and str(folder) not in text and store.uri not in text, name
    monkeypatch.setenv("SYNTHBOOST_HOME", str(tmp_path))  # the project root
    assert store_label(f"sqlite:///{tmp_path}/tracking/mlflow.db") == "sqlite:///tracking/mlflow.db"
    assert store_label((tmp_path / "tracking" / "mlruns").as_uri()) == "file:tracking/mlruns"
    assert store_label("postgresql://me:s3cret@db:5432/mlflow") == "postgresql://me:***@db:5432/mlflow"
    assert store_label("http://mlflow.lab:5000") == "http://mlflow.lab:5000"
    root = Path(__file__).resolve().parents[1]  # the committed reports say it the same way
    for md in root.glob("docs/*/report.md"):
        assert "store `sqlite:////" not in md.read_text(), md

def test_default_selection_is_every_experiment_with_experiment_runs(store, tmp_path):
    from synthboost.errors import UserError
    from synthboost.report import build_report

    # the no-baseline experiment is in the default selection, but the others give it company: no error
    result = build_report(experiments=None, out_dir=tmp_path, formats={"csv"}, tracker=store, log_to_mlflow=False)
    assert result.experiments == ["report-a", "report-b", "report-nobase"]  # not synthboost-reports
    assert result.n_runs == 42 + 15 + 1
    with pytest.raises(UserError, match="missing baselines `none` for vae high/500 cnn 1×uniform seeds 0"):
        build_report(experiments=["report-nobase"], out_dir=tmp_path, formats={"csv"}, tracker=store)


def test_model_keeps_one_family_and_every_baseline(store, tmp_path):
    # `--model dvae` is the dvae page (docs/gan, docs/diffusion): its gains over every baseline, no other family
    from synthboost.report import build_report

    whole = build_report(experiments=["report-a"], out_dir=tmp_path / "all", formats={"csv"}, tracker=store,
                         log_to_mlflow=False)
    one = build_report(experiments=["report-a"], out_dir=tmp_path / "dvae", formats={"csv"}, tracker=store,
                       log_to_mlflow=False, models=["dvae"])
    assert set(one.analysis.results["model"]) == {"none", "oversample", "dvae"}
    assert set(one.analysis.gains["model"]) == {"dvae", "oversample"}  # oversample's gain over none stays
    key = ["variant", "regime", "size", "mix_ratio", "baseline", "metric"]
    same = whole.analysis.gains.merge(one.analysis.gains, on=key, suffixes=("", "_one"))
    assert len(same) == len(one.analysis.gains) and (same["mean"] == same["mean_one"]).all()


CLI_BAD = [
    (["--experiment", "no-such-experiment"], "no experiment named 'no-such-experiment'"),
    (["--experiment", "report-a", "--model", "gan"], "--model gan: not a generator family"),
    (["--experiment", "report-b", "--model", "cgan"], "--model cgan: no runs of that family"),
    (["--experiment", "report-nobase"], "missing baselines `none`"),
    (["--format", "md,pdf"], "unknown format 'pdf'"),
    (["--plan", "studies/no-such-grid.yaml"], "--plan studies/no-such-grid.yaml: no such grid file"),
    (["--experiment", "report-a", "--plan", "studies/fair-high.yaml"],
     "runs in experiment 'fair-high-1000', which the report does not read"),
]


@pytest.mark.parametrize("args,message", CLI_BAD, ids=[a[-1] for a, _ in CLI_BAD])
def test_cli_bad_input_exits_2_with_one_clear_line(store, tmp_path, monkeypatch, args, message):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    before = len(store.client.search_runs(store.experiment_ids()))
    result = CliRunner().invoke(app, ["report", "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert len(store.client.search_runs(store.experiment_ids())) == before  # no report run was logged


def test_cli_writes_the_chosen_formats_and_logs_the_run(store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    out = tmp_path / "r"
    result = CliRunner().invoke(app, ["report", "--experiment", "report-a", "--experiment", "report-b",
                                      "--out", str(out), "--format", "md,csv"])
    assert result.exit_code == 0, result.output
    assert (out / "report.md").is_file() and (out / "gains.csv").is_file() and not (out / "report.html").exists()
    assert "report-a, report-b" in result.stdout and "synthboost-reports; tag synthboost.kind = report" in result.stdout


def test_skip_missing_leaves_out_experiments_the_store_lacks_and_writes_nothing_when_none_is_left(
        store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    out = tmp_path / "r"
    result = CliRunner().invoke(app, ["report", "--experiment", "report-a", "--experiment", "not-measured-yet",
                                      "--out", str(out), "--format", "md", "--skip-missing"])
    assert result.exit_code == 0, result.output
    assert "not in the store, left out: not-measured-yet" in result.stdout and "report on report-a " in result.stdout
    result = CliRunner().invoke(app, ["report", "--experiment", "not-measured-yet", "--out", str(tmp_path / "none"),
                                      "--skip-missing"])
    assert result.exit_code == 0 and "nothing to report" in result.stdout, result.output
    assert not (tmp_path / "none").exists()


@pytest.mark.slow
def test_mlflow_run_report_entry_point_logs_into_the_run_mlflow_opened(store, tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    env.pop("MLFLOW_RUN_ID", None)
    proc = subprocess.run([shutil.which("mlflow", path=env["PATH"]), "run", str(root), "-e", "report",
                           "--env-manager", "local", "--experiment-name", "synthboost-reports",
                           "-P", "experiment=report-b", "-P", f"out={tmp_path / 'r'}", "-P", "format=csv"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "r" / "gains.csv").is_file() and not (tmp_path / "r" / "report.md").exists()
    exp = store.client.get_experiment_by_name("synthboost-reports")
    runs = store.client.search_runs([exp.experiment_id], "tags.`mlflow.project.entryPoint` = 'report'")
    assert len(runs) == 1  # the report adopted the run `mlflow run` opened
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["synthboost.kind"] == "report"
    assert run.data.tags["report.experiments"] == "report-b"
    assert "gains.csv" in {a.path for a in store.client.list_artifacts(run.info.run_id)}


def test_a_filtered_mix_is_its_own_cell_and_says_so():
    """Filtered and unfiltered runs of one mix are different cells, and the mix column tells which is which."""
    import pandas as pd

    from synthboost import report as rep

    base = {"run_id": "r", "experiment": "e", "run_name": "n", "start_time": 0, "tags.model": "cvae",
            "tags.regime": "high", "tags.size": "1000", "tags.classifier": "cnn", "tags.seed": "0",
            "params.mix.ratio": "1.0", "params.mix.strategy": "balance", "metrics.test/accuracy": 0.8}
    frame = pd.DataFrame([{**base, "params.mix.filter": "none", "params.mix.filter_threshold": "0.5"},
                          {**base, "run_id": "f", "params.mix.filter": "confidence",
                           "params.mix.filter_threshold": "0.7"},
                          {**base, "run_id": "old"}])  # a run from before mix.filter existed
    runs = rep.tidy(frame)
    assert list(runs["mix_filter"]) == ["", "confidence≥0.7", ""]
    assert runs.groupby(rep.CELL).ngroups == 2
    labels = [rep.mix_label(1.0, "balance", 1.0, filter_=f) for f in runs["mix_filter"]]
    assert labels == ["1×balance", "1×balance confidence≥0.7", "1×balance"]


def test_runs_from_before_a_speed_lever_share_the_cell_and_recipe_of_runs_at_its_neutral_value():
    """A CNN run recorded before clf.channels_last/compile/amp/optimizer_impl existed pairs with a new run at the
    values that train the same way; a run at another value (bf16) is a recipe of its own."""
    import pandas as pd

    from synthboost import report as rep

    base = {"run_id": "old", "experiment": "e", "run_name": "n", "start_time": 0, "tags.model": "none",
            "tags.regime": "high", "tags.size": "1000", "tags.classifier": "cnn", "tags.seed": "0",
            "params.mix.ratio": "0.0", "params.clf.recipe": "fair", "params.clf.lr": "0.002",
            "metrics.test/accuracy": 0.8}
    new = {"params.clf.channels_last": "True", "params.clf.compile": "False", "params.clf.optimizer_impl": "foreach"}
    auto = {**new, "params.clf.amp": "auto"}  # resolved per machine: clf.precision says to what
    frame = pd.DataFrame([base, {**base, "run_id": "new", **new, "params.clf.amp": "off"},
                          {**base, "run_id": "bf16", **new, "params.clf.amp": "bf16"},
                          {**base, "run_id": "fp32-precision", **new, "params.clf.amp": "off",
                           "params.clf.precision": "fp32"},
                          {**base, "run_id": "auto-fp32", **auto, "params.clf.precision": "fp32"},
                          {**base, "run_id": "auto-bf16", **auto, "params.clf.precision": "bf16"}])
    runs = rep.tidy(frame)
    old, now, bf16, fp32, auto_fp32, auto_bf16 = runs["recipe"]
    assert old == now == fp32 != bf16
    # one setting, two machines: a run that computed in bf16 never pairs with one that computed in fp32
    assert auto_fp32 != auto_bf16 and auto_bf16 not in (old, bf16)
    assert runs.groupby(rep.CELL).ngroups == 4


# ---------------------------------------------------------------- protocols (fair budgets vs the seed study's)
@pytest.fixture(scope="module")
def protocol_store():
    """Fair-protocol runs (equal steps) and seed-protocol runs (steps grow with the mix) of one cell."""
    from synthboost.tracking import Tracker

    folder = Path(tempfile.mkdtemp(prefix="synthboost-protocols-"))
    tracker = Tracker(f"sqlite:///{folder / 'mlflow.db'}")
    both, mismatched = tracker.experiment_id("protocols"), tracker.experiment_id("protocol-mismatch")
    for seed in range(3):
        _log(tracker, both, "none", "high", 500, seed, 0.0, recipe="fair", steps=520)
        _log(tracker, both, "vae", "high", 500, seed, 0.01, recipe="fair", steps=520)
        _log(tracker, both, "none", "high", 500, seed, -0.05, recipe="seed", steps=60)
        _log(tracker, both, "vae", "high", 500, seed, 0.03, recipe="seed", steps=120)
        _log(tracker, mismatched, "none", "high", 500, seed, 0.0, recipe="fair", steps=520)
        _log(tracker, mismatched, "vae", "high", 500, seed, 0.03, recipe="seed", steps=120)
    yield tracker
    shutil.rmtree(folder, ignore_errors=True)


def test_gains_are_paired_within_a_protocol_and_show_the_steps(protocol_store, tmp_path):
    from synthboost.report import build_report

    result = build_report(experiments=["protocols"], out_dir=tmp_path, formats={"md", "csv"},
                          tracker=protocol_store, log_to_mlflow=False)
    gains = result.analysis.gains
    acc = gains[(gains["metric"] == "accuracy") & (gains["model"] == "vae")].set_index("protocol")["mean"]
    # each protocol against its own baseline: +1.0 pp fair, +8.0 pp seed (0.03 vs the seed baseline's -0.05)
    assert acc["fair"] == pytest.approx(0.01 + np.mean(NOISE["vae"][:3])) and len(acc) == 2
    assert acc["seed"] == pytest.approx(0.08 + np.mean(NOISE["vae"][:3]))
    res = result.analysis.results.set_index(["protocol", "model"])
    assert res.loc[("fair", "vae"), "clf_steps_mean"] == res.loc[("fair", "none"), "clf_steps_mean"] == 520
    text = (tmp_path / "report.md").read_text()
    assert "| protocol |" in text and "| steps |" in text
    # each protocol's claims, apart; the science goal once, on the fair protocol (tuned mixes exist only there)
    assert {c.key.split()[-1] for c in result.claims if not c.key.startswith("goal")} == {"fair", "seed"}
    assert [c.key for c in result.claims if c.key.startswith("goal")] == ["goal-accuracy", "goal-weakest"]


def test_a_report_that_would_pair_across_protocols_exits_2(protocol_store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", protocol_store.uri)
    result = CliRunner().invoke(app, ["report", "--out", str(tmp_path / "r"), "--experiment", "protocol-mismatch"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "never paired across protocols" in lines[0] and "clf.recipe=seed" in lines[0]


# ---------------------------------------------------------------- matched recipes, study trials, bad input
TUNED_CLF = {**PLAIN_CLF, "clf.lr": "0.005"}  # a recipe no baseline was run on


@pytest.fixture(scope="module")
def recipe_store():
    """Runs of several classifier recipes, grid cells beside study trials, and runs of unknown recipe."""
    from synthboost.tracking import Tracker

    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    folder = Path(tempfile.mkdtemp(prefix="synthboost-recipes-", dir=shm))
    tracker = Tracker(f"sqlite:///{folder / 'mlflow.db'}")
    exp = {name: tracker.experiment_id(name) for name in ("recipes", "grid-x", "vae-study", "handmade", "legacy",
                                                          "recipe-mismatch")}
    grid = {"grid": "grid-grid-x"}
    for seed in range(3):
        _log(tracker, exp["recipes"], "none", "high", 500, seed, 0.0)
        _log(tracker, exp["recipes"], "none-strong", "high", 500, seed, 0.03)
        _log(tracker, exp["recipes"], "oversample", "high", 500, seed, 0.01)
        _log(tracker, exp["recipes"], "vae", "high", 500, seed, 0.02)  # plain: pairs with none and oversample
        _log(tracker, exp["recipes"], "vae", "high", 500, seed, 0.045, clf=STRONG_CLF)  # pairs with none-strong
        _log(tracker, exp["recipes"], "dvae", "high", 500, seed, 0.05, clf=TUNED_CLF)  # no baseline of its recipe
        _log(tracker, exp["grid-x"], "none", "high", 500, seed, 0.0, tags={**grid, "optuna.trial_number": "0"})
        _log(tracker, exp["grid-x"], "vae", "high", 500, seed, 0.02, tags={**grid, "optuna.trial_number": "1"})
        _log(tracker, exp["legacy"], "none", "high", 500, seed, 0.0, recipe=None)  # clf.* but no clf.recipe
        _log(tracker, exp["legacy"], "vae", "high", 500, seed, 0.02, recipe=None)
    for trial, gain in enumerate((0.04, 0.06)):  # study trials: seed 0, the same cell as the grid's vae
        _log(tracker, exp["vae-study"], "vae", "high", 500, 0, gain,
             tags={"optuna.study_name": "vae-study", "optuna.trial_number": str(trial)})
    _log(tracker, exp["handmade"], "none", "high", 500, 0, 0.0, clf={})
    _log(tracker, exp["handmade"], "vae", "high", 500, 0, 0.02, clf={})
    _log(tracker, exp["recipe-mismatch"], "none", "high", 500, 0, 0.0)
    _log(tracker, exp["recipe-mismatch"], "vae", "high", 500, 0, 0.02, clf=TUNED_CLF)
    yield tracker
    shutil.rmtree(folder, ignore_errors=True)


def _accs(store, experiment: str, model: str, **params) -> dict[int, float]:
    """seed -> test accuracy of the runs of ``model`` whose clf.* params have the given values."""
    exp = store.client.get_experiment_by_name(experiment).experiment_id
    where = " and ".join([f"tags.model = '{model}'"] + [f"params.`clf.{k}` = '{v}'" for k, v in params.items()])
    return {int(r.data.tags["seed"]): r.data.metrics["test/accuracy"] for r in store.client.search_runs([exp], where)}


def test_pairing_never_crosses_recipes_and_a_missing_matched_baseline_is_listed(recipe_store, tmp_path):
    from scipy import stats as sps

    from synthboost.report import build_report

    result = build_report(experiments=["recipes"], out_dir=tmp_path, formats={"md", "csv"}, tracker=recipe_store,
                          log_to_mlflow=False)
    a = result.analysis
    gains = a.gains[a.gains["metric"] == "accuracy"]
    def recipe(model: str, value: str) -> str:
        (r,) = set(a.runs.loc[(a.runs["model"] == model) & a.runs["clf"].str.contains(value, regex=False), "recipe"])
        return r

    plain, strong, tuned = recipe("none", "augment=none"), recipe("none-strong", "augment="), recipe("dvae", "lr=")
    assert len({plain, strong, tuned}) == 3 and recipe("vae", "augment=shift_flip") == strong
    vae = gains[gains["model"] == "vae"].set_index(["recipe", "baseline"])
    # the plain mix against the plain baselines only, the strong mix against `none-strong` only
    assert set(vae.index) == {(plain, "none"), (plain, "oversample"), (strong, "none-strong")}
    for rec, baseline, augment in [(plain, "none", "none"), (plain, "oversample", "none"),
                                   (strong, "none-strong", "shift_flip")]:
        gen = _accs(recipe_store, "recipes", "vae", augment=augment)
        base = _accs(recipe_store, "recipes", baseline, augment=augment)
        diffs = [gen[s] - base[s] for s in range(3)]
        row = vae.loc[(rec, baseline)]
        assert row["mean"] == pytest.approx(np.mean(diffs), abs=1e-12) and row["n"] == 3
        assert row["baseline_recipe"] == rec and row["comparison"] == "matched recipe"
        assert row["p_value"] == pytest.approx(sps.ttest_rel([gen[s] for s in range(3)],
                                                             [base[s] for s in range(3)]).pvalue)
    # the tuned dvae has no baseline of its recipe: no gain at all, and the missing table says which recipe
    assert gains[gains["model"] == "dvae"].empty
    mi = a.missing
    row = mi[mi["model"] == "dvae"]
    assert list(row["baseline"]) == ["none"] and list(row["on_recipe"]) == [tuned]
    assert list(row["missing_seeds"]) == ["0,1,2"]
    # nothing else is missing: the plain mix does not need `none-strong`, the strong one not `none`/`oversample`
    assert set(mi["model"]) == {"dvae"}
    section = (tmp_path / "report.md").read_text().split("## Missing baselines")[1]
    assert f"| none | {tuned} (augment=none, class_weight=none, lr=0.005) | 0,1,2 | no gain reported |" in section
    # the stronger baselines: compared with `none` across recipes, on purpose, and labelled so
    plain_rows = gains[gains["model"].isin(["none-strong", "oversample"])]
    assert set(plain_rows["comparison"]) == {"baseline vs plain baseline"}
    assert set(plain_rows["baseline_recipe"]) == {plain}
    claim = {c.key: c for c in result.claims}["4-none-strong"]
    assert claim.n == 3 and "vae high/500" in claim.detail  # the strong mix is the one tested against it


def test_study_trials_are_left_out_unless_asked_for(recipe_store, tmp_path):
    from synthboost.report import build_report

    both = ["grid-x", "vae-study"]
    default = build_report(experiments=both, out_dir=tmp_path / "d", formats={"csv"}, tracker=recipe_store,
                           log_to_mlflow=False)
    assert default.n_runs == 6 and default.experiments == ["grid-x"]  # grid cells carry optuna.trial_number too
    assert (default.analysis.runs["study"] == "").all()
    with_trials = build_report(experiments=both, out_dir=tmp_path / "s", formats={"md", "csv"},
                               tracker=recipe_store, log_to_mlflow=False, include_studies=True)
    assert with_trials.n_runs == 8 and with_trials.experiments == both
    runs = with_trials.analysis.runs
    assert sorted(runs.loc[runs["study"] != "", "experiment"]) == ["vae-study", "vae-study"]
    assert set(runs.loc[runs["experiment"] == "grid-x", "study"]) == {""}
    assert "2 study trials are included." in (tmp_path / "s" / "report.md").read_text()


def test_legacy_runs_with_clf_params_still_pair(recipe_store, tmp_path):
    from synthboost.report import build_report

    result = build_report(experiments=["legacy"], out_dir=tmp_path, formats={"csv"}, tracker=recipe_store,
                          log_to_mlflow=False)
    gains = result.analysis.gains
    row = gains[(gains["model"] == "vae") & (gains["metric"] == "accuracy")]
    assert list(row["protocol"]) == ["legacy"] and list(row["n"]) == [3]


RECIPE_BAD = [
    (["--experiment", "vae-study"], "holds only study trials", "add --include-studies"),
    (["--experiment", "grid-x", "--include-studies"], "--include-studies:", "hold no study trials"),
    (["--include-studies", "--experiment", "recipes"], "'recipes' hold no study trials", "drop the flag"),
    (["--experiment", "handmade"], "2 run(s) in experiment(s) 'handmade' carry no params.clf.*",
     "log the classifier's clf.* params"),
    (["--experiment", "recipe-mismatch"], "never paired across recipes", "--set clf.lr=0.005"),
]


@pytest.mark.parametrize("args,message,fix", RECIPE_BAD, ids=["trials-only", "no-trials", "no-trials-2",
                                                               "unknown-recipe", "recipe-mismatch"])
def test_cli_bad_selection_exits_2_with_one_line_naming_the_fix(recipe_store, tmp_path, monkeypatch, args, message,
                                                                 fix):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", recipe_store.uri)
    result = CliRunner().invoke(app, ["report", "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and fix in lines[0], result.stderr
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- verdicts on frames built by hand
def _frame(rows) -> "pd.DataFrame":
    """A ``tracking.runs_frame``-shaped frame: rows of (model, regime, size, seed, test accuracy)."""
    import pandas as pd

    out = []
    for i, (model, regime, size, seed, acc) in enumerate(rows):
        clf = STRONG_CLF if model == "none-strong" else PLAIN_CLF
        out.append({"run_id": f"r{i:04d}", "experiment": "hand", "run_name": f"{model} {seed}", "start_time": i,
                    "tags.model": model, "tags.regime": regime, "tags.size": str(size), "tags.classifier": "cnn",
                    "tags.seed": str(seed), "tags.profile": "quick", "tags.data_digest": f"d-{regime}-{size}-{seed}",
                    "params.mix.ratio": "0.0" if model in ("none", "none-strong", "oversample") else "1.0",
                    **{f"params.{k}": v for k, v in clf.items()}, "params.clf.recipe": "fair",
                    "metrics.test/accuracy": acc})
    return pd.DataFrame(out)


def _analyse(rows):
    from synthboost.report import analyse, tidy

    return analyse(tidy(_frame(rows)))


MARGINAL = [0.02, 0.03, 0.04]  # paired differences: p = 0.035 on 2 degrees of freedom, interval [+0.5, +5.5] pp
NULL = [0.01, -0.01, 0.005]


def test_holm_turns_a_marginal_cell_into_not_beaten_when_many_cells_are_tested():
    from scipy import stats as sps

    from synthboost.report.claims import seed

    def rows(sizes):
        out = []
        for size in sizes:
            for s in range(3):
                out.append(("oversample", "high", size, s, 0.70 + 0.01 * s))
                out.append(("vae", "high", size, s, 0.70 + 0.01 * s + (MARGINAL if size == 100 else NULL)[s]))
        return out

    p_one = sps.ttest_1samp(MARGINAL, 0.0).pvalue
    assert 0.01 < p_one < 0.05
    alone = seed.claim_beats(_analyse(rows([100])), "oversample")
    assert alone.verdict == "holds" and alone.detail.startswith("Beaten by vae."), alone.detail
    assert alone.ci_low > 0 and f"p = {p_one:.2g}" in alone.detail

    many = _analyse(rows(range(100, 1100, 100)))  # the same cell among ten
    g = many.gains[(many.gains["metric"] == "accuracy") & (many.gains["size"] == 100)].iloc[0]
    assert g["p_value"] == pytest.approx(p_one) and g["ci_low"] > 0  # on its own, still "above 0"
    claim = seed.claim_beats(many, "oversample")
    assert claim.verdict == "inconclusive", claim.detail
    assert claim.detail.startswith("Not beaten after the correction.")
    assert f"Holm = {min(1.0, 10 * p_one):.2g}" in claim.detail
    assert "1 cell(s) have an uncorrected interval above 0" in claim.detail
    assert "in 10 cell(s)" in claim.detail


def test_a_baseline_ahead_in_every_cell_makes_the_beats_claim_not_hold():
    from synthboost.report.claims import seed

    rows = []
    for size in (500, 1000):
        for s in range(3):
            rows += [("oversample", "high", size, s, 0.75), ("vae", "high", size, s, 0.75 - [0.03, 0.04, 0.05][s])]
    claim = seed.claim_beats(_analyse(rows), "oversample")
    assert claim.verdict == "does not hold" and claim.ci_high < 0, claim.detail
    assert claim.detail.startswith("Not beaten: `oversample` is ahead in every one of the 2 cell(s)")


def test_the_closest_cell_of_an_unbeaten_baseline_is_the_best_gain_not_the_surest_loss():
    from synthboost.report.claims import seed

    rows = []
    for s in range(3):  # vae clearly behind on 500 (small p), ahead but noisy on 1000
        rows += [("oversample", "high", 500, s, 0.75), ("vae", "high", 500, s, 0.75 - [0.030, 0.031, 0.032][s]),
                 ("oversample", "high", 1000, s, 0.75), ("vae", "high", 1000, s, 0.75 + NULL[s] + 0.005)]
    claim = seed.claim_beats(_analyse(rows), "oversample")
    assert claim.verdict == "inconclusive", claim.detail
    assert "closest: vae high/1000" in claim.detail and claim.ci_high > 0, claim.detail


def test_claim_1_compares_families_only_on_cells_where_all_of_them_ran():
    from synthboost.report.claims import seed
    from synthboost.report.stats import accuracy_gains

    noise = [0.002, -0.001, 0.0]
    gain = {("high", "vae"): 0.08, ("high", "dvae"): 0.03, ("high", "vqvae"): 0.02,
            ("semi", "dvae"): 0.15, ("semi", "vqvae"): 0.14}  # vae ran in `high` only
    rows = []
    for regime in ("high", "semi"):
        for s in range(3):
            rows.append(("none", regime, 500, s, 0.7))
            rows += [(m, regime, 500, s, 0.7 + g + noise[(s + i) % 3])
                     for i, ((r, m), g) in enumerate(gain.items()) if r == regime]
    analysis = _analyse(rows)
    overall = accuracy_gains(analysis.gains).groupby("model")["mean"].mean()
    assert overall.idxmax() == "dvae" and overall["vqvae"] > overall["vae"]  # over each family's own cells
    claim = seed.claim_best_families(analysis)
    assert claim.verdict == "does not hold", claim.detail
    assert "on the 1 data cell(s) where all 3 families ran (3 cell × seed pairs" in claim.detail
    assert "vae +8.0 pp, dvae +3.0 pp, vqvae +2.0 pp" in claim.detail
    assert claim.n == 3 and claim.ci_high < 0


def test_two_seeds_are_always_inconclusive(store):
    from synthboost import tracking
    from synthboost.report import analyse, tidy
    from synthboost.report.claims import seed

    runs = tidy(tracking.runs_frame(store, ["report-a"]))
    one = seed.claims(analyse(runs[runs["seed"] == 0]))  # one seed: no interval at all
    assert {c.verdict for c in one} == {"inconclusive"} and {c.n for c in one} - {None} == {1}  # seeds
    claims = {c.key: c for c in seed.claims(analyse(runs[runs["seed"] < 2]))}  # report-a's strong gains, 2 seeds
    for key in ("1", "2a", "2b", "3", "4-oversample"):
        assert claims[key].verdict == "inconclusive", (key, claims[key].detail)
    assert "Fewer than 3 seeds" in claims["1"].detail and claims["1"].n == 2  # seeds, not cell × seed pairs
    # DVAE's high/500 interval on 2 seeds lies above +10 pp, and still decides nothing
    assert claims["3"].n == 2 and claims["3"].ci_low > 0.10, claims["3"].detail
    assert "on fewer than 3 seeds, which decide nothing" in claims["3"].detail
    assert "every cell has fewer than 3 seeds" in claims["4-oversample"].detail


# ---------------------------------------------------------------- runs that used external data
def test_external_data_runs_are_listed_apart_never_paired_or_claimed(tmp_path):
    """A `clip` run whose CLIP trained on the official train set (tag uses_external_data) saw more labelled images
    than its cell: it is never paired with a baseline nor pooled into a claim, and has a section of its own."""
    from synthboost.report import build_report
    from synthboost.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = tracker.experiment_id("clip-data")
    ext = {"uses_external_data": "true", "external_data": "CLIP (quick) trained on 60000 labelled images"}
    for seed in range(3):
        _log(tracker, exp, "none", "high", 500, seed, 0.0)
        _log(tracker, exp, "vae", "high", 500, seed, 0.01)
        _log(tracker, exp, "vqvae", "high", 500, seed, 0.20, tags=ext, variant="clip-full")
    result = build_report(experiments=["clip-data"], out_dir=tmp_path / "r", formats={"md", "html", "csv"},
                          tracker=tracker, log_to_mlflow=False)
    a = result.analysis
    assert set(a.runs["variant"]) == {"none", "vae"} and set(a.gains["variant"]) == {"vae"}
    assert "clip-full" not in set(a.missing.get("variant", []))  # not even listed as lacking a baseline
    assert list(a.external["variant"]) == ["clip-full"] and a.external["seeds"].tolist() == [3]
    assert a.external["accuracy_mean"].iloc[0] == pytest.approx(np.mean([_accuracy("vqvae", "high", 500, s, 0.20)
                                                                        for s in range(3)]))
    assert all("clip-full" not in c.detail for c in result.claims)
    md = (tmp_path / "r" / "report.md").read_text()
    main, apart = md.split("## Runs using external data")
    assert "clip-full" not in main and "clip-full" in apart and "60000 labelled images" in apart
    assert "3 runs that used external data are listed apart" in md
    assert "Runs using external data" in (tmp_path / "r" / "report.html").read_text()
    assert (tmp_path / "r" / "external_results.csv").is_file()

    only = tracker.experiment_id("clip-data-only")
    _log(tracker, only, "vqvae", "high", 500, 0, 0.2, tags=ext)
    monkey_env = {"MLFLOW_TRACKING_URI": tracker.uri}
    result = CliRunner().invoke(app, ["report", "--experiment", "clip-data-only", "--out", str(tmp_path / "x")],
                                env=monkey_env)
    assert result.exit_code == 2 and "use external data" in result.stderr.strip().splitlines()[0], result.output


def test_clip_runs_from_before_own_data_clips_count_as_external_data():
    """A `clip` run of code version 1 (or untagged, from before versions) trained its CLIP on the official 60k:
    the report sets it apart though it carries no external-data tag; a version-2 run is the cell's own."""
    import pandas as pd

    from synthboost import report as rep

    base = {"run_id": "r", "experiment": "e", "run_name": "n", "start_time": 0, "tags.model": "clip",
            "tags.regime": "high", "tags.size": "1000", "tags.classifier": "cnn", "tags.seed": "0",
            "params.mix.ratio": "1.0", "params.clf.recipe": "fair", "metrics.test/accuracy": 0.8}
    frame = pd.DataFrame([base, {**base, "run_id": "v1", "tags.code_version.generator": "1"},
                          {**base, "run_id": "v2", "tags.code_version.generator": "2"},
                          {**base, "run_id": "ddpm", "tags.model": "ddpm"}])
    runs = rep.tidy(frame)
    assert runs["external_data"].tolist() == [True, True, False, False]
    assert "code version" in runs["external_source"].iloc[0]


# ---------------------------------------------------------------- tuned baselines, budget-fair
BUDGET = "12 trials of val/balanced_accuracy, holdout"


def test_a_tuned_generator_is_compared_with_the_tuned_baselines_of_its_budget():
    """Cells run from a study's best (tag tuned.budget) pair across recipes only with baselines tuned with the
    same budget, say so, and get their own claim; a tuned generator without one is listed as missing."""
    from synthboost.report import analyse, tidy
    from synthboost.report.claims import seed
    from synthboost.report.stats import TUNED

    rows, extra = [], []
    for s in range(3):
        base = 0.70 + 0.01 * s
        rows += [("none", "high", 500, s, base), ("none-strong", "high", 500, s, base + 0.02),
                 ("none-strong", "high", 500, s, base + 0.03), ("cgan", "high", 500, s, base + 0.05 + 0.002 * s),
                 ("cgan", "high", 500, s, base + 0.04)]
        extra += [{}, {}, {"tags.tuned.budget": BUDGET, "params.clf.lr": "0.004"},
                  {"tags.tuned.budget": BUDGET, "params.mix.ratio": "0.5"},
                  {"tags.tuned.budget": "40 trials of val/balanced_accuracy, holdout", "params.mix.ratio": "2.0"}]
    frame = _frame(rows)
    for i, e in enumerate(extra):
        for k, v in e.items():
            frame.loc[i, k] = v
    a = analyse(tidy(frame))
    acc = a.gains[(a.gains["metric"] == "accuracy") & (a.gains["comparison"] == TUNED)]
    assert len(acc) == 1  # only the 12-trial cgan, only against the 12-trial none-strong
    row = acc.iloc[0]
    assert row["model"] == "cgan" and row["baseline"] == "none-strong" and row["n"] == 3
    assert row["mean"] == pytest.approx(0.05 + 0.002 - 0.03, abs=1e-9)  # (cgan − tuned none-strong) over seeds
    assert row["baseline_recipe"] != row["recipe"]  # across recipes, on purpose: each is what its budget found
    # the untuned baselines never pair with a tuned cgan (there is no tuned `none` here: no gain over `none` either)
    matched = a.gains[(a.gains["metric"] == "accuracy") & (a.gains["comparison"] == "matched recipe")]
    assert "cgan" not in set(matched["model"])
    mi = a.missing[a.missing["on_recipe"].str.startswith("tuned: ")]
    assert list(mi["on_recipe"]) == ["tuned: 40 trials of val/balanced_accuracy, holdout"]
    assert list(mi["baseline"]) == ["none-strong"] and list(mi["missing_seeds"]) == ["0,1,2"]
    claims = {c.key: c for c in seed.claims(a)}
    tuned = claims["4-none-strong-tuned"]
    assert tuned.statement == "Some tuned generator beats `none-strong` tuned with the same budget"
    assert tuned.verdict == "holds" and tuned.n == 3, tuned.detail
    assert claims["4-oversample-tuned"].verdict == "inconclusive"  # no oversample runs at all
    # a variant's default row comes before its tuned ones, whatever order the store lists the runs in
    for runs in (frame, frame.iloc[::-1].reset_index(drop=True)):
        res = analyse(tidy(runs)).results
        assert list(res.loc[res["variant"] == "none-strong", "tuned"]) == ["", BUDGET]
        assert list(res.loc[res["variant"] == "cgan", "tuned"]) == [BUDGET, "40 trials of val/balanced_accuracy, holdout"]


def test_a_default_row_comes_before_the_tuned_one_whatever_their_setup_hashes():
    import pandas as pd

    from synthboost.report.stats import sort_cells

    cell = {"protocol": "fair", "regime": "high", "size": 1000, "classifier": "cnn", "profile": "quick",
            "model": "none-strong", "variant": "none-strong", "mix_ratio": 0.0, "mix_strategy": "uniform",
            "mix_weight": 1.0, "mix_filter": "", "recipe": "r"}
    rows = pd.DataFrame([cell | {"tuned": BUDGET, "setup": "000000"}, cell | {"tuned": "", "setup": "ffffff"}])
    assert list(sort_cells(rows)["tuned"]) == ["", BUDGET]


def test_a_floor_that_did_not_bind_shares_the_recipe_of_runs_from_before_it():
    # quick's clf.min_steps lifts high/1,000 only: a balanced/5,000 run that logged it trained exactly as one from
    # before the floor existed, so they are one recipe (and pair); on high/1,000 the floor is a new recipe
    import pandas as pd

    from synthboost.report.frame import tidy

    def run(i, regime, size, floor):
        row = {"run_id": f"r{i}", "experiment": "x", "run_name": f"r{i}", "start_time": i,
               "tags.model": "none", "tags.regime": regime, "tags.size": str(size), "tags.classifier": "cnn",
               "tags.seed": "0", "tags.profile": "quick", "metrics.test/accuracy": 0.8,
               "params.clf.recipe": "fair", "params.clf.epochs": "40", "params.clf.batch_size": "64",
               "params.clf.lr": "0.002", "params.data.val_fraction": "0.15"}
        return row | ({"params.clf.min_steps": str(floor)} if floor is not None else {})

    frame = pd.DataFrame([run(0, "balanced", 5000, None), run(1, "balanced", 5000, 1040),
                          run(2, "high", 1000, None), run(3, "high", 1000, 1040)])
    recipes = tidy(frame).set_index("run_id")["recipe"]
    assert recipes["r0"] == recipes["r1"] == recipes["r2"]
    assert recipes["r3"] != recipes["r2"]


def test_a_stronger_baseline_meets_the_plain_baseline_of_its_own_budget_not_a_convergence_row():
    """fair-high's 2× rows: `none` at two step budgets in one data cell.  `oversample` (the plain recipe) is
    compared with the `none` of its budget, `none-strong-2x` with the 2× `none`; never an average of both."""
    rows = []
    for s in range(3):
        rows += [("none", 0.780 + 0.01 * s, {}), ("none", 0.700 + 0.01 * s, {"clf.min_steps": "2080"}),
                 ("oversample", 0.785 + 0.01 * s, {}), ("none-strong", 0.800 + 0.01 * s, {}),
                 ("none-strong", 0.730 + 0.01 * s, {"clf.min_steps": "2080"})]
    frame = _frame([(m, "high", 1000, i // 5, acc) for i, (m, acc, _) in enumerate(rows)])
    frame["params.clf.batch_size"] = "64"  # 20 epochs of 13 batches: a floor of 2,080 steps binds
    for i, (_, _, extra) in enumerate(rows):
        for k, v in extra.items():
            frame.loc[i, f"params.{k}"] = v
    from synthboost.report import analyse, tidy

    a = analyse(tidy(frame))
    g = a.gains[(a.gains["metric"] == "accuracy") & (a.gains["baseline"] == "none")]
    by_budget = {(m, "2x" if "min_steps=2080" in clf else "1x"): r for m, clf, r in
                 a.runs[["model", "clf", "recipe"]].drop_duplicates().itertuples(index=False)}
    oversample = g[g["model"] == "oversample"]
    assert list(oversample["baseline_recipe"]) == [by_budget[("none", "1x")]]
    assert oversample["mean"].iloc[0] == pytest.approx(0.005)
    strong = g[g["model"] == "none-strong"].set_index("recipe")
    assert strong.loc[by_budget[("none-strong", "1x")], "baseline_recipe"] == by_budget[("none", "1x")]
    assert strong.loc[by_budget[("none-strong", "2x")], "baseline_recipe"] == by_budget[("none", "2x")]
    assert strong.loc[by_budget[("none-strong", "1x")], "mean"] == pytest.approx(0.02)
    assert strong.loc[by_budget[("none-strong", "2x")], "mean"] == pytest.approx(0.03)


# ---------------------------------------------------------------- the science goal and what it cost
def _goal_frame(gains: dict[str, tuple[float, float, float]], *, weakest_lift: float = 0.12,
                seeds=(0, 1, 2)) -> "pd.DataFrame":
    """Tuned `none-strong` and tuned generator cells on high/1000: ``gains`` maps a model to (its validation
    balanced accuracy, its test balanced-accuracy gain, per-seed jitter of that gain)."""
    import pandas as pd

    rows = []
    for model, (val, gain, jitter) in {"none-strong": (0.80, 0.0, 0.0), **gains}.items():
        for s in seeds:
            bal = 0.78 + 0.01 * s + (gain + jitter * (s - 1) if model != "none-strong" else 0.0)
            recall = {f"metrics.test/recall_{k}": 0.85 for k in range(10)}
            recall["metrics.test/recall_6"] = 0.40 + (weakest_lift if model == "ddpm" else 0.0) + 0.01 * s
            clf = STRONG_CLF if model == "none-strong" else PLAIN_CLF
            rows.append({"run_id": f"{model}-{s}", "experiment": "hand", "run_name": model, "start_time": 0,
                         "tags.model": model, "tags.regime": "high", "tags.size": "1000", "tags.classifier": "cnn",
                         "tags.seed": str(s), "tags.profile": "quick", "tags.data_digest": f"d{s}",
                         "tags.tuned.budget": "12 trials", "tags.tuned.study": f"{model}-study",
                         "params.mix.ratio": "0.0" if model == "none-strong" else "1.0",
                         **{f"params.{k}": v for k, v in clf.items()}, "params.clf.recipe": "fair",
                         "metrics.test/accuracy": bal, "metrics.test/balanced_accuracy": bal,
                         "metrics.val/balanced_accuracy": val + 0.001 * s, **recall,
                         "metrics.time/cell": 600.0, "metrics.time/gen": 300.0 if model != "none-strong" else 0.0,
                         "tags.generator_trained": "true" if model != "none-strong" and s == 0 else "false",
                         "tags.machine.threads": "1"})
    return pd.DataFrame(rows)


def _goal(frame):
    from synthboost.report import analyse, tidy
    from synthboost.report.claims import goal

    return {c.key: c for c in goal.claims(analyse(tidy(frame)))}


def test_the_science_goal_picks_the_best_tuned_mix_on_validation_and_judges_it_on_test():
    # cgan validates best but gains little on test; ddpm validates worse and gains 4 pp: the goal judges cgan
    claims = _goal(_goal_frame({"cgan": (0.83, 0.005, 0.002), "ddpm": (0.81, 0.04, 0.002)}))
    a, b = claims["goal-accuracy"], claims["goal-weakest"]
    assert "cgan high/1000" in a.detail and "2 tuned generator cell(s)" in a.detail
    assert a.verdict == "does not hold" and a.n == 3 and a.ci_high < 0.03  # +0.5 pp, the 3 pp goal ruled out
    assert "6 (Shirt)" in b.detail and b.verdict == "does not hold"  # cgan leaves the weakest class as it was
    claims = _goal(_goal_frame({"ddpm": (0.83, 0.04, 0.002)}))
    assert claims["goal-accuracy"].verdict == "holds" and claims["goal-accuracy"].ci_low > 0
    assert claims["goal-weakest"].verdict == "holds"  # +12 pp on Shirt
    wide = _goal(_goal_frame({"ddpm": (0.83, 0.04, 0.05)}))  # the same mean, seeds all over the place
    assert wide["goal-accuracy"].verdict == "inconclusive"
    few = _goal(_goal_frame({"ddpm": (0.83, 0.04, 0.002)}, seeds=(0, 1)))
    assert few["goal-accuracy"].verdict == "inconclusive" and few["goal-accuracy"].n == 2


def test_the_science_goal_says_what_is_missing():
    frame = _goal_frame({"ddpm": (0.83, 0.04, 0.002)})
    untuned = _goal(frame.assign(**{"tags.tuned.budget": ""}))
    assert untuned["goal-accuracy"].verdict == "inconclusive"
    assert "from_study" in untuned["goal-accuracy"].detail
    no_base = _goal(frame[frame["tags.model"] != "none-strong"])
    assert "none-strong" in no_base["goal-accuracy"].detail and no_base["goal-weakest"].n is None


def test_the_cost_table_counts_core_hours_per_family_and_a_generator_once():
    from synthboost.report import costs, tidy

    frame = _goal_frame({"ddpm": (0.83, 0.04, 0.002)})
    frame.loc[frame["tags.model"] == "none-strong", "tags.machine.threads"] = "2"  # ran on two threads
    table = costs.cost_table(tidy(frame)).set_index("family")
    assert table.loc["ddpm", "runs"] == 3 and table.loc["ddpm", "generators trained"] == 1
    assert table.loc["ddpm", "core-hours"] == pytest.approx(3 * 600 / 3600)
    assert table.loc["ddpm", "of which training generators"] == pytest.approx(300 / 3600)  # trained once
    assert table.loc["none-strong", "core-hours"] == pytest.approx(3 * 600 * 2 / 3600)
    assert table.loc["total", "core-hours"] == pytest.approx(0.5 + 1.0) and table.loc["total", "runs"] == 6
    assert costs.cost_table(tidy(frame.drop(columns=["metrics.time/cell"]))).empty


# ---------------------------------------------------------------- issue 35: one cell against one cell, like with like
def _with(frame, extra: dict[int, dict]):
    """``frame`` with extra columns set on some rows (row index -> {column: value})."""
    for i, e in extra.items():
        for k, v in e.items():
            frame.loc[i, k] = v
    return frame


def test_a_tuned_mix_is_judged_against_the_tuned_baseline_never_the_default_one():
    """tuned-high-1000's defect: a tuned ddpm "beat" the *default* oversample (Holm-corrected) while against the
    tuned oversample it was inside the noise.  Now a tuned cell pairs only with the baselines tuned with its budget,
    in columns that say so."""
    from synthboost.report import analyse, tidy
    from synthboost.report.claims import seed
    from synthboost.report.render import display_headline
    from synthboost.report.stats import TUNED

    rows, extra = [], {}
    tuned_over = [0.030, 0.000, 0.050]
    for s in range(3):
        base = 0.70 + 0.01 * s
        rows += [("none", "high", 1000, s, base), ("oversample", "high", 1000, s, base),
                 ("oversample", "high", 1000, s, base + tuned_over[s]), ("ddpm", "high", 1000, s, base + 0.020 + 0.001 * s)]
        extra[4 * s + 2] = {"tags.tuned.budget": BUDGET, "params.clf.lr": "0.004", "params.mix.ratio": "2.0"}
        extra[4 * s + 3] = {"tags.tuned.budget": BUDGET, "params.mix.ratio": "0.08"}
    a = analyse(tidy(_with(_frame(rows), extra)))
    ddpm = a.gains[(a.gains["model"] == "ddpm") & (a.gains["metric"] == "accuracy")]
    assert list(ddpm["baseline"]) == ["oversample"] and list(ddpm["comparison"]) == [TUNED]  # no untuned `none` either
    assert ddpm["mean"].iloc[0] == pytest.approx(0.021 - np.mean(tuned_over))
    claims = {c.key: c for c in seed.claims(a)}
    assert "ddpm" not in claims["4-oversample"].detail and claims["4-oversample"].verdict == "inconclusive"
    assert claims["4-oversample-tuned"].verdict == "inconclusive", claims["4-oversample-tuned"].detail
    head = display_headline(a).set_index(["variant", "tuned"])
    row = head.loc[("ddpm", "12 trials of val/balanced_accuracy, holdout")]
    assert row.get("Δ accuracy vs oversample", "—") == "—" and row["Δ accuracy vs none"] == "—"
    assert row["Δ accuracy vs oversample (tuned)"].startswith(f"{100 * (0.021 - np.mean(tuned_over)):+.1f} [")


def test_two_baseline_cells_matching_one_run_exit_2_naming_both(tmp_path):
    """Two `oversample` cells (0.80 and 0.70) on one recipe and seed were averaged into a baseline of 0.75 nobody
    ran; now the report refuses, in one line that names both cells."""
    from synthboost.report import analyse, tidy
    from synthboost.errors import UserError
    from synthboost.tracking import Tracker

    rows, extra = [], {}
    for s in range(3):
        rows += [("none", "high", 500, s, 0.70), ("vae", "high", 500, s, 0.76), ("oversample", "high", 500, s, 0.80),
                 ("oversample", "high", 500, s, 0.70)]
        extra[4 * s + 3] = {"tags.variant": "oversample-b"}
    with pytest.raises(UserError, match=r"2 `oversample` cells match .*oversample high/500.*oversample-b high/500"):
        analyse(tidy(_with(_frame(rows), extra)))

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = tracker.experiment_id("two-oversample")
    for s in range(3):
        _log(tracker, exp, "none", "high", 500, s, 0.0)
        _log(tracker, exp, "vae", "high", 500, s, 0.03)
        _log(tracker, exp, "oversample", "high", 500, s, 0.05)
        _log(tracker, exp, "oversample", "high", 500, s, -0.05, variant="oversample-b")
    result = CliRunner().invoke(app, ["report", "--experiment", "two-oversample", "--out", str(tmp_path / "r")],
                                env={"MLFLOW_TRACKING_URI": tracker.uri})
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "oversample high/500" in lines[0] and "oversample-b high/500" in lines[0]
    assert not (tmp_path / "r" / "report.md").exists()


def test_a_mix_that_added_no_synthetic_image_is_shown_as_such_and_never_counted():
    """tuned-balanced-5000's defect: minority-only mixes on a balanced draw added nothing (mix/synthetic_total = 0),
    yet counted as beating `oversample` and among Holm's tests."""
    from synthboost.report import analyse, tidy
    from synthboost.report.claims import seed
    from synthboost.report.render import display_headline

    rows, extra = [], {}
    for s in range(3):
        base = 0.89 + 0.001 * s
        rows += [("none", "balanced", 5000, s, base), ("oversample", "balanced", 5000, s, base - 0.01),
                 ("ddpm", "balanced", 5000, s, base), ("cgan", "balanced", 5000, s, base - 0.01 + NULL[s])]
        extra[4 * s + 2] = {"metrics.mix/synthetic_total": 0.0, "params.mix.strategy": "minority"}
        extra[4 * s + 3] = {"metrics.mix/synthetic_total": 990.0}
    a = analyse(tidy(_with(_frame(rows), extra)))
    assert "ddpm" not in set(a.gains["model"]) and "ddpm" not in set(a.missing.get("model", []))
    claim = seed.claim_beats(a, "oversample")
    assert "in 1 cell(s)" in claim.detail and "ddpm" not in claim.detail, claim.detail
    assert claim.verdict == "inconclusive"
    head = display_headline(a).set_index("variant")
    assert "no synthetic images" in head.loc["ddpm", "mix"] and head.loc["ddpm", "Δ accuracy vs oversample"] == "—"
    assert "no synthetic images" not in head.loc["cgan", "mix"]


def test_the_best_of_several_dvae_cells_is_corrected_for_the_pick():
    """Claim (3) picks the best DVAE high cell: its interval is Bonferroni-corrected for the number of cells."""
    from synthboost.report.claims import seed

    best = [0.125, 0.135, 0.145]  # 95% interval [+11.0, +16.0] pp; at 97.5% it starts at +9.9 pp
    rows = []
    for s in range(3):
        rows += [("none", "high", 500, s, 0.6), ("dvae", "high", 500, s, 0.6 + best[s]),
                 ("none", "high", 1000, s, 0.7), ("dvae", "high", 1000, s, 0.7 + 0.01 * s)]
    alone = seed.claim_dvae_high(_analyse(rows[:2] + rows[4:6] + rows[8:10]))
    assert alone.verdict == "holds" and alone.ci_low == pytest.approx(0.135 - 4.302653 * 0.01 / np.sqrt(3))
    two = seed.claim_dvae_high(_analyse(rows))
    assert two.verdict == "inconclusive", two.detail
    assert "not once corrected for picking the best of 2 cells" in two.detail and "97.5% CI [+9.9" in two.detail


def test_trend_claims_average_a_seeds_settings_before_the_interval():
    """Five settings on one seed share its draw and its `none` runs: 15 setting × seed differences are 3
    independent values, and the interval says so (pooled, it excluded 0)."""
    from synthboost.report.claims import seed

    effect = [0.02, -0.01, 0.0]  # the seed's `none` run at the small size, shared by every setting
    rows, variants = [], {}
    for s in range(3):
        rows += [("none", "high", 500, s, 0.70 - effect[s]), ("none", "high", 1000, s, 0.75)]
        for i in range(5):
            variants[len(rows)], variants[len(rows) + 1] = f"vae-{i}", f"vae-{i}"
            rows += [("vae", "high", 500, s, 0.71 + 0.001 * i), ("vae", "high", 1000, s, 0.75 + 0.001 * i)]
    from synthboost.report import analyse, tidy

    a = analyse(tidy(_with(_frame(rows), {i: {"tags.variant": v} for i, v in variants.items()})))
    claim = seed.claim_small_sizes(a)
    assert claim.n == 3 and claim.unit == "seeds", claim.detail
    assert claim.verdict == "inconclusive" and claim.ci_low < 0 < claim.ci_high
    assert "(15 setting × seed pairs, 3 seed(s))" in claim.detail


def test_budget_convergence_is_an_interval_not_a_mean():
    from synthboost.report import analyse, tidy
    from synthboost.report.convergence import convergence, texts

    moves = {"none": [0.004, 0.006, 0.005], "none-strong": [0.0005, -0.0005, 0.0], "oversample": [0.01, -0.01, 0.005]}
    rows, extra = [], {}
    for s in range(3):
        for model, d in moves.items():
            extra[len(rows)] = {"metrics.train/clf_steps": 1040}
            extra[len(rows) + 1] = {"metrics.train/clf_steps": 2080, "params.clf.min_steps": "2080",
                                    "tags.variant": f"{model}-2x"}
            rows += [(model, "high", 1000, s, 0.75 + 0.01 * s), (model, "high", 1000, s, 0.75 + 0.01 * s + d[s])]
    frame = _with(_frame(rows), extra).assign(**{"params.clf.batch_size": "64"})
    table = convergence(analyse(tidy(frame)).runs).set_index("variant")
    assert table.loc["none", "twin"] == "none-2x" and table.loc["none", "mean"] == pytest.approx(0.005)
    assert table.loc["none", "verdict"] == "moved"  # +0.5 pp, interval [+0.25, +0.75] pp
    assert table.loc["none-strong", "verdict"] == "converged"  # interval within ±0.3 pp
    # +0.17 pp on average — under 0.3 pp, which a mean alone would call converged — in [−1.2, +1.5] pp: not shown
    assert table.loc["oversample", "verdict"] == "not shown" and table.loc["oversample", "ci_high"] > 0.003
    assert any("No mix was run at a second step budget" in t for t in texts(table.reset_index()))


def test_the_report_names_runs_it_leaves_out_unfinished_and_what_minority_recall_averages(tmp_path):
    from synthboost.report import build_report
    from synthboost.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = tracker.experiment_id("orphan")
    for s in range(3):
        tags = {"minority_classes": "1,7"} if s == 2 else None
        _log(tracker, exp, "none", "high", 500, s, 0.0, tags=tags)
        _log(tracker, exp, "vae", "high", 500, s, 0.02, tags=tags)
    orphan = tracker.client.create_run(exp, run_name="vae high/500 seed=3", tags={
        "synthboost.kind": "experiment", "model": "vae", "regime": "high", "size": "500", "seed": "3"}).info.run_id
    result = build_report(experiments=["orphan"], out_dir=tmp_path / "r", formats={"md"}, tracker=tracker,
                          log_to_mlflow=False)
    assert result.n_runs == 6
    md = (tmp_path / "r" / "report.md").read_text()
    assert f"1 experiment run not FINISHED is left out" in md and f"RUNNING {orphan[:8]} (vae high/500 seed=3)" in md
    head = (tmp_path / "r" / "headline.md").read_text()
    assert ("high/500, a different set per seed (the Δ averages different classes): seed 0: 2 Pullover, 6 Shirt; "
            "seed 1: 2 Pullover, 6 Shirt; seed 2: 1 Trouser, 7 Sneaker") in head


def test_a_gain_over_none_is_claimed_only_after_the_correction_over_cells():
    """fair-high's `cgan` +0.6 [+0.1, +1.1] pp over `none` (p = 0.039) is one of three cells: the report says in
    words only what survives Holm over them, and counts the rest as uncorrected."""
    from synthboost.report.claims import seed

    rows = []
    for s in range(3):
        rows += [("none", "high", 1000, s, 0.70 + 0.01 * s)]
        rows += [(m, "high", 1000, s, 0.70 + 0.01 * s + d[s]) for m, d in
                 (("cgan", MARGINAL), ("ddpm", NULL), ("clip", [-x for x in NULL]))]
    claims = {c.key: c for c in seed.claims(_analyse(rows))}
    claim = claims["4-none"]
    assert claim.statement == "Some generator beats `none`"
    assert claim.verdict == "inconclusive" and "1 cell(s) have an uncorrected interval above 0" in claim.detail
    assert "in 3 cell(s)" in claim.detail
