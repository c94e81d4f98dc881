"""VQ-VAE (van den Oord et al. 2017) with a learned class-conditional prior over its code grid.

Two stages on the shared likelihood loop: an autoencoder over a 7×7 code grid (EMA codebook, dead codes restarted
so it does not collapse onto a few entries), then a causal transformer prior over the codes, started by the class.
Samples are decoded prior draws, so they are new images, not reconstructions.
"""

from __future__ import annotations

from typing import ClassVar

import pydantic
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import FloatRange, IntRange, Tunable, config
from ..data import NUM_CLASSES, to_float
from ..snapshots import Snapshots
from ..training import EpochCallback, train_likelihood
from .base import TorchGenerator

GRID = 7  # 28 / 4: two stride-2 convs
PRIOR_HEADS = 4


@config
class VQVAEConfig:
    hidden: int = pydantic.Field(default=64, ge=8, le=512)  # conv channels of encoder and decoder
    code_dim: int = pydantic.Field(default=32, ge=2, le=512)
    codebook_size: int = pydantic.Field(default=128, ge=2, le=4096)
    commitment: float = pydantic.Field(default=0.25, gt=0.0, le=10.0)
    ema_decay: float = pydantic.Field(default=0.99, ge=0.5, lt=1.0)
    # EMA assignments per batch below which a code counts as dead and restarts
    dead_code_threshold: float = pydantic.Field(default=1.0, gt=0.0, le=1000.0)
    lr: float = pydantic.Field(default=1e-3, gt=0.0, le=1.0)
    epochs: int = pydantic.Field(default=20, ge=1, le=1000)
    batch_size: int = pydantic.Field(default=128, ge=1, le=4096)
    prior_epochs: int = pydantic.Field(default=30, ge=1, le=1000)
    prior_lr: float = pydantic.Field(default=1e-3, gt=0.0, le=1.0)
    prior_dim: int = pydantic.Field(default=96, ge=16, le=1024, multiple_of=PRIOR_HEADS)
    prior_layers: int = pydantic.Field(default=3, ge=1, le=24)
    prior_dropout: float = pydantic.Field(default=0.1, ge=0.0, lt=1.0)
    # prior softmax temperature at sampling: slightly cool, as usual (label consistency 72% at 1.0, 76% at 0.9)
    temperature: float = pydantic.Field(default=0.9, gt=0.0, le=5.0)

    profiles: ClassVar[dict] = {
        "smoke": {"epochs": 1, "prior_epochs": 1, "hidden": 32, "prior_dim": 64, "prior_layers": 1},
        "quick": {"epochs": 10, "prior_epochs": 40},
        "paper": {"epochs": 100, "prior_epochs": 200, "codebook_size": 512, "prior_dim": 256, "prior_layers": 6},
    }
    #: read only when sampling: changing them reuses the trained weights (cell.generator_key)
    sampling_fields: ClassVar[tuple[str, ...]] = ("temperature",)
    tunables: ClassVar[dict[str, Tunable]] = {
        "codebook_size": IntRange(16, 512, log=True),
        "code_dim": IntRange(8, 64, log=True),
        "commitment": FloatRange(0.05, 1.0, log=True),
        "lr": FloatRange(3e-4, 3e-3, log=True),
        "prior_lr": FloatRange(2e-4, 2e-3, log=True),
        "prior_dropout": FloatRange(0.0, 0.3),
        "temperature": FloatRange(0.7, 1.1),
    }


