"""Generator quality in a Fashion-MNIST feature space: FID, KID, IS, precision/recall, per-class FID, CAS, plots.

Distances use a ``SmallCNN`` trained on Fashion-MNIST (its 128-d penultimate layer; its logits for IS and label
consistency), because ImageNet Inception features mean little on 28×28 grayscale clothes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from .classifiers import CNNClassifier, CNNConfig, SmallCNN, SVMClassifier, JUDGE_NET, judge_config
from .config import PROFILES, as_dict, build, check_choice
from .data import CLASS_NAMES, NUM_CLASSES, dataset_digest, load_fashion_mnist, to_float, to_uint8
from .errors import UserError
from .mixing import labels_for
from .timing import timed

EXTRACTOR_FORMAT = 1  # bump when the extractor's architecture or state layout changes (invalidates cached runs)
EXTRACTOR_SEED = 0
# train_size None = the full 60k train set; smoke trains 1 epoch on a seeded 10k subset (for tests)
EXTRACTOR_PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"train_size": 10000, "clf": {**JUDGE_NET, "epochs": 1, "batch_size": 64}},
    "quick": {"train_size": None, "clf": {**JUDGE_NET, "epochs": 4, "batch_size": 256, "lr": 3e-3}},
    "paper": {"train_size": None, "clf": {**JUDGE_NET, "epochs": 15, "batch_size": 128}},
}
#: the extractor's training speed on the project's CPU (training images per second, test pass included): the quick
#: recipe took 128 s of CPU on one thread (2026-12-01); it only sizes the "training once (~N s)" message
EXTRACTOR_IMAGES_PER_SECOND = 1900.0


# ---------------------------------------------------------------- the feature extractor
@functools.lru_cache(maxsize=1)
def _train_set_digest() -> str:
    data = load_fashion_mnist()
    return dataset_digest(data.train_x, data.train_y)


def extractor_key(profile: str) -> str:
    """What the extractor's training depends on: the full train set's bytes, the profile's recipe, the format."""
    check_choice("profile", profile, PROFILES)
    payload = {"format": EXTRACTOR_FORMAT, "profile": profile, "recipe": EXTRACTOR_PROFILES[profile],
               "seed": EXTRACTOR_SEED, "data": _train_set_digest()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def extractor_seconds(profile: str) -> float:
    """A rough wall time for training the extractor of ``profile`` on a 2-core CPU (for the message only)."""
    check_choice("profile", profile, PROFILES)
    recipe = EXTRACTOR_PROFILES[profile]
    images = recipe["train_size"] or len(load_fashion_mnist().train_y)
    return images * recipe["clf"]["epochs"] / EXTRACTOR_IMAGES_PER_SECOND


def train_extractor(*, profile: str, device=None) -> tuple[dict, dict[str, float], dict[str, Any]]:
    """Train the extractor CNN; returns ``(state, metrics, params)`` as ``tracking.cached_model`` expects.

    Its test-set accuracy is reported, never selected on."""
    check_choice("profile", profile, PROFILES)
    recipe = EXTRACTOR_PROFILES[profile]
    data = load_fashion_mnist()
    x, y = data.train_x, data.train_y
    if recipe["train_size"] is not None:
        keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(EXTRACTOR_SEED))[:recipe["train_size"]]
        x, y = x[keep], y[keep]
    cfg = build(CNNConfig, recipe["clf"], prefix="extractor")
    clf = CNNClassifier(cfg, seed=EXTRACTOR_SEED, device=device)
    t0 = time.perf_counter()
    last = clf.fit(x, y)
    seconds = time.perf_counter() - t0
    test_accuracy = float((clf.predict(data.test_x) == data.test_y.numpy()).mean())
    key = extractor_key(profile)
    state = {"format": EXTRACTOR_FORMAT, "kind": "extractor", "profile": profile, "key": key,
             "config": as_dict(cfg), "weights": {k: v.detach().cpu() for k, v in clf.net.state_dict().items()}}
    metrics = {"extractor/test_accuracy": test_accuracy, "extractor/train_seconds": seconds,
               "extractor/train_loss": float(last["loss"])}
    params = {"extractor.profile": profile, "extractor.key": key, "extractor.format": EXTRACTOR_FORMAT,
              "extractor.seed": EXTRACTOR_SEED, "extractor.train_size": len(y),
              "extractor.data_digest": _train_set_digest()[:16], "extractor.device": str(clf.device),
              **{f"extractor.{k}": v for k, v in as_dict(cfg).items()}}
    return state, metrics, params


