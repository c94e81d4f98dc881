"""The real-only semi-supervised baseline ``pseudo-label``: the pool images ``ssvae`` learns from, labelled by a CNN.

``ssvae`` trains on ``gen.unlabeled_size`` unlabelled official-train images beyond its cell, so its gain over
``none`` would be semi-supervised learning as much as synthetic data.  This baseline uses the very same images
(``data.unlabeled_indices``: same count, same seeded draw) the plain way: a *teacher* — the CNN's strong recipe
(``none-strong``'s) trained on the cell's labelled training images — labels them, the ones it is at least
``threshold`` sure of join the real images with its label, and the run's own classifier trains on both at the
cell's step budget (``cell.epoch_images``), as every mix does.  The pool's true labels are never used,
except to report how many kept pseudo-labels are right (``pseudo/kept_label_accuracy``, a diagnostic).
"""

from __future__ import annotations

from typing import ClassVar

import pydantic
import torch
from torch import Tensor

from .classifiers import CNNClassifier, CNNConfig
from .config import build, config
from .data import NUM_CLASSES, Split, load_fashion_mnist, unlabeled_indices
from .generators.ssvae import SSVAEConfig


@config
class PseudoLabelConfig:
    """Which pool images, and which of their pseudo-labels are kept."""

    # as ssvae's gen.unlabeled_size, profile by profile: the pairing needs the same images
    unlabeled_size: int = pydantic.Field(default=5000, ge=1, le=59900)
    # keep a pool image when the teacher's top class probability is at least this (FixMatch-style confidence)
    threshold: float = pydantic.Field(default=0.9, ge=0.0, lt=1.0)

    profiles: ClassVar[dict] = {p: {"unlabeled_size": v["unlabeled_size"]} for p, v in SSVAEConfig.profiles.items()}


def teacher_config(profile: str) -> CNNConfig:
    """The teacher's recipe: the CNN's defaults of ``profile`` under the strong recipe (``none-strong``'s)."""
    return build(CNNConfig, dict(CNNConfig.strong[profile]), profile=profile, prefix="clf")


def train_teacher(split: Split, *, profile: str, seed: int) -> tuple[CNNClassifier, float]:
    """The teacher trained on ``split``'s labelled training images (at their step budget), and its validation
    balanced accuracy."""
    teacher = CNNClassifier(teacher_config(profile), seed=seed)
    fitted = teacher.fit(split.train_x, split.train_y, val=(split.val_x, split.val_y), budget_n=len(split.train_y))
    return teacher, float(fitted.get("val_balanced_accuracy", float("nan")))


def pseudo_labeled(split: Split, cfg: PseudoLabelConfig, *, seed: int, teacher: CNNClassifier,
                   teacher_score: float = float("nan")) -> tuple[Tensor, Tensor, dict[str, float]]:
    """The pool images the teacher is sure of (uint8 N×1×28×28), its labels for them, and the pseudo/* metrics."""
    data = load_fashion_mnist()
    idx = unlabeled_indices(split, cfg.unlabeled_size, seed, data=data)
    pool = data.train_x[idx].unsqueeze(1)
    proba = torch.from_numpy(teacher.predict_proba(pool))
    confidence, label = proba.max(1)
    keep = confidence >= cfg.threshold
    counts = torch.bincount(label[keep], minlength=NUM_CLASSES).tolist()
    right = (label[keep] == data.train_y[idx][keep]).float()
    metrics = {"pseudo/pool": float(len(idx)), "pseudo/kept_total": float(keep.sum()),
               "pseudo/kept_fraction": float(keep.float().mean()) if len(idx) else 0.0,
               "pseudo/kept_label_accuracy": float(right.mean()) if len(right) else float("nan"),
               "pseudo/teacher_val_balanced_accuracy": teacher_score}
    metrics |= {f"pseudo/kept_count_{k}": float(c) for k, c in enumerate(counts)}
    return pool[keep], label[keep], metrics
