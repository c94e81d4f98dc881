"""Classifiers behind one face: ``fit(x, y, *, sample_weight, val, on_epoch)`` and ``predict_proba(x)``.

* ``cnn``  — a small BatchNorm CNN in PyTorch.  The whole training set lives on the device as one uint8
  tensor and batches are randperm slices (airbench style), so there is no DataLoader and no per-batch
  Python beyond the step itself.  Per-sample weights let synthetic images count less.
* ``cart`` — scikit-learn's DecisionTreeClassifier on raw pixels.
* ``svm``  — scikit-learn's LinearSVC on raw pixels; ``predict_proba`` is a softmax of its margins
  (a ranking score, not a calibrated probability).

Inputs are uint8 N×1×28×28 (or N×28×28) tensors; labels int64.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import pydantic
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import Choice, FloatRange, IntRange, Tunable, build, config
from .data import NUM_CLASSES, to_float
from .errors import UserError
from .metrics import balanced_accuracy

EpochHook = Callable[[int, dict[str, float]], None]


# ---------------------------------------------------------------- configs
@config
class CNNConfig:
    epochs: int = pydantic.Field(default=20, ge=1, le=500)
    batch_size: int = pydantic.Field(default=128, ge=8, le=8192)
    lr: float = pydantic.Field(default=2e-3, gt=0.0, le=1.0)
    weight_decay: float = pydantic.Field(default=5e-4, ge=0.0, le=1.0)
    width: int = pydantic.Field(default=32, ge=8, le=256)
    dropout: float = pydantic.Field(default=0.25, ge=0.0, lt=1.0)
    label_smoothing: float = pydantic.Field(default=0.0, ge=0.0, lt=1.0)
    eval_every: int = pydantic.Field(default=1, ge=1)  # validation (curves, pruning) every k epochs

    profiles: ClassVar[dict] = {
        "smoke": {"epochs": 2},
        "quick": {"epochs": 20},
        "paper": {"epochs": 40},
    }
    tunables: ClassVar[dict[str, Tunable]] = {
        "lr": FloatRange(3e-4, 1e-2, log=True),
        "weight_decay": FloatRange(1e-5, 1e-2, log=True),
        "dropout": FloatRange(0.0, 0.5),
        "label_smoothing": FloatRange(0.0, 0.2),
    }


@config
class CARTConfig:
    max_depth: int | None = pydantic.Field(default=None, ge=1, le=200)
    min_samples_leaf: int = pydantic.Field(default=1, ge=1)
    profiles: ClassVar[dict] = {}
    tunables: ClassVar[dict[str, Tunable]] = {
        "max_depth": IntRange(4, 40),
        "min_samples_leaf": IntRange(1, 20, log=True),
    }


@config
class SVMConfig:
    C: float = pydantic.Field(default=0.01, gt=0.0, le=1000.0)
    max_iter: int = pydantic.Field(default=2000, ge=10)
    profiles: ClassVar[dict] = {"smoke": {"max_iter": 200}}
    tunables: ClassVar[dict[str, Tunable]] = {"C": FloatRange(1e-4, 1.0, log=True)}


# ---------------------------------------------------------------- the CNN
class SmallCNN(nn.Module):
    """Three conv-BN-ReLU-maxpool blocks (28 -> 14 -> 7 -> 3), a 128-d feature layer, a linear head."""

    feature_dim = 128

    def __init__(self, *, width: int = 32, dropout: float = 0.25, num_classes: int = NUM_CLASSES):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True), nn.MaxPool2d(2))

        self.body = nn.Sequential(block(1, width), block(width, 2 * width), block(2 * width, 4 * width), nn.Flatten())
        self.features = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * width * 9, self.feature_dim),
                                      nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.feature_dim, num_classes))

    def embed(self, x: Tensor) -> Tensor:
        return self.features(self.body((x - 0.286) / 0.353))  # Fashion-MNIST pixel mean / std

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.embed(x))


class CNNClassifier:
    name = "cnn"
    Config = CNNConfig

    def __init__(self, config: CNNConfig | None = None, *, seed: int = 0, device=None):
        self.config = config or build(CNNConfig)
        self.seed = seed
        self.device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(seed)
        # channels_last lets oneDNN/cuDNN pick their fastest conv kernels; the maths is unchanged
        self.net = SmallCNN(width=self.config.width, dropout=self.config.dropout).to(
            self.device, memory_format=torch.channels_last)

    def fit(self, x: Tensor, y: Tensor, *, sample_weight: Tensor | None = None,
            val: tuple[Tensor, Tensor] | None = None, on_epoch: EpochHook | None = None,
            progress: bool = False) -> dict[str, float]:
        from .generators.base import batches, progress_bar

        cfg = self.config
        torch.manual_seed(self.seed)
        dev = self.device
        x_all = (x if x.dim() == 4 else x.unsqueeze(1)).to(dev)
        y_all = y.to(dev)
        w_all = (sample_weight if sample_weight is not None else torch.ones(len(y))).float().to(dev)
        n = len(y_all)
        bs = min(cfg.batch_size, n)
        steps_per_epoch = max(1, n // bs)
        opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        # one-cycle: warm up, then anneal — reaches a good optimum in few epochs (>= 10 steps: its phases
        # need distinct boundaries)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(cfg.epochs * steps_per_epoch, 10),
                                                    pct_start=0.25)
        last: dict[str, float] = {}
        with progress_bar(cfg.epochs, desc="cnn", enabled=progress) as bar:
            for epoch in range(cfg.epochs):
                self.net.train()
                total, seen = 0.0, 0
                for idx in batches(n, bs, device=dev):
                    logits = self.net(to_float(x_all[idx]))
                    loss_each = F.cross_entropy(logits, y_all[idx], reduction="none",
                                                label_smoothing=cfg.label_smoothing)
                    w = w_all[idx]
                    loss = (loss_each * w).sum() / w.sum()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    total += float(loss.detach()) * len(idx)
                    seen += len(idx)
                last = {"loss": total / max(seen, 1)}
                if val is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
                    pred = self.predict(val[0])
                    last["val_balanced_accuracy"] = balanced_accuracy(val[1].numpy(), pred)
                if on_epoch is not None:
                    on_epoch(epoch, last)
                bar.set_postfix(last)
                bar.update(1)
        self.net.eval()
        return last

    @torch.no_grad()
    def predict_proba(self, x: Tensor, *, batch_size: int = 2000) -> np.ndarray:
        self.net.eval()
        x = x if x.dim() == 4 else x.unsqueeze(1)
        out = [F.softmax(self.net(to_float(x[i:i + batch_size].to(self.device))), 1).cpu()
               for i in range(0, len(x), batch_size)]
        return torch.cat(out).numpy()

    def predict(self, x: Tensor) -> np.ndarray:
        return self.predict_proba(x).argmax(1)

    def state_dict(self) -> dict:
        return {"config": copy.deepcopy(self.config.__dict__), "weights": self.net.state_dict()}


# ---------------------------------------------------------------- scikit-learn models
class _SklearnClassifier:
    def __init__(self, config=None, *, seed: int = 0, device=None):
        self.config = config or build(self.Config)
        self.seed = seed
        self.model = self.make()

    @staticmethod
    def _flat(x: Tensor) -> np.ndarray:
        return (x.reshape(len(x), -1).float() / 255.0).numpy()

    def fit(self, x: Tensor, y: Tensor, *, sample_weight: Tensor | None = None, val=None,
            on_epoch: EpochHook | None = None, progress: bool = False) -> dict[str, float]:
        sw = sample_weight.numpy() if sample_weight is not None else None
        self.model.fit(self._flat(x), y.numpy(), sample_weight=sw)
        last = {}
        if val is not None:
            last["val_balanced_accuracy"] = balanced_accuracy(val[1].numpy(), self.predict(val[0]))
        if on_epoch is not None:
            on_epoch(0, last)
        return last

    def predict(self, x: Tensor) -> np.ndarray:
        return self.model.predict(self._flat(x))

    def predict_proba(self, x: Tensor) -> np.ndarray:
        return self._proba(self._flat(x))


class CARTClassifier(_SklearnClassifier):
    name = "cart"
    Config = CARTConfig

    def make(self):
        from sklearn.tree import DecisionTreeClassifier

        return DecisionTreeClassifier(max_depth=self.config.max_depth,
                                      min_samples_leaf=self.config.min_samples_leaf, random_state=self.seed)

    def _proba(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), NUM_CLASSES))
        out[:, self.model.classes_] = self.model.predict_proba(x)
        return out


class SVMClassifier(_SklearnClassifier):
    name = "svm"
    Config = SVMConfig

    def make(self):
        from sklearn.svm import LinearSVC

        return LinearSVC(C=self.config.C, max_iter=self.config.max_iter, random_state=self.seed)

    def _proba(self, x: np.ndarray) -> np.ndarray:
        margins = self.model.decision_function(x)
        e = np.exp(margins - margins.max(1, keepdims=True))
        out = np.zeros((len(x), NUM_CLASSES))
        out[:, self.model.classes_] = e / e.sum(1, keepdims=True)
        return out


CLASSIFIERS: dict[str, type] = {"cnn": CNNClassifier, "cart": CARTClassifier, "svm": SVMClassifier}


def get(name: str) -> type:
    if name not in CLASSIFIERS:
        raise UserError(f"unknown classifier {name!r} (choose from: {', '.join(CLASSIFIERS)})")
    return CLASSIFIERS[name]
