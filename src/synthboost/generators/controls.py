"""Two control "generators" that train nothing: they bracket what a synthetic image can be worth.

``heldout`` (upper bound) returns real official-train images outside the run's subset, each worth about one real
image; ``noise`` (lower bound) returns uniform noise.  The report never counts them as families in its claims.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from ..config import Tunable, config
from ..data import NUM_CLASSES, Split, load_fashion_mnist
from .base import FitInputs, TorchGenerator

EMPTY_PROFILES: dict = {"smoke": {}, "quick": {}, "paper": {}}


@config
class HeldOutConfig:
    """Nothing to set: the images are real ones."""

    profiles: ClassVar[dict] = EMPTY_PROFILES
    tunables: ClassVar[dict[str, Tunable]] = {}


@config
class NoiseConfig:
    """Nothing to set: uniform noise in [0, 1]."""

    profiles: ClassVar[dict] = EMPTY_PROFILES
    tunables: ClassVar[dict[str, Tunable]] = {}


class HeldOut(TorchGenerator):
    """Real official-train images of the requested class that lie outside the run's regime subset."""

    name = "heldout"
    Config = HeldOutConfig

    def build(self) -> nn.Module:
        self.exclude: Tensor | None = None  # indices into the official train set the run already holds
        self._pools: list[Tensor] | None = None
        return nn.Module()

    def fit_inputs(self, split: Split, *, seed: int, models=None) -> FitInputs:
        return FitInputs(kwargs={"exclude": torch.cat([split.train_index, split.val_index])})

    def fit(self, images: Tensor, labels: Tensor, *, exclude: Tensor | None = None, progress: bool = False,
            on_epoch=None, snapshots=None) -> dict[str, float]:  # nothing trains: nothing to snapshot
        if exclude is None:
            raise ValueError("heldout: fit needs the run's own real indices (exclude=, from fit_inputs)")
        self.exclude = exclude.detach().cpu().long().unique()
        self._pools = None
        return {"pool": float(sum(len(p) for p in self.pools()))}

    def pools(self) -> list[Tensor]:
        """Per class, the official-train indices this control may return (outside the run's subset)."""
        if self.exclude is None:
            raise RuntimeError("heldout: sample() needs a fitted control (call fit first)")
        if self._pools is None:
            train_y = load_fashion_mnist().train_y
            free = torch.ones(len(train_y), dtype=torch.bool)
            free[self.exclude] = False
            self._pools = [torch.nonzero(free & (train_y == k)).flatten() for k in range(NUM_CLASSES)]
        return self._pools

    def extra_state(self) -> dict:
        return {"exclude": self.exclude}

    def load_extra_state(self, extra: dict) -> None:
        self.exclude = extra["exclude"].cpu() if extra.get("exclude") is not None else None
        self._pools = None

    @torch.no_grad()
    def sample(self, labels: Tensor) -> Tensor:
        # without replacement within one call (a repeated image would be worth less than a new one); a class
        # asked for more than its pool holds cycles through a fresh permutation
        data, pools = load_fashion_mnist(), self.pools()
        labels = labels.cpu()
        out = torch.empty(len(labels), 1, 28, 28, dtype=torch.uint8)
        for k in labels.unique().tolist():
            want = torch.nonzero(labels == k).flatten()
            pool = pools[k]
            reps = -(-len(want) // len(pool))
            order = torch.cat([pool[torch.randperm(len(pool))] for _ in range(reps)])[:len(want)]
            out[want] = data.train_x[order].unsqueeze(1)
        return out.to(self.device)

    @torch.no_grad()
    def sample_batched(self, labels: Tensor, *, batch_size: int = 500) -> Tensor:
        return self.sample(labels).cpu()  # one draw for the whole request, so no image repeats across chunks


class Noise(TorchGenerator):
    """Uniform noise images: the lower bound of what a synthetic image is worth."""

    name = "noise"
    Config = NoiseConfig

    def build(self) -> nn.Module:
        return nn.Module()

    def fit(self, images: Tensor, labels: Tensor, *, progress: bool = False, on_epoch=None,
            snapshots=None) -> dict[str, float]:
        return {}

    @torch.no_grad()
    def sample(self, labels: Tensor) -> Tensor:
        return torch.rand(len(labels), 1, 28, 28, device=self.device)
