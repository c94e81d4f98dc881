"""Selection worth trusting: stratified k-fold within the regime's pool, and the val↔test rank agreement."""

import numpy as np
import optuna
import pytest
import torch
from typer.testing import CliRunner

from synthboost import queue
from synthboost.cli import app
from synthboost.config import DataConfig, RunConfig
from synthboost.data import make_split, regime_counts
from smoke_configs import smoke_study

runner = CliRunner()

#: a baseline study on the smoke profile: one classifier knob, random sampler, no pruning
def kfold_study(selection: str) -> str:
    return smoke_study(n_trials=1, model="none-strong", regime="high", search={"clf.lr": "null"},
                       fixed="clf.epochs: 1", extra=selection)


def test_kfold_partitions_the_holdout_pool_into_stratified_folds():
    holdout = make_split(DataConfig(regime="high", size=1000), seed=0)
    pool = set(torch.cat([holdout.train_index, holdout.val_index]).tolist())
    folds = [make_split(DataConfig(regime="high", size=1000, kfold=3, fold=f), seed=0) for f in range(3)]
    vals = [set(s.val_index.tolist()) for s in folds]
    assert set().union(*vals) == pool and sum(map(len, vals)) == len(pool)  # every pool image validated once
    for s, v in zip(folds, vals):
        assert set(s.train_index.tolist()) == pool - v  # trained on the other folds, nothing from outside
    counts = regime_counts("high", 1000, 0)
    for k, n in enumerate(counts):  # every class in every fold, ⌊n/3⌋ or ⌈n/3⌉ of it
        assert {int((s.val_y == k).sum()) for s in folds} <= {n // 3, -(-n // 3)}
    # the validation set is the whole pool (1,000 images) instead of the holdout's 15%
    assert len(holdout.val_y) < 200 and sum(len(s.val_y) for s in folds) == 1000


def test_holdout_configs_keep_their_keys():
    """The k-fold fields are left out of a holdout run's config, so no finished grid cell is re-run for them."""
    from synthboost.cell import make_config

    cfg = make_config(model="none", regime="high", size=300, profile="smoke")
    assert "kfold" not in cfg.to_dict()["data"] and "data.fold" not in cfg.params()
    folded = make_config(model="none", regime="high", size=300, profile="smoke", overrides={"data": {"kfold": 3}})
    assert folded.to_dict()["data"]["kfold"] == 3
    assert isinstance(cfg, RunConfig)


def test_spearman_matches_scipy_and_its_interval_covers_it():
    from scipy import stats

    from synthboost.selection import spearman

    rng = np.random.default_rng(1)
    val = rng.normal(size=12)
    test = val + rng.normal(scale=0.7, size=12)
    rho, lo, hi, p = spearman(val, test)
    ref = stats.spearmanr(val, test)
    assert rho == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    assert lo <= rho <= hi and hi - lo > 0.05
    r2, lo2, hi2, _ = spearman(val, -test)  # reversed ranking: the interval flips
    assert r2 == pytest.approx(-rho) and hi2 < 0 < lo


def test_a_kfold_study_trains_one_run_per_fold_and_averages_their_validation(tracker, tmp_path):
    path = tmp_path / "kfold.yaml"
    path.write_text(kfold_study("selection: {kfold: 2}"))
    storage = str(tmp_path / "s.journal")
    out = runner.invoke(app, ["study", "--model", "none-strong", "--config", str(path), "--storage", storage,
                              "--name", "kf", "--experiment", "test-selection"])
    assert out.exit_code == 0, out.output
    (t,) = optuna.load_study(study_name="kf", storage=queue.open_storage(storage)).trials
    assert t.state.name == "COMPLETE"
    runs = [tracker.client.get_run(v) for k, v in t.user_attrs.items() if k.startswith("mlflow_run_id")]
    assert sorted(r.data.params["data.fold"] for r in runs) == ["0", "1"]
    assert {r.data.params["data.kfold"] for r in runs} == {"2"}
    assert len({r.data.tags["data_digest"] for r in runs}) == 2  # two different train/validation cuts
    # the objective is the mean over the folds of the validation metric — never a test number
    assert t.value == pytest.approx(np.mean([r.data.metrics["val/balanced_accuracy"] for r in runs]))


def _hand_study(tracker, storage: str, name: str, scores: list[tuple[float, float]]) -> None:
    """A finished study without training: one COMPLETE trial per (objective, test accuracy), each naming an
    MLflow run (tagged like a trial's) that holds the test accuracy."""
    from mlflow.entities import Metric

    exp = tracker.experiment_id("test-selection-hand")
    parent = tracker.client.create_run(exp, run_name=f"study {name}").info.run_id
    st = optuna.create_study(study_name=name, storage=queue.open_storage(storage), direction="maximize")
    st.set_user_attr("synthboost.spec", '{"objective": "val/balanced_accuracy", "selection": {"kfold": null}}')
    st.set_user_attr("mlflow_parent_run_id", parent)
    for value, test in scores:
        trial = st.ask()
        rid = tracker.client.create_run(exp, tags={"optuna.study_name": name,
                                                   "optuna.trial_number": str(trial.number)}).info.run_id
        tracker.client.log_batch(rid, metrics=[Metric("test/accuracy", test, 0, 0)])
        tracker.client.set_terminated(rid, "FINISHED")
        trial.set_user_attr("mlflow_run_id", rid)
        st.tell(trial, value)


def test_agreement_reports_spearman_with_its_interval_and_where_the_choice_lands(tracker, tmp_path, monkeypatch):
    from scipy import stats

    storage = str(tmp_path / "s.journal")
    val, test = [0.70, 0.72, 0.74, 0.78, 0.76], [0.80, 0.81, 0.82, 0.83, 0.84]  # val picks the second best on test
    _hand_study(tracker, storage, "hand", list(zip(val, test)))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracker.uri)
    out = runner.invoke(app, ["agreement", "--name", "hand", "--storage", storage])
    assert out.exit_code == 0, out.output
    rho = stats.spearmanr(val, test).statistic
    assert f"study hand (holdout): Spearman ρ(val val/balanced_accuracy, test/accuracy) = {rho:+.2f}" in out.stdout
    assert "n = 5 complete trials" in out.stdout and "95% bootstrap CI [" in out.stdout
    assert "the chosen trial 3 is #2 on test (83.0% vs best 84.0%)" in out.stdout
    st = optuna.load_study(study_name="hand", storage=queue.open_storage(storage))
    parent = tracker.client.get_run(st.user_attrs["mlflow_parent_run_id"])
    assert parent.data.metrics["selection/n"] == 5 and parent.data.metrics["selection/rho"] == pytest.approx(rho)


