"""The one adversarial training loop both GAN families (``cgan``, ``biggan``) share, and the plumbing around it.

A family subclasses ``AdversarialGenerator`` with a G, a D (no batch statistics: real and fake share a forward pass)
and a loss.  Checkpoints hold G and its EMA only, so sampling needs neither D nor training data.  A non-finite loss
or a collapse (the minimum over classes of G's sample spread relative to real images' stays below
``collapse_threshold``) raises ``GeneratorDiverged``.
"""

from __future__ import annotations

import abc
import math
from typing import ClassVar

import pydantic
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from ..config import config
from ..data import NUM_CLASSES, to_float
from ..errors import GeneratorDiverged
from ..snapshots import Snapshots
from ..training import EpochCallback, batches, check_finite, device_optimizer, optimizer_options, progress_bar
from .base import TorchGenerator, epochs_with_floor, make_ema

PROBE_PER_CLASS = 32  # images per class for the collapse probe: 496 pairs, cheap next to an epoch


# ---------------------------------------------------------------- losses: (D loss, G loss) on logits
def _d_nonsaturating(real: Tensor, fake: Tensor) -> Tensor:
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def _g_nonsaturating(fake: Tensor) -> Tensor:
    # -log D(G(z)) rather than log(1 - D(G(z))): strong gradients while D still wins easily
    return F.softplus(-fake).mean()


def _d_hinge(real: Tensor, fake: Tensor) -> Tensor:
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def _g_hinge(fake: Tensor) -> Tensor:
    return -fake.mean()


LOSSES = {
    "nonsaturating": (_d_nonsaturating, _g_nonsaturating),
    "hinge": (_d_hinge, _g_hinge),
}


# ---------------------------------------------------------------- pieces both families use
@config
class AdversarialConfig:
    """The shared loop's knobs, with DCGAN's defaults (``cgan`` keeps them all; ``biggan`` overrides its own)."""

    z_dim: int = pydantic.Field(default=64, ge=2, le=512)
    lr_g: float = pydantic.Field(default=2e-4, gt=0.0, le=1.0)
    lr_d: float = pydantic.Field(default=2e-4, gt=0.0, le=1.0)
    beta1: float = pydantic.Field(default=0.5, ge=0.0, lt=1.0)  # DCGAN's Adam momentum
    beta2: float = pydantic.Field(default=0.999, ge=0.0, lt=1.0)
    n_critic: int = pydantic.Field(default=1, ge=1, le=10)  # D steps per G step
    epochs: int = pydantic.Field(default=50, ge=1, le=2000)
    # at least this many G steps whatever the data size (``epochs_for``); 0 = just ``epochs``
    min_g_steps: int = pydantic.Field(default=0, ge=0, le=1_000_000)
    batch_size: int = pydantic.Field(default=64, ge=2, le=4096)
    ema_decay: float = pydantic.Field(default=0.999, ge=0.0, lt=1.0)
    truncation: float | None = pydantic.Field(default=None, gt=0.0, le=10.0)  # sampling noise in [-t, t]
    collapse_threshold: float = pydantic.Field(default=0.1, ge=0.0, le=1.0)
    collapse_patience: int = pydantic.Field(default=3, ge=1, le=100)

    #: read only when sampling: changing them reuses the trained weights (cell.generator_key)
    sampling_fields: ClassVar[tuple[str, ...]] = ("truncation",)


class ProjectionHead(nn.Module):
    """Projection discriminator output (Miyato & Koyama 2018): ``ψ(h) + <embed(y), h>`` on D's features h."""

    def __init__(self, features: int, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.linear = nn.Linear(features, 1)
        self.embed = nn.Embedding(num_classes, features)

    def forward(self, h: Tensor, y: Tensor) -> Tensor:
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)


class GeneratorPair(nn.Module):
    """What a GAN checkpoint holds: the trained G and the moving average of its weights (the one that samples)."""

    def __init__(self, g: nn.Module, *, ema_decay: float):
        super().__init__()
        self.g = g
        self.ema = make_ema(g, ema_decay)


@torch.no_grad()
def standing_statistics(G: nn.Module, labels: Tensor, *, z_dim: int, batch_size: int = 256, passes: int = 8) -> None:
    """Recompute G's BatchNorm running statistics from its own activations (BigGAN's "standing statistics").

    The EMA averages the raw G's statistics, which misfit its weights (cgan label consistency 55%, 86% after)."""
    norms = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the passes rather than an exponential one
    G.train()
    for _ in range(passes):
        y = labels[torch.randint(len(labels), (batch_size,), device=labels.device)]
        G(torch.randn(batch_size, z_dim, device=labels.device), y)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    G.eval()


def class_spread(images: Tensor, labels: Tensor, classes: list[int]) -> Tensor:
    """Per class, the mean pairwise L2 distance between its images (the collapse probe's diversity statistic)."""
    flat = images.flatten(1)
    return torch.stack([torch.pdist(flat[labels == k]).mean() for k in classes])


