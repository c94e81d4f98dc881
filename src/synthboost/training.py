"""Training plumbing shared by generators, classifiers and the project's CLIP (no model of its own).

The whole dataset lives on the device as one tensor and an epoch is randperm index slices, so there is no DataLoader.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from .data import to_float
from .errors import GeneratorDiverged
from .snapshots import Snapshots

#: ``on_epoch(epoch, values)``: a training loop's per-epoch losses (and scores) for curves, pruning, timing
EpochCallback = Callable[[int, dict[str, float]], None]


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device, amp: torch.dtype | None, *, cache: bool = True):
    """``torch.autocast`` in ``amp``, or nothing when ``amp`` is None; ``cache=False`` inside a CUDA graph."""
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp, cache_enabled=cache)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: a CUDA device that supports it, or a CPU with AVX512-BF16 or AMX.

    Elsewhere bf16 is emulated and slower than fp32 (0.53× for the classifier CNN)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return device.type == "cpu" and any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an ``amp`` setting: off -> None (fp32), bf16 -> bf16, auto -> bf16 where native."""
    if mode == "off":
        return None
    if mode == "bf16" or (mode == "auto" and native_bf16(device)):
        return torch.bfloat16
    return None


def precision_name(amp: torch.dtype | None) -> str:
    """How a run records the precision it computed in: ``fp32`` (no autocast), ``bf16`` or ``fp16``."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp]


def optimizer_options(impl: str) -> dict[str, bool]:
    """Keyword options of a torch optimizer for ``impl``: foreach (bitwise the per-parameter loop), fused, or loop."""
    return {"foreach": {"foreach": True}, "fused": {"fused": True}, "loop": {"foreach": False}}[impl]


def device_optimizer(device: torch.device) -> str:
    """A generator loop's ``optimizer_options`` on ``device``: fused on CUDA, foreach (bitwise the loop) elsewhere."""
    return "fused" if device.type == "cuda" else "foreach"


def check_finite(parts: dict[str, float], *, where: str) -> None:
    bad = {k: v for k, v in parts.items() if not math.isfinite(v)}
    if bad:
        raise GeneratorDiverged(f"{where}: non-finite loss {bad}")


def batches(n: int, batch_size: int, *, device: torch.device, drop_last: bool = True):
    """randperm index slices over a dataset held as one tensor (no DataLoader)."""
    perm = torch.randperm(n, device=device)
    stop = n - (n % batch_size) if drop_last and n >= batch_size else n
    for i in range(0, stop, batch_size):
        yield perm[i:i + batch_size]


def progress_bar(total: int, *, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    # disable=None hides the bar when stderr is not a TTY (CI, logs)
    return tqdm(total=total, desc=desc, disable=None if enabled else True, leave=False)


def train_likelihood(
    net: nn.Module, images: Tensor, labels: Tensor, *,
    epochs: int, batch_size: int, lr: float, weight_decay: float = 0.0,
    grad_clip: float | None = 1.0, ema: AveragedModel | None = None,
    progress: bool = False, on_epoch: EpochCallback | None = None, desc: str = "train",
    after_fit: Callable[[Tensor, Tensor], None] | None = None, amp: torch.dtype | None = None,
    snapshots: Snapshots | None = None,
) -> dict[str, float]:
    """Train a network whose ``loss(x, y) -> (loss, parts)`` is its own objective; returns the last epoch's means."""
    device = next(net.parameters()).device
    x_all = images.to(device)
    y_all = labels.to(device)
    # foreach: bitwise the per-parameter loop's updates (tests/test_speed_levers.py), fewer kernel launches; on
    # CUDA fused (one kernel a step: rounds differently, which a GPU run never reproduced bitwise anyway)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay,
                           **optimizer_options(device_optimizer(device)))
    # fp16 autocast needs loss scaling against gradient underflow; for bf16/fp32 the scaler is a no-op
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    n = len(x_all)
    bs = min(batch_size, n)
    sync_free = device.type == "cuda"  # there a non-finite loss is caught once an epoch, not with a sync a step
    state = ({"net": net, "opt": opt} | ({"scaler": scaler} if scaler.is_enabled() else {})
             | ({"ema": ema} if ema is not None else {}))
    start, means = 0, {}
    if snapshots is not None:
        start, means, _ = snapshots.restore(state, on_epoch=on_epoch)
    with progress_bar(epochs, desc=desc, enabled=progress) as bar:
        bar.update(min(start, epochs))
        for epoch in range(start, epochs):
            net.train()
            sums: dict[str, Tensor | float] = {}
            steps = 0
            for idx in batches(n, bs, device=device):
                x = to_float(x_all[idx])
                with autocast(device, amp):
                    loss, parts = net.loss(x, y_all[idx])
                if not sync_free and not torch.isfinite(loss):
                    raise GeneratorDiverged(f"{desc}: loss became {loss.item()} at epoch {epoch}")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if grad_clip:
                    scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
                scaler.step(opt)
                scaler.update()
                if ema is not None:
                    ema.update_parameters(net)
                # summed in float64 as Python summed the floats: the same means, without a sync per step
                for k, v in {"loss": loss, **parts}.items():
                    sums[k] = sums.get(k, 0.0) + (v.detach().double() if torch.is_tensor(v) else float(v))
                steps += 1
            if sync_free and not torch.isfinite(torch.as_tensor(sums.get("loss", 0.0))):
                raise GeneratorDiverged(f"{desc}: loss became {float(sums['loss'])} at epoch {epoch}")
            means = {k: float(v) / max(steps, 1) for k, v in sums.items()}
            check_finite(means, where=f"{desc} epoch {epoch}")
            if snapshots is not None:  # before on_epoch: what it does (log, prune, a fault) finds the epoch kept
                snapshots.end_epoch(epoch, means, state, last=epoch == epochs - 1)
            if on_epoch is not None:
                on_epoch(epoch, means)
            bar.set_postfix(loss=f"{means.get('loss', float('nan')):.4f}")
            bar.update(1)
    net.eval()
    if after_fit is not None:
        with torch.no_grad():
            after_fit(x_all, y_all)
    return means