def load_extractor(state: dict, *, device=None) -> SmallCNN:
    """Rebuild the extractor from ``train_extractor``'s state: eval mode, gradients off."""
    if state.get("kind") != "extractor" or state.get("format") != EXTRACTOR_FORMAT:
        raise ValueError(f"not an extractor checkpoint of format {EXTRACTOR_FORMAT} "
                         f"(kind={state.get('kind')!r}, format={state.get('format')!r})")
    cfg = state["config"]
    net = SmallCNN(width=cfg["width"], dropout=cfg["dropout"], net=cfg.get("net", "small3"))
    net.load_state_dict(state["weights"])
    net = net.to(torch.device(device) if device else torch.device("cpu"), memory_format=torch.channels_last)
    return net.eval().requires_grad_(False)  # channels_last: ~1.8× faster inference on this CPU


class ExtractorFeatures(nn.Module):
    """The extractor as torchmetrics' ``feature=`` wants it: images in, float32 CPU features out."""

    def __init__(self, extractor: SmallCNN, *, batch_size: int = 1000):
        super().__init__()
        self.extractor = extractor.eval()
        self.batch_size = batch_size
        self.num_features = extractor.feature_dim

    @torch.no_grad()
    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """One forward pass gives both: the penultimate features and the class logits."""
        self.extractor.eval()
        device = next(self.extractor.parameters()).device
        feats, logits = [], []
        for i in range(0, len(images), self.batch_size):
            f = self.extractor.embed(to_float(images[i:i + self.batch_size]).to(device))
            feats.append(f.float().cpu())
            logits.append(self.extractor.head(f).float().cpu())
        if not feats:
            return torch.zeros(0, self.num_features), torch.zeros(0, NUM_CLASSES)
        return torch.cat(feats), torch.cat(logits)

    def forward(self, images: Tensor) -> Tensor:
        return self.features_and_logits(images)[0]


class _Precomputed(nn.Module):
    """Identity "feature extractor": hands torchmetrics features we already computed.

    So one extractor pass per image serves every metric (``test_quality`` checks it equals ``ExtractorFeatures``)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return x


# ---------------------------------------------------------------- the metrics, on features
def fid(real_features: Tensor, fake_features: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to the two feature sets (torchmetrics, float64 statistics)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=_Precomputed(real_features.shape[1]))
    metric.update(real_features, real=True)
    metric.update(fake_features, real=False)
    return float(metric.compute())


def kid(real_features: Tensor, fake_features: Tensor, *, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (unbiased MMD², cubic polynomial kernel): mean and std over random subsets."""
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(subset_size, len(real_features), len(fake_features))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")  # we pass 128-d features
        metric = KernelInceptionDistance(feature=_Precomputed(real_features.shape[1]), subsets=subsets,
                                         subset_size=size)
    metric.update(real_features, real=True)
    metric.update(fake_features, real=False)
    with torch.random.fork_rng(devices=[]):  # torchmetrics draws subsets from the global RNG
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def inception_score(logits: Tensor, *, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """exp E[KL(p(y|x) || p(y))] from the extractor's logits (torchmetrics); at most 10 for 10 classes."""
    from torchmetrics.image.inception import InceptionScore

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")  # 10 logits per image
        metric = InceptionScore(feature=_Precomputed(logits.shape[1]), splits=splits)
    metric.update(logits)
    with torch.random.fork_rng(devices=[]):  # torchmetrics shuffles before splitting
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def precision_recall(real_features: Tensor, fake_features: Tensor, *, k: int = 3,
                     chunk: int = 2048) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, k-NN balls), ``chunk`` rows of distances at a time.

    Written here because torchmetrics has none; the definition matches the paper and torch-fidelity's ``metric_prc``."""

    def radii(points: Tensor) -> Tensor:  # distance to the k-th nearest neighbour, the point itself excluded
        return torch.cat([torch.cdist(points[i:i + chunk], points).kthvalue(k + 1, dim=1).values
                          for i in range(0, len(points), chunk)])

    def inside(queries: Tensor, manifold: Tensor, manifold_radii: Tensor) -> Tensor:
        return torch.cat([(torch.cdist(queries[i:i + chunk], manifold) <= manifold_radii).any(dim=1)
                          for i in range(0, len(queries), chunk)])

    real, fake = real_features.float(), fake_features.float()
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per set")
    precision = inside(fake, real, radii(real)).float().mean().item()
    recall = inside(real, fake, radii(fake)).float().mean().item()
    return precision, recall


