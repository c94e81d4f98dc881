"""Fashion-MNIST's classes and the regimes' arithmetic: per-class counts of a subset, its folds, a run's images.

Plain numpy (no torch), so that the report can compute a run's counts from its params cheaply.
"""

from __future__ import annotations

import numpy as np

from .errors import DataError

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
NUM_CLASSES = 10
POOL_PER_CLASS = 6000  # the official train set has exactly 6,000 images per class


def regime_counts(regime: str, size: int, seed: int, *, minority_classes=(2, 6)) -> list[int]:
    """Per-class image counts of a regime; they sum exactly to ``size``."""
    if regime == "balanced":
        weights = np.ones(NUM_CLASSES)
    elif regime == "semi":
        # two minority classes hold 1/6 of a majority class's count (seed: 600 vs 100 at 5,000)
        weights = np.ones(NUM_CLASSES)
        weights[list(minority_classes)] = 1 / 6
    elif regime == "high":
        # long-tailed: seeded per-class counts log-uniform between 50 and 1000, then scaled to the size
        rng = np.random.default_rng([seed, 7919])
        weights = np.exp(rng.uniform(np.log(50), np.log(1000), NUM_CLASSES))
    else:
        raise DataError(f"unknown regime {regime!r} (choose from: balanced, semi, high)")
    counts = _largest_remainder(weights / weights.sum() * size)
    if max(counts) > POOL_PER_CLASS:
        limit = int(size * POOL_PER_CLASS / max(counts))
        raise DataError(f"size {size} is too large for regime {regime!r}: a class would need {max(counts)} images "
                        f"but Fashion-MNIST has {POOL_PER_CLASS} per class; use --size {limit} or less")
    if min(counts) < 2:
        raise DataError(f"size {size} is too small for regime {regime!r}: a class would get {min(counts)} images; "
                        "use a larger --size")
    return counts


def _largest_remainder(exact: np.ndarray) -> list[int]:
    floor = np.floor(exact).astype(int)
    short = int(round(exact.sum())) - int(floor.sum())
    order = np.argsort(-(exact - floor), kind="stable")
    floor[order[:short]] += 1
    return floor.tolist()


def check_folds(counts, k: int, *, where: str) -> None:
    """k-fold selection needs every class in every fold: ``k`` ≥ 2 and no more folds than the smallest class has
    images (a ``DataError`` naming the fix otherwise)."""
    if k < 2:
        raise DataError(f"selection.kfold must be at least 2 (got {k}); use kfold: 2 or more, or drop `selection` "
                        "for the holdout split")
    if k > min(counts):
        raise DataError(f"selection.kfold {k} is more folds than the smallest class of {where} has images "
                        f"({min(counts)}); use kfold: {min(counts)} or fewer, or a larger size")


def train_counts(counts, *, val_fraction: float = 0.15, kfold: int | None = None, fold: int = 0) -> list[int]:
    """Per class, how many of a regime subset's ``counts`` a run trains on (``make_split``'s arithmetic): the rest
    is its validation split (the holdout's ``val_fraction``, at least one image; or fold ``fold`` of ``kfold``)."""
    if kfold is not None:
        return [n - len(range(fold, n, kfold)) for n in counts]
    return [n - max(1, int(round(n * val_fraction))) for n in counts]
