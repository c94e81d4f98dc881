"""Denoising VAE (Im et al. 2017): encode a corrupted image, reconstruct the clean one.

Training is the VAE's ELBO on ``corrupt(x)`` with the clean ``x`` as target; sampling is the VAE's exemplar
perturbation (of a clean image).  ``noise_level`` is one scalar in (0, 1]; what it means depends on ``noise``:

============  ==========================================================================================
gaussian      additive pixel noise N(0, σ²) with σ = level (pixels in [0, 1]), clipped to [0, 1]
salt_pepper   a fraction ``level`` of the pixels is replaced, half by 0 (pepper) and half by 1 (salt)
rotation      each image is rotated by an angle drawn uniformly from ±180·level degrees
brightness    each image is multiplied by a factor drawn uniformly from [1 − level, 1 + level]
contrast      each image is blended with its own mean by a factor drawn from [1 − level, 1 + level]
blur          Gaussian blur with σ = 2·level pixels (kernel 2⌈3σ⌉+1), the same for every image
============  ==========================================================================================
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import pydantic
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from ..config import Choice, FloatRange, Tunable, config
from .vae import VAE, VAEConfig, VAENet

NOISES = ("gaussian", "salt_pepper", "rotation", "brightness", "contrast", "blur")
BLUR_MAX_SIGMA = 2.0  # pixels at noise_level = 1; beyond that a 28×28 garment is a smudge


@config
class DVAEConfig(VAEConfig):
    noise: Literal["gaussian", "salt_pepper", "rotation", "brightness", "contrast", "blur"] = "gaussian"
    noise_level: float = pydantic.Field(default=0.3, gt=0.0, le=1.0)  # meaning per noise: see the module doc

    # profiles: the VAE's (inherited)
    tunables: ClassVar[dict[str, Tunable]] = {
        **VAEConfig.tunables,
        "noise": Choice(NOISES),
        "noise_level": FloatRange(0.05, 0.6),
    }


def _factors(x: Tensor, level: float) -> Tensor:
    """One factor per image, uniform in [1 - level, 1 + level], shaped to broadcast over N×C×H×W."""
    return 1 + (torch.rand(len(x), 1, 1, 1, device=x.device) * 2 - 1) * level


def corrupt(x: Tensor, *, noise: str, level: float) -> Tensor:
    """Corrupt a float [0, 1] batch N×1×H×W on its own device; randomness comes from torch's global RNG.

    torchvision's per-call scalar ops are rewritten below for one parameter per image."""
    if noise == "gaussian":
        return TF.gaussian_noise(x, sigma=level, clip=True)
    if noise == "salt_pepper":
        u = torch.rand_like(x)
        out = torch.where(u < level / 2, torch.zeros_like(x), x)
        return torch.where((u >= level / 2) & (u < level), torch.ones_like(x), out)
    if noise == "rotation":
        angle = (torch.rand(len(x), device=x.device) * 2 - 1) * math.pi * level
        cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # zero padding = the black Fashion-MNIST background
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp(0, 1)
    if noise == "brightness":
        return (x * _factors(x, level)).clamp(0, 1)
    if noise == "contrast":
        factor = _factors(x, level)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (factor * x + (1 - factor) * mean).clamp(0, 1)
    if noise == "blur":
        sigma = BLUR_MAX_SIGMA * level
        k = 2 * math.ceil(3 * sigma) + 1
        return TF.gaussian_blur(x, kernel_size=[k, k], sigma=[sigma, sigma])
    raise ValueError(f"unknown noise {noise!r} (choose from: {', '.join(NOISES)})")


class DVAENet(VAENet):
    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        # the corruption is drawn afresh for every batch, so the model never sees the same noisy copy twice
        noisy = corrupt(x, noise=self.cfg.noise, level=self.cfg.noise_level)
        return super().loss(noisy, y, target=x)


class DVAE(VAE):
    """Denoising VAE; class-conditional samples by perturbing the latent of a real exemplar (as ``vae``)."""

    name = "dvae"
    Config = DVAEConfig
    net_class = DVAENet
    #: a grid with ``models: [all]`` runs dvae once per corruption, labelled dvae-<noise>
    variants: ClassVar[dict[str, dict]] = {f"dvae-{n}": {"noise": n} for n in NOISES}
