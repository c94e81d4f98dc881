"""The fair protocol: every run of a cell trains the same optimizer steps, flips keep the class, the synthetic
weight means what it says, and the seed study's own recipe stands beside ours."""

import pytest
import torch
from typer.testing import CliRunner

from synthboost import cell, pipeline
from synthboost.classifiers import (MIRROR_SAFE, CNNClassifier, CNNConfig, augment, mirror_safe_classes, mirror_share,
                                    step_budget, weighted_loss)
from synthboost.cli import app
from synthboost.config import DataConfig, build
from synthboost.data import load_fashion_mnist, make_split

runner = CliRunner()


@pytest.fixture(scope="module")
def split():
    return make_split(DataConfig(regime="high", size=600), 0)


# ---------------------------------------------------------------- flips that keep the class
def test_mirror_safe_classes_are_derived_from_training_images_only():
    """The flip rule comes from the official training images (the test set is for reporting): the footwear faces one
    way there, every other class is near-symmetric — and a single held-out draw's training split says the same."""
    data = load_fashion_mnist()
    share = mirror_share(data.train_x, data.train_y)
    assert {k for k, p in enumerate(share) if p >= 0.9} == {5, 7, 9}  # sandals, sneakers, ankle boots
    assert max(p for k, p in enumerate(share) if k not in (5, 7, 9)) < 0.8  # a wide gap, not a knife edge
    assert mirror_safe_classes(data.train_x, data.train_y) == MIRROR_SAFE
    draw = make_split(DataConfig(regime="balanced", size=5000), 100)
    assert mirror_safe_classes(draw.train_x, draw.train_y) == MIRROR_SAFE


def test_shift_flip_never_mirrors_a_shoe(split):
    x, y = split.train_x.unsqueeze(1), split.train_y
    out = augment(x, policy="shift_flip", generator=torch.Generator().manual_seed(0), labels=y, shift=1)
    # a mirrored image shares fewer pixels with its original than any ±1 px shift of it does
    def best_match(a, b):
        pad = torch.nn.functional.pad(b, (1, 1, 1, 1))
        return torch.stack([(a == pad[..., dy:dy + 28, dx:dx + 28]).flatten(1).all(1)
                            for dy in range(3) for dx in range(3)], 1).any(1)

    unflipped, flipped = best_match(out, x), best_match(out, x.flip(3))
    shoe = torch.isin(y, torch.tensor([5, 7, 9]))
    assert unflipped[shoe].all()
    assert (flipped & ~unflipped)[~shoe].float().mean() > 0.3  # the other classes do get flipped


# ---------------------------------------------------------------- equal budgets
def test_budget_counts_steps_over_the_real_images():
    cfg = build(CNNConfig, {"epochs": 40, "batch_size": 64})
    assert step_budget(cfg, 850) == (40 * 13, 13)
    assert step_budget(build(CNNConfig, {"steps": 77}), 850) == (77, 13)


def test_the_quick_floor_lifts_small_cells_only_and_never_the_seed_protocol():
    # quick: 40 epochs over the real images, at least 1,040 steps — 850 images (high/1,000) get 1,040 instead of
    # 520, 1,700 (high/2,000: 26 steps an epoch) and 4,250 (balanced/5,000) keep their 40 epochs
    quick = build(CNNConfig, {}, profile="quick")
    assert step_budget(quick, 850) == (1040, 13)
    assert step_budget(quick, 1700) == (1040, 26) and step_budget(quick, 4250) == (2640, 66)
    assert step_budget(build(CNNConfig, {"min_steps": 0}, profile="quick"), 850) == (520, 13)
    seed = cell.make_config(model="none", regime="high", size=1000, profile="quick",
                            overrides={"clf": {"recipe": "seed"}})
    assert seed.clf.min_steps == 0  # the seed study's 10 passes over the mixed set, as published


