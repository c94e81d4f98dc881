"""Class-conditional DDPM (Ho et al. 2020) with classifier-free guidance (Ho & Salimans 2022).

A diffusers ``UNet2DModel`` on the native 28×28 (28 → 14 → 7; a 4×4 level would not upsample back to 7), its class
embedding extended by a *null* class that label dropout trains for guidance; the EMA weights sample.
``DiffusionNet`` and ``DiffusionGenerator`` are shared with ``clip.py``, which only changes the conditioning.
"""

from __future__ import annotations

import abc
from typing import ClassVar, Literal

import pydantic
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from torch import Tensor, nn

from ..config import Choice, FloatRange, IntRange, Tunable, config
from ..data import NUM_CLASSES
from ..snapshots import Snapshots
from ..training import EpochCallback, autocast, precision_name, train_likelihood
from .base import TorchGenerator, epochs_with_floor, make_ema, pick_amp, pick_sampling_amp

NULL_LABEL = NUM_CLASSES  # the "no label" class of classifier-free guidance
Sampler = Literal["ddim", "dpm", "ddpm"]


@config
class DDPMConfig:
    width: int = pydantic.Field(default=32, ge=8, le=256, multiple_of=8)  # channels at 28×28; 2× at 14 and 7
    layers_per_block: int = pydantic.Field(default=1, ge=1, le=4)
    num_train_timesteps: int = pydantic.Field(default=1000, ge=10, le=4000)
    # the cosine schedule (Nichol & Dhariwal 2021) wastes fewer steps at high noise on small images
    beta_schedule: Literal["squaredcos_cap_v2", "linear"] = "squaredcos_cap_v2"
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    label_dropout: float = pydantic.Field(default=0.1, ge=0.0, lt=1.0)  # P(label -> null) while training
    guidance_scale: float = pydantic.Field(default=3.0, ge=0.0, le=20.0)  # 1 = no guidance, 0 = unconditional
    sampler: Sampler = "dpm"  # DPM-Solver++ 2M: at 20 steps it beat DDIM at 25 here
    sampling_steps: int = pydantic.Field(default=20, ge=1, le=4000)
    ema_decay: float = pydantic.Field(default=0.999, ge=0.0, lt=1.0)  # ramped up from 0 over the first steps
    lr: float = pydantic.Field(default=1e-3, gt=0.0, le=1.0)
    epochs: int = pydantic.Field(default=12, ge=1, le=5000)
    # at least this many optimizer steps whatever the data size; 0 = just ``epochs`` (see ``epochs_for``)
    min_steps: int = pydantic.Field(default=0, ge=0, le=10_000_000)
    batch_size: int = pydantic.Field(default=64, ge=1, le=4096)
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"  # auto: bf16/fp16 autocast on CUDA, fp32 on CPU
    # sampling only; auto: as ``amp`` on CUDA, bf16 on CPUs with native bf16 (base.pick_sampling_amp)
    sampling_amp: Literal["auto", "off", "bf16", "fp16"] = "auto"

    profiles: ClassVar[dict] = {
        "smoke": {"width": 8, "epochs": 1, "sampling_steps": 4},
        # 12 epochs are 792 steps at balanced 5,000; min_steps gives smaller sets as many (high 1,000: 61 epochs)
        "quick": {"width": 32, "epochs": 12, "sampling_steps": 20, "min_steps": 790},
        "paper": {"width": 64, "layers_per_block": 2, "epochs": 200, "batch_size": 128, "lr": 2e-4,
                  "ema_decay": 0.9995, "sampling_steps": 100, "min_steps": 6600},
    }
    #: read only when sampling: changing them reuses the trained weights (cell.generator_key)
    sampling_fields: ClassVar[tuple[str, ...]] = ("guidance_scale", "sampler", "sampling_steps", "sampling_amp")
    tunables: ClassVar[dict[str, Tunable]] = {
        "lr": FloatRange(2e-4, 2e-3, log=True),
        "label_dropout": FloatRange(0.05, 0.3),
        "guidance_scale": FloatRange(1.0, 6.0),
        "sampler": Choice(("ddim", "dpm")),
        "sampling_steps": IntRange(10, 50, log=True),
    }

    @pydantic.model_validator(mode="after")
    def _steps_fit_schedule(self):
        if self.sampling_steps > self.num_train_timesteps:
            raise ValueError(f"sampling_steps ({self.sampling_steps}) exceeds num_train_timesteps "
                             f"({self.num_train_timesteps})")
        return self


