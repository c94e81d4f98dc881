"""Convolutional VAE (Kingma & Welling 2014) with label-preserving exemplar sampling.

The VAE itself is unconditional.  ``sample(labels)`` stays class-conditional without a class prior:
for each requested label it picks a random real training image of that class (its posterior mean and
std were stored in the checkpoint after training), draws ``z = mu + temperature * std * eps`` and decodes.
So samples are *variations of real exemplars*, not draws from the prior; ``cvae`` is the prior-sampling
counterpart.
"""

from __future__ import annotations

from typing import ClassVar

import pydantic
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import FloatRange, IntRange, Tunable, config
from ..data import to_float
from .base import TorchGenerator, exemplar_labels_index


@config
class VAEConfig:
    latent_dim: int = pydantic.Field(default=16, ge=2, le=256)
    hidden: int = pydantic.Field(default=32, ge=8, le=256)  # channels of the first conv; doubled once
    beta: float = pydantic.Field(default=1.0, gt=0.0, le=20.0)
    lr: float = pydantic.Field(default=1e-3, gt=0.0, le=1.0)
    epochs: int = pydantic.Field(default=30, ge=1, le=1000)
    batch_size: int = pydantic.Field(default=128, ge=1, le=4096)
    temperature: float = pydantic.Field(default=1.0, ge=0.0, le=5.0)  # latent perturbation at sampling

    profiles: ClassVar[dict] = {
        "smoke": {"epochs": 1, "batch_size": 128},
        "quick": {"epochs": 30},
        "paper": {"epochs": 100},
    }
    #: read only when sampling: changing them reuses the trained weights (cell.generator_key)
    sampling_fields: ClassVar[tuple[str, ...]] = ("temperature",)
    tunables: ClassVar[dict[str, Tunable]] = {
        "latent_dim": IntRange(4, 64, log=True),
        "beta": FloatRange(0.25, 4.0, log=True),
        "lr": FloatRange(3e-4, 3e-3, log=True),
        "temperature": FloatRange(0.3, 1.5),
    }


class ConvEncoder(nn.Module):
    """28×28 -> 14×14 -> 7×7 strided convs, then a linear head producing ``2 * latent`` numbers."""

    def __init__(self, *, hidden: int, out_dim: int, in_channels: int = 1, cond_dim: int = 0):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(hidden, 2 * hidden, 4, 2, 1), nn.SiLU(),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * hidden * 49 + cond_dim, out_dim)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        h = self.conv(x * 2 - 1)
        return self.head(h if cond is None else torch.cat([h, cond], 1))


class ConvDecoder(nn.Module):
    """Latent (+ condition) -> 7×7 -> 14×14 -> 28×28 logits."""

    def __init__(self, *, hidden: int, in_dim: int):
        super().__init__()
        self.hidden = hidden
        self.fc = nn.Sequential(nn.Linear(in_dim, 2 * hidden * 49), nn.SiLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(2 * hidden, hidden, 4, 2, 1), nn.SiLU(),
            nn.ConvTranspose2d(hidden, 1, 4, 2, 1),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.deconv(self.fc(z).view(-1, 2 * self.hidden, 7, 7))


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(q(z|x) || N(0, I)) per example."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)


class VAENet(nn.Module):
    """Encoder + decoder + ELBO.  ``num_classes > 0`` feeds the one-hot label into both (CVAE, M2 semi-supervised)."""

    def __init__(self, cfg: VAEConfig, *, num_classes: int = 0):
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.encoder = ConvEncoder(hidden=cfg.hidden, out_dim=2 * cfg.latent_dim, cond_dim=num_classes)
        self.decoder = ConvDecoder(hidden=cfg.hidden, in_dim=cfg.latent_dim + num_classes)

    def condition(self, y: Tensor) -> Tensor | None:
        """The one-hot label for conditional variants, None for the unconditional VAE."""
        return F.one_hot(y, self.num_classes).float() if self.num_classes else None

    def encode(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mu, logvar = self.encoder(x, cond).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def decode(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        """Pixel logits."""
        return self.decoder(z if cond is None else torch.cat([z, cond], 1))

    def neg_elbo(self, x: Tensor, cond: Tensor | None = None, *,
                 target: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-image reconstruction NLL (Bernoulli) and KL; ``target`` defaults to ``x`` (DVAE passes clean x)."""
        mu, logvar = self.encode(x, cond)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        logits = self.decode(z, cond)
        target = x if target is None else target
        recon = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(1)
        return recon, gaussian_kl(mu, logvar)

    def loss(self, x: Tensor, y: Tensor, *, target: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Negative ELBO per image, averaged over the batch."""
        recon, kl = self.neg_elbo(x, self.condition(y), target=target)
        recon, kl = recon.mean(), kl.mean()
        return recon + self.cfg.beta * kl, {"recon": recon.detach(), "kl": kl.detach()}


class VAE(TorchGenerator):
    """Convolutional VAE; class-conditional samples by perturbing the latent of a real exemplar of the class."""

    name = "vae"
    Config = VAEConfig
    exemplar_sampling = True
    #: the network class; subclasses that change only the objective (dvae) swap it
    net_class: ClassVar[type[VAENet]] = VAENet

    def build(self) -> nn.Module:
        self.bank_mu = self.bank_std = self.bank_labels = None
        return self.net_class(self.config)

    def after_fit(self, images: Tensor, labels: Tensor) -> None:
        # store each training image's posterior so sampling needs no training data
        mus, stds = [], []
        for i in range(0, len(images), 1000):
            mu, logvar = self.net.encode(to_float(images[i:i + 1000]))
            mus.append(mu)
            stds.append((0.5 * logvar).exp())
        self.bank_mu, self.bank_std, self.bank_labels = torch.cat(mus), torch.cat(stds), labels.clone()

    def extra_state(self) -> dict:
        return {"bank_mu": self.bank_mu, "bank_std": self.bank_std, "bank_labels": self.bank_labels}

    def load_extra_state(self, extra: dict) -> None:
        self.bank_mu, self.bank_std, self.bank_labels = extra["bank_mu"], extra["bank_std"], extra["bank_labels"]

    @torch.no_grad()
    def sample(self, labels: Tensor) -> Tensor:
        if self.bank_mu is None:
            raise RuntimeError("vae: sample() needs a trained model (call fit first)")
        labels = labels.to(self.device)
        idx = exemplar_labels_index(self.bank_labels, labels)
        z = self.bank_mu[idx] + self.config.temperature * self.bank_std[idx] * torch.randn_like(self.bank_mu[idx])
        return torch.sigmoid(self.net.decoder(z))
