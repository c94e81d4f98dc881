"""`mlflow run . -e main --env-manager local` end to end, as docs/experiments.md shows it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_mlflow_run_main_entry_point_logs_into_the_run_mlflow_opened(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    env.pop("MLFLOW_RUN_ID", None)
    mlflow_bin = shutil.which("mlflow", path=env["PATH"])
    proc = subprocess.run([mlflow_bin, "run", str(ROOT), "-e", "main", "--env-manager", "local",
                           "--experiment-name", "mlproject-test", "-P", "profile=smoke", "-P", "size=300",
                           "-P", "model=vae", "-P", "mix_ratio=0.5"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("mlproject-test")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1  # our code adopted the run `mlflow run` opened instead of starting a second one
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.project.entryPoint"] == "main"
    assert run.data.tags["model"] == "vae" and run.data.params["mix.ratio"] == "0.5"
    assert 0.2 < run.data.metrics["test/accuracy"] <= 1.0


@pytest.mark.slow
def test_mlflow_run_study_entry_point_uses_the_opened_run_as_parent(tmp_path):
    import optuna
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = str(tmp_path / "optuna.journal")
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    env.pop("MLFLOW_RUN_ID", None)
    study_file = tmp_path / "s.yaml"
    study_file.write_text("regime: balanced\nsize: 300\nprofile: smoke\nsampler: {name: random}\n"
                          "pruner: {name: none}\nsearch_space: {mix.ratio: {low: 0.2, high: 1.0}}\n")
    proc = subprocess.run([shutil.which("mlflow", path=env["PATH"]), "run", str(ROOT), "-e", "study",
                           "--env-manager", "local", "--experiment-name", "mlproject-study",
                           "-P", "model=vae", "-P", "profile=smoke", "-P", "n_trials=2",
                           "-P", f"study_file={study_file}", "-P", f"storage={storage}"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("mlproject-study")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].data.tags["mlflow.project.entryPoint"] == "study"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 2
    (summary,) = optuna.get_all_study_summaries(optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(storage)))
    assert summary.user_attrs["mlflow_parent_run_id"] == parents[0].info.run_id
