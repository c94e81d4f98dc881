"""Generator-quality metrics on the real Fashion-MNIST data, with stand-in "generators" whose answer is known.

One smoke-profile extractor is trained per module (seconds); everything else reuses its features.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
import torchvision.transforms.functional as TF
from matplotlib.figure import Figure

from synthboost import quality
from synthboost.data import NUM_CLASSES, load_fashion_mnist, to_float, to_uint8
from synthboost.errors import UserError
from synthboost.mixing import labels_for

pytestmark = pytest.mark.slow

N_REF = 200  # real reference images per class (from the official test set)


# ---------------------------------------------------------------- stand-in generators
class PoolGenerator:
    """Returns real images of the requested classes, drawn without replacement, optionally corrupted."""

    def __init__(self, x, y, *, corrupt=None, shift: int = 0):
        self.x, self.y, self.corrupt, self.shift = to_uint8(x), y, corrupt, shift

    def sample_batched(self, labels):
        out = torch.empty(len(labels), 1, 28, 28, dtype=torch.uint8)
        for k in labels.unique().tolist():
            want = labels == k
            pos = torch.nonzero(self.y == (k + self.shift) % NUM_CLASSES).flatten()
            assert int(want.sum()) <= len(pos), "pool too small for a draw without replacement"
            out[want] = self.x[pos[torch.randperm(len(pos))[:int(want.sum())]]]
        return out if self.corrupt is None else to_uint8(self.corrupt(to_float(out)))


class OneClassGenerator:
    """Ignores the requested labels: every sample is a real image of one class."""

    def __init__(self, x):
        self.x = to_uint8(x)

    def sample_batched(self, labels):
        return self.x[torch.randperm(len(self.x))[:len(labels)]]


class NoiseGenerator:
    """Uniform noise in [0, 1]; only ``sample`` (no ``sample_batched``), as a minimal Generator would."""

    def sample(self, labels):
        return torch.rand(len(labels), 1, 28, 28)


def blur(sigma):
    return lambda x: TF.gaussian_blur(x, kernel_size=2 * math.ceil(3 * sigma) + 1, sigma=sigma)


def additive_noise(std):
    return lambda x: (x + std * torch.randn_like(x)).clamp(0, 1)


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def data():
    return load_fashion_mnist()


@pytest.fixture(scope="module")
def trained(data):
    state, metrics, params = quality.train_extractor(profile="smoke")
    return quality.load_extractor(state), state, metrics, params


@pytest.fixture(scope="module")
def features(trained):
    return quality.ExtractorFeatures(trained[0])


@pytest.fixture(scope="module")
def reference(data, features):
    x, y = quality.reference_set(data.test_x, data.test_y, n_per_class=N_REF)
    f, logits = features.features_and_logits(x)
    return x, y, f, logits


@pytest.fixture(scope="module")
def pool(data):
    """Real train images, 600 per class (disjoint from the test-set reference)."""
    idx = torch.cat([torch.nonzero(data.train_y == k).flatten()[:600] for k in range(NUM_CLASSES)])
    return data.train_x[idx], data.train_y[idx]


def fake_features(generator, features, *, n_per_class=N_REF, seed=0):
    labels = labels_for([n_per_class] * NUM_CLASSES)
    f, logits = features.features_and_logits(quality.draw(generator, labels, seed=seed))
    return f, logits, labels


# ---------------------------------------------------------------- the extractor
def test_extractor_reports_accuracy_and_round_trips(trained, data):
    net, state, metrics, params = trained
    assert metrics["extractor/test_accuracy"] > 0.75  # 1 epoch on 10k images
    assert params["extractor.train_size"] == 10000 and params["extractor.profile"] == "smoke"
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    again = quality.load_extractor(state)
    x = to_float(data.test_x[:64])
    assert torch.equal(net(x), again(x))
    key = quality.extractor_key("smoke")
    assert key == quality.extractor_key("smoke") == state["key"] and len(key) == 16
    assert key != quality.extractor_key("quick")
    with pytest.raises(ValueError, match="extractor checkpoint"):
        quality.load_extractor({**state, "format": 0})


def test_torchmetrics_with_the_extractor_module_equals_precomputed_features(features, reference, pool):
    from torchmetrics.image.fid import FrechetInceptionDistance

    ref_x, _, ref_f, _ = reference
    fake_x = quality.draw(PoolGenerator(*pool), labels_for([N_REF] * NUM_CLASSES), seed=0)
    metric = FrechetInceptionDistance(feature=features)  # uint8 N×1×28×28 straight into the custom module
    metric.update(ref_x, real=True)
    metric.update(fake_x, real=False)
    direct = float(metric.compute())
    assert quality.fid(ref_f, features(fake_x)) == pytest.approx(direct, rel=1e-4)


# ---------------------------------------------------------------- FID and KID
def test_fid_real_far_below_blurred_below_noise(features, reference, pool):
    ref_f = reference[2]
    real = quality.fid(ref_f, fake_features(PoolGenerator(*pool), features)[0])
    blurred = quality.fid(ref_f, fake_features(PoolGenerator(*pool, corrupt=blur(1.0)), features)[0])
    noise = quality.fid(ref_f, fake_features(NoiseGenerator(), features)[0])
    assert 0 <= real and 5 * real < blurred < noise


@pytest.mark.parametrize("corruption, levels", [(blur, (0.5, 1.0, 2.0)), (additive_noise, (0.05, 0.15, 0.4))],
                         ids=["blur", "noise"])
def test_fid_grows_with_the_corruption_level(features, reference, pool, corruption, levels):
    ref_f = reference[2]
    fids = [quality.fid(ref_f, fake_features(PoolGenerator(*pool, corrupt=corruption(level)), features)[0])
            for level in levels]
    assert fids == sorted(fids) and fids[0] < fids[-1] / 2, fids


def test_kid_orders_real_below_noise(features, reference, pool):
    ref_f = reference[2]
    real_mean, real_std = quality.kid(ref_f, fake_features(PoolGenerator(*pool), features)[0], subset_size=500)
    noise_mean, _ = quality.kid(ref_f, fake_features(NoiseGenerator(), features)[0], subset_size=500)
    assert abs(real_mean) < 10 * real_std + 1e-3 < noise_mean and real_std >= 0


# ---------------------------------------------------------------- precision / recall
def test_precision_recall_definition_on_known_clouds():
    g = torch.Generator().manual_seed(0)
    real = torch.cat([torch.randn(500, 8, generator=g), torch.randn(500, 8, generator=g) + 20])  # two modes
    same = torch.cat([torch.randn(500, 8, generator=g), torch.randn(500, 8, generator=g) + 20])
    one_mode = torch.randn(1000, 8, generator=g)
    far = torch.randn(1000, 8, generator=g) + 100
    p, r = quality.precision_recall(real, same)
    assert p > 0.8 and r > 0.8  # k-NN balls miss some of a same-distribution sample's tail
    p, r = quality.precision_recall(real, one_mode)
    assert p > 0.8 and 0.35 < r < 0.55  # realistic samples, but only one of the two real modes covered
    assert quality.precision_recall(one_mode, real) == pytest.approx((r, p), abs=0.02)  # swapping swaps them
    assert quality.precision_recall(real, far) == (0.0, 0.0)


def test_precision_recall_orientation_on_images(data, features, reference, pool):
    ref_f = reference[2]
    p_real, r_real = quality.precision_recall(ref_f, fake_features(PoolGenerator(*pool), features)[0])
    trousers = data.train_x[data.train_y == 1][:N_REF * NUM_CLASSES]
    p_one, r_one = quality.precision_recall(ref_f, fake_features(OneClassGenerator(trousers), features)[0])
    _, r_noise = quality.precision_recall(ref_f, fake_features(NoiseGenerator(), features)[0])
    assert p_real > 0.6 and r_real > 0.6
    assert p_one > 0.6 and r_one < 0.2  # one class of real images: on the manifold, but covering a tenth of it
    # noise covers none of the real manifold; its *precision* is not asserted: in a classifier's feature space
    # noise collapses next to real shirts/bags and can land inside real k-NN balls (see precision_recall)
    assert r_noise < 0.02


# ---------------------------------------------------------------- inception score
def test_inception_score_high_on_real_near_one_for_one_class(data, features, reference):
    is_real, _ = quality.inception_score(reference[3])
    trousers = data.train_x[data.train_y == 1][:N_REF * NUM_CLASSES]
    is_one, _ = quality.inception_score(fake_features(OneClassGenerator(trousers), features)[1])
    # the ceiling is 10 (ten equally likely, confidently recognised classes); the 1-epoch smoke extractor gives
    # about 6 here, the quick one (92% test accuracy) about 8.2
    assert is_real > 5.0, is_real
    assert is_one < 1.5, is_one


# ---------------------------------------------------------------- CAS
def test_cas_of_real_images_equals_real_trained_accuracy(data, pool):
    real_x, real_y = pool
    n = 300  # per class, for both the "synthetic" and the real training set
    first = torch.cat([torch.nonzero(real_y == k).flatten()[:n] for k in range(NUM_CLASSES)])
    rest = ~torch.isin(torch.arange(len(real_y)), first)
    synth_y = labels_for([n] * NUM_CLASSES)
    # the "synthetic" set is other real train images (the rest of the pool), so CAS should match
    synth_x = quality.draw(PoolGenerator(real_x[rest], real_y[rest]), synth_y, seed=1)
    # a 3,000-image slice of the (balanced) test set keeps the test fast; the noise of 3k images is ±0.8 points
    scores = quality.classifier_scores(synth_x, synth_y, train_x=real_x[first], train_y=real_y[first],
                                       test_x=data.test_x[:3000], test_y=data.test_y[:3000], profile="smoke", seed=0)
    assert scores["real_cnn"] > 0.6 and scores["real_svm"] > 0.6, scores
    assert scores["cas_cnn"] == pytest.approx(scores["real_cnn"], abs=0.04), scores
    assert scores["cas_svm"] == pytest.approx(scores["real_svm"], abs=0.04), scores


# ---------------------------------------------------------------- the whole set
def test_generator_quality_end_to_end_catches_wrong_labels(data, trained, pool):
    net = trained[0]
    train_x, train_y = pool[0][::3], pool[1][::3]  # 200 per class
    kwargs = dict(extractor=net, real_x=data.test_x, real_y=data.test_y, test_x=data.test_x[:2000],
                  test_y=data.test_y[:2000], train_x=train_x, train_y=train_y, n_per_class=60, seed=3,
                  cas_classifier_profile="smoke", kid_subset_size=300, tsne_per_class=30)
    # images of class k+1 for a request of class k: realistic images, wrong labels
    result = quality.generator_quality(PoolGenerator(*pool, shift=1), **kwargs)
    expected = {"fid", "kid_mean", "kid_std", "inception_score", "inception_score_std", "precision", "recall",
                "label_consistency", "cas_cnn", "cas_svm", "real_cnn", "real_svm",
                *(f"fid_class_{k}" for k in range(NUM_CLASSES))}
    assert set(result.metrics) == expected
    assert all(math.isfinite(v) for v in result.metrics.values())
    m = result.metrics
    assert m["label_consistency"] < 0.2 and m["cas_cnn"] < 0.2 and m["real_cnn"] > 0.6, m
    assert m["fid"] < min(m[f"fid_class_{k}"] for k in range(NUM_CLASSES))  # right images, wrong classes
    assert result.params["n_fake"] == result.params["n_real"] == 600
    assert result.params["cas_train_size"] == len(train_y) and result.params["kid_subset_size"] == 300
    assert set(result.figures) == {"gen/pca.png", "gen/tsne.png"}
    for fig in result.figures.values():
        assert isinstance(fig, Figure)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(result.seconds) >= {"fid", "kid", "inception_score", "precision_recall", "cas_cnn", "tsne"}


def test_draw_is_seeded_and_leaves_the_callers_rng_alone():
    labels = labels_for([3] * NUM_CLASSES)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = quality.draw(NoiseGenerator(), labels, seed=7)
    after = torch.rand(1)
    assert torch.equal(a, quality.draw(NoiseGenerator(), labels, seed=7))
    assert not torch.equal(a, quality.draw(NoiseGenerator(), labels, seed=8))
    assert torch.equal(before, after) and a.dtype == torch.uint8 and a.shape == (30, 1, 28, 28)


def test_reference_set_is_fixed_and_checks_its_size(data):
    x1, y1 = quality.reference_set(data.test_x, data.test_y, n_per_class=5)
    x2, _ = quality.reference_set(data.test_x, data.test_y, n_per_class=5)
    assert torch.equal(x1, x2) and torch.bincount(y1).tolist() == [5] * NUM_CLASSES
    with pytest.raises(UserError, match="n_per_class"):
        quality.reference_set(data.test_x[:100], data.test_y[:100], n_per_class=50)


def test_slow_samplers_reuse_one_draw_for_cas_and_the_real_side_matches_its_size(data, trained, pool):
    # a diffusion-priced generator: one draw of n_per_class per class serves the distances and CAS
    train_x, train_y = pool[0][::2], pool[1][::2]  # 300 per class: more real images than the 400-image draw
    result = quality.generator_quality(
        PoolGenerator(*pool), extractor=trained[0], real_x=data.test_x, real_y=data.test_y,
        test_x=data.test_x[:2000], test_y=data.test_y[:2000], train_x=train_x, train_y=train_y, n_per_class=40,
        seed=1, cas_classifier_profile="smoke", cas_from_quality_draw=True, kid_subset_size=200, tsne_per_class=20)
    p, m = result.params, result.metrics
    assert p["cas_train_size"] == p["cas_real_train_size"] == p["n_fake"] == 400 and p["cas_from_quality_draw"]
    assert "cas_sample" not in result.seconds  # no second draw
    # the "synthetic" images are real ones with the right labels: CAS matches the equally sized real set
    assert m["cas_cnn"] == pytest.approx(m["real_cnn"], abs=0.08), m
