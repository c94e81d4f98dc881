"""Seconds to compute each generator-quality metric for 10,000 generated samples on this machine.

    python bench/quality.py                              # smoke extractor (trained here, ~1 epoch on 10k)
    python bench/quality.py --extractor-state model.pt   # a saved ``train_extractor`` state, e.g. quick
    python bench/quality.py --cas-profile quick          # CAS with the quick CNN (20 epochs instead of 2)
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from synthboost import quality
from synthboost.config import PROFILES
from synthboost.data import NUM_CLASSES, load_fashion_mnist


class RealImages:
    """Stand-in generator: real images of each requested class, drawn without replacement from a pool."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x.unsqueeze(1), y

    def sample_batched(self, labels: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(labels), 1, 28, 28, dtype=torch.uint8)
        for k in labels.unique().tolist():
            want = labels == k
            pos = torch.nonzero(self.y == k).flatten()
            out[want] = self.x[pos[torch.randperm(len(pos))[:int(want.sum())]]]
        return out


ROWS = [
    ("sample", "draw n_per_class×10 samples from the stand-in generator"),
    ("features", "extractor pass: reference + generated (shared by all below)"),
    ("fid", "FID (torchmetrics)"),
    ("kid", "KID mean ± std, 100 subsets (torchmetrics)"),
    ("inception_score", "IS from extractor logits (torchmetrics)"),
    ("precision_recall", "k-NN precision/recall, k=3"),
    ("fid_per_class", "FID per class, 10×"),
    ("label_consistency", "extractor accuracy on requested labels"),
    ("cas_sample", "draw the CAS training set"),
    ("cas_cnn", "CAS: CNN trained on synthetic"),
    ("real_cnn", "CNN trained on real (beside CAS)"),
    ("cas_svm", "CAS: linear SVM trained on synthetic"),
    ("real_svm", "linear SVM trained on real"),
    ("pca", "PCA figure (all samples)"),
    ("tsne", "t-SNE figure (tsne_per_class×10 per set)"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extractor-profile", default="smoke", choices=PROFILES)
    parser.add_argument("--extractor-state", default=None, help="a torch.save'd train_extractor state")
    parser.add_argument("--cas-profile", default="smoke", choices=PROFILES)
    parser.add_argument("--n-per-class", type=int, default=1000)
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--tsne-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = load_fashion_mnist()
    if args.extractor_state:
        state = torch.load(args.extractor_state, map_location="cpu", weights_only=True)
        where = f"loaded from {args.extractor_state}"
    else:
        t0 = time.perf_counter()
        state, metrics, _ = quality.train_extractor(profile=args.extractor_profile)
        where = f"trained here in {time.perf_counter() - t0:.0f} s"
    extractor = quality.load_extractor(state)
    _, logits = quality.ExtractorFeatures(extractor).features_and_logits(data.test_x)
    test_acc = float((logits.argmax(1) == data.test_y).float().mean())

    per_class = args.train_size // NUM_CLASSES
    train_idx = torch.cat([torch.nonzero(data.train_y == k).flatten()[:per_class] for k in range(NUM_CLASSES)])
    pool = torch.ones(len(data.train_y), dtype=torch.bool)
    pool[train_idx] = False
    generator = RealImages(data.train_x[pool], data.train_y[pool])

    t0 = time.perf_counter()
    import torchmetrics.image.fid, torchmetrics.image.inception, torchmetrics.image.kid  # noqa: E401, F401
    import_seconds = time.perf_counter() - t0  # once per process; kept out of the per-metric rows

    t0 = time.perf_counter()
    result = quality.generator_quality(
        generator, extractor=extractor, real_x=data.test_x, real_y=data.test_y, test_x=data.test_x,
        test_y=data.test_y, train_x=data.train_x[train_idx], train_y=data.train_y[train_idx],
        n_per_class=args.n_per_class, seed=args.seed, cas_classifier_profile=args.cas_profile,
        tsne_per_class=args.tsne_per_class)
    total = time.perf_counter() - t0

    n = args.n_per_class * NUM_CLASSES
    print(f"generator quality for {n:,} generated samples vs {n:,} real reference images (official test set)")
    print(f"extractor: {state['profile']} profile, {where}, test accuracy {test_acc:.4f}")
    print(f"CAS: {args.cas_profile} classifier profile, {result.params['cas_train_size']:,} training images; "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")
    print()
    print(f"| {'metric':<18} | {'seconds':>8} | what")
    print(f"|{'-' * 20}|{'-' * 10}|{'-' * 50}")
    print(f"| {'(import)':<18} | {import_seconds:8.2f} | import torchmetrics' image metrics, once per process")
    for key, what in ROWS:
        print(f"| {key:<18} | {result.seconds.get(key, float('nan')):8.2f} | {what}")
    print(f"| {'total':<18} | {total:8.2f} | generator_quality() wall time")
    print()
    print("values:", ", ".join(f"{k}={v:.4g}" for k, v in result.metrics.items()
                               if not k.startswith("fid_class_")))


if __name__ == "__main__":
    main()