# ---------------------------------------------------------------- stage 1: the quantised autoencoder
class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1), nn.SiLU(), nn.Conv2d(ch, ch, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class EMAQuantizer(nn.Module):
    """Nearest-code quantisation with an EMA-updated codebook and dead-code restarts (all buffers, no grads)."""

    def __init__(self, *, size: int, dim: int, decay: float, dead_threshold: float, eps: float = 1e-5):
        super().__init__()
        self.decay, self.dead_threshold, self.eps = decay, dead_threshold, eps
        self.register_buffer("codebook", torch.randn(size, dim))
        self.register_buffer("usage", torch.zeros(size))  # EMA of assignments per batch
        self.register_buffer("code_sum", torch.zeros(size, dim))  # EMA of the sum of assigned vectors

    def assign(self, z: Tensor) -> Tensor:
        """N×D×H×W encoder outputs -> N×H×W code indices."""
        n, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.T + self.codebook.pow(2).sum(1)
        return dist.argmin(1).view(n, h, w)

    def lookup(self, codes: Tensor) -> Tensor:
        """N×H×W indices -> N×D×H×W code vectors."""
        return self.codebook[codes].permute(0, 3, 1, 2)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Straight-through quantisation of ``z`` and the commitment loss."""
        codes = self.assign(z.detach())
        q = self.lookup(codes)  # before the update: the loss must see the codes the batch was assigned to
        if self.training:
            self._update(z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1]), codes.flatten())
        commit = F.mse_loss(z, q.detach())
        return z + (q - z).detach(), commit

    @torch.no_grad()
    def _update(self, flat: Tensor, idx: Tensor) -> None:
        onehot = F.one_hot(idx, len(self.codebook)).type_as(flat)
        self.usage.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.code_sum.mul_(self.decay).add_(onehot.T @ flat, alpha=1 - self.decay)
        # Laplace smoothing: a rarely used code must not divide by ~0
        total = self.usage.sum()
        smoothed = (self.usage + self.eps) / (total + len(self.usage) * self.eps) * total
        self.codebook.copy_(self.code_sum / smoothed.unsqueeze(1))
        # restart dead codes at random encoder outputs; at the first step every code is dead, which
        # doubles as a data-dependent initialisation
        dead = self.usage < self.dead_threshold
        if dead.any():
            pick = flat[torch.randint(len(flat), (int(dead.sum()),), device=flat.device)]
            self.codebook[dead] = pick
            self.code_sum[dead] = pick * self.dead_threshold
            self.usage[dead] = self.dead_threshold


class VQAutoencoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.encoder = nn.Sequential(
            nn.Conv2d(1, h, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(h, h, 4, 2, 1), ResBlock(h), ResBlock(h), nn.SiLU(),
            nn.Conv2d(h, cfg.code_dim, 1),
        )
        self.quantizer = EMAQuantizer(size=cfg.codebook_size, dim=cfg.code_dim, decay=cfg.ema_decay,
                                      dead_threshold=cfg.dead_code_threshold)
        self.decoder = nn.Sequential(
            nn.Conv2d(cfg.code_dim, h, 3, padding=1), ResBlock(h), ResBlock(h), nn.SiLU(),
            nn.ConvTranspose2d(h, h, 4, 2, 1), nn.SiLU(),
            nn.ConvTranspose2d(h, 1, 4, 2, 1),
        )

    def codes(self, x: Tensor) -> Tensor:
        return self.quantizer.assign(self.encoder(x * 2 - 1))

    def decode_codes(self, codes: Tensor) -> Tensor:
        """N×7×7 indices -> pixel logits."""
        return self.decoder(self.quantizer.lookup(codes))

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        q, commit = self.quantizer(self.encoder(x * 2 - 1))
        # per-pixel means on both terms, so ``commitment`` has the paper's scale (β = 0.25)
        recon = F.binary_cross_entropy_with_logits(self.decoder(q), x)
        return recon + self.cfg.commitment * commit, {"recon_bce": recon.detach(), "commit": commit.detach()}


# ---------------------------------------------------------------- stage 2: the class-conditional prior
class PriorBlock(nn.Module):
    """Pre-norm causal self-attention + MLP (nanoGPT's block), with an optional key/value cache for sampling."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout)
        self.dropout = dropout

    def forward(self, x: Tensor, cache: list[Tensor] | None = None) -> Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(n, t, 3, PRIOR_HEADS, d // PRIOR_HEADS).permute(2, 0, 3, 1, 4)
        if cache is not None:
            # sampling: the new position attends to every earlier one, whose keys/values are kept
            if cache:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            cache[:] = [k, v]
        att = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None,
                                             dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(n, t, d)))
        return x + self.mlp(self.ln2(x))


class CodePrior(nn.Module):
    """Causal transformer over raster-ordered codes; the class embedding is the start token."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.length = GRID * GRID
        self.codebook_size = cfg.codebook_size
        self.class_emb = nn.Embedding(NUM_CLASSES, cfg.prior_dim)
        self.code_emb = nn.Embedding(cfg.codebook_size, cfg.prior_dim)
        self.pos = nn.Parameter(torch.randn(1, self.length, cfg.prior_dim) * 0.02)
        self.blocks = nn.ModuleList(PriorBlock(cfg.prior_dim, cfg.prior_dropout) for _ in range(cfg.prior_layers))
        self.head = nn.Sequential(nn.LayerNorm(cfg.prior_dim), nn.Linear(cfg.prior_dim, cfg.codebook_size))

    def logits(self, prefix: Tensor, y: Tensor) -> Tensor:
        """Codes N×t (t < 49) and labels N -> next-code logits for positions 0..t, N×(t+1)×K (no cache)."""
        h = torch.cat([self.class_emb(y)[:, None], self.code_emb(prefix)], 1)
        h = h + self.pos[:, :h.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.head(h)

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        # train_likelihood passes batches through to_float: int64 code grids arrive as exact floats N×1×7×7
        codes = x.round().long().flatten(1)
        logits = self.logits(codes[:, :-1], y)
        nll = F.cross_entropy(logits.reshape(-1, self.codebook_size), codes.reshape(-1))
        return nll, {"nll": nll.detach()}

    @torch.no_grad()
    def generate(self, y: Tensor, *, temperature: float) -> Tensor:
        """One code grid per label, N×7×7, sampled code by code (one new position per step, cached keys)."""
        caches: list[list[Tensor]] = [[] for _ in self.blocks]
        h = self.class_emb(y)[:, None] + self.pos[:, :1]
        codes = []
        for i in range(self.length):
            for block, cache in zip(self.blocks, caches):
                h = block(h, cache)
            probs = F.softmax(self.head(h[:, -1]) / temperature, -1)
            codes.append(torch.multinomial(probs, 1))
            h = self.code_emb(codes[-1]) + self.pos[:, i + 1:i + 2]
        return torch.cat(codes, 1).view(-1, GRID, GRID)


class VQVAENet(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.autoencoder = VQAutoencoder(cfg)
        self.prior = CodePrior(cfg)


class VQVAE(TorchGenerator):
    """VQ-VAE + class-conditional transformer prior; samples are decoded prior draws."""

    name = "vqvae"
    Config = VQVAEConfig

    def build(self) -> nn.Module:
        return VQVAENet(self.config)

    def fit(self, images: Tensor, labels: Tensor, *, progress: bool = False,
            on_epoch: EpochCallback | None = None, snapshots: Snapshots | None = None) -> dict[str, float]:
        """Train the autoencoder, then the prior on the training images' code grids (prior curves: ``prior_*``)."""
        cfg = self.config
        ae = train_likelihood(self.net.autoencoder, images, labels, epochs=cfg.epochs, batch_size=cfg.batch_size,
                              lr=cfg.lr, progress=progress, on_epoch=on_epoch, desc=self.name,
                              snapshots=snapshots.phase("autoencoder") if snapshots is not None else None)
        codes = self.encode(images)
        self.extra_metrics["codebook_perplexity"] = codebook_perplexity(codes, cfg.codebook_size)

        def prior_epoch(epoch: int, parts: dict[str, float]) -> None:
            on_epoch(epoch, {f"prior_{k}": v for k, v in parts.items()})

        prior = train_likelihood(self.net.prior, codes, labels, epochs=cfg.prior_epochs, batch_size=cfg.batch_size,
                                 lr=cfg.prior_lr, progress=progress, desc=f"{self.name} prior",
                                 on_epoch=prior_epoch if on_epoch is not None else None,
                                 snapshots=snapshots.phase("prior") if snapshots is not None else None)
        return {**ae, **{f"prior_{k}": v for k, v in prior.items()}}

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """uint8 images -> int64 code grids N×7×7 on the device."""
        self.net.eval()
        return torch.cat([self.net.autoencoder.codes(to_float(images[i:i + 1000].to(self.device)))
                          for i in range(0, len(images), 1000)])

    @torch.no_grad()
    def sample(self, labels: Tensor) -> Tensor:
        labels = labels.to(self.device)
        codes = self.net.prior.generate(labels, temperature=self.config.temperature)
        return torch.sigmoid(self.net.autoencoder.decode_codes(codes))


def codebook_perplexity(codes: Tensor, size: int) -> float:
    """exp(entropy) of the code histogram: the effective number of codes in use (1 .. size)."""
    p = torch.bincount(codes.flatten(), minlength=size).float()
    p = p[p > 0] / p.sum()
    return float(torch.exp(-(p * p.log()).sum()))
