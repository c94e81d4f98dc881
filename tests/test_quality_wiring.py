"""Generator-quality metrics wired into runs: logged by the pipeline, and later by `synthboost evaluate`."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from synthboost.cli import app
from synthboost.cell import make_config
from synthboost.pipeline import run_experiment
from synthboost.tracking import Tracker

runner = CliRunner()
GEN_KEYS = ("fid", "kid_mean", "kid_std", "inception_score", "precision", "recall", "fid_class_0", "fid_class_9",
            "label_consistency", "cas_cnn", "cas_svm", "real_cnn", "real_svm", "sample_seconds_per_1000")


@pytest.mark.slow
def test_pipeline_logs_quality_and_evaluate_adds_it_later(tracker):
    cfg = make_config(model="vae", regime="balanced", size=400, seed=0, profile="smoke", gen_metrics=True)
    result = run_experiment(cfg, tracker=tracker, experiment="test-quality", progress=False)
    run = tracker.client.get_run(result.run_id)
    for k in GEN_KEYS:
        assert f"gen/{k}" in run.data.metrics, k
    assert run.data.metrics["train/gen_seconds"] > 0  # the run that trained the generator says how long it took
    arts = {a.path for a in tracker.client.list_artifacts(result.run_id, "gen")}
    assert {"gen/pca.png", "gen/tsne.png"} <= arts
    extractor = tracker.client.get_run(run.data.tags["gen.extractor_run_id"])
    assert extractor.data.tags["aux_kind"] == "extractor" and extractor.info.status == "FINISHED"
    assert extractor.data.metrics["extractor/test_accuracy"] > 0.5

    # a run recorded without quality metrics gets them later from its checkpoint, with the same extractor
    plain = run_experiment(make_config(model="vae", regime="balanced", size=400, seed=0, profile="smoke",
                                       mix_ratio=0.3), tracker=tracker, experiment="test-quality", progress=False)
    assert "gen/fid" not in tracker.client.get_run(plain.run_id).data.metrics
    out = runner.invoke(app, ["evaluate", "--run-id", plain.run_id])
    assert out.exit_code == 0, out.output
    after = tracker.client.get_run(plain.run_id)
    assert after.data.tags["gen.extractor_run_id"] == extractor.info.run_id  # trained once, reused
    # same generator, same seed, same extractor: the same FID as the first run's
    assert after.data.metrics["gen/fid"] == pytest.approx(run.data.metrics["gen/fid"], rel=1e-5)

    # --no-cas: the same distances without CAS's four classifier fits, and the run records that it has none
    other = run_experiment(make_config(model="vae", regime="balanced", size=400, seed=0, profile="smoke",
                                       mix_ratio=0.4), tracker=tracker, experiment="test-quality", progress=False)
    out = runner.invoke(app, ["evaluate", "--run-id", other.run_id, "--no-cas"])
    assert out.exit_code == 0 and "FID" in out.stdout and "CAS" not in out.stdout, out.output
    lean = tracker.client.get_run(other.run_id).data
    assert lean.metrics["gen/fid"] == pytest.approx(run.data.metrics["gen/fid"], rel=1e-5)
    assert "gen/label_consistency" in lean.metrics and not any("cas" in k for k in lean.metrics)
    assert lean.params["gen_metrics.cas"] == "False" and after.data.params["gen_metrics.cas"] == "True"


def test_evaluate_refuses_runs_without_a_generator_and_unknown_ids(tracker):
    base = run_experiment(make_config(model="none", regime="balanced", size=300, seed=0, profile="smoke"),
                          tracker=tracker, experiment="test-quality", progress=False)
    out = runner.invoke(app, ["evaluate", "--run-id", base.run_id])
    assert out.exit_code == 2 and "has no generator" in out.stderr
    out = runner.invoke(app, ["evaluate", "--run-id", "0123456789abcdef0123456789abcdef"])
    assert out.exit_code == 2 and "no run with id" in out.stderr



TWO_AT_ONCE = """
import sys, time
from pathlib import Path
import torch
from synthboost import tracking

uri, go = sys.argv[1], Path(sys.argv[2])
tracker = tracking.Tracker(uri)
tracker.experiment_id(tracking.MODELS_EXPERIMENT)

def train():  # an extractor's training: long enough for the other worker to ask meanwhile
    time.sleep(3)
    return {"w": torch.ones(3)}, {"extractor/test_accuracy": 0.5}, {"profile": "smoke"}

while not go.exists():
    time.sleep(0.01)
print(tracking.cached_model(tracker, kind="extractor", key="k-at-once", name="feature extractor", train=train)[1])
"""


@pytest.mark.slow
def test_two_workers_needing_the_extractor_at_once_train_it_once(tmp_path):
    """Workers of a grid starting together on a fresh store: one trains the quality extractor, the other waits and
    loads it (the same run), rather than both spending the training."""
    uri, go = f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", TWO_AT_ONCE, uri, str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    go.touch()
    ids = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        ids.append(out.split()[-1])
    trained = Tracker(uri).search("tags.aux_kind = 'extractor'", max_results=10)
    assert len(trained) == 1 and ids == [trained[0].info.run_id] * 2, (ids, [r.info.run_id for r in trained])