# ---------------------------------------------------------------- the loop
def train_adversarial(
    G: nn.Module, D: nn.Module, images: Tensor, labels: Tensor, *,
    epochs: int, batch_size: int, lr_g: float, lr_d: float, betas: tuple[float, float] = (0.0, 0.999),
    n_critic: int = 1, loss: str = "hinge", z_dim: int, ema: AveragedModel | None = None,
    collapse_threshold: float = 0.1, collapse_patience: int = 3, collapse_warmup: int = 200,
    progress: bool = False, on_epoch: EpochCallback | None = None, desc: str = "gan",
    snapshots: Snapshots | None = None,
) -> dict[str, float]:
    """Train G against D; return the last epoch's means of d_loss, g_loss, d_real, d_fake and diversity.

    A G step uses its batch's labels, so fakes follow the data's class mix."""
    if loss not in LOSSES:
        raise ValueError(f"unknown adversarial loss {loss!r} (choose from: {', '.join(LOSSES)})")
    if n_critic < 1:
        raise ValueError(f"n_critic must be >= 1, got {n_critic}")
    d_loss_fn, g_loss_fn = LOSSES[loss]
    device = next(G.parameters()).device
    x_all, y_all = images.to(device), labels.to(device)
    n = len(x_all)
    bs = min(batch_size, n)
    # torch's default (foreach) off CUDA, as before; fused on CUDA: one kernel a step
    impl = optimizer_options(device_optimizer(device)) if device.type == "cuda" else {}
    opt_g = torch.optim.Adam(G.parameters(), lr=lr_g, betas=betas, **impl)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr_d, betas=betas, **impl)
    sync_free = device.type == "cuda"  # there a non-finite loss is caught once an epoch, not with syncs a step

    # collapse probe: real reference spread per class, and fixed noise so epochs are compared like for like
    counts = torch.bincount(y_all, minlength=NUM_CLASSES)
    classes = [k for k in range(NUM_CLASSES) if counts[k] >= 2]
    shuffled = torch.randperm(n, device=device)
    ref = torch.cat([shuffled[y_all[shuffled] == k][:PROBE_PER_CLASS] for k in classes])
    real_spread = class_spread(to_float(x_all[ref]) * 2 - 1, y_all[ref], classes)
    probe_y = torch.tensor(classes, device=device).repeat_interleave(PROBE_PER_CLASS)
    probe_z = torch.randn(len(probe_y), z_dim, device=device)

    def step_check(value: Tensor, what: str, epoch: int, step: int) -> None:
        if not sync_free and not torch.isfinite(value):
            raise GeneratorDiverged(f"{desc}: {what} loss became {value.item()} at epoch {epoch}, step {step}")

    step = g_total = 0  # steps across epochs, so n_critic spans epoch boundaries on tiny datasets
    low_epochs = 0
    start, means = 0, {}
    state = {"G": G, "D": D, "opt_g": opt_g, "opt_d": opt_d} | ({"ema": ema} if ema is not None else {})
    if snapshots is not None:  # after the probe's draws, which a resumed attempt makes alike before restoring
        start, means, counters = snapshots.restore(state, on_epoch=on_epoch)
        step, g_total, low_epochs = (counters.get(k, 0) for k in ("step", "g_total", "low_epochs"))
    with progress_bar(epochs, desc=desc, enabled=progress) as bar:
        bar.update(min(start, epochs))
        for epoch in range(start, epochs):
            G.train()
            D.train()
            # summed in float64 as Python summed the floats: the same means, without syncs per step
            sums: dict[str, Tensor | float] = {"d_loss": 0.0, "d_real": 0.0, "d_fake": 0.0, "g_loss": 0.0}
            d_steps = g_steps = 0
            for idx in batches(n, bs, device=device):
                real, y = to_float(x_all[idx]) * 2 - 1, y_all[idx]
                # D step: real and fake in one forward pass (D has no batch statistics)
                with torch.no_grad():
                    fake = G(torch.randn(len(y), z_dim, device=device), y)
                d_real, d_fake = D(torch.cat([real, fake]), torch.cat([y, y])).split(len(y))
                d_loss = d_loss_fn(d_real, d_fake)
                step_check(d_loss, "D", epoch, step)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                sums["d_loss"] += d_loss.detach().double()
                sums["d_real"] += d_real.detach().mean().double()
                sums["d_fake"] += d_fake.detach().mean().double()
                d_steps += 1
                step += 1
                if step % n_critic:
                    continue
                # G step: D's weights are frozen so its backward only computes what G needs
                D.requires_grad_(False)
                g_loss = g_loss_fn(D(G(torch.randn(len(y), z_dim, device=device), y), y))
                D.requires_grad_(True)
                step_check(g_loss, "G", epoch, step)
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
                if ema is not None:
                    ema.update_parameters(G)
                sums["g_loss"] += g_loss.detach().double()
                g_steps += 1
                g_total += 1

            sums = {k: float(v) for k, v in sums.items()}  # one sync an epoch
            for what, key in (("D", "d_loss"), ("G", "g_loss")):
                if sync_free and not math.isfinite(sums[key]):
                    raise GeneratorDiverged(f"{desc}: {what} loss became {sums[key]} at epoch {epoch}")
            means = {k: v / max(d_steps, 1) for k, v in sums.items() if k != "g_loss"}
            if g_steps:  # an epoch shorter than n_critic batches makes no G step
                means["g_loss"] = sums["g_loss"] / g_steps
            G.eval()  # BN running statistics, as at sampling; the probe must not disturb them
            with torch.no_grad():
                spread = class_spread(G(probe_z, probe_y), probe_y, classes)
            ratio = spread / real_spread.clamp_min(1e-8)
            means["diversity"] = float(ratio.min())
            check_finite(means, where=f"{desc} epoch {epoch}")
            judged = g_total >= collapse_warmup  # a fresh G barely varies yet: judge only after warmup G steps
            low_epochs = low_epochs + 1 if judged and means["diversity"] < collapse_threshold else 0
            collapsed = low_epochs >= collapse_patience
            if snapshots is not None and not collapsed:  # a resumed attempt runs the collapsing epoch again
                snapshots.end_epoch(epoch, means, state, last=epoch == epochs - 1,
                                    counters={"step": step, "g_total": g_total, "low_epochs": low_epochs})
            if on_epoch is not None:
                on_epoch(epoch, means)  # log the epoch first, so a collapse's curve is recorded
            if collapsed:
                worst = classes[int(ratio.argmin())]
                raise GeneratorDiverged(
                    f"{desc}: mode collapse — samples of class {worst} vary {means['diversity']:.3f}× as much as real "
                    f"images of that class (threshold {collapse_threshold}) for {low_epochs} consecutive epochs")
            bar.set_postfix(d=f"{means['d_loss']:.3f}", g=f"{means.get('g_loss', float('nan')):.3f}",
                            div=f"{means['diversity']:.2f}")
            bar.update(1)
    G.eval()
    if ema is not None:
        standing_statistics(ema.module, y_all, z_dim=z_dim)
    return means


