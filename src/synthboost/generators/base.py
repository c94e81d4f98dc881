"""The Generator face every family implements, and the plumbing ``TorchGenerator`` gives every family.

A family names a ``Config``, builds its network in ``build()`` and defines ``loss(x, y)`` or overrides ``fit``;
checkpoints carry the family name, config and weights, so ``from_state_dict`` needs nothing else.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..config import as_dict, build
from ..data import Split
from ..snapshots import Snapshots
from ..training import native_bf16
from ..training import EpochCallback, pick_device, train_likelihood

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class FitInputs:
    """What a family's ``fit`` takes besides the labelled images (``kwargs``), and the run tags that say where from."""

    kwargs: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class AuxModels(Protocol):
    """Auxiliary models a family may train on, each trained once and cached by the caller.

    The caller keeps them as MLflow runs, so that ``generators/`` never imports ``tracking``."""

    def clip(self, profile: str, *, split: Split | None = None) -> tuple[dict, str]:
        """(state, run id) of the CLIP of ``profile`` on ``split``'s images (None: on the official train set)."""
        ...


@runtime_checkable
class Generator(Protocol):
    name: str

    def fit_inputs(self, split: Split, *, seed: int, models: AuxModels | None) -> FitInputs: ...

    def fit(self, images: Tensor, labels: Tensor, *, progress: bool = False,
            on_epoch: EpochCallback | None = None, snapshots: Snapshots | None = None) -> dict[str, float]: ...

    def sample(self, labels: Tensor) -> Tensor: ...

    def state_dict(self) -> dict: ...

    @classmethod
    def from_state_dict(cls, state: dict) -> Generator: ...


