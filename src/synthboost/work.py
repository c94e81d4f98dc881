"""The machine a run ran on and how much work a cell does: what every run records (``machine.*`` tags, ``work/*``
metrics) so that ``cost.py`` prices cells only from runs of the same kind of machine."""

from __future__ import annotations

import functools
import platform
from pathlib import Path
from typing import Any


# ---------------------------------------------------------------- the machine
@functools.cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


@functools.cache
def cpu_kind() -> str:
    """The CPU's model name with torch's vector unit and native bf16: machines of one name ("AMD EPYC") differ
    there, and so do their speeds."""
    import torch

    from .training import native_bf16

    features = torch.backends.cpu.get_cpu_capability() + ("+BF16" if native_bf16(torch.device("cpu")) else "")
    return f"{cpu_model()} [{features}]"


def machine() -> dict[str, Any]:
    import torch

    return {"cpu": cpu_kind(), "threads": torch.get_num_threads()}


def machine_tags() -> dict[str, Any]:
    """Tags every run carries, so its timings are used only on the same kind of machine."""
    m = machine()
    return {"machine.cpu": m["cpu"], "machine.threads": m["threads"]}


def machine_key(m: dict[str, Any]) -> str:
    return f"{m['cpu']} | {m['threads']} thread{'s' if m['threads'] != 1 else ''}"


# ---------------------------------------------------------------- how much work a cell does
def generator_images(gen_cfg, n: int) -> float:
    """Images a generator's training passes over on ``n`` training images: epochs (raised to its step floor) ×
    an epoch's images (drop_last batches), plus its unlabelled pool; its cost is proportional to this."""
    from .generators.base import epochs_with_floor

    batch = max(1, min(getattr(gen_cfg, "batch_size", n), n))
    floor = getattr(gen_cfg, "min_steps", 0) or getattr(gen_cfg, "min_g_steps", 0) * getattr(gen_cfg, "n_critic", 1)
    epochs = epochs_with_floor(epochs=getattr(gen_cfg, "epochs", 1), min_steps=floor, n=n, batch_size=batch)
    per_epoch = (n // batch) * batch + getattr(gen_cfg, "unlabeled_size", 0)
    return float(epochs * per_epoch)


def classifier_work(clf_cfg, *, n_budget: int, n_total: int) -> float:
    """A CNN's optimizer steps (its budget: ``classifiers.step_budget`` over ``n_budget`` images); for the
    scikit-learn classifiers, the images they fit on."""
    from .classifiers import CNNConfig, step_budget

    if isinstance(clf_cfg, CNNConfig):
        return float(step_budget(clf_cfg, min(n_budget, n_total))[0])
    return float(n_total)
