"""BigGAN (Brock et al. 2019) scaled down to 28×28 Fashion-MNIST.

Kept: hierarchical z into class-conditional BatchNorm, residual blocks, one self-attention block at 14×14, spectral
norm with orthogonal init, projection D, hinge loss, TTUR, β1 = 0, EMA of G and truncation.
"""

from __future__ import annotations

from typing import ClassVar

import pydantic
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from ..config import FloatRange, IntRange, Tunable, config
from ..data import NUM_CLASSES
from .adversarial import AdversarialConfig, AdversarialGenerator, ProjectionHead


@config
class BigGANConfig(AdversarialConfig):
    """The loop's knobs with BigGAN's own defaults where they differ from DCGAN's, and the networks' sizes."""

    z_dim: int = pydantic.Field(default=96, ge=3, le=512)  # split in three chunks
    width: int = pydantic.Field(default=16, ge=8, le=512)  # channels at 28×28; 2w at 14×14, 4w at 7×7 in G
    shared_dim: int = pydantic.Field(default=64, ge=1, le=512)  # the shared class embedding of G
    lr_d: float = pydantic.Field(default=4e-4, gt=0.0, le=1.0)  # TTUR
    beta1: float = pydantic.Field(default=0.0, ge=0.0, lt=1.0)
    n_critic: int = pydantic.Field(default=2, ge=1, le=10)  # D steps per G step, as in BigGAN
    # horizon ≈ 1/(1-decay) = 200 of quick's 1,650 G steps (0.999 kept too much of the init); paper affords 0.999
    ema_decay: float = pydantic.Field(default=0.995, ge=0.0, lt=1.0)

    profiles: ClassVar[dict] = {
        "smoke": {"epochs": 1, "width": 8, "batch_size": 64},
        # 50 epochs ≈ 1,650 G steps at balanced 5,000; min_g_steps gives smaller sets as many
        "quick": {"epochs": 50, "min_g_steps": 1650},
        "paper": {"epochs": 200, "width": 64, "ema_decay": 0.999, "min_g_steps": 6600},
    }
    tunables: ClassVar[dict[str, Tunable]] = {
        "lr_g": FloatRange(2e-5, 5e-4, log=True),
        "lr_d": FloatRange(1e-4, 1e-3, log=True),
        "n_critic": IntRange(1, 4),
        "z_dim": IntRange(48, 192, step=3),
        "truncation": FloatRange(0.5, 2.0),
    }


# ---------------------------------------------------------------- building blocks
class ConditionalBatchNorm(nn.Module):
    """BatchNorm without its own affine; gain ``1 + Wg c`` and bias ``Wb c`` come from the conditioning vector c."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Linear(cond_dim, channels, bias=False)
        self.bias = nn.Linear(cond_dim, channels, bias=False)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        return self.bn(x) * (1 + self.gain(c))[:, :, None, None] + self.bias(c)[:, :, None, None]


class UpBlock(nn.Module):
    """BN-ReLU-up-conv-BN-ReLU-conv, plus an upsampled 1×1-conv shortcut (BigGAN's G block)."""

    def __init__(self, cin: int, cout: int, cond_dim: int):
        super().__init__()
        self.bn1 = ConditionalBatchNorm(cin, cond_dim)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn2 = ConditionalBatchNorm(cout, cond_dim)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = self.conv1(F.interpolate(F.relu(self.bn1(x, c)), scale_factor=2))
        h = self.conv2(F.relu(self.bn2(h, c)))
        return h + self.skip(F.interpolate(x, scale_factor=2))


class DownBlock(nn.Module):
    """(ReLU)-conv-ReLU-conv-avgpool, plus an avgpooled 1×1-conv shortcut (BigGAN's D block).

    Pooling before the shortcut conv equals pooling after (both linear) and is 4× cheaper."""

    def __init__(self, cin: int, cout: int, *, down: bool = True, preactivation: bool = True):
        super().__init__()
        self.down, self.preactivation = down, preactivation
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if (cin != cout or down) else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.relu(self.conv1(F.relu(x) if self.preactivation else x)))
        if self.down:
            h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
        return h + self.skip(x)