def test_a_mix_trains_exactly_as_many_steps_as_its_real_only_baseline(split):
    n = len(split.train_y)
    cfg = build(CNNConfig, {"epochs": 2, "batch_size": 64})
    seen = {}
    for ratio in (0, 1, 3):
        x = torch.cat([split.train_x] * (1 + ratio))
        y = torch.cat([split.train_y] * (1 + ratio))
        out = CNNClassifier(cfg, seed=0, device="cpu").fit(x, y, budget_n=n)
        seen[ratio] = out["steps"]
    assert seen[0] == seen[1] == seen[3] == 2 * (n // 64)
    # without a budget (the seed protocol), the steps grow with the mixed set
    assert CNNClassifier(cfg, seed=0, device="cpu").fit(torch.cat([split.train_x] * 2),
                                                        torch.cat([split.train_y] * 2))["steps"] == 2 * (2 * n // 64)


@pytest.mark.slow
def test_runs_of_one_cell_log_the_same_steps_whatever_they_mix(tracker):
    steps = {}
    for model, ratio in (("none", None), ("oversample", 1.0), ("vae", 1.0), ("vae", 3.0)):
        cfg = cell.make_config(model=model, regime="high", size=600, seed=0, profile="smoke", mix_ratio=ratio)
        result = pipeline.run_experiment(cfg, tracker=tracker, experiment="test-budget", progress=False)
        steps[(model, ratio)] = tracker.client.get_run(result.run_id).data.metrics["train/clf_steps"]
    assert len(set(steps.values())) == 1, steps
    seed_cfg = cell.make_config(model="vae", regime="high", size=600, seed=0, profile="smoke", mix_ratio=1.0,
                                overrides={"clf": {"recipe": "seed"}})
    r = pipeline.run_experiment(seed_cfg, tracker=tracker, experiment="test-budget", progress=False)
    assert tracker.client.get_run(r.run_id).data.metrics["train/clf_steps"] > steps[("none", None)]


# ---------------------------------------------------------------- the synthetic weight
def test_synthetic_weight_holds_whatever_the_batch_holds():
    loss_each = torch.tensor([1.0, 2.0, 3.0, 4.0])
    real = weighted_loss(loss_each, torch.ones(4))
    assert weighted_loss(loss_each, torch.full((4,), 0.25)) == pytest.approx(0.25 * real)  # all synthetic
    mixed = weighted_loss(loss_each, torch.tensor([1.0, 1.0, 0.25, 0.25]))
    assert mixed == pytest.approx((1 + 2 + 0.75 + 1.0) / 4)


# ---------------------------------------------------------------- the seed study's recipe
def test_seed_recipe_is_the_seed_studys_classifier_under_the_users_values():
    cfg = cell.make_config(model="vae", profile="quick", overrides={"clf": {"recipe": "seed"}})
    assert (cfg.clf.net, cfg.clf.epochs, cfg.clf.optimizer, cfg.clf.schedule) == ("seed", 10, "adam", "constant")
    assert cell.epoch_images(cfg, n_real=850, n_added=850) == 1700  # epochs over the mixed set, as published
    mine = cell.make_config(model="vae", profile="quick", overrides={"clf": {"recipe": "seed", "epochs": 3}})
    assert mine.clf.epochs == 3 and mine.clf.net == "seed"
    fair = cell.make_config(model="vae", profile="quick")
    assert fair.clf.recipe == "fair" and fair.clf.net == "vgg"
    assert cell.epoch_images(fair, n_real=850, n_added=850) == 850  # the real images alone: the fair budget
    # the runs table tells the two protocols apart by name
    assert "recipe=seed" in cell.run_name(cfg) and "recipe" not in cell.run_name(fair)


def test_seed_network_trains(split):
    clf = CNNClassifier(build(CNNConfig, {"recipe": "seed", "net": "seed", "epochs": 2}), seed=0, device="cpu")
    clf.fit(split.train_x, split.train_y)
    assert (clf.predict(split.val_x) == split.val_y.numpy()).mean() > 0.3


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("args,message", [
    (["--set", "clf.recipe=paper"], "clf.recipe"),
    (["--set", "clf.steps=0"], "clf.steps"),
    (["--classifier", "svm", "--set", "clf.recipe=seed"], "clf.recipe"),
])
def test_bad_budget_input_exits_2_with_one_line(args, message):
    result = runner.invoke(app, ["run", "--profile", "smoke", "--model", "none", *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
