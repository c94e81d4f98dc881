"""Figures a person looks at: sample grids (one row per class) and confusion matrices.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot), so no global backend state
is touched and nothing opens a window.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from .data import CLASS_NAMES, to_uint8


def sample_grid(images: torch.Tensor, labels: torch.Tensor, *, per_class: int = 10, title: str = "") -> Figure:
    """Rows = classes 0..9 (named), columns = the first ``per_class`` images of that class."""
    images = to_uint8(images).cpu()
    labels = labels.cpu()
    canvas = np.full((10 * 30, per_class * 30), 255, dtype=np.uint8)
    for k in range(10):
        picked = images[labels == k][:per_class]
        for j, img in enumerate(picked):
            canvas[k * 30 + 1:k * 30 + 29, j * 30 + 1:j * 30 + 29] = img[0].numpy()
    fig = Figure(figsize=(per_class * 0.45 + 1.6, 10 * 0.45 + 0.4))
    ax = fig.add_subplot()
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_yticks([k * 30 + 14 for k in range(10)], CLASS_NAMES, fontsize=7)
    ax.set_xticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def confusion_figure(matrix: np.ndarray, *, title: str = "") -> Figure:
    fig = Figure(figsize=(6.4, 5.6))
    ax = fig.add_subplot()
    norm = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=6,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(10), CLASS_NAMES, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(10), CLASS_NAMES, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (row-normalised colour, counts as text)")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig
