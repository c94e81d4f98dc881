"""The command line as a user meets it: bad input is exit code 2 with one line that says what to fix."""

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from synthboost.cli import app

runner = CliRunner()

BAD = [
    (["run", "--model", "nope"], "unknown model 'nope'"),
    (["run", "--regime", "tiny"], "data.regime"),
    (["run", "--classifier", "forest"], "unknown classifier 'forest'"),
    (["run", "--profile", "huge"], "unknown profile 'huge'"),
    (["run", "--regime", "semi", "--size", "55000"], "too large for regime 'semi'"),
    (["run", "--mix-ratio", "-1"], "mix.ratio"),
    (["run", "--mix-strategy", "all"], "mix.strategy"),
    (["run", "--set", "gen.latent_dimm=3"], "unknown key gen.latent_dimm"),
    (["run", "--set", "gen.latent_dim=1"], "gen.latent_dim"),
    (["run", "--set", "nonsense"], "expected section.key=value"),
    (["run", "--model", "none", "--set", "gen.beta=2"], "trains no generator"),
    (["run", "--model", "none", "--mix-ratio", "1"], "uses no synthetic data"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_exits_2_with_one_clear_line(args, message, tracker):
    before = len(tracker.client.search_runs(tracker.experiment_ids()))
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert len(tracker.client.search_runs(tracker.experiment_ids())) == before  # nothing recorded


def test_unreachable_tracking_server_fails_fast_and_clearly():
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    proc = subprocess.run([sys.executable, "-m", "synthboost", "run", "--model", "none", "--profile", "smoke"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "unreachable" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unwritable_store_location_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{blocker}/sub/mlflow.db"}
    proc = subprocess.run([sys.executable, "-m", "synthboost", "run", "--model", "none", "--profile", "smoke"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "tracking store" in proc.stderr


def test_models_lists_the_registry():
    from synthboost import generators

    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    for name in generators.model_names():
        assert name in result.stdout


def test_run_prints_the_run_and_where_it_is(tracker):
    result = runner.invoke(app, ["run", "--model", "none", "--regime", "balanced", "--size", "300",
                                 "--profile", "smoke", "--experiment", "test-cli"])
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.stdout and "synthboost ui" in result.stdout
    run_id = result.stdout.split()[1].rstrip(":")
    assert tracker.client.get_run(run_id).info.status == "FINISHED"
