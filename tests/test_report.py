"""`synthboost report` on a store of runs logged directly through MlflowClient (known numbers, no training).

Experiment ``report-a`` is built so the seed study's claims hold; ``report-b`` so they fail (or cannot be
tested); ``report-nobase`` has generator runs and no baseline at all.
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
           "dvae": {("semi", 500): 0.04, ("high", 500): 0.11, ("high", 2000): 0.05},
           "vqvae": {("semi", 500): 0.03, ("high", 500): 0.08, ("high", 2000): 0.04},
           "oversample": {("high", 500): 0.025}}
GAINS_B = {"vae": 0.05, "dvae": 0.02, "vqvae": 0.01, "none-strong": 0.03}
VARIANT = {"dvae": "dvae-gaussian"}
FID = {"vae": 20.0, "dvae": 5.0, "vqvae": 8.0}


@pytest.fixture(scope="module")
def store():
    """A throw-away store (on tmpfs when there is one: SQLite commits then cost no fsync) with three experiments."""
    from synthboost.tracking import Tracker

    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    folder = Path(tempfile.mkdtemp(prefix="synthboost-report-", dir=shm))
    tracker = Tracker(f"sqlite:///{folder / 'mlflow.db'}")
    grids = {m: _grid_png(folder, m, i) for i, m in enumerate(FID)}  # every generator run has one, as in pipeline
    ids: dict[str, list[str]] = {}
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
         recipe: str | None = None, steps: int | None = None) -> str:
    from mlflow.entities import Metric, Param

    client = tracker.client
    acc = _accuracy(model, regime, size, seed, gain)
    generator = model not in ("none", "none-strong", "oversample")
    tags = {"synthboost.kind": "experiment", "model": model, "variant": VARIANT.get(model, model),
            "regime": regime, "size": str(size), "seed": str(seed), "profile": "quick", "classifier": "cnn",
            "data_digest": f"d-{regime}-{size}-{seed}", "minority_classes": "2,6", "config_key": f"k{seed}"}
    params = {"model": model, "mix.ratio": "1.0" if generator else "0.0", "mix.strategy": "uniform",
              "mix.synthetic_weight": "1.0", "data.regime": regime, "data.size": str(size), "clf.epochs": "20"}
    if generator:
        params |= {"gen.latent_dim": "16", "gen.epochs": "30"}
    if recipe is not None:  # runs of the fair protocol and after (older runs have no clf.recipe)
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
    accs = [_accuracy("dvae", "high", 500, s, 0.11) for s in range(3)]
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
    md = report_a.files["report.md"].read_text()
    section = md.split("## Missing baselines")[1]
    assert "| vae | vae | high | 1000 | cnn | 1×uniform | none | 0,1 | no gain reported |" in section
    assert "| vqvae | vqvae | semi | 500 | cnn | 1×uniform | none | 3 | gain over 3 of 4 seeds |" in section


def test_claims_hold_on_data_built_to_support_them(report_a):
    verdicts = {c.key: c for c in report_a.claims}
    assert verdicts["1"].verdict == "holds", verdicts["1"].detail
    assert "dvae +6.9 pp, vqvae +5.1 pp, vae +1.6 pp" in verdicts["1"].detail
    assert verdicts["2a"].verdict == "holds", verdicts["2a"].detail
    assert "500: +7.4 pp, 2000: +3.4 pp" in verdicts["2a"].detail
    assert verdicts["2b"].verdict == "holds", verdicts["2b"].detail
    assert verdicts["3"].verdict == "holds", verdicts["3"].detail
    assert "+11.2 pp" in verdicts["3"].detail  # 0.11 + the mean of dvae's seed noise (0.002)
    assert verdicts["4-none-strong"].verdict == "not testable"
    assert "no `none-strong` runs" in verdicts["4-none-strong"].detail
    assert verdicts["4-oversample"].verdict == "beaten by dvae-gaussian, vqvae", verdicts["4-oversample"].detail
    md = report_a.files["report.md"].read_text()
    assert "**(3) DVAE improves accuracy in the high regime by up to 10 points — holds.**" in md


def test_claims_fail_or_are_not_testable_on_contrary_data(store, tmp_path):
    from synthboost.report import build_report

    result = build_report(experiments=["report-b"], out_dir=tmp_path, formats={"md"}, tracker=store,
                          log_to_mlflow=False)
    verdicts = {c.key: c for c in result.claims}
    assert verdicts["1"].verdict == "does not hold"
    assert "The largest gains come from vae and dvae" in verdicts["1"].detail
    assert verdicts["2a"].verdict == "not testable" and "same size (500)" in verdicts["2a"].detail
    assert verdicts["2b"].verdict == "not testable" and "high regime only" in verdicts["2b"].detail
    assert verdicts["3"].verdict == "does not hold" and "short of 10 points" in verdicts["3"].detail
    assert verdicts["4-none-strong"].verdict == "beaten by vae", verdicts["4-none-strong"].detail
    assert verdicts["4-oversample"].verdict == "not testable"
    assert result.run_id is None and set(result.files) == {"report.md", *(f"plots/{n}.png" for n in result.figures)}


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


CLI_BAD = [
    (["--experiment", "no-such-experiment"], "no experiment named 'no-such-experiment'"),
    (["--experiment", "report-nobase"], "missing baselines `none`"),
    (["--format", "md,pdf"], "unknown format 'pdf'"),
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
    assert {c.key.split()[-1] for c in result.claims} == {"fair", "seed"}  # each protocol's claims, apart


def test_a_report_that_would_pair_across_protocols_exits_2(protocol_store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", protocol_store.uri)
    result = CliRunner().invoke(app, ["report", "--out", str(tmp_path / "r"), "--experiment", "protocol-mismatch"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "never paired across protocols" in lines[0] and "clf.recipe=seed" in lines[0]