def pick_amp(device: torch.device, mode: str = "auto") -> torch.dtype | None:
    """Autocast dtype for ``mode`` (auto | off | bf16 | fp16); auto = bf16 on CUDA (fp16 where bf16 is missing), none on CPU."""
    if mode == "off":
        return None
    if mode in ("bf16", "fp16"):
        return torch.bfloat16 if mode == "bf16" else torch.float16
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 autocast is emulated, slow."""
    return native_bf16(torch.device("cpu"))


def pick_sampling_amp(device: torch.device, mode: str = "auto", *, train_mode: str = "auto") -> torch.dtype | None:
    """Autocast dtype for sampling: auto = training's choice on CUDA, bf16 on a CPU with native bf16, else fp32.

    On such a CPU diffusion sampling took half the time for the same FID and label consistency (bench/generators.py)."""
    if mode != "auto":
        return pick_amp(device, mode)
    if device.type == "cuda":
        return pick_amp(device, train_mode)
    return torch.bfloat16 if device.type == "cpu" and cpu_has_bf16() else None


class TorchGenerator(abc.ABC):
    """Shared plumbing: config, device, network, checkpoint format, the default (likelihood) ``fit``."""

    name: ClassVar[str]
    Config: ClassVar[type]
    #: True when sampling is exemplar-based (encode a real image of the class, perturb, decode)
    exemplar_sampling: ClassVar[bool] = False
    #: True when a sample costs a whole reverse chain (diffusion): quality metrics then draw fewer samples
    slow_sampling: ClassVar[bool] = False
    #: bump when training behaviour changes: part of the generator key, so older checkpoints are not reused
    code_version: ClassVar[int] = 1
    #: runs of code versions up to this one used labelled images beyond their cell's without a tag saying so
    external_data_until: ClassVar[int] = 0

    def __init__(self, config=None, *, device: torch.device | str | None = None):
        self.config = config if config is not None else build(self.Config)
        self.device = torch.device(device) if device is not None else pick_device()
        self.net: nn.Module = self.build().to(self.device)
        self.extra_metrics: dict[str, float] = {}  # family-specific gen/* metrics (e.g. codebook perplexity)

    # -- to implement -------------------------------------------------------------------------------------
    @abc.abstractmethod
    def build(self) -> nn.Module:
        """The family's network (moved to the device by ``__init__``)."""

    @abc.abstractmethod
    def sample(self, labels: Tensor) -> Tensor:
        """One image per requested label: float [0,1] or uint8, N×1×28×28, on the device."""

    def precisions(self) -> dict[str, str]:
        """What training and sampling compute in on this device (``amp`` resolved); fp32 for both by default.

        Runs record it, since ``auto`` means different things on different machines."""
        return {"training": "fp32", "sampling": "fp32"}

    # -- training ----------------------------------------------------------------------------------------
    @classmethod
    def external_data(cls, config) -> str | None:
        """What a generator of ``config`` learns from beyond its run's real images, in a few words (None: nothing)."""
        return None

    @classmethod
    def unlabeled_data(cls, config) -> int:
        """How many unlabelled official-train images outside its cell a generator of ``config`` learns from (0: none).

        Such runs are paired with ``pseudo-label`` on the same images, never with ``none``."""
        return 0

    def fit_inputs(self, split: Split, *, seed: int, models: AuxModels | None) -> FitInputs:
        """The keyword arguments ``fit`` needs beyond ``split``'s images (a pool, a cached CLIP, …) and their tags.

        With ``models`` None a family trains what it needs inside ``fit``."""
        return FitInputs()

    def fit(self, images: Tensor, labels: Tensor, *, progress: bool = False,
            on_epoch: EpochCallback | None = None, snapshots: Snapshots | None = None) -> dict[str, float]:
        """The likelihood loop over ``self.net.loss``; ``snapshots`` resumes a killed training from its last epoch."""
        cfg = self.config
        return train_likelihood(
            self.net, images, labels,
            epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
            progress=progress, on_epoch=on_epoch, desc=self.name,
            after_fit=self.after_fit, snapshots=snapshots,
        )

    def after_fit(self, images: Tensor, labels: Tensor) -> None:
        """Hook run once after training with the (device) training data, e.g. to store exemplar latents."""

    # -- checkpoints ------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        """Tensors/values besides the network weights that sampling needs (e.g. exemplar latents)."""
        return {}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        """Restore what ``extra_state`` saved."""

    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "family": self.name,
            "config": as_dict(self.config),
            "weights": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "extra": {k: (v.detach().cpu() if torch.is_tensor(v) else v) for k, v in self.extra_state().items()},
            "metrics": dict(self.extra_metrics),
        }

    @classmethod
    def from_state_dict(cls, state: dict, *, device: torch.device | str | None = None) -> TorchGenerator:
        if state.get("family") != cls.name:
            raise ValueError(f"checkpoint is for family {state.get('family')!r}, not {cls.name!r}")
        gen = cls(build(cls.Config, state["config"], prefix="gen"), device=device)
        gen.net.load_state_dict(state["weights"])
        gen.net.eval()  # a loaded checkpoint is for sampling: no dropout, BatchNorm on running stats
        gen.load_extra_state({k: (v.to(gen.device) if torch.is_tensor(v) else v)
                              for k, v in state.get("extra", {}).items()})
        gen.extra_metrics = dict(state.get("metrics", {}))
        return gen

    @torch.no_grad()
    def sample_batched(self, labels: Tensor, *, batch_size: int = 500) -> Tensor:
        """``sample`` in chunks (bounded memory), returned as uint8 N×1×28×28 on the CPU."""
        from ..data import to_uint8

        self.net.eval()
        out = [to_uint8(self.sample(labels[i:i + batch_size].to(self.device))).cpu()
               for i in range(0, len(labels), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, 1, 28, 28, dtype=torch.uint8)


# ---------------------------------------------------------------- shared helpers
def make_ema(model: nn.Module, decay: float, *, warmup: bool = False) -> AveragedModel:
    """An EMA of ``model``'s weights and buffers; ``warmup`` ramps the decay as min(decay, (1 + n) / (10 + n)).

    So a short run is not dominated by its initial weights (as diffusers' EMAModel does)."""
    if not warmup:
        return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    @torch.no_grad()
    def ramped(ema_params, params, num_averaged):
        n = int(num_averaged)
        get_ema_multi_avg_fn(min(decay, (1 + n) / (10 + n)))(ema_params, params, num_averaged)

    return AveragedModel(model, multi_avg_fn=ramped, use_buffers=True)


def epochs_with_floor(*, epochs: int, min_steps: int, n: int, batch_size: int) -> int:
    """``epochs``, raised until a loop over ``n`` images makes at least ``min_steps`` steps.

    Heavy models need a number of steps more than a number of passes."""
    per_epoch = max(1, n // max(1, min(batch_size, n)))
    return max(epochs, math.ceil(min_steps / per_epoch))


# ---------------------------------------------------------------- latent exemplar sampling (VAE-style)
def exemplar_labels_index(bank_labels: Tensor, labels: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """For each requested label, the index of a random bank entry with that label."""
    out = torch.empty(len(labels), dtype=torch.long, device=bank_labels.device)
    for k in labels.unique().tolist():
        pos = torch.nonzero(bank_labels == k).flatten()
        if len(pos) == 0:
            raise ValueError(f"no exemplar of class {k} in the checkpoint")
        want = labels == k
        pick = torch.randint(len(pos), (int(want.sum()),), device=bank_labels.device, generator=generator)
        out[want.to(out.device)] = pos[pick]
    return out
