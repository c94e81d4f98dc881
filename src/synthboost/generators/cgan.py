"""DCGAN-style conditional GAN (Radford et al. 2016; Mirza & Osindero 2014) with the non-saturating loss.

The label enters G by concatenation to z and D by projection: a label concatenated to D's input can be ignored,
while the projection makes "a plausible image *of class y*" an explicit term of D's score (better class fidelity).
"""

from __future__ import annotations

from typing import ClassVar

import pydantic
import torch
from torch import Tensor, nn

from ..config import FloatRange, IntRange, Tunable, config
from ..data import NUM_CLASSES
from .adversarial import AdversarialConfig, AdversarialGenerator, ProjectionHead


@config
class CGANConfig(AdversarialConfig):
    """The loop's knobs at their (DCGAN) defaults, and G's and D's sizes."""

    width: int = pydantic.Field(default=64, ge=8, le=512)  # D's first conv channels; G's 14×14 channels
    embed_dim: int = pydantic.Field(default=32, ge=1, le=512)  # label embedding concatenated to z
    dropout: float = pydantic.Field(default=0.3, ge=0.0, lt=1.0)  # on D's features

    profiles: ClassVar[dict] = {
        "smoke": {"epochs": 1, "width": 16, "batch_size": 64},
        # 50 epochs ≈ 3,300 G steps at balanced 5,000; min_g_steps gives smaller sets as many
        "quick": {"epochs": 50, "min_g_steps": 3300},
        "paper": {"epochs": 150, "min_g_steps": 10000},
    }
    tunables: ClassVar[dict[str, Tunable]] = {
        "truncation": FloatRange(0.5, 2.0),  # sampling only: a study searches it on one trained GAN
        "lr_g": FloatRange(5e-5, 1e-3, log=True),
        "lr_d": FloatRange(5e-5, 1e-3, log=True),
        "z_dim": IntRange(16, 128, log=True),
        "dropout": FloatRange(0.0, 0.5),
        "n_critic": IntRange(1, 3),
    }


class CGANGenerator(nn.Module):
    def __init__(self, *, z_dim: int, width: int, embed_dim: int, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.width = width
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.fc = nn.Sequential(nn.Linear(z_dim + embed_dim, 2 * width * 49, bias=False),
                                nn.BatchNorm1d(2 * width * 49), nn.ReLU(inplace=True))
        self.up = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, 1, 4, 2, 1), nn.Tanh(),
        )

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        h = self.fc(torch.cat([z, self.embed(y)], 1))
        return self.up(h.view(-1, 2 * self.width, 7, 7))


class CGANDiscriminator(nn.Module):
    def __init__(self, *, width: int, dropout: float, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Flatten(), nn.Dropout(dropout),
        )
        self.head = ProjectionHead(2 * width * 49, num_classes)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.head(self.body(x), y)


def dcgan_init(net: nn.Module) -> nn.Module:
    """DCGAN's initialisation: weights N(0, 0.02), BN gains N(1, 0.02), biases 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
    return net


class CGAN(AdversarialGenerator):
    """DCGAN-style conditional GAN: label concatenated to z in G, projection D, non-saturating loss, EMA sampling."""

    name = "cgan"
    Config = CGANConfig
    adversarial_loss = "nonsaturating"

    def build_generator(self) -> nn.Module:
        cfg = self.config
        return dcgan_init(CGANGenerator(z_dim=cfg.z_dim, width=cfg.width, embed_dim=cfg.embed_dim))

    def build_discriminator(self) -> nn.Module:
        return dcgan_init(CGANDiscriminator(width=self.config.width, dropout=self.config.dropout))
