"""One tracked experiment end to end, checked through the MLflow client as a user would see it."""

import pytest
import torch

from synthboost import generators
from synthboost.data import make_split
from synthboost.cell import make_config
from synthboost.pipeline import run_experiment

TAGS = ("model", "regime", "size", "seed", "profile", "classifier", "generator_key", "generator_run_id",
        "data_digest", "git_commit")
ARTIFACTS = ("generator/model.pt", "generator/config.yaml", "samples/grid.png", "classifier/confusion_matrix.png",
             "classifier/per_class.csv", "config.yaml")


def artifact_paths(client, run_id, path=None):
    out = []
    for f in client.list_artifacts(run_id, path):
        out += artifact_paths(client, run_id, f.path) if f.is_dir else [f.path]
    return out


@pytest.fixture(scope="module")
def first_vae_run(tracker):
    cfg = make_config(model="vae", regime="high", size=600, seed=1, profile="smoke", mix_ratio=1.0,
                      mix_strategy="balance")
    return cfg, run_experiment(cfg, tracker=tracker, experiment="test-pipeline", progress=False)


def test_smoke_vae_run_is_complete_in_mlflow(tracker, first_vae_run):
    cfg, result = first_vae_run
    run = tracker.client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    for tag in TAGS:
        assert run.data.tags.get(tag), tag
    assert run.data.tags["generator_run_id"] == result.run_id  # it trained its own generator
    assert run.data.params["gen.latent_dim"] == str(cfg.gen.latent_dim)
    assert run.data.params["mix.strategy"] == "balance" and run.data.params["data.regime"] == "high"
    m = run.data.metrics
    for part in ("val", "test"):
        for name in ("accuracy", "balanced_accuracy", "macro_f1", "precision_0", "recall_9", "minority_recall"):
            assert 0.0 <= m[f"{part}/{name}"] <= 1.0
    assert m["test/accuracy"] > 0.3  # far above chance even in smoke
    history = tracker.client.get_metric_history(result.run_id, "val/balanced_accuracy")
    assert len(history) >= cfg.clf.epochs  # a curve, not a single point
    assert any(k.startswith("train/gen_") for k in m) and any(k.startswith("train/clf_") for k in m)
    assert set(ARTIFACTS) <= set(artifact_paths(tracker.client, result.run_id))
    # balance strategy filled the tail: synthetic counts are logged and largest for the smallest class
    real = torch.bincount(make_split(cfg.data, cfg.seed).train_y, minlength=10)
    counts = torch.tensor([m[f"mix/synthetic_count_{k}"] for k in range(10)])
    assert m["mix/synthetic_total"] == counts.sum() == round(cfg.mix.ratio * real.sum().item())
    assert counts[real.argmin()] == counts.max() and counts[real.argmax()] == 0


def test_identical_run_reuses_the_generator_and_reproduces_the_result(tracker, first_vae_run):
    cfg, first = first_vae_run
    second = run_experiment(cfg, tracker=tracker, experiment="test-pipeline", progress=False)
    assert second.run_id != first.run_id
    assert second.generator_reused and second.generator_run_id == first.run_id
    tags = tracker.client.get_run(second.run_id).data.tags
    assert tags["generator_run_id"] == first.run_id and "generator_trained" not in tags
    assert second.metrics == first.metrics  # same seed, same samples, same classifier


def test_another_recipe_in_another_process_trains_on_the_kept_samples_without_drawing_them(
        tracker, first_vae_run, tmp_path, monkeypatch, capsys):
    """A grid runs a generator's recipes (default, -strong, -seedrecipe) as separate units, often in other worker
    processes: the draw is kept on disk, so the next recipe draws nothing and trains on the very same images."""
    from synthboost import pipeline, sample_cache

    cfg, first = first_vae_run
    weighted = make_config(model="vae", regime="high", size=600, seed=1, profile="smoke", mix_ratio=1.0,
                           mix_strategy="balance", overrides={"clf": {"class_weight": "balanced"}})

    def run_fresh_process():
        pipeline.forget_pools()  # what a new worker process starts with
        result = run_experiment(weighted, tracker=tracker, experiment="test-pipeline", progress=False,
                                extra_tags={"variant": "vae-strong"})
        run = tracker.client.get_run(result.run_id)
        return result, run.data.tags["samples_reused"], run.data.metrics.get("work/sampled")

    kept, reused, sampled = run_fresh_process()
    assert kept.generator_run_id == first.run_id and reused == "true" and sampled is None
    # the runs table tells the grid's variants of one model apart by name
    assert tracker.client.get_run(kept.run_id).info.run_name == "vae-strong high/600 cnn mix=1×balance seed=1"
    assert tracker.client.get_run(first.run_id).info.run_name.startswith("vae high/600 ")
    assert kept.metrics != first.metrics  # another recipe on the same images

    monkeypatch.setenv("SYNTHBOOST_SAMPLES", str(tmp_path))  # nothing kept: this run draws
    drawn, reused, sampled = run_fresh_process()
    assert reused == "false" and sampled > 0
    assert drawn.metrics == kept.metrics  # the kept images are the ones a draw gives

    for path in tmp_path.glob("*.pt"):  # damaged files are drawn again, with a warning, never trusted
        path.write_bytes(b"not a tensor file")
    again, reused, _ = run_fresh_process()
    assert reused == "false" and again.metrics == kept.metrics
    assert "cached samples" in capsys.readouterr().err and sample_cache.cache_dir() == tmp_path


def test_mix_only_change_reuses_generator_but_changes_the_data(tracker, first_vae_run):
    cfg, first = first_vae_run
    other = make_config(model="vae", regime="high", size=600, seed=1, profile="smoke", mix_ratio=0.5,
                        mix_strategy="uniform")
    result = run_experiment(other, tracker=tracker, experiment="test-pipeline", progress=False)
    assert result.generator_run_id == first.run_id
    n_real = len(make_split(other.data, other.seed).train_y)
    metrics = tracker.client.get_run(result.run_id).data.metrics
    assert metrics["mix/synthetic_total"] == round(0.5 * n_real)
    assert result.metrics != first.metrics
    # the CPU time its process got: what share of its cores the cell had (bench/grid_cost.py --replay)
    import torch

    assert 0 < metrics["time/cell_cpu"] <= metrics["time/cell"] * torch.get_num_threads() * 1.2


def test_sampling_only_change_reuses_the_weights_and_samples_with_the_new_setting(tracker, first_vae_run):
    cfg, first = first_vae_run
    colder = make_config(model="vae", regime="high", size=600, seed=1, profile="smoke", mix_ratio=1.0,
                         mix_strategy="balance", overrides={"gen": {"temperature": 0.1}})
    result = run_experiment(colder, tracker=tracker, experiment="test-pipeline", progress=False)
    assert result.generator_reused and result.generator_run_id == first.run_id  # no second training
    assert tracker.client.get_run(result.run_id).data.params["gen.temperature"] == "0.1"
    assert result.metrics != first.metrics  # the pool was drawn at the new temperature, not served from cache
    # a training hyperparameter is part of the key: a new generator
    other_lr = make_config(model="vae", regime="high", size=600, seed=1, profile="smoke",
                           overrides={"gen": {"lr": 2e-3}})
    assert not run_experiment(other_lr, tracker=tracker, experiment="test-pipeline", progress=False).generator_reused


def test_a_crash_marks_the_run_failed_with_the_reason(tracker, monkeypatch):
    from synthboost import classifiers

    def boom(self, *a, **k):
        raise RuntimeError("classifier exploded")

    monkeypatch.setattr(classifiers.CNNClassifier, "fit", boom)
    cfg = make_config(model="none", regime="balanced", size=300, seed=0, profile="smoke")
    with pytest.raises(RuntimeError):
        run_experiment(cfg, tracker=tracker, experiment="test-crash", progress=False)
    exp = tracker.client.get_experiment_by_name("test-crash")
    (run,) = tracker.client.search_runs([exp.experiment_id])
    assert run.info.status == "FAILED"
    assert "classifier exploded" in run.data.tags["error"]


@pytest.mark.parametrize("classifier", ["cart", "svm"])
def test_baseline_with_sklearn_classifiers(tracker, classifier):
    cfg = make_config(model="none", classifier=classifier, regime="semi", size=600, seed=0, profile="smoke")
    result = run_experiment(cfg, tracker=tracker, experiment="test-pipeline", progress=False)
    assert result.metrics["test/accuracy"] > 0.4
    assert result.generator_run_id is None
    assert "minority_recall" in "".join(result.metrics)


@pytest.mark.parametrize("family", [f for f in generators.FAMILIES if f != "vae"])
def test_every_registered_family_makes_a_tracked_smoke_run(tracker, family):
    cfg = make_config(model=family, regime="balanced", size=400, seed=0, profile="smoke", mix_ratio=0.5)
    result = run_experiment(cfg, tracker=tracker, experiment="test-families", progress=False)
    run = tracker.client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert {"generator/model.pt", "samples/grid.png"} <= set(artifact_paths(tracker.client, result.run_id))
    assert run.data.metrics["mix/synthetic_total"] == round(0.5 * len(make_split(cfg.data, 0).train_y))