def classifier_scores(synth_x: Tensor, synth_y: Tensor, *, train_x: Tensor, train_y: Tensor, test_x: Tensor,
                      test_y: Tensor, profile: str, seed: int, device=None,
                      seconds: dict[str, float] | None = None) -> dict[str, float]:
    """CAS (Ravuri & Vinyals 2019: train on synthetic, test on ``test_x``) beside the same models on ``train_x``.

    Fixed epochs from ``profile`` and no validation, so nothing is selected on test."""
    out: dict[str, float] = {}
    seconds = seconds if seconds is not None else {}
    for name, cls in (("cnn", CNNClassifier), ("svm", SVMClassifier)):
        cfg = judge_config(profile) if cls is CNNClassifier else build(cls.Config, profile=profile, prefix=f"cas.{name}")
        for part, (x, y) in (("cas", (synth_x, synth_y)), ("real", (train_x, train_y))):
            with timed(seconds, f"{part}_{name}"):
                clf = cls(cfg, seed=seed, device=device)
                clf.fit(x, y)
                out[f"{part}_{name}"] = float((clf.predict(test_x) == test_y.numpy()).mean())
    return out


# ---------------------------------------------------------------- sampling and the reference set
def draw(generator, labels: Tensor, *, seed: int, batch_size: int = 500) -> Tensor:
    """One sample per label as uint8 N×1×28×28 on the CPU, reproducible from ``seed``; the caller's RNG is kept."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if hasattr(generator, "sample_batched"):
            images = generator.sample_batched(labels)
        else:
            parts = [to_uint8(generator.sample(labels[i:i + batch_size])).cpu()
                     for i in range(0, len(labels), batch_size)]
            images = torch.cat(parts) if parts else torch.zeros(0, 1, 28, 28, dtype=torch.uint8)
    images = to_uint8(images).cpu()
    if tuple(images.shape) != (len(labels), 1, 28, 28):
        raise ValueError(f"generator returned shape {tuple(images.shape)} for {len(labels)} labels; "
                         "expected N×1×28×28")
    return images


def reference_set(real_x: Tensor, real_y: Tensor, *, n_per_class: int) -> tuple[Tensor, Tensor]:
    """The first ``n_per_class`` images of each class, in class order: fixed for a given real set."""
    picked = []
    for k in range(NUM_CLASSES):
        pos = torch.nonzero(real_y == k).flatten()
        if len(pos) < n_per_class:
            raise UserError(f"the real reference set has {len(pos)} images of class {k} ({CLASS_NAMES[k]}), "
                            f"fewer than n_per_class={n_per_class}; lower n_per_class")
        picked.append(pos[:n_per_class])
    idx = torch.cat(picked)
    return to_uint8(real_x[idx]).cpu(), real_y[idx].cpu()


def balanced_counts(total: int) -> list[int]:
    """``total`` split over the classes as evenly as possible (the first classes take the remainder)."""
    return [total // NUM_CLASSES + (1 if k < total % NUM_CLASSES else 0) for k in range(NUM_CLASSES)]


# ---------------------------------------------------------------- figures
def _embedding_figure(real_2d: np.ndarray, real_y: np.ndarray, fake_2d: np.ndarray, fake_y: np.ndarray, *,
                      title: str) -> Figure:
    """Real and synthetic side by side on shared axes, coloured by class."""
    import matplotlib

    colours = matplotlib.colormaps["tab10"]
    fig = Figure(figsize=(11.5, 5.0))
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    for ax, (points, labels, name) in zip(axes, ((real_2d, real_y, "real"), (fake_2d, fake_y, "synthetic"))):
        for k in range(NUM_CLASSES):
            sel = labels == k
            ax.scatter(points[sel, 0], points[sel, 1], s=3, alpha=0.6, color=colours(k), linewidths=0,
                       label=CLASS_NAMES[k])
        ax.set_title(f"{name} (n={len(points)})", fontsize=9)
        ax.tick_params(labelsize=7)
    handles = [axes[0].scatter([], [], s=20, color=colours(k)) for k in range(NUM_CLASSES)]
    fig.legend(handles, CLASS_NAMES, loc="center right", fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    return fig


def pca_figure(real_features: Tensor, real_y: Tensor, fake_features: Tensor, fake_y: Tensor, *,
               seed: int) -> Figure:
    """PCA fitted on the real features, both sets projected on the same two axes."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=seed).fit(real_features.numpy())
    share = pca.explained_variance_ratio_.sum()
    return _embedding_figure(pca.transform(real_features.numpy()), real_y.numpy(),
                             pca.transform(fake_features.numpy()), fake_y.numpy(),
                             title=f"PCA of extractor features (fitted on real; {share:.0%} of real variance)")