# ---------------------------------------------------------------- the process (shared with clip.py)
def cfg_combine(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance ε_∅ + s·(ε_y − ε_∅); ``lerp`` is exactly ε_∅ at s = 0 and ε_y at s = 1."""
    return torch.lerp(uncond, cond, scale)


def make_sampler(train_scheduler: DDPMScheduler, kind: str):
    """A sampling scheduler sharing the training noise schedule."""
    cfg = train_scheduler.config
    if kind == "ddpm":
        return DDPMScheduler.from_config(cfg)
    # trailing spacing starts the few-step chain at t = T-1, i.e. from pure noise (Lin et al. 2024)
    if kind == "ddim":
        return DDIMScheduler.from_config(cfg, timestep_spacing="trailing")
    if kind == "dpm":
        # DPM-Solver++ (data prediction) with dynamic thresholding (Imagen) of the x0 estimate.  With the quick
        # model and s = 3 it gave 92% label consistency at 20 steps where DDIM at 25 gave 61% (saturated samples)
        return DPMSolverMultistepScheduler.from_config(cfg, algorithm_type="dpmsolver++", timestep_spacing="trailing",
                                                       thresholding=True, sample_max_value=1.0)
    raise ValueError(f"unknown sampler {kind!r} (choose from: ddim, dpm, ddpm)")


class DiffusionNet(nn.Module, abc.ABC):
    """A noise-predicting UNet plus the DDPM training objective; subclasses turn labels into UNet inputs."""

    def __init__(self, cfg: DDPMConfig):
        super().__init__()
        self.cfg = cfg
        self.scheduler = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                                       prediction_type=cfg.prediction_type, clip_sample=True)
        self.unet = self.make_unet()

    @abc.abstractmethod
    def make_unet(self) -> nn.Module:
        """The diffusers UNet."""

    @abc.abstractmethod
    def condition(self, labels: Tensor) -> dict[str, Tensor]:
        """UNet keyword inputs for ``labels`` (0..9, or ``NULL_LABEL`` for "no label"), batch first."""

    def predict(self, x_t: Tensor, t: Tensor | int, cond: dict[str, Tensor]) -> Tensor:
        return self.unet(x_t, t, **cond).sample

    def guided(self, x_t: Tensor, t: Tensor | int, cond: dict[str, Tensor], null: dict[str, Tensor], *,
               scale: float) -> Tensor:
        """The guided prediction; s = 1 and s = 0 need one pass, others batch the two."""
        if scale == 1.0:
            return self.predict(x_t, t, cond)
        if scale == 0.0:
            return self.predict(x_t, t, null)
        both = self.predict(torch.cat([x_t, x_t]), t, {k: torch.cat([cond[k], null[k]]) for k in cond})
        c, u = both.chunk(2)
        return cfg_combine(c, u, scale)

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Denoising MSE at a random timestep, labels dropped to null with probability ``label_dropout``."""
        x0 = x * 2 - 1
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.cfg.num_train_timesteps, (len(x0),), device=x0.device)
        x_t = self.scheduler.add_noise(x0, noise, t)
        drop = torch.rand(len(y), device=y.device) < self.cfg.label_dropout
        pred = self.predict(x_t, t, self.condition(torch.where(drop, NULL_LABEL, y)))
        target = noise if self.cfg.prediction_type == "epsilon" else self.scheduler.get_velocity(x0, noise, t)
        return F.mse_loss(pred.float(), target), {}


def epochs_for(cfg: DDPMConfig, n: int) -> int:
    """``cfg.epochs``, raised until training takes at least ``cfg.min_steps`` steps on ``n`` images.

    The denoiser needs steps, not passes (quick DDPM on high/1,000's 156 steps: 43-55% label consistency)."""
    return epochs_with_floor(epochs=cfg.epochs, min_steps=cfg.min_steps, n=n, batch_size=cfg.batch_size)


