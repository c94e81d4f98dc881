"""The Generator face every family implements, and the plumbing ``TorchGenerator`` gives every family.

A family subclasses ``TorchGenerator``: it names a ``Config`` (a ``synthboost.config.config`` dataclass with
``profiles`` and ``tunables``), builds its network in ``build()``, and either defines ``loss(x, y)`` (the shared
likelihood loop, ``synthboost.training.train_likelihood``, trains it) or overrides ``fit`` to call another shared
loop (e.g. the adversarial one).  A family whose ``fit`` takes more than the labelled training images says what in
``fit_inputs`` (the pipeline passes it on without knowing the family).  Checkpoints carry the family name, the
config and the weights, so ``from_state_dict`` needs nothing else.
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
    """What a family's ``fit`` takes besides the labelled training images (``kwargs``), and the run tags that say
    where those inputs came from (``tags``, e.g. the run that holds a cached CLIP)."""

    kwargs: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class AuxModels(Protocol):
    """Auxiliary models a family may train on, each trained once and cached by the caller (the pipeline keeps them
    as MLflow runs of their own, so that ``generators/`` never imports ``tracking``)."""

    def clip(self, profile: str, *, split: Split | None = None) -> tuple[dict, str]:
        """The project's CLIP of ``profile`` trained on ``split``'s training images only (None: the full CLIP on
        the official train set): its state (``clip_model.load_clip``) and the id of the run holding it."""
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
    """Autocast dtype for sampling: auto = training's choice on CUDA, bf16 on a CPU with native bf16 (diffusion
    sampling there took half the time for the same FID and label consistency; bench/generators.py), else fp32;
    off | bf16 | fp16 as ``pick_amp``."""
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
    #: bump when the family's training behaviour changes (network, loss, loop): it is part of the generator key,
    #: so checkpoints trained by the older code are no longer reused
    code_version: ClassVar[int] = 1
    #: runs of code versions up to this one learned from labelled images beyond their cell's (before the family
    #: was fixed, e.g. clip's CLIP on the official 60k) though they carry no tag saying so: the report sets them apart
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
        """What its training and its sampling compute in on this device (``amp`` settings resolved, as
        ``training.precision_name``): runs record it, since ``auto`` means different things on different
        machines.  Default: fp32 for both (families without an ``amp`` knob)."""
        return {"training": "fp32", "sampling": "fp32"}

    # -- training ----------------------------------------------------------------------------------------
    @classmethod
    def external_data(cls, config) -> str | None:
        """What a generator of ``config`` learns from beyond its run's real training images (e.g. a CLIP trained
        on more labelled data), in a few words; None when nothing.  Such runs are tagged and reported apart."""
        return None

    @classmethod
    def unlabeled_data(cls, config) -> int:
        """How many unlabelled images of the official train set, outside its cell, a generator of ``config`` learns
        from (``data.unlabeled_pool``); 0 when none.  Such runs are tagged and paired with a baseline that learns
        from the same images (``pseudo-label``), never with ``none``."""
        return 0

    def fit_inputs(self, split: Split, *, seed: int, models: AuxModels | None) -> FitInputs:
        """The keyword arguments ``fit`` needs beyond ``split``'s training images and labels (an unlabelled pool,
        a cached CLIP, …) and the run tags that record them.  ``models`` provides cached auxiliary models; with
        None a family trains what it needs inside ``fit``.  Default: nothing."""
        return FitInputs()

    def fit(self, images: Tensor, labels: Tensor, *, progress: bool = False,
            on_epoch: EpochCallback | None = None, snapshots: Snapshots | None = None) -> dict[str, float]:
        """Default: the likelihood loop over ``self.net.loss`` with the config's epochs, batch size and lr;
        ``snapshots`` lets a killed training go on from its last epoch snapshot (``synthboost.snapshots``)."""
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
    """An exponential moving average of ``model``'s weights (buffers included), from torch's own utility.

    ``warmup`` ramps the decay as min(decay, (1 + n) / (10 + n)) over the n updates so far (as diffusers'
    EMAModel does), so that a short run — few steps on a small regime — is not dominated by its initial weights.
    """
    if not warmup:
        return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    @torch.no_grad()
    def ramped(ema_params, params, num_averaged):
        n = int(num_averaged)
        get_ema_multi_avg_fn(min(decay, (1 + n) / (10 + n)))(ema_params, params, num_averaged)

    return AveragedModel(model, multi_avg_fn=ramped, use_buffers=True)


def epochs_with_floor(*, epochs: int, min_steps: int, n: int, batch_size: int) -> int:
    """``epochs``, raised until an epoch loop over ``n`` images in batches (``training.batches``, drop_last) makes
    at least ``min_steps`` steps: heavy models need a number of steps more than a number of passes."""
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
