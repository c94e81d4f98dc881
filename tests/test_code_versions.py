"""Keys that notice code changes: a bumped family or classifier version retrains and re-runs instead of reusing."""

import pytest

from synthboost import cell, classifiers, generators, pipeline
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
    cfg = cell.make_config(model="vae", regime="high", size=300, seed=0, profile="smoke", mix_ratio=0.2,
                           overrides={"gen": {"latent_dim": 10}})  # a key of its own among the tests'
    result = pipeline.run_experiment(cfg, tracker=tracker, experiment="test-versions", progress=False)
    return cfg, result


@pytest.mark.slow
def test_a_bumped_family_version_retrains_instead_of_reusing(tracker, monkeypatch):
    cfg, first = smoke_vae(tracker)
    _, again = smoke_vae(tracker)
    assert again.generator_reused and again.generator_run_id == first.run_id
    old_key = cell.generator_key(cfg, again.tags["data_digest"])

    monkeypatch.setattr(generators.get("vae"), "code_version", 2)
    assert cell.generator_key(cfg, again.tags["data_digest"]) != old_key
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
    assert out.ran_now == 1 and out.missing == 0


def test_version_one_and_neutral_levers_leave_the_keys_of_recorded_cells_unchanged():
    """Keys recorded by the fair-high-1000 grid (before code versions and the CNN's speed levers existed) still
    name the same cells, so a grid resumes them instead of re-running."""
    def key(**kw):
        return cell.config_key(cell.make_config(regime="high", size=1000, seed=0, profile="quick", **kw))

    assert key(model="none", overrides={"clf": {"min_steps": 0}}) == "431d450f3e96e2cd"
    assert key(model="none", overrides={"clf": {"recipe": "seed"}}) == "15409cf7f8f55831"
    ddpm = cell.make_config(model="ddpm", regime="high", size=1000, seed=0, profile="quick", mix_ratio=1.0)
    assert cell.generator_key(ddpm, "x") == "3eacdeb6fa57087e"
    # quick's step floor binds on high/1,000 (a new budget: new cells) but nowhere from 2,000 images up, where the
    # recorded cells keep their keys (fair-balanced-5000's among them)
    assert key(model="none") != "431d450f3e96e2cd"
    assert key(model="none", overrides={"clf": {"min_steps": 520}}) == "431d450f3e96e2cd"  # 520 = 40 epochs: idle

    def recorded(model, regime, size, **kw):
        return cell.config_key(cell.make_config(model=model, regime=regime, size=size, seed=0,
                                                profile="quick", **kw))

    assert recorded("none", "balanced", 5000) == "b58001c7db0d5b81"
    assert recorded("none-strong", "balanced", 5000) == "961763f87c911b8d"
    assert recorded("ddpm", "balanced", 5000) == "0eb02df102b4f7cb"
    assert recorded("none", "high", 2000) == "43cb9d1edb6c671f"
    # a lever away from its neutral value is a different cell
    assert key(model="none", overrides={"clf": {"amp": "bf16"}}) != key(model="none")
