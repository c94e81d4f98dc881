"""Semi-supervised VAE, model M2 of Kingma et al. 2014 ("Semi-supervised learning with deep generative models").

A classifier head q(y|x) beside the CVAE's network; an unlabelled image's loss is
U(x) = Σ_y q(y|x) · (−ELBO(x, y)) − H(q(·|x)), so the pool's labels are inferred by the head, never read.
Sampling is the CVAE's.
"""

from __future__ import annotations

from typing import ClassVar

import pydantic
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import FloatRange, Tunable, config
from ..data import NUM_CLASSES, Split, to_float, to_uint8, unlabeled_pool
from ..snapshots import Snapshots
from ..training import EpochCallback, train_likelihood
from .base import AuxModels, FitInputs
from .cvae import CVAE, CVAEConfig
from .vae import ConvEncoder, VAENet

UNLABELED = -1  # label slot of pool images inside the training tensor: "unknown", never a class


@config
class SSVAEConfig(CVAEConfig):
    alpha: float = pydantic.Field(default=50.0, gt=0.0, le=10000.0)  # weight of the head's cross-entropy
    # images from the Fashion-MNIST train set outside the regime subset, labels hidden (the pipeline draws them)
    unlabeled_size: int = pydantic.Field(default=5000, ge=0, le=59900)

    profiles: ClassVar[dict] = {
        "smoke": {"epochs": 1, "batch_size": 128, "unlabeled_size": 200},
        "quick": {"epochs": 20, "unlabeled_size": 2000},
        "paper": {"epochs": 100, "unlabeled_size": 20000},
    }
    tunables: ClassVar[dict[str, Tunable]] = {
        **CVAEConfig.tunables,
        "alpha": FloatRange(5.0, 500.0, log=True),
    }


class SSVAENet(VAENet):
    def __init__(self, cfg: SSVAEConfig):
        super().__init__(cfg, num_classes=NUM_CLASSES)
        self.classifier = ConvEncoder(hidden=cfg.hidden, out_dim=NUM_CLASSES)  # q(y|x): logits

    def _neg_elbo(self, x: Tensor, y: Tensor) -> Tensor:
        recon, kl = self.neg_elbo(x, self.condition(y))
        return recon + self.cfg.beta * kl

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        labeled = y != UNLABELED
        logits = self.classifier(x)
        zero = x.new_zeros(())
        lab_elbo = lab_ce = unl = zero
        n_lab, n_unl = int(labeled.sum()), int((~labeled).sum())
        if n_lab:
            lab_elbo = self._neg_elbo(x[labeled], y[labeled]).sum()
            lab_ce = F.cross_entropy(logits[labeled], y[labeled], reduction="sum")
        if n_unl:
            xu = x[~labeled]
            # enumerate every label for every unlabeled image: row j * n_unl + i is image i under label j
            each = torch.arange(NUM_CLASSES, device=x.device).repeat_interleave(n_unl)
            per_label = self._neg_elbo(xu.repeat(NUM_CLASSES, 1, 1, 1), each).view(NUM_CLASSES, n_unl).T
            log_q = F.log_softmax(logits[~labeled], 1)
            # Σ_y q (−ELBO + log q) = expected −ELBO − entropy of q
            unl = (log_q.exp() * (per_label + log_q)).sum()
        loss = (lab_elbo + self.cfg.alpha * lab_ce + unl) / len(x)
        return loss, {
            "labeled_nelbo": (lab_elbo / max(n_lab, 1)).detach(),
            "head_ce": (lab_ce / max(n_lab, 1)).detach(),
            "unlabeled_nelbo": (unl / max(n_unl, 1)).detach(),
        }


class SSVAE(CVAE):
    """M2 semi-supervised VAE: labeled images + an unlabeled pool whose labels the head infers."""

    name = "ssvae"
    Config = SSVAEConfig

    def build(self) -> nn.Module:
        return SSVAENet(self.config)

    @classmethod
    def unlabeled_data(cls, config: SSVAEConfig) -> int:
        return config.unlabeled_size

    def fit_inputs(self, split: Split, *, seed: int, models: AuxModels | None) -> FitInputs:
        """``gen.unlabeled_size`` unlabelled train images outside the cell, and the validation split for the head."""
        return FitInputs(kwargs={"unlabeled": unlabeled_pool(split, self.config.unlabeled_size, seed),
                                 "val": (split.val_x, split.val_y)})

    def _check_pool(self, unlabeled: Tensor | None) -> Tensor:
        want = self.config.unlabeled_size
        if unlabeled is None:
            if want:
                raise ValueError(f"ssvae: fit needs unlabeled= ({want} images from synthboost.data.unlabeled_pool)")
            return torch.zeros(0, 1, 28, 28, dtype=torch.uint8)
        if not torch.is_tensor(unlabeled) or unlabeled.dtype != torch.uint8 \
                or unlabeled.dim() not in (3, 4) or tuple(unlabeled.shape[-2:]) != (28, 28):
            raise TypeError("ssvae: unlabeled must be a uint8 image tensor N×28×28 — images only; "
                            "the pool's labels are never passed to the model")
        if len(unlabeled) != want:
            raise ValueError(f"ssvae: got {len(unlabeled)} unlabeled images but gen.unlabeled_size is {want}")
        return to_uint8(unlabeled)

    def fit(self, images: Tensor, labels: Tensor, *, unlabeled: Tensor | None = None,
            val: tuple[Tensor, Tensor] | None = None, progress: bool = False,
            on_epoch: EpochCallback | None = None, snapshots: Snapshots | None = None) -> dict[str, float]:
        """Train on ``images``/``labels`` plus the bare ``unlabeled`` images; ``val`` scores the head."""
        pool = self._check_pool(unlabeled)
        x = torch.cat([to_uint8(images), pool.to(images.device)])
        y = torch.cat([labels, torch.full((len(pool),), UNLABELED, dtype=labels.dtype, device=labels.device)])
        cfg = self.config
        out = train_likelihood(self.net, x, y, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                               progress=progress, on_epoch=on_epoch, desc=self.name, snapshots=snapshots)
        if val is not None:
            self.extra_metrics["ssvae_head_accuracy"] = self.head_accuracy(*val)
        return out

    @torch.no_grad()
    def head_accuracy(self, images: Tensor, labels: Tensor) -> float:
        """Accuracy of the classifier head q(y|x) on labeled images (e.g. the validation split)."""
        self.net.eval()
        correct = 0
        for i in range(0, len(images), 1000):
            logits = self.net.classifier(to_float(images[i:i + 1000].to(self.device)))
            correct += int((logits.argmax(1).cpu() == labels[i:i + 1000].cpu()).sum())
        return correct / max(len(images), 1)
