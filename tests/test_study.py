"""Optuna studies tracked in MLflow: budget across workers, statuses, resume, a killed worker, bad input."""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from typer.testing import CliRunner

from synthboost import queue
from synthboost import study as study_mod
from synthboost.cli import app

from smoke_configs import smoke_study

runner = CliRunner()

STUDY_YAML = smoke_study(n_trials=4)


@pytest.fixture()
def study_file(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(STUDY_YAML)
    return p


def trials_and_children(tracker, name, storage):
    st = optuna.load_study(study_name=name, storage=queue.open_storage(storage))
    parent = st.user_attrs["mlflow_parent_run_id"]
    exp = tracker.client.get_run(parent).info.experiment_id
    children = tracker.client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'")
    return st, parent, children


def invoke(*args):
    return runner.invoke(app, ["study", *args])


STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def test_two_workers_meet_the_budget_exactly_with_one_child_run_per_trial(tracker, tmp_path, study_file):
    storage = str(tmp_path / "s.journal")
    result = invoke("--model", "vae", "--config", str(study_file), "--workers", "2", "--storage", storage,
                    "--name", "two", "--experiment", "test-study")
    assert result.exit_code == 0, result.output
    st, parent, children = trials_and_children(tracker, "two", storage)
    assert len(st.trials) == 4 and sorted(t.number for t in st.trials) == [0, 1, 2, 3]
    assert len(children) == 4
    assert tracker.client.get_run(parent).info.status == "FINISHED"
    assert tracker.client.get_run(parent).data.tags["optuna.study_name"] == "two"
    # the parent also says how far the choice can be trusted: val↔test rank agreement over the 4 trials
    assert "Spearman ρ(val val/balanced_accuracy, test/accuracy)" in result.stdout
    assert tracker.client.get_run(parent).data.metrics["selection/n"] == 4
    by_id = {r.info.run_id: r for r in children}
    for t in st.trials:
        run = by_id[t.user_attrs["mlflow_run_id"]]  # the trial names its run ...
        assert run.data.tags["optuna.trial_number"] == str(t.number)  # ... and the run names its trial
        assert run.info.status == STATUS[t.state.name]
        assert float(run.data.params["mix.ratio"]) == pytest.approx(t.params["mix.ratio"])
    assert len({t.user_attrs["worker"] for t in st.trials}) == 2  # both workers pulled work
    # resuming with a larger budget adds only the difference
    result = invoke("--model", "vae", "--config", str(study_file), "--n-trials", "5", "--storage", storage,
                    "--name", "two", "--experiment", "test-study")
    assert result.exit_code == 0, result.output
    st, parent2, children = trials_and_children(tracker, "two", storage)
    assert parent2 == parent and len(st.trials) == 5 and len(children) == 5
    art = {a.path for a in tracker.client.list_artifacts(parent, "optuna")}
    assert "optuna/optimization_history.png" in art
    assert "best_params" in tracker.client.get_run(parent).data.tags
    # its parent deleted in the UI, a resume opens a new parent rather than failing to reopen the old one
    tracker.client.delete_run(parent)
    result = invoke("--model", "vae", "--config", str(study_file), "--n-trials", "6", "--storage", storage,
                    "--name", "two", "--experiment", "test-study")
    assert result.exit_code == 0, result.output
    st, parent3, _ = trials_and_children(tracker, "two", storage)
    assert parent3 != parent and len(st.trials) == 6
    assert tracker.client.get_run(parent3).info.status == "FINISHED"


def test_pruned_and_failed_trials_end_killed_and_failed(tracker, tmp_path, study_file, monkeypatch):
    from synthboost.errors import GeneratorDiverged
    from synthboost.generators import vae

    class PruneTrialOne(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return trial.number == 1

    monkeypatch.setattr(study_mod, "_pruner", lambda spec: PruneTrialOne())
    real_fit = vae.VAE.fit
    calls = {"n": 0}

    def fit_nan_on_third(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise GeneratorDiverged("vae: loss became nan at epoch 0")
        return real_fit(self, *a, **k)

    monkeypatch.setattr(vae.VAE, "fit", fit_nan_on_third)
    # every trial trains its own generator here (gen.lr is searched), so the third fit is trial 2
    study_file.write_text(STUDY_YAML.replace("search_space:\n", "search_space:\n  gen.lr: null\n"))
    storage = str(tmp_path / "s.journal")
    result = invoke("--model", "vae", "--config", str(study_file), "--storage", storage, "--name", "statuses",
                    "--experiment", "test-study")
    assert result.exit_code == 0, result.output
    st, _, children = trials_and_children(tracker, "statuses", storage)
    states = [t.state.name for t in sorted(st.trials, key=lambda t: t.number)]
    # the budget is 4 COMPLETE trials: the pruned and the failed one are replaced, so every study's choice rests on
    # the same number of scored trials
    assert states == ["COMPLETE", "PRUNED", "FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    by_id = {r.info.run_id: r for r in children}
    for t in st.trials:
        assert by_id[t.user_attrs["mlflow_run_id"]].info.status == STATUS[t.state.name]
    failed = by_id[st.trials[2].user_attrs["mlflow_run_id"]]
    assert "loss became nan" in failed.data.tags["error"]
    assert "loss became nan" in st.trials[2].user_attrs["fail_reason"]


def test_a_study_whose_trials_keep_failing_stops_at_its_limit_and_says_so(tracker, tmp_path, study_file,
                                                                            monkeypatch):
    from synthboost.errors import GeneratorDiverged
    from synthboost.generators import vae

    def always_nan(self, *a, **k):
        raise GeneratorDiverged("vae: loss became nan at epoch 0")

    monkeypatch.setattr(vae.VAE, "fit", always_nan)
    # a generator of its own (the session's store may hold a trained smoke vae, which a trial would reuse unfitted)
    study_file.write_text(smoke_study(n_trials=2, extra="max_trials: 3", fixed="clf.epochs: 2, gen.latent_dim: 7"))
    storage = str(tmp_path / "s.journal")
    result = invoke("--model", "vae", "--config", str(study_file), "--storage", storage, "--name", "failing",
                    "--experiment", "test-study")
    assert result.exit_code == 0, result.output
    st = optuna.load_study(study_name="failing", storage=queue.open_storage(storage))
    assert [t.state.name for t in st.trials] == ["FAIL"] * 3  # not an endless loop of failures
    assert "stopped at its limit of 3 started trials with 0 of 2 complete" in result.stdout


def test_studies_tune_on_draws_the_reports_do_not_use_and_select_by_folds_on_the_tail():
    """Every shipped study tunes on seeds no grid reports (0–2), by k-fold on the long-tailed regimes; its budget
    counts complete trials and says so; an old stored spec keeps what it did."""
    for path in sorted(study_mod.studies_dir().glob("*.yaml")):
        values = study_mod.load_yaml(path)
        if "models" in values:  # a grid file
            assert not set(values.get("seeds", [0, 1, 2])) & set(study_mod.TUNING_SEEDS), path.name
            continue
        model = path.stem if path.stem in study_mod.generators.model_names() else "vae"
        spec = study_mod.load_spec(model=values.get("model", model), path=path)
        assert not set(spec.seeds) & {0, 1, 2}, path.name
    spec = study_mod.load_spec(model="cgan")
    assert spec.seeds == [100] and spec.selection.folds("high") == 3 and spec.selection.folds("balanced") is None
    assert study_mod.budget_label(spec) == "12 complete trials of val/balanced_accuracy, 3-fold"
    balanced = study_mod.load_spec(model="cgan", overrides={"regime": "balanced", "recipe": "strong"})
    assert study_mod.budget_label(balanced) == "12 complete trials of val/balanced_accuracy, holdout, strong recipe"
    assert study_mod.default_name(balanced) == "cgan-strong-balanced-1000-quick"
    old = study_mod.stored_spec('{"model": "cgan", "regime": "high", "n_trials": 12, "selection": {"kfold": null}}')
    assert study_mod.budget_label(old) == "12 trials of val/balanced_accuracy, holdout"


@pytest.mark.slow
def test_a_strong_recipe_study_tunes_the_mix_under_it_by_folds_on_a_tail_draw(tracker, tmp_path, study_file):
    """``recipe: strong``: every trial trains the classifier on none-strong's recipe; on ``high`` each trial is
    scored by 3 folds of the tuning draw (seed 100), and a grid re-runs its best under the same recipe — but
    refuses to re-run it on the draw it was tuned on."""
    from synthboost import grid as grid_mod

    study_file.write_text(smoke_study(n_trials=1, regime="high", search={"mix.ratio": "{low: 0.2, high: 1.0}"},
                                      fixed="clf.epochs: 1").replace("seeds: [0]", "seeds: [100]")
                          + "recipe: strong\n")
    storage = str(tmp_path / "s.journal")
    result = invoke("--model", "vae", "--config", str(study_file), "--storage", storage, "--experiment", "test-study")
    assert result.exit_code == 0, result.output
    st = optuna.load_study(study_name="vae-strong-high-300-smoke", storage=queue.open_storage(storage))
    (t,) = st.trials
    runs = [tracker.client.get_run(v) for k, v in t.user_attrs.items() if k.startswith("mlflow_run_id")]
    assert sorted(r.data.params["data.fold"] for r in runs) == ["0", "1", "2"]
    assert {(r.data.params["seed"], r.data.params["clf.augment"], r.data.params["clf.class_weight"]) for r in runs} == \
        {("100", "shift_flip", "balanced")}
    grid = tmp_path / "g.yaml"
    grid.write_text("experiment: g-strong\nprofile: smoke\nmodels: [vae]\nregimes: [high]\nsizes: [300]\n"
                    "seeds: [0]\nclassifiers: [cnn]\nmixes: [{from_study: vae-strong-high-300-smoke}]\n")
    (unit,) = grid_mod.plan(grid_mod.load_grid(grid), storage)
    (cell,) = unit.cells
    clf = cell.overrides["clf"]
    assert clf["augment"] == "shift_flip" and clf["class_weight"] == "balanced"
    assert cell.tags["tuned.budget"] == "1 complete trials of val/balanced_accuracy, 3-fold, strong recipe"
    (tmp_path / "g2.yaml").write_text(grid.read_text().replace("seeds: [0]", "seeds: [0, 100]"))
    out = runner.invoke(app, ["grid", "--config", str(tmp_path / "g2.yaml"), "--storage", storage])
    assert out.exit_code == 2 and "vae-strong-high-300-smoke tuned on seed(s) [100]" in out.stderr


@pytest.mark.slow
def test_a_killed_worker_is_recovered_on_resume(tracker, tmp_path, study_file):
    storage = str(tmp_path / "s.journal")
    spec = study_mod.load_spec(model="vae", path=study_file, overrides={"n_trials": 3})
    study_mod.prepare(spec, name="killed", storage_url=storage, experiment="test-study", tracker=tracker)
    worker = subprocess.Popen([sys.executable, "-m", "synthboost", "study-worker", "--name", "killed",
                               "--storage", storage], env=os.environ.copy())
    st = optuna.load_study(study_name="killed", storage=queue.open_storage(storage))
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until the worker is inside a trial with its MLflow run open
        running = [t for t in st.get_trials() if t.state.name == "RUNNING" and "mlflow_run_id" in t.user_attrs]
        if running:
            break
        time.sleep(0.5)
    assert running, "worker never started a trial"
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    result = invoke("--model", "vae", "--config", str(study_file), "--n-trials", "3", "--storage", storage,
                    "--name", "killed", "--experiment", "test-study")
    assert result.exit_code == 0, result.output
    st, parent, children = trials_and_children(tracker, "killed", storage)
    numbers = [t.number for t in st.trials]
    assert len(numbers) == len(set(numbers))
    assert queue.budget_counts(st)["done"] == 3
    dead = [t for t in st.trials if t.state.name == "FAIL"]
    assert len(dead) == 1 and "died" in dead[0].user_attrs["fail_reason"]
    assert any(t.user_attrs.get("retry_of") == dead[0].number for t in st.trials)  # retried with its params
    assert all(r.info.status != "RUNNING" for r in children)
    assert tracker.client.get_run(dead[0].user_attrs["mlflow_run_id"]).info.status == "FAILED"


@pytest.mark.parametrize("args,message", [
    (["--model", "nope"], "unknown model 'nope'"),
    (["--model", "vae", "--config", "/nonexistent.yaml"], "does not exist"),
    (["--model", "vae", "--n-trials", "0"], "--n-trials must be >= 1"),
    (["--model", "vae", "--storage", "postgresql://u:secret@127.0.0.1:9/optuna"], "unreachable"),
])
def test_bad_study_input_exits_2(args, message, tmp_path):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "secret" not in result.stderr


def test_invalid_study_files_exit_2(tmp_path, study_file):
    storage = str(tmp_path / "s.journal")
    bad_key = tmp_path / "bad_key.yaml"
    bad_key.write_text(STUDY_YAML.replace("mix.strategy: null", "gen.widthh: null"))
    result = invoke("--model", "vae", "--config", str(bad_key), "--storage", storage)
    assert result.exit_code == 2 and "gen.widthh is not a declared tunable" in result.stderr
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(STUDY_YAML + "n_trails: 3\n")
    result = invoke("--model", "vae", "--config", str(unknown), "--storage", storage)
    assert result.exit_code == 2 and "n_trails" in result.stderr
    assert not os.path.exists(storage)  # nothing written


@pytest.mark.slow
def test_dashboard_serves_the_study_and_stops_cleanly(tmp_path, study_file, tracker):
    import json
    import urllib.request

    storage = str(tmp_path / "s.journal")
    spec = study_mod.load_spec(model="vae", path=study_file)
    study_mod.prepare(spec, name="dash", storage_url=storage, experiment="test-study", tracker=tracker)
    study_id = queue.open_storage(storage).get_study_id_from_name("dash")
    port = 18000 + os.getpid() % 1000
    proc = subprocess.Popen([sys.executable, "-m", "synthboost", "dashboard", "--name", "dash", "--storage",
                             storage, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline, status, body = time.time() + 60, None, None
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study_id}", timeout=2) as r:
                    status, body = r.status, json.loads(r.read())
                break
            except OSError:
                time.sleep(0.5)
        assert status == 200 and body["name"] == "dash"
    finally:
        proc.send_signal(signal.SIGINT)
        try:  # gunicorn gives a busy worker up to its 30 s graceful timeout before it kills it
            out, _ = proc.communicate(timeout=75)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert f"/dashboard/studies/{study_id}" in out


@pytest.mark.parametrize("model", [m for m in study_mod.generators.model_names() if m != "none"])  # none tunes nothing
def test_every_model_has_its_own_valid_study_file(model):
    # `synthboost study --model M` picks studies/M.yaml: it must exist and search only what M declares
    spec = study_mod.load_spec(model=model)
    space = study_mod.resolve_space(spec)
    assert (study_mod.studies_dir() / f"{model}.yaml").is_file() and space
    assert spec.objective.startswith("val/")  # never selects on test


def test_clip_study_searches_the_guidance_and_trains_one_model():
    # issue 18: the clip study tries classifier-free guidance, the CLIP gradient and both, at their scales; all
    # sampling-only, so every trial reuses the one trained generator (one generator key across the space)
    from synthboost.config import Choice
    from synthboost.cell import generator_key, make_config

    space = study_mod.resolve_space(study_mod.load_spec(model="clip"))
    assert isinstance(space["gen.guidance"], Choice)
    assert set(space["gen.guidance"].values) == {"cfg", "clip_grad", "both"}
    assert "gen.clip_guidance_scale" in space
    keys = {generator_key(make_config(model="clip", regime="high", size=1000, seed=0, profile="quick",
                                      overrides={"gen": {"guidance": g, "clip_guidance_scale": s}}), "split")
            for g, s in (("cfg", 20.0), ("clip_grad", 5.0), ("both", 80.0))}
    assert len(keys) == 1