class SelfAttention(nn.Module):
    """SAGAN self-attention: queries at every position, keys/values on the 2×2-max-pooled grid; γ starts at 0."""

    def __init__(self, channels: int):
        super().__init__()
        inner = max(channels // 8, 1)
        self.query = nn.Conv2d(channels, inner, 1, bias=False)
        self.key = nn.Conv2d(channels, inner, 1, bias=False)
        self.value = nn.Conv2d(channels, channels // 2, 1, bias=False)
        self.out = nn.Conv2d(channels // 2, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(()))  # the block starts as the identity and learns how much to attend

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # N × HW × C/8
        k = F.max_pool2d(self.key(x), 2).flatten(2)  # N × C/8 × HW/4
        v = F.max_pool2d(self.value(x), 2).flatten(2).transpose(1, 2)  # N × HW/4 × C/2
        attended = (torch.softmax(q @ k, dim=-1) @ v).transpose(1, 2).reshape(n, -1, h, w)
        return x + self.gamma * self.out(attended)


def orthogonal_and_spectral(net: nn.Module, *, embeddings: bool) -> nn.Module:
    """Orthogonal init of conv/linear/embedding weights, then spectral norm (on embeddings too if ``embeddings``)."""
    for m in list(net.modules()):  # list first: spectral_norm adds submodules while we walk
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            nn.init.orthogonal_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        if isinstance(m, (nn.Conv2d, nn.Linear)) or (embeddings and isinstance(m, nn.Embedding)):
            spectral_norm(m)
    return net


# ---------------------------------------------------------------- the networks
class BigGANGenerator(nn.Module):
    def __init__(self, *, z_dim: int, width: int, shared_dim: int, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.width = width
        z0, z1, z2 = (len(c) for c in torch.arange(z_dim).tensor_split(3))  # same split as forward's
        self.shared = nn.Embedding(num_classes, shared_dim)
        self.fc = nn.Linear(z0, 4 * width * 49)
        self.block1 = UpBlock(4 * width, 2 * width, shared_dim + z1)  # 7 -> 14
        self.attention = SelfAttention(2 * width)  # at 14×14, the middle resolution
        self.block2 = UpBlock(2 * width, width, shared_dim + z2)  # 14 -> 28
        self.out = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, 1, 3, padding=1), nn.Tanh())

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        z0, z1, z2 = z.tensor_split(3, dim=1)
        e = self.shared(y)
        h = self.fc(z0).view(-1, 4 * self.width, 7, 7)
        h = self.attention(self.block1(h, torch.cat([e, z1], 1)))
        return self.out(self.block2(h, torch.cat([e, z2], 1)))


class BigGANDiscriminator(nn.Module):
    def __init__(self, *, width: int, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.blocks = nn.Sequential(
            DownBlock(1, width, preactivation=False),  # 28 -> 14
            SelfAttention(width),  # at 14×14
            DownBlock(width, 2 * width),  # 14 -> 7
            DownBlock(2 * width, 2 * width, down=False),  # 7×7
        )
        self.head = ProjectionHead(2 * width, num_classes)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))  # global sum pooling
        return self.head(h, y)


class BigGAN(AdversarialGenerator):
    """BigGAN at 28×28: conditional BN, self-attention, spectral norm, projection D, hinge loss, TTUR, EMA."""

    name = "biggan"
    Config = BigGANConfig
    adversarial_loss = "hinge"

    def build_generator(self) -> nn.Module:
        # G's shared embedding feeds spectrally normalised linears, so the embedding itself stays plain
        return orthogonal_and_spectral(BigGANGenerator(z_dim=self.config.z_dim, width=self.config.width,
                                                       shared_dim=self.config.shared_dim), embeddings=False)

    def build_discriminator(self) -> nn.Module:
        return orthogonal_and_spectral(BigGANDiscriminator(width=self.config.width), embeddings=True)
