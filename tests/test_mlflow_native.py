"""MLflow-native records: a run's split is an MLflow dataset input, a trained generator an MLflow pyfunc model
(Models column, registry, ``mlflow.pyfunc.load_model``), and the checkpoint cache keeps working on top of them."""

import json
import subprocess
import sys
import time

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from synthboost.data import CLASS_NAMES, load_fashion_mnist, make_split
from synthboost.cell import generator_key, make_config
from synthboost.pipeline import run_experiment
from synthboost.tracking import Tracker


@pytest.fixture(scope="module")
def vae_run(tracker):
    # gen.latent_dim 11: a generator key no other test trains, so this run trains (and logs) its own
    cfg = make_config(model="vae", regime="high", size=300, seed=2, profile="smoke", mix_ratio=0.5,
                      overrides={"gen": {"latent_dim": 11}, "clf": {"epochs": 1}})
    return cfg, run_experiment(cfg, tracker=tracker, experiment="test-native", progress=False)


@pytest.fixture()
def store_uri(tracker, monkeypatch):
    """``mlflow.pyfunc.load_model`` and ``mlflow.register_model`` read the store from the environment, as a user's
    would."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracker.uri)
    return tracker.uri


def test_the_run_logs_its_split_as_a_dataset_with_the_full_content_digest_and_counts(tracker, vae_run):
    cfg, result = vae_run
    split = make_split(cfg.data, cfg.seed)
    inputs = tracker.client.get_run(result.run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    ds = inputs[0].dataset
    assert ds.name == "fashion-mnist high/300 seed=2"
    assert ds.digest == split.digest[:36]  # MLflow keeps 36 characters; the profile keeps the whole sha256
    profile = json.loads(ds.profile)
    assert profile["sha256"] == split.digest == tracker.client.get_run(result.run_id).data.tags["data_digest"]
    train = torch.bincount(split.train_y, minlength=10).tolist()
    val = torch.bincount(split.val_y, minlength=10).tolist()
    assert profile["train_per_class"] == dict(zip(CLASS_NAMES, train))
    assert profile["val_per_class"] == dict(zip(CLASS_NAMES, val))
    assert (profile["num_train"], profile["num_val"]) == (sum(train), sum(val)) and max(train) > 2 * min(train)  # lopsided
    assert json.loads(ds.source) == {"uri": load_fashion_mnist().source} and ds.source_type == "local"
    assert "tensor-spec" in ds.schema
    assert [(t.key, t.value) for t in inputs[0].tags] == [("mlflow.data.context", "training")]


def test_the_trained_generator_is_an_mlflow_model_that_turns_labels_into_images(tracker, vae_run, store_uri):
    cfg, result = vae_run
    outputs = tracker.client.get_run(result.run_id).outputs.model_outputs
    assert len(outputs) == 1
    model = tracker.client.get_logged_model(outputs[0].model_id)
    assert (model.name, model.model_type, model.status.to_int(), model.source_run_id) == (
        "vae-generator", "generator", 2, result.run_id)  # 2 = READY
    assert model.tags["generator_key"] == tracker.client.get_run(result.run_id).data.tags["generator_key"]

    pyfunc = mlflow.pyfunc.load_model(f"models:/{model.model_id}")
    sig = pyfunc.metadata.signature
    assert (sig.inputs.numpy_types()[0], sig.inputs.inputs[0].shape) == (np.int64, (-1,))
    assert (sig.outputs.numpy_types()[0], sig.outputs.inputs[0].shape) == (np.uint8, (-1, 28, 28))
    labels = np.array([0, 3, 9, 9, 5])
    images = pyfunc.predict(labels)
    assert images.shape == (5, 28, 28) and images.dtype == np.uint8 and images.std() > 0
    assert np.array_equal(pyfunc.predict(labels), images)  # seed 0 by default: the same draw
    assert not np.array_equal(pyfunc.predict(labels, params={"seed": 1}), images)
    frame = pyfunc.predict(pd.DataFrame({"label": labels}))  # a one-column frame works too
    assert np.array_equal(frame, images)
    with pytest.raises(Exception, match="0-9"):
        pyfunc.predict(np.array([10]))
    # the run's own URI and the model registry reach the same model
    by_run = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/vae-generator")
    assert np.array_equal(by_run.predict(labels), images)
    version = mlflow.register_model(f"models:/{model.model_id}", "test-native-vae")
    registered = mlflow.pyfunc.load_model(f"models:/test-native-vae/{version.version}")
    assert np.array_equal(registered.predict(labels), images)


def test_the_checkpoint_cache_still_reuses_the_generator_and_links_its_model(tracker, vae_run):
    cfg, first = vae_run
    key = generator_key(cfg, make_split(cfg.data, cfg.seed).digest)
    assert tracker.generator_runs(key)[:1] == [first.run_id]
    other = make_config(model="vae", regime="high", size=300, seed=2, profile="smoke", mix_ratio=1.0,
                        overrides={"gen": {"latent_dim": 11}, "clf": {"epochs": 1}})
    second = run_experiment(other, tracker=tracker, experiment="test-native", progress=False)
    assert second.generator_reused and second.generator_run_id == first.run_id
    run = tracker.client.get_run(second.run_id)
    model_id = tracker.client.get_run(first.run_id).outputs.model_outputs[0].model_id
    assert not run.outputs.model_outputs  # no second copy of the generator ...
    assert [m.model_id for m in run.inputs.model_inputs] == [model_id]  # ... but a link to the one it sampled from
    assert run.inputs.dataset_inputs[0].dataset.digest == tracker.client.get_run(
        first.run_id).inputs.dataset_inputs[0].dataset.digest


RACE = """
import sys, time
from pathlib import Path
from types import SimpleNamespace
import torch
from synthboost.tracking import Tracker

uri, folder, me, rounds = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
tracker = Tracker(uri)
split = SimpleNamespace(digest="f" * 64, train_y=torch.arange(10).repeat(3), val_y=torch.arange(10))
with tracker.run(experiment="race", name="worker", use_env_run=False) as run:
    (folder / f"ready-{me}").touch()
    while not (folder / "go").exists():
        time.sleep(0.01)
    start = float((folder / "go").read_text())
    for k in range(rounds):  # every process logs round k's new split at the same instant
        time.sleep(max(0.0, start + k - time.time()))
        run.log_dataset(split, name=f"split {k}", source="/data")
        print("logged", k, flush=True)
"""


@pytest.mark.slow
def test_workers_logging_the_same_new_split_at_once_all_record_it(tmp_path):
    """Workers of one grid start cells on the same data draw together: MLflow looks a dataset up, then inserts it,
    so both insert and one used to fail its run on the unique key.  Each run must end with the dataset."""
    uri, rounds = f"sqlite:///{tmp_path}/mlflow.db", 5
    Tracker(uri).experiment_id("race")  # the schema and experiment exist before the workers race
    procs = [subprocess.Popen([sys.executable, "-c", RACE, uri, str(tmp_path), str(i), str(rounds)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    deadline = time.time() + 120
    while not all((tmp_path / f"ready-{i}").exists() for i in range(2)) and time.time() < deadline:
        time.sleep(0.05)
    (tmp_path / "go").write_text(str(time.time() + 1))  # both have their run open: round k at go + k s
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        assert out.count("logged") == rounds, out
    client = Tracker(uri).client
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert len(runs) == 2
    for r in runs:
        assert r.info.status == "FINISHED"
        assert sorted(d.dataset.name for d in r.inputs.dataset_inputs) == [f"split {k}" for k in range(rounds)]