# ---------------------------------------------------------------- the family base
def epochs_for(cfg, n: int) -> int:
    """``cfg.epochs``, raised until G takes at least ``cfg.min_g_steps`` steps on ``n`` images.

    A GAN needs G steps more than passes (quick cgan on high/1,000's 650 steps: 17% label consistency)."""
    # every batch is a D step and every n_critic-th also a G step
    return epochs_with_floor(epochs=cfg.epochs, min_steps=cfg.min_g_steps * cfg.n_critic, n=n,
                             batch_size=cfg.batch_size)


class AdversarialGenerator(TorchGenerator):
    """A class-conditional GAN: ``fit`` runs ``train_adversarial``; ``sample`` draws from the EMA of G."""

    adversarial_loss: ClassVar[str]

    @abc.abstractmethod
    def build_generator(self) -> nn.Module:
        """G: ``G(z, y)`` -> images in [-1, 1], N×1×28×28."""

    @abc.abstractmethod
    def build_discriminator(self) -> nn.Module:
        """D: ``D(x, y)`` -> N logits; no batch statistics (real and fake share a forward pass)."""

    def build(self) -> nn.Module:
        return GeneratorPair(self.build_generator(), ema_decay=self.config.ema_decay)

    def fit(self, images: Tensor, labels: Tensor, *, progress: bool = False,
            on_epoch: EpochCallback | None = None, snapshots: Snapshots | None = None) -> dict[str, float]:
        cfg = self.config
        D = self.build_discriminator().to(self.device)  # fresh per fit, never checkpointed
        return train_adversarial(
            self.net.g, D, images, labels,
            epochs=epochs_for(cfg, len(labels)), batch_size=cfg.batch_size, lr_g=cfg.lr_g, lr_d=cfg.lr_d,
            betas=(cfg.beta1, cfg.beta2), n_critic=cfg.n_critic, loss=self.adversarial_loss,
            z_dim=cfg.z_dim, ema=self.net.ema,
            collapse_threshold=cfg.collapse_threshold, collapse_patience=cfg.collapse_patience,
            progress=progress, on_epoch=on_epoch, desc=self.name, snapshots=snapshots,
        )

    def noise(self, n: int) -> Tensor:
        """Sampling noise; with ``truncation`` set, a normal truncated to [-t, t] (fidelity over variety)."""
        z = torch.empty(n, self.config.z_dim, device=self.device)
        t = self.config.truncation
        return nn.init.trunc_normal_(z, a=-t, b=t) if t is not None else z.normal_()

    @torch.no_grad()
    def generate(self, z: Tensor, labels: Tensor) -> Tensor:
        """EMA G on given noise: float [0, 1], N×1×28×28.  Per-sample (BN uses running statistics)."""
        g = self.net.ema.module.eval()
        return (g(z.to(self.device), labels.to(self.device)).clamp(-1, 1) + 1) / 2

    def sample(self, labels: Tensor) -> Tensor:
        return self.generate(self.noise(len(labels)), labels)
