"""Strong real-only baselines and filtered mixes (issue #11): the CNN's recipe options, the three baselines,
the confidence filter, their studies and their bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from synthboost import cell, classifiers, generators, pipeline, study
from synthboost.classifiers import (CNNClassifier, CNNConfig, augment, balanced_class_weights,
                                    class_balanced_indices)
from synthboost.cli import app
from synthboost.config import DataConfig, MixConfig, build
from synthboost.data import make_split
from synthboost.mixing import filter_samples, oversample_indices, synthetic_counts

runner = CliRunner()


@pytest.fixture(scope="module")
def split():
    return make_split(DataConfig(regime="high", size=600), 0)


def rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- augmentation
def every_flip_shift(x: torch.Tensor, shift: int) -> torch.Tensor:
    """N×K×H×W: each image under both flips and every shift of up to ±``shift`` px."""
    padded = F.pad(torch.cat([x, x.flip(3)], 1), (shift,) * 4)  # N×2×(28+2s)×(28+2s)
    side = 2 * shift + 1
    return torch.stack([padded[:, :, dy:dy + 28, dx:dx + 28] for dy in range(side) for dx in range(side)],
                       2).flatten(1, 2)


@pytest.mark.parametrize("shift", [2, 4])
def test_shift_flip_keeps_shape_dtype_and_each_image_is_a_shifted_flip_of_its_own(split, shift):
    x, y = split.train_x[:64].unsqueeze(1), split.train_y[:64]
    out = augment(x, policy="shift_flip", generator=rng(0), labels=y, shift=shift)
    assert out.shape == x.shape and out.dtype == torch.uint8
    # image i (so its label) stays at position i: it is one of its own flips/shifts, and not the untouched one
    assert (out == every_flip_shift(x, shift)).flatten(2).all(2).any(1).all()
    assert (out != x).flatten(1).any(1).float().mean() > 0.8
    floats = augment(x.float() / 255, policy="shift_flip", generator=rng(0), labels=y, shift=shift)
    assert floats.dtype == torch.float32 and 0 <= floats.min() and floats.max() <= 1
    assert torch.equal(floats, out.float() / 255)  # the same draws whatever the dtype


def test_augmentation_is_deterministic_under_a_seed_and_off_means_untouched(split):
    x, y = split.train_x[:64].unsqueeze(1), split.train_y[:64]
    for policy in ("shift", "shift_flip", "shift_flip_erase"):
        assert torch.equal(augment(x, policy=policy, generator=rng(3), labels=y),
                           augment(x, policy=policy, generator=rng(3), labels=y))
        assert not torch.equal(augment(x, policy=policy, generator=rng(3), labels=y),
                               augment(x, policy=policy, generator=rng(4), labels=y))
    assert augment(x, policy="none", generator=rng(0)) is x


def test_erase_blanks_at_most_one_square_of_each_shift_flip(split):
    x, y = split.train_x[:64].unsqueeze(1), split.train_y[:64]
    base = augment(x, policy="shift_flip", generator=rng(5), labels=y)  # the same flip and shift draws come first
    erased = augment(x, policy="shift_flip_erase", generator=rng(5), labels=y)
    assert erased.shape == x.shape and erased.dtype == torch.uint8
    changed = (base != erased)[:, 0]
    assert (erased[:, 0][changed] == 0).all()  # erasing only ever sets the background value
    idx = torch.arange(28)
    for axis in (1, 2):  # the changed pixels of each image fit in one ERASE × ERASE square
        hit = changed.any(axis)
        span = (hit * idx).amax(1) - torch.where(hit, idx, 99).amin(1) + 1
        assert (span[hit.any(1)] <= classifiers.ERASE).all()
    assert changed.flatten(1).any(1).float().mean() > 0.5  # most squares hide some garment


# ---------------------------------------------------------------- class weights and the sampler
def test_balanced_class_weights_are_inverse_frequency():
    y = torch.tensor([0] * 6 + [1] * 3 + [3] * 1)  # class 2 absent: K = 3 classes present
    w = balanced_class_weights(y, num_classes=4)
    assert torch.allclose(w, torch.tensor([10 / 18, 10 / 9, 0.0, 10 / 3]))
    from sklearn.utils.class_weight import compute_class_weight

    sk = compute_class_weight("balanced", classes=np.array([0, 1, 3]), y=y.numpy())
    assert torch.allclose(w[[0, 1, 3]], torch.tensor(sk, dtype=torch.float32))
    clf = CNNClassifier(build(CNNConfig, {"class_weight": "balanced"}), seed=0, device="cpu")
    sw = torch.tensor([1.0] * 9 + [0.5])  # the last (class 3) is, say, synthetic: the two weights multiply
    assert torch.allclose(clf.loss_weights(y, sw), sw * w[y])
    assert torch.equal(CNNClassifier(build(CNNConfig), seed=0, device="cpu").loss_weights(y, sw), sw)


def test_class_balanced_sampler_draws_classes_uniformly_in_expectation():
    y = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    idx = class_balanced_indices(y, 30000, generator=rng(0))
    counts = torch.bincount(y[idx], minlength=3)
    assert ((counts - 10000).abs() < 500).all(), counts  # binomial sd ≈ 82: a 6-sd tolerance
    assert torch.equal(idx, class_balanced_indices(y, 30000, generator=rng(0)))


@pytest.mark.parametrize("options", [
    {"sampler": "class_balanced", "schedule": "cosine"},
    {"augment": "shift_flip_erase", "class_weight": "balanced", "schedule": "constant"},
])
def test_cnn_options_train_and_are_reproducible(split, options):
    def fit():
        clf = CNNClassifier(build(CNNConfig, {"epochs": 2, "batch_size": 64, **options}), seed=1, device="cpu")
        clf.fit(split.train_x[:256], split.train_y[:256])
        return clf.predict_proba(split.val_x)

    first = fit()
    assert (first == fit()).all()


def test_sklearn_classifiers_take_class_weight():
    for name in ("cart", "svm"):
        cls = classifiers.get(name)
        assert cls(build(cls.Config, {"class_weight": "balanced"})).model.class_weight == "balanced"
        assert cls(build(cls.Config)).model.class_weight is None


# ---------------------------------------------------------------- early stopping
def test_early_stopping_stops_and_restores_the_best_validation_weights(split):
    shuffled = split.train_y[torch.randperm(256, generator=rng(0))]  # nothing to learn
    seen: dict[int, float] = {}
    clf = CNNClassifier(build(CNNConfig, {"epochs": 30, "batch_size": 64, "early_stopping": 2}), seed=0, device="cpu")
    out = clf.fit(split.train_x[:256], shuffled, val=(split.val_x, split.val_y),
                  on_epoch=lambda e, m: seen.__setitem__(e, m["val_balanced_accuracy"]))
    assert out["epochs_run"] == len(seen) < 30  # stopped early, every epoch reported to the hook
    best = max(seen.values())
    assert seen[out["best_epoch"]] == best and out["best_epoch"] == out["epochs_run"] - 3  # patience 2
    from synthboost.metrics import balanced_accuracy

    assert balanced_accuracy(split.val_y.numpy(), clf.predict(split.val_x)) == best  # the best weights are back


# ---------------------------------------------------------------- oversampling
def test_oversample_reaches_the_balance_counts_with_real_training_images_only(split):
    real = torch.bincount(split.train_y, minlength=10)
    counts = synthetic_counts(real.tolist(), MixConfig(ratio=1.0, strategy="balance"))
    idx = oversample_indices(split.train_y, counts, seed=0)
    added_x, added_y = split.train_x[idx], split.train_y[idx]
    assert torch.bincount(added_y, minlength=10).tolist() == counts
    # the tail is levelled: the classes that got copies end within one image of each other (the water level),
    # and every class left alone is already at or above that level
    after, filled = real + torch.tensor(counts), torch.tensor(counts) > 0
    assert filled.sum() >= 2 and after[filled].max() - after[filled].min() <= 1
    assert (~filled).sum() == 0 or after[~filled].min() >= after[filled].max() - 1
    train = {(int(y), x.numpy().tobytes()) for x, y in zip(split.train_x, split.train_y)}
    assert all((int(y), x.numpy().tobytes()) in train for x, y in zip(added_x, added_y))
    held_out = {x.numpy().tobytes() for x in torch.cat([split.val_x, split.test_x])} - {k[1] for k in train}
    assert not any(x.numpy().tobytes() in held_out for x in added_x)
    assert torch.equal(idx, oversample_indices(split.train_y, counts, seed=0))
    assert not torch.equal(idx, oversample_indices(split.train_y, counts, seed=1))


# ---------------------------------------------------------------- the confidence filter
class Noise:
    """A 'generator' that returns uniform noise whatever the label."""

    def sample_batched(self, labels):
        return torch.randint(0, 256, (len(labels), 1, 28, 28), dtype=torch.uint8)


class Exemplars:
    """A 'generator' that returns real training images of the requested class."""

    def __init__(self, split):
        self.split = split

    def sample_batched(self, labels):
        pick = oversample_indices(self.split.train_y, torch.bincount(labels, minlength=10).tolist(), seed=0)
        return self.split.train_x[pick].unsqueeze(1)  # labels_for order: sorted by class, as requested


@pytest.fixture(scope="module")
def small():
    return make_split(DataConfig(regime="high", size=300), 0)


@pytest.fixture(scope="module")
def score(small):
    return pipeline.filter_score(small, profile="quick", seed=0)  # quick: a filter worth the name, on 255 images


def counts_for(split):
    return synthetic_counts(torch.bincount(split.train_y, minlength=10).tolist(),
                            MixConfig(ratio=1.0, strategy="balance"))


def filtered(gen, counts, score, threshold):
    cfg = MixConfig(ratio=1.0, strategy="balance", filter="confidence", filter_threshold=threshold)
    return pipeline.synthetic_pool(gen, counts, mix_cfg=cfg, seed=0, score=score)


def test_filter_threshold_zero_keeps_the_unfiltered_pool(small, score):
    counts = counts_for(small)
    x, y, m = filtered(Noise(), counts, score, 0.0)
    plain_x, plain_y, plain_m = pipeline.synthetic_pool(Noise(), counts, mix_cfg=MixConfig(), seed=0)
    assert torch.equal(x, plain_x) and torch.equal(y, plain_y)
    assert m["mix/filter_shortfall"] == 0 and m["mix/filter_drawn"] == sum(counts)
    assert all(m[f"mix/kept_fraction_{k}"] == 1.0 for k in range(10) if counts[k])
    assert {k: v for k, v in m.items() if "synthetic" in k} == plain_m


def test_a_strict_filter_on_noise_keeps_almost_nothing_and_says_so(small, score):
    counts = counts_for(small)
    with pytest.warns(UserWarning, match="mix.filter: .* did not pass the threshold 0.99"):
        x, y, m = filtered(Noise(), counts, score, 0.99)
    assert len(y) <= 0.02 * sum(counts) and m["mix/filter_shortfall"] == sum(counts) - len(y) > 0
    assert m["mix/filter_drawn"] == 4 * sum(counts)  # it tried up to the default 4× bound, no further
    assert m["mix/synthetic_total"] == len(y)
    # at a milder threshold it still turns noise down but fills every class with real images of the class:
    # it judges, it does not just refuse
    with pytest.warns(UserWarning):
        assert len(filtered(Noise(), counts, score, 0.3)[1]) <= 0.02 * sum(counts)
    x, y, m = filtered(Exemplars(small), counts, score, 0.3)
    assert m["mix/filter_shortfall"] == 0 and torch.bincount(y, minlength=10).tolist() == counts == [
        m[f"mix/synthetic_count_{k}"] for k in range(10)]


def test_filter_rounds_meet_counts_within_the_bound():
    # image value v passes when v is odd: every second draw of every class passes; class 2 never passes
    step = {"n": 0}

    def draw(labels, rnd):
        v = torch.arange(step["n"], step["n"] + len(labels)) % 250
        step["n"] += len(labels)
        return v.view(-1, 1, 1, 1).expand(-1, 1, 28, 28).to(torch.uint8)

    def score(x, y):
        return ((x[:, 0, 0, 0] % 2 == 1) & (y != 2)).float()

    with pytest.warns(UserWarning, match=r"classes \[2\]"):
        out = filter_samples(draw, score, [30, 7, 5], threshold=0.5, max_factor=3)
    assert out.kept == [30, 7, 0] and out.shortfall == 5
    assert out.drawn[2] == 15 and all(d <= 3 * c for d, c in zip(out.drawn, [30, 7, 5]))
    assert (out.x[:, 0, 0, 0] % 2 == 1).all() and out.kept_fraction()[2] == 0.0


# ---------------------------------------------------------------- registry, studies, grid
def test_baselines_are_registered_with_studies_and_in_the_grid():
    from synthboost import grid

    assert {"none", "none-strong", "oversample"} <= set(generators.BASELINES)
    assert {"none", "none-strong", "oversample"} <= {v.name for v in grid.variants(grid.load_grid(None))}
    strong = study.load_spec(model="none-strong")
    assert set(study.resolve_space(strong)) == {f"clf.{k}" for k in CNNConfig.tunables}
    assert study.studies_dir().joinpath("none-strong.yaml").is_file()
    over = study.resolve_space(study.load_spec(model="oversample"))
    assert set(over) == {"mix.ratio"} | {f"clf.{k}" for k in CNNConfig.tunables}
    default = study.load_spec(model="cgan")  # the budget of the generators' studies (cgan, ddpm)
    for key in ("sampler", "pruner", "n_trials", "objective", "regime", "size", "profile", "seeds"):
        assert getattr(strong, key) == getattr(default, key), key
    assert {"mix.filter", "mix.filter_threshold", "mix.synthetic_weight"} <= set(
        study.declared_tunables("vae", "cnn"))


def test_none_strong_applies_the_recipe_under_the_users_values():
    cfg = cell.make_config(model="none-strong", profile="quick")
    plain = cell.make_config(model="none", profile="quick")
    assert (cfg.clf.augment, cfg.clf.class_weight) == ("shift_flip", "balanced")
    # the same network and budget as the plain recipe: only the recipe differs
    assert (cfg.clf.net, cfg.clf.epochs, cfg.clf.batch_size) == (plain.clf.net, plain.clf.epochs, plain.clf.batch_size)
    mine = cell.make_config(model="none-strong", profile="quick", overrides={"clf": {"augment": "none"}})
    assert mine.clf.augment == "none" and mine.clf.class_weight == "balanced"
    assert cell.make_config(model="none-strong", classifier="cart").clf.class_weight == "balanced"
    assert cell.make_config(model="none", profile="quick").clf == build(CNNConfig, profile="quick")
    over = cell.make_config(model="oversample", mix_ratio=2.0)
    assert (over.mix.ratio, over.mix.strategy) == (2.0, "balance")


# ---------------------------------------------------------------- bad input
BAD = [  # one choice and one bound through the CLI (the config layer is tested once, in test_config_mixing)
    (["--set", "clf.augment=rotate"], "clf.augment"),
    (["--set", "mix.filter_threshold=1.5"], "mix.filter_threshold"),
    (["--model", "none", "--set", "gen.latent_dim=8"], "trains no generator"),
    (["--model", "none-strong", "--set", "gen.latent_dim=8"], "trains no generator"),
    (["--model", "oversample", "--set", "gen.latent_dim=8"], "trains no generator"),
    (["--model", "none-strong", "--mix-ratio", "1"], "uses no synthetic data"),
    (["--model", "oversample", "--mix-strategy", "uniform"], "balance strategy"),
    (["--model", "oversample", "--set", "mix.filter=confidence"], "mix.filter does not apply"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_recipe_input_exits_2_with_one_line(args, message):
    result = runner.invoke(app, ["run", "--profile", "smoke", *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


# ---------------------------------------------------------------- end to end
def run(tracker, **kw):
    cfg = cell.make_config(regime="high", size=600, seed=0, profile="smoke", **kw)
    result = pipeline.run_experiment(cfg, tracker=tracker, experiment="test-baselines", progress=False)
    return cfg, tracker.client.get_run(result.run_id)


def test_none_strong_smoke_run_is_tracked_as_its_own_baseline(tracker):
    cfg, r = run(tracker, model="none-strong")
    assert r.info.status == "FINISHED"
    assert r.data.tags["model"] == r.data.tags["variant"] == "none-strong"
    assert r.data.params["clf.augment"] == "shift_flip" and r.data.params["clf.class_weight"] == "balanced"
    assert r.data.metrics["test/accuracy"] > 0.3 and r.data.metrics["train/clf_epochs_run"] == cfg.clf.epochs
    assert not any(k.startswith("mix/") for k in r.data.metrics)


def test_oversample_smoke_run_logs_its_copies(tracker):
    cfg, r = run(tracker, model="oversample")
    assert r.data.tags["model"] == r.data.tags["variant"] == "oversample"
    real = torch.bincount(make_split(cfg.data, 0).train_y, minlength=10).tolist()
    counts = synthetic_counts(real, MixConfig(ratio=1.0, strategy="balance"))
    m = r.data.metrics
    assert [m[f"mix/oversampled_count_{k}"] for k in range(10)] == counts
    assert m["mix/oversampled_total"] == sum(real)  # ratio 1: as many copies as real images
    assert not any(k.startswith("mix/synthetic") for k in m)
    assert "mix=1×balance" in r.info.run_name


def test_filtered_generator_mix_on_the_strong_recipe(tracker):
    cfg, r = run(tracker, model="vae", mix_ratio=0.5, overrides={
        "clf": {"augment": "shift_flip", "class_weight": "balanced", "early_stopping": 1},
        "mix": {"filter": "confidence", "filter_threshold": 0.0}})
    m = r.data.metrics
    assert r.info.status == "FINISHED" and r.data.params["mix.filter"] == "confidence"
    n_real = len(make_split(cfg.data, 0).train_y)
    assert m["mix/synthetic_total"] == round(0.5 * n_real) and m["mix/filter_shortfall"] == 0
    assert "train/clf_best_epoch" in m