def tsne_figure(real_features: Tensor, real_y: Tensor, fake_features: Tensor, fake_y: Tensor, *,
                seed: int) -> Figure:
    """One joint t-SNE of both sets (separate runs would not share axes)."""
    from sklearn.manifold import TSNE

    joint = torch.cat([real_features, fake_features]).numpy()
    emb = TSNE(n_components=2, init="pca", perplexity=30.0, random_state=seed).fit_transform(joint)
    n = len(real_features)
    return _embedding_figure(emb[:n], real_y.numpy(), emb[n:], fake_y.numpy(),
                             title="t-SNE of extractor features (joint embedding of real and synthetic)")


def _first_per_class(labels: Tensor, m: int) -> Tensor:
    return torch.cat([torch.nonzero(labels == k).flatten()[:m] for k in range(NUM_CLASSES)])


# ---------------------------------------------------------------- everything for one generator
@dataclass
class QualityResult:
    metrics: dict[str, float]  # names without the ``gen/`` prefix
    figures: dict[str, Figure]  # artifact path -> figure
    params: dict[str, Any]  # sample counts and settings (unprefixed)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per step (for the benchmark)


def _cas(generator, fake_x: Tensor, fake_y: Tensor, *, train_x: Tensor, train_y: Tensor, test_x: Tensor,
         test_y: Tensor, profile: str, from_quality_draw: bool, seed: int, device,
         seconds: dict[str, float]) -> tuple[dict[str, float], dict[str, Any]]:
    """CAS on ``len(train_y)`` balanced synthetic samples (or the quality draw) beside the real side, and its params.

    With ``from_quality_draw`` the real side trains on a seeded subset of the same size, so the two stay comparable."""
    if from_quality_draw:
        cas_x, cas_y = fake_x, fake_y
        if len(cas_y) < len(train_y):
            keep = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed))[:len(cas_y)]
            train_x, train_y = train_x[keep], train_y[keep]
    else:
        cas_y = labels_for(balanced_counts(len(train_y)))
        with timed(seconds, "cas_sample"):
            cas_x = draw(generator, cas_y, seed=seed * 1000 + 12)
    scores = classifier_scores(cas_x, cas_y, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                               profile=profile, seed=seed, device=device, seconds=seconds)
    return scores, {"cas_train_size": len(cas_y), "cas_real_train_size": len(train_y), "cas_test_size": len(test_y),
                    "cas_profile": profile, "cas_from_quality_draw": from_quality_draw}