def test_agreement_needs_three_complete_trials(tracker, tmp_path, monkeypatch):
    storage = str(tmp_path / "s.journal")
    _hand_study(tracker, storage, "two", [(0.7, 0.8), (0.75, 0.82)])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracker.uri)
    for args, message in ((["--name", "two"], "needs 3 or more"), (["--name", "nope"], "no study named 'nope'")):
        out = runner.invoke(app, ["agreement", *args, "--storage", storage])
        assert out.exit_code == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("selection,message,fix", [
    ("selection: {kfold: 1}", "selection.kfold must be at least 2", "use kfold: 2 or more"),
    ("selection: {kfold: 99}", "selection.kfold 99 is more folds than the smallest class of high/300",
     "or fewer, or a larger size"),
    ("selection: {folds: 3}", "selection.folds", "unknown key"),
])
def test_bad_kfold_exits_2_with_one_line_naming_the_fix(tmp_path, selection, message, fix):
    path = tmp_path / "bad.yaml"
    path.write_text(kfold_study(selection))
    storage = tmp_path / "s.journal"
    out = runner.invoke(app, ["study", "--model", "none-strong", "--config", str(path), "--storage", str(storage)])
    assert out.exit_code == 2, out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and fix in lines[0], out.stderr
    assert not storage.exists()


def test_a_study_stored_before_selection_existed_still_resumes(tracker, tmp_path):
    """Its stored spec lacks `selection`; it means the holdout, so a study file that says holdout resumes it — one
    on today's default for the tail (3-fold on `high`) does not."""
    import json

    from synthboost import study as study_mod
    from synthboost.tracking import Tracker

    path = tmp_path / "old.yaml"
    path.write_text(kfold_study("selection: {tail_kfold: null}"))
    spec = study_mod.load_spec(model="none-strong", path=path)
    storage = str(tmp_path / "s.journal")
    st = optuna.create_study(study_name="old", storage=queue.open_storage(storage), direction="maximize")
    stored = json.loads(study_mod.spec_json(spec))
    del stored["selection"]
    st.set_user_attr("synthboost.spec", json.dumps(stored))
    study_mod.prepare(spec, name="old", storage_url=storage, experiment="test-selection-old", tracker=Tracker())
    for selection in ({"kfold": 2}, {}):  # explicit k-fold, and today's default on the tail
        kfold = study_mod.load_spec(model="none-strong", path=path, overrides={"selection": selection})
        with pytest.raises(study_mod.UserError, match="exists with a different spec"):
            study_mod.prepare(kfold, name="old", storage_url=storage, experiment="test-selection-old",
                              tracker=Tracker())