class DiffusionGenerator(TorchGenerator):
    """Fit with EMA through the shared likelihood loop; sample with guidance and a fast scheduler."""

    slow_sampling = True

    def precisions(self) -> dict[str, str]:
        cfg = self.config
        return {"training": precision_name(pick_amp(self.device, cfg.amp)),
                "sampling": precision_name(pick_sampling_amp(self.device, cfg.sampling_amp, train_mode=cfg.amp))}

    def fit(self, images: Tensor, labels: Tensor, *, progress: bool = False,
            on_epoch: EpochCallback | None = None, snapshots: Snapshots | None = None) -> dict[str, float]:
        cfg = self.config
        ema = make_ema(self.net, cfg.ema_decay, warmup=True)
        losses = train_likelihood(
            self.net, images, labels, epochs=epochs_for(cfg, len(labels)), batch_size=cfg.batch_size, lr=cfg.lr,
            ema=ema,
            amp=pick_amp(self.device, cfg.amp), progress=progress, on_epoch=on_epoch, desc=self.name,
            snapshots=snapshots,
        )
        # sampling (and the checkpoint) use the averaged weights, which denoise markedly better than the last step
        self.net.load_state_dict(ema.module.state_dict())
        self.net.eval()
        return losses

    @torch.no_grad()
    def sample(self, labels: Tensor) -> Tensor:
        return self.generate(labels)

    @torch.no_grad()
    def generate(self, labels: Tensor, *, guidance_scale: float | None = None, sampler: Sampler | None = None,
                 steps: int | None = None) -> Tensor:
        """``sample`` with guidance scale, sampler and step count overridable; float [0, 1] N×1×28×28."""
        cfg = self.config
        scale = self.cfg_scale(cfg.guidance_scale if guidance_scale is None else guidance_scale)
        labels = labels.to(self.device).long()
        if len(labels) == 0:
            return torch.zeros(0, 1, 28, 28, device=self.device)
        self.net.eval()
        sched = make_sampler(self.net.scheduler, sampler or cfg.sampler)
        sched.set_timesteps(steps or cfg.sampling_steps, device=self.device)
        # the condition is drawn once per image (the clip family picks a caption template here)
        cond = self.net.condition(labels)
        null = self.net.condition(torch.full_like(labels, NULL_LABEL))
        amp = pick_sampling_amp(self.device, cfg.sampling_amp, train_mode=cfg.amp)
        x = torch.randn(len(labels), 1, 28, 28, device=self.device) * sched.init_noise_sigma
        for t in sched.timesteps:
            with autocast(self.device, amp):
                out = self.net.guided(sched.scale_model_input(x, t), t, cond, null, scale=scale)
            x = sched.step(self.steer(x, t, out.float(), labels), t, x).prev_sample
        return ((x + 1) / 2).clamp(0, 1)

    def cfg_scale(self, scale: float) -> float:
        """The classifier-free guidance scale sampling uses (the clip family's ``clip_grad`` mode drops it)."""
        return scale

    def steer(self, x_t: Tensor, t: Tensor, out: Tensor, labels: Tensor) -> Tensor:
        """The network's (guided) prediction at ``x_t``, changed by any further guidance; here: unchanged."""
        return out


# ---------------------------------------------------------------- the ddpm family
class ClassUNet(DiffusionNet):
    """``UNet2DModel`` with a learned embedding per class plus the null class."""

    def make_unet(self) -> nn.Module:
        w, lpb = self.cfg.width, self.cfg.layers_per_block
        return UNet2DModel(
            sample_size=28, in_channels=1, out_channels=1, block_out_channels=(w, 2 * w, 2 * w),
            layers_per_block=lpb, norm_num_groups=8, num_class_embeds=NUM_CLASSES + 1,
            down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        )

    def condition(self, labels: Tensor) -> dict[str, Tensor]:
        return {"class_labels": labels}


class DDPM(DiffusionGenerator):
    """Class-conditional DDPM with classifier-free guidance, EMA weights and a few-step sampler."""

    name = "ddpm"
    Config = DDPMConfig

    def build(self) -> nn.Module:
        return ClassUNet(self.config)
