"""How synthetic samples join the real ones.

``mix.ratio`` is the synthetic count over the real count (0 = real only).  The strategy decides which
classes receive that budget:

* ``uniform``  — the same label distribution as the real set;
* ``balance``  — water-filling: the smallest classes are filled first, so a large enough budget brings
  every class up to the largest (and anything beyond that is spread evenly);
* ``minority`` — water-filling restricted to the classes below the median count (none in a balanced set).

``mix.synthetic_weight`` is the loss weight of a synthetic sample (the CNN honours it; sklearn models
take it as ``sample_weight``).
"""

from __future__ import annotations

import numpy as np
import torch

from .config import MixConfig


def _largest_remainder(exact: np.ndarray, total: int) -> np.ndarray:
    floor = np.floor(exact).astype(int)
    order = np.argsort(-(exact - floor), kind="stable")
    floor[order[: max(0, total - int(floor.sum()))]] += 1
    return floor


def _water_fill(real: np.ndarray, budget: int, eligible: np.ndarray) -> np.ndarray:
    """Add ``budget`` samples to the eligible classes, always to the currently smallest ones."""
    add = np.zeros_like(real)
    if budget <= 0 or not eligible.any():
        return add
    idx = np.flatnonzero(eligible)
    level_lo, level_hi = real[idx].min(), real[idx].max() + budget
    # binary search the fill level L so that sum(max(0, L - n_k)) <= budget
    while level_lo < level_hi:
        mid = (level_lo + level_hi + 1) // 2
        if np.maximum(0, mid - real[idx]).sum() <= budget:
            level_lo = mid
        else:
            level_hi = mid - 1
    add[idx] = np.maximum(0, level_lo - real[idx])
    rest = budget - int(add.sum())
    # the remainder (< number of classes at the level) goes to the lowest-index classes at the level
    at_level = idx[(real[idx] + add[idx]) == level_lo]
    add[at_level[:rest]] += 1
    return add


def synthetic_counts(real_counts, cfg: MixConfig) -> list[int]:
    """Per-class number of synthetic samples for the real per-class counts ``real_counts``."""
    real = np.asarray(real_counts, dtype=np.int64)
    budget = int(round(cfg.ratio * real.sum()))
    if budget == 0:
        return [0] * len(real)
    if cfg.strategy == "uniform":
        return _largest_remainder(real / real.sum() * budget, budget).tolist()
    if cfg.strategy == "balance":
        return _water_fill(real, budget, np.ones(len(real), dtype=bool)).tolist()
    if cfg.strategy == "minority":
        return _water_fill(real, budget, real < np.median(real)).tolist()
    raise ValueError(f"unknown mix strategy {cfg.strategy!r}")


def labels_for(counts) -> torch.Tensor:
    """The label vector that requests ``counts[k]`` samples of class k."""
    return torch.repeat_interleave(torch.arange(len(counts)), torch.as_tensor(counts, dtype=torch.long))


def mix(real_x: torch.Tensor, real_y: torch.Tensor, synth_x: torch.Tensor, synth_y: torch.Tensor,
        *, synthetic_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate real and synthetic uint8 images; returns (x, y, sample_weight, is_synthetic)."""
    real_x = real_x if real_x.dim() == 4 else real_x.unsqueeze(1)
    synth_x = synth_x if synth_x.dim() == 4 else synth_x.unsqueeze(1)
    x = torch.cat([real_x, synth_x.to(real_x.dtype)])
    y = torch.cat([real_y, synth_y.to(real_y.dtype)])
    is_synth = torch.cat([torch.zeros(len(real_y), dtype=torch.bool), torch.ones(len(synth_y), dtype=torch.bool)])
    w = torch.where(is_synth, torch.tensor(float(synthetic_weight)), torch.tensor(1.0))
    return x, y, w, is_synth
