"""Keys that notice code changes: a bumped family or classifier version retrains and re-runs instead of reusing."""

import pytest

from synthboost import classifiers, generators, pipeline
from synthboost import grid as grid_mod

GRID = """
experiment: versions
profile: smoke
models: [none]
regimes: [high]
sizes: [300]
seeds: [0]
classifiers: [cnn]
fixed: {clf.epochs: 1}
"""


def smoke_vae(tracker):
    cfg = pipeline.make_config(model="vae", regime="high", size=300, seed=0, profile="smoke", mix_ratio=0.2,
                               overrides={"gen": {"latent_dim": 10}})  # a key of its own among the tests'
    result = pipeline.run_experiment(cfg, tracker=tracker, experiment="test-versions", progress=False)
    return cfg, result


@pytest.mark.slow
def test_a_bumped_family_version_retrains_instead_of_reusing(tracker, monkeypatch):
    cfg, first = smoke_vae(tracker)
    _, again = smoke_vae(tracker)
    assert again.generator_reused and again.generator_run_id == first.run_id
    old_key = pipeline.generator_key(cfg, again.tags["data_digest"])

    monkeypatch.setattr(generators.get("vae"), "code_version", 2)
    assert pipeline.generator_key(cfg, again.tags["data_digest"]) != old_key
    _, bumped = smoke_vae(tracker)
    assert not bumped.generator_reused and bumped.generator_run_id == bumped.run_id  # trained anew
    run = tracker.client.get_run(bumped.run_id)
    assert run.data.tags["code_version.generator"] == "2" and run.data.tags["generator_trained"] == "true"


@pytest.mark.slow
def test_a_bumped_classifier_version_makes_the_grid_rerun_its_cells(tracker, tmp_path, monkeypatch):
    path = tmp_path / "versions.yaml"
    path.write_text(GRID)
    storage = str(tmp_path / "q.journal")
    spec = grid_mod.load_grid(path)
    grid_mod.run_grid(spec, storage_url=storage, show_progress=False)
    assert grid_mod.status(spec, grid_mod.plan(spec, storage), tracker).done == 1

    monkeypatch.setattr(classifiers.get("cnn"), "code_version", 2)
    units = grid_mod.plan(spec, storage)
    assert grid_mod.status(spec, units, tracker).done == 0  # the old cell no longer counts
    out = grid_mod.run_grid(spec, storage_url=storage, show_progress=False)
    assert out["ran"] == 1 and out["missing"] == 0


def test_version_one_leaves_the_keys_of_older_stores_unchanged():
    cfg = pipeline.make_config(model="vae", profile="smoke")
    # the keys as computed before code versions existed (sha256 of the same payloads without them)
    import hashlib
    import json

    gen = {k: v for k, v in cfg.to_dict()["gen"].items() if k not in pipeline.sampling_values(cfg.gen)}
    payload = {"data": "d", "model": "vae", "gen": gen, "seed": 0, "profile": "smoke",
               "val_fraction": cfg.data.val_fraction}
    assert pipeline.generator_key(cfg, "d") == hashlib.sha256(
        json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert pipeline.config_key(cfg) == hashlib.sha256(
        json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]