def generator_quality(generator, *, extractor: nn.Module, real_x: Tensor, real_y: Tensor, test_x: Tensor,
                      test_y: Tensor, train_x: Tensor, train_y: Tensor, n_per_class: int, seed: int,
                      cas_classifier_profile: str, cas_from_quality_draw: bool = False, cas: bool = True,
                      device=None,
                      kid_subsets: int = 100,
                      kid_subset_size: int = 1000, pr_k: int = 3, is_splits: int = 10,
                      tsne_per_class: int = 100) -> QualityResult:
    """The full generator-quality metric set for ``generator`` (anything with ``sample_batched`` or ``sample``).

    Distances compare ``n_per_class`` samples per class with the first ``n_per_class`` real images per class."""
    if n_per_class < 2:
        raise UserError(f"n_per_class must be at least 2 (FID needs a covariance), got {n_per_class}")
    check_choice("profile", cas_classifier_profile, PROFILES)
    seconds: dict[str, float] = {}
    feats = ExtractorFeatures(extractor.to(torch.device(device)) if device else extractor)
    ref_x, ref_y = reference_set(real_x, real_y, n_per_class=n_per_class)
    fake_y = labels_for([n_per_class] * NUM_CLASSES)
    with timed(seconds, "sample"):
        fake_x = draw(generator, fake_y, seed=seed * 1000 + 11)  # offsets keep the draws independent
    with timed(seconds, "features"):
        real_f, _ = feats.features_and_logits(ref_x)
        fake_f, fake_logits = feats.features_and_logits(fake_x)

    m: dict[str, float] = {}
    with timed(seconds, "fid"):
        m["fid"] = fid(real_f, fake_f)
    with timed(seconds, "kid"):
        m["kid_mean"], m["kid_std"] = kid(real_f, fake_f, subsets=kid_subsets, subset_size=kid_subset_size,
                                          seed=seed)
    with timed(seconds, "inception_score"):
        m["inception_score"], m["inception_score_std"] = inception_score(fake_logits, splits=is_splits, seed=seed)
    with timed(seconds, "precision_recall"):
        m["precision"], m["recall"] = precision_recall(real_f, fake_f, k=pr_k)
    with timed(seconds, "fid_per_class"):
        for k in range(NUM_CLASSES):
            m[f"fid_class_{k}"] = fid(real_f[ref_y == k], fake_f[fake_y == k])
    with timed(seconds, "label_consistency"):
        m["label_consistency"] = float((fake_logits.argmax(1) == fake_y).float().mean())

    cas_params: dict[str, Any] = {}
    if cas:
        cas_metrics, cas_params = _cas(generator, fake_x, fake_y, train_x=train_x, train_y=train_y, test_x=test_x,
                                       test_y=test_y, profile=cas_classifier_profile,
                                       from_quality_draw=cas_from_quality_draw, seed=seed, device=device,
                                       seconds=seconds)
        m.update(cas_metrics)

    figures: dict[str, Figure] = {}
    with timed(seconds, "pca"):
        figures["gen/pca.png"] = pca_figure(real_f, ref_y, fake_f, fake_y, seed=seed)
    with timed(seconds, "tsne"):
        ri, fi = _first_per_class(ref_y, tsne_per_class), _first_per_class(fake_y, tsne_per_class)
        figures["gen/tsne.png"] = tsne_figure(real_f[ri], ref_y[ri], fake_f[fi], fake_y[fi], seed=seed)

    params = {
        "n_per_class": n_per_class, "n_real": len(ref_y), "n_fake": len(fake_y),
        "reference_digest": dataset_digest(ref_x, ref_y)[:16], "feature_dim": feats.num_features,
        "kid_subsets": kid_subsets, "kid_subset_size": min(kid_subset_size, len(ref_y), len(fake_y)),
        "pr_k": pr_k, "is_splits": is_splits, "tsne_per_class": tsne_per_class,
        "cas": cas, "seed": seed, **cas_params,
    }
    return QualityResult(metrics=m, figures=figures, params=params, seconds=seconds)
