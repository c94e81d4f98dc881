"""How synthetic samples join the real ones: per-class counts by strategy, the confidence filter, oversampling.

``mix.ratio`` is the synthetic count over the real count; ``uniform``, ``balance`` or ``minority`` decides which
classes receive it (the last two fill the smallest classes first).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

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


def oversample_indices(real_y: torch.Tensor, counts, *, seed: int) -> torch.Tensor:
    """Indices into the real set: ``counts[k]`` uniform draws with replacement among the real images of class k."""
    want = labels_for(counts)
    real = torch.bincount(real_y, minlength=len(counts))
    empty = [k for k, c in enumerate(counts) if c > 0 and real[k] == 0]
    if empty:
        raise ValueError(f"cannot oversample class(es) {empty}: no real training image")
    by_class = torch.argsort(real_y, stable=True)  # positions of class 0, then class 1, …
    start = torch.cumsum(real, 0) - real
    u = torch.rand(len(want), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return by_class[start[want] + (u * real[want]).long()]


@dataclass
class Filtered:
    """What ``filter_samples`` kept, and how many it drew and accepted per class."""

    x: torch.Tensor
    y: torch.Tensor
    requested: list[int]
    drawn: list[int]
    accepted: list[int]  # passed the threshold (may exceed what was needed; the surplus is dropped)

    @property
    def kept(self) -> list[int]:
        return torch.bincount(self.y, minlength=len(self.requested)).tolist()

    @property
    def shortfall(self) -> int:
        return sum(self.requested) - len(self.y)

    def kept_fraction(self) -> dict[int, float]:
        """Per class with any draw: the fraction of drawn samples that passed the filter."""
        return {k: a / d for k, (a, d) in enumerate(zip(self.accepted, self.drawn)) if d > 0}


def filter_samples(draw: Callable[[torch.Tensor, int], torch.Tensor],
                   score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], counts, *,
                   threshold: float, max_factor: int) -> Filtered:
    """Up to ``counts[k]`` samples of class k whose ``score(x, y)`` is >= ``threshold``, drawn in rounds.

    A later round asks a class for its missing count over its pass rate, never past ``max_factor × counts[k]``."""
    want = torch.as_tensor(counts, dtype=torch.long)
    n_classes = len(want)
    drawn, accepted, kept = (torch.zeros(n_classes, dtype=torch.long) for _ in range(3))
    xs, ys = [], []
    for rnd in range(1 + int(want.sum()) * max_factor):  # each round draws >= 1: a bound, never reached
        need, room = want - kept, want * max_factor - drawn
        if not ((need > 0) & (room > 0)).any():
            break
        rate = accepted.double() / drawn.clamp(min=1)
        guess = torch.where(accepted > 0, (need / rate.clamp(min=1e-12)).ceil().long(), room)
        request = torch.where(drawn == 0, need, guess).clamp(max=room) * (need > 0)
        labels = labels_for(request.tolist())
        x = draw(labels, rnd)
        ok = score(x, labels).cpu() >= threshold
        # keep, in drawing order, at most the missing count of each class among the accepted ones
        hits = F.one_hot(labels, n_classes) * ok[:, None]
        rank = (hits.cumsum(0) * hits).sum(1)  # 1, 2, … among the accepted of its class; 0 if rejected
        take = ok & (rank <= need[labels])
        xs.append(x[take])
        ys.append(labels[take])
        drawn += request
        accepted += torch.bincount(labels[ok], minlength=n_classes)
        kept += torch.bincount(labels[take], minlength=n_classes)
    out = Filtered(x=torch.cat(xs) if xs else torch.zeros(0, 1, 28, 28, dtype=torch.uint8),
                   y=torch.cat(ys) if ys else torch.zeros(0, dtype=torch.long),
                   requested=want.tolist(), drawn=drawn.tolist(), accepted=accepted.tolist())
    if out.shortfall > 0:
        short = [c for c, (r, n) in enumerate(zip(out.requested, out.kept)) if n < r]
        warnings.warn(f"mix.filter: {out.shortfall} of {sum(out.requested)} requested synthetic samples did not pass "
                      f"the threshold {threshold:g} within {max_factor}× draws (classes {short}); using fewer",
                      stacklevel=2)
    return out
