"""Classifiers behind one face: ``fit(x, y, *, sample_weight, val, on_epoch, budget_n)`` and ``predict_proba(x)``.

``cnn`` trains on the whole set as one device tensor (airbench style) for a step budget set by the real images, so
a mix trains exactly as long as its real-only baseline; ``cart`` and ``svm`` are scikit-learn models on raw pixels.
"""

from __future__ import annotations

import copy
import functools
from typing import ClassVar, Literal

import numpy as np
import pydantic
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import PROFILES, Choice, FloatRange, IntRange, Tunable, build, config
from .data import NUM_CLASSES, to_float
from .errors import UserError
from .metrics import balanced_accuracy
from .training import (EpochCallback, autocast, batches, optimizer_options, precision_name, progress_bar,
                       resolve_amp)


# ---------------------------------------------------------------- configs
ClassWeight = Literal["none", "balanced"]
#: the strong real-only recipe (baseline ``none-strong``): shifts and class-keeping flips, inverse-frequency
#: loss weights; the same network and optimizer budget as the plain recipe, so a gain is the recipe's alone
_STRONG_CNN = {"augment": "shift_flip", "class_weight": "balanced"}
#: ``quick``'s step floor: twice high/1,000's 520 steps, where the strong recipe was still gaining at 2× and had
#: stopped at 4× (docs/results.md, *Does the budget converge?*); it binds only below 2,000 images
QUICK_MIN_STEPS = 1040
#: ``eval_every=0`` without early stopping: validation passes a run (each syncs the device)
EVALS_PER_RUN = 8


@config
class CNNConfig:
    # passes over the cell's *real* images, so every run of a cell takes the same steps (``recipe=seed``: mixed set)
    epochs: int = pydantic.Field(default=40, ge=1, le=500)
    # a step floor, else a small cell stops an augmented recipe short of converging; one that does not bind
    # changes no key (``floor_binds``)
    min_steps: int = pydantic.Field(default=0, ge=0, le=1_000_000)
    steps: int | None = pydantic.Field(default=None, ge=1)  # an explicit step budget instead of epochs
    recipe: Literal["fair", "seed"] = "fair"
    net: Literal["vgg", "small7", "small3", "seed"] = "vgg"  # see SmallCNN and SeedCNN below
    batch_size: int = pydantic.Field(default=64, ge=8, le=8192)
    lr: float = pydantic.Field(default=2e-3, gt=0.0, le=1.0)
    weight_decay: float = pydantic.Field(default=5e-4, ge=0.0, le=1.0)
    width: int = pydantic.Field(default=32, ge=8, le=256)
    dropout: float = pydantic.Field(default=0.3, ge=0.0, lt=1.0)
    label_smoothing: float = pydantic.Field(default=0.0, ge=0.0, lt=1.0)
    # validate every k epochs and after the last (0: ``eval_period``); without early stopping the weights do
    # not depend on it (tests/test_device_step.py), so keys ignore it there
    eval_every: int = pydantic.Field(default=0, ge=0)
    augment: Literal["none", "shift", "shift_flip", "shift_flip_erase"] = "none"  # see ``augment`` below
    shift: int = pydantic.Field(default=2, ge=1, le=4)  # the largest shift, in pixels
    flip_classes: Literal["mirror_safe", "all"] = "mirror_safe"  # which classes a flip may touch
    class_weight: ClassWeight = "none"  # balanced: loss weights n / (K·n_k), times the per-sample weights
    sampler: Literal["uniform", "class_balanced"] = "uniform"  # class_balanced: classes equally likely per draw
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    optimizer: Literal["adamw", "adam"] = "adamw"
    # patience in epochs on validation balanced accuracy, then restore the best weights (0 = off)
    early_stopping: int = pydantic.Field(default=0, ge=0, le=500)
    # speed levers (docs/performance.md), config values so a run logs what it used and a new default re-keys
    # cells; foreach is bitwise the per-parameter loop (tests/test_speed_levers.py), fused is not
    channels_last: bool = True
    compile: bool = False
    amp: Literal["off", "bf16", "auto"] = "off"
    optimizer_impl: Literal["foreach", "fused", "loop"] = "foreach"
    # CUDA only: the step as one captured graph + fused AdamW, fused AdamW alone, or eager (tags say what ran);
    # neutral in keys, since on a GPU it changes only rounding
    cuda_step: Literal["graph", "fused", "eager"] = "graph"
    #: values that train as runs from before these fields did (config.key_dict); ``precision`` is the logged one
    key_neutral: ClassVar[dict] = {"channels_last": True, "compile": False, "amp": "off", "optimizer_impl": "foreach",
                                   "min_steps": 0, "precision": "fp32", "cuda_step": "graph"}

    profiles: ClassVar[dict] = {
        "smoke": {"epochs": 2},
        "quick": {"epochs": 40, "min_steps": QUICK_MIN_STEPS},
        "paper": {"epochs": 80},
    }
    strong: ClassVar[dict] = {p: _STRONG_CNN for p in PROFILES}
    #: ``recipe=seed``: the seed study's classifier and budget, as published, for side-by-side comparisons
    recipes: ClassVar[dict] = {"seed": {"net": "seed", "epochs": 10, "min_steps": 0, "batch_size": 64, "lr": 1e-3,
                                        "weight_decay": 0.0, "schedule": "constant", "optimizer": "adam",
                                        "dropout": 0.25}}
    tunables: ClassVar[dict[str, Tunable]] = {
        "lr": FloatRange(3e-4, 1e-2, log=True),
        "weight_decay": FloatRange(1e-5, 1e-2, log=True),
        "dropout": FloatRange(0.0, 0.5),
        "label_smoothing": FloatRange(0.0, 0.2),
        "augment": Choice(("none", "shift", "shift_flip", "shift_flip_erase")),
        "shift": IntRange(1, 4),
        "class_weight": Choice(("none", "balanced")),
        "sampler": Choice(("uniform", "class_balanced")),
        "schedule": Choice(("onecycle", "cosine", "constant")),
    }


#: the CNN that *judges* samples (CAS, the mix filter) keeps its first-recorded network and budget, so a CAS or a
#: filter decision means the same in every run of the store
JUDGE_NET = {"net": "small3", "dropout": 0.25}
JUDGE_EPOCHS = {"smoke": 2, "quick": 20, "paper": 40}


def judge_config(profile: str, **values) -> CNNConfig:
    return build(CNNConfig, {**JUDGE_NET, "batch_size": 128, "epochs": JUDGE_EPOCHS[profile], **values}, prefix="clf")


@config
class CARTConfig:
    max_depth: int | None = pydantic.Field(default=None, ge=1, le=200)
    min_samples_leaf: int = pydantic.Field(default=1, ge=1)
    class_weight: ClassWeight = "none"
    profiles: ClassVar[dict] = {}
    strong: ClassVar[dict] = {p: {"class_weight": "balanced"} for p in PROFILES}
    tunables: ClassVar[dict[str, Tunable]] = {
        "max_depth": IntRange(4, 40),
        "min_samples_leaf": IntRange(1, 20, log=True),
        "class_weight": Choice(("none", "balanced")),
    }


@config
class SVMConfig:
    C: float = pydantic.Field(default=0.01, gt=0.0, le=1000.0)
    max_iter: int = pydantic.Field(default=2000, ge=10)
    class_weight: ClassWeight = "none"
    profiles: ClassVar[dict] = {"smoke": {"max_iter": 200}}
    strong: ClassVar[dict] = {p: {"class_weight": "balanced"} for p in PROFILES}
    tunables: ClassVar[dict[str, Tunable]] = {"C": FloatRange(1e-4, 1.0, log=True),
                                              "class_weight": Choice(("none", "balanced"))}


# ---------------------------------------------------------------- batched, seeded training-data tricks
ERASE = 8  # side of the cutout square
#: classes whose mirror image is still of the class (from the *training* images; footwear faces one way, so a
#: flipped shoe is no class); tests/test_classifier_recipe.py re-derives it
MIRROR_SAFE = (0, 1, 2, 3, 4, 6, 8)
#: a class faces one way when at least this share of its images is closer to its mean image than to the mirror
ONE_WAY_SHARE = 0.9


def mirror_share(images: Tensor, labels: Tensor) -> list[float]:
    """Per class, the share of its images closer (squared pixel distance) to the class mean than to its mirror."""
    out = []
    for k in range(NUM_CLASSES):
        xi = images[labels == k].float()
        mean = xi.mean(0)
        out.append((((xi - mean) ** 2).flatten(1).sum(1) < ((xi - mean.flip(-1)) ** 2).flatten(1).sum(1))
                   .float().mean().item())
    return out


def mirror_safe_classes(images: Tensor, labels: Tensor, *, one_way: float = ONE_WAY_SHARE) -> tuple[int, ...]:
    """The classes a flip keeps: those whose images do not mostly prefer the unflipped mean (training images only)."""
    return tuple(k for k, share in enumerate(mirror_share(images, labels)) if share < one_way)


@functools.cache
def mirror_safe_lookup(device: torch.device) -> Tensor:
    """Per class, whether a flip may touch it: built once per device (a CUDA graph cannot copy from the host)."""
    return torch.isin(torch.arange(NUM_CLASSES, device=device), torch.tensor(MIRROR_SAFE, device=device))


def augment(x: Tensor, *, policy: str, generator: torch.Generator, labels: Tensor | None = None, shift: int = 2,
            flip_classes: str = "mirror_safe") -> Tensor:
    """A randomly augmented copy of the batch ``x``: shift, flip (mirror-safe classes), Cutout by ``policy``.

    Zero is the background, so padding and erasing add no new intensity."""
    if policy == "none":
        return x
    n, c, h, w = x.shape
    dev = x.device
    if policy in ("shift_flip", "shift_flip_erase"):
        flip = torch.rand(n, device=dev, generator=generator) < 0.5
        if flip_classes == "mirror_safe":
            if labels is None:
                raise ValueError("augment: flip_classes='mirror_safe' needs the labels")
            flip &= mirror_safe_lookup(dev)[labels]
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    # the shift: image i takes rows dy_i … dy_i+H-1 and columns dx_i … dx_i+W-1 of its padded copy
    padded = F.pad(x, (shift, shift, shift, shift))
    dy, dx = torch.randint(0, 2 * shift + 1, (2, n, 1), device=dev, generator=generator)
    rows = (dy + torch.arange(h, device=dev)).view(n, 1, h, 1).expand(n, c, h, w + 2 * shift)
    cols = (dx + torch.arange(w, device=dev)).view(n, 1, 1, w).expand(n, c, h, w)
    x = padded.gather(2, rows).gather(3, cols)
    if policy == "shift_flip_erase":
        top = torch.randint(0, h, (n, 1), device=dev, generator=generator) - ERASE // 2
        left = torch.randint(0, w, (n, 1), device=dev, generator=generator) - ERASE // 2
        ys, xs = torch.arange(h, device=dev), torch.arange(w, device=dev)
        in_rows = (ys >= top) & (ys < top + ERASE)  # N×H
        in_cols = (xs >= left) & (xs < left + ERASE)  # N×W
        x = x.masked_fill((in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1), 0)
    return x


def weighted_loss(loss_each: Tensor, weights: Tensor) -> Tensor:
    """Per-image losses times their weights, averaged over the batch's *images*.

    Not over Σw, which would undo the weights of a batch that happens to be all synthetic."""
    return (loss_each * weights).sum() / len(loss_each)


def balanced_class_weights(y: Tensor, num_classes: int = NUM_CLASSES) -> Tensor:
    """scikit-learn's "balanced" class weights n / (K·n_k) over the K classes present (absent ones get 0)."""
    counts = torch.bincount(y, minlength=num_classes).float()
    present = int((counts > 0).sum())
    return torch.where(counts > 0, len(y) / (present * counts.clamp(min=1)), torch.zeros_like(counts))


def class_balanced_indices(y: Tensor, n_draws: int, *, generator: torch.Generator) -> Tensor:
    """``n_draws`` indices drawn with replacement with probability ∝ 1/n_{y_i}: each class equally likely."""
    p = 1.0 / torch.bincount(y)[y].float()
    return torch.multinomial(p, n_draws, replacement=True, generator=generator)


# ---------------------------------------------------------------- the CNNs
def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """conv-BN-ReLU blocks (``net``: vgg, small7, small3), a 128-d feature layer and a linear head.

    ``small3`` is the quality metrics' feature extractor, kept so FID/KID stay comparable."""

    feature_dim = 128

    def __init__(self, *, width: int = 32, dropout: float = 0.25, num_classes: int = NUM_CLASSES,
                 net: str = "small3"):
        super().__init__()
        w, pool = width, nn.MaxPool2d(2)
        if net == "vgg":
            body, cout, side = [*_conv(1, w), *_conv(w, w), pool, *_conv(w, 2 * w), *_conv(2 * w, 2 * w), pool], 2 * w, 7
        elif net in ("small7", "small3"):
            body = [*_conv(1, w), pool, *_conv(w, 2 * w), pool, *_conv(2 * w, 4 * w)]
            body, cout, side = (body + [pool], 4 * w, 3) if net == "small3" else (body, 4 * w, 7)
        else:
            raise ValueError(f"SmallCNN: unknown net {net!r}")
        self.body = nn.Sequential(*body, nn.Flatten())
        self.features = nn.Sequential(nn.Dropout(dropout), nn.Linear(cout * side * side, self.feature_dim),
                                      nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.feature_dim, num_classes))

    def embed(self, x: Tensor) -> Tensor:
        return self.features(self.body((x - 0.286) / 0.353))  # Fashion-MNIST pixel mean / std

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.embed(x))


class SeedCNN(nn.Module):
    """The seed study's classifier: the classic Keras/PyTorch MNIST example network (no BatchNorm)."""

    def __init__(self, *, dropout: float = 0.25, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(inplace=True), nn.Conv2d(32, 64, 3),
                                 nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Dropout(dropout), nn.Flatten(),
                                 nn.Linear(64 * 12 * 12, 128), nn.ReLU(inplace=True), nn.Dropout(2 * dropout),
                                 nn.Linear(128, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # the seed fed raw [0, 1] pixels


def make_net(cfg: CNNConfig) -> nn.Module:
    if cfg.net == "seed":
        return SeedCNN(dropout=cfg.dropout)
    return SmallCNN(width=cfg.width, dropout=cfg.dropout, net=cfg.net)


def step_budget(cfg: CNNConfig, n_budget: int) -> tuple[int, int]:
    """(total steps, steps per epoch) over ``n_budget`` images: ``clf.steps``, else ``epochs`` but >= ``min_steps``."""
    per_epoch = max(1, n_budget // min(cfg.batch_size, n_budget))
    return (cfg.steps if cfg.steps is not None else max(cfg.epochs * per_epoch, cfg.min_steps)), per_epoch


def floor_binds(*, epochs: int, batch_size: int, min_steps: int, steps: int | None, n_budget: int) -> bool:
    """Whether ``min_steps`` raises the budget on ``n_budget`` real images (numbers: the report has no config)."""
    if not min_steps or steps is not None:
        return False
    return epochs * max(1, n_budget // min(batch_size, n_budget)) < min_steps


def eval_period(cfg: CNNConfig, epochs: int) -> int:
    """Validate every this many epochs: ``eval_every``; 0 = every epoch under early stopping, else ``EVALS_PER_RUN``."""
    if cfg.eval_every:
        return cfg.eval_every
    return 1 if cfg.early_stopping else max(1, -(-epochs // EVALS_PER_RUN))


def training_precision(cfg, device: torch.device | None = None) -> str:
    """What a classifier of ``cfg`` trains in on ``device``: the CNN's ``amp`` resolved, fp32 for scikit-learn."""
    if not isinstance(cfg, CNNConfig):
        return "fp32"
    dev = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return precision_name(resolve_amp(cfg.amp, dev))


class StepGraph:
    """``step()`` on static tensors, captured once as a CUDA graph, replayed per call; eager if capture is off or fails.

    ``capture=False`` lets the CPU tests run the same step."""

    WARMUP = 3  # eager calls before the capture: cuDNN's choices and the autograd buffers exist by then

    def __init__(self, step, *, generators: list[torch.Generator] = (), capture: bool = True):
        self.step, self.generators, self.capture = step, list(generators), capture
        self.calls, self.graph = 0, None
        self.stream = torch.cuda.Stream() if capture else None  # warm-up and capture on one side stream

    def __call__(self) -> None:
        if self.capture and self.graph is None:
            self._warm_or_capture()
        elif self.graph is not None:
            self.graph.replay()
        else:
            self.step()
        self.calls += 1

    def _warm_or_capture(self) -> None:
        import warnings

        self.stream.wait_stream(torch.cuda.current_stream())
        try:
            if self.calls < self.WARMUP:
                with torch.cuda.stream(self.stream):
                    self.step()
                return
            graph = torch.cuda.CUDAGraph()
            for gen in self.generators:  # their draws advance inside the graph, as the default generator's do
                graph.register_generator_state(gen)
            with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                self.step()
            self.graph = graph
        except Exception as err:  # noqa: BLE001 - a step that cannot be captured still trains, eagerly
            if self.calls < self.WARMUP:
                raise
            warnings.warn(f"CUDA graph capture failed, training eagerly: {type(err).__name__}: {err}", stacklevel=3)
            self.capture = False
        finally:
            torch.cuda.current_stream().wait_stream(self.stream)
        if self.graph is not None:
            self.graph.replay()  # the capture recorded the step without running it
        else:
            self.step()


class CNNClassifier:
    name = "cnn"
    Config = CNNConfig
    #: device types where ``cuda_step`` applies (a class value, so the CPU tests can run that path uncaptured)
    step_levers_on: ClassVar[tuple[str, ...]] = ("cuda",)
    #: bump when training behaviour changes: part of every cell's config key, so a grid re-runs its cells
    #: (version 1: the fixed step budgets of the fair protocol)
    code_version = 1

    def __init__(self, config: CNNConfig | None = None, *, seed: int = 0, device=None):
        self.config = config or build(CNNConfig)
        self.seed = seed
        self.device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(seed)
        fmt = torch.channels_last if self.config.channels_last else torch.contiguous_format
        self.net = make_net(self.config).to(self.device, memory_format=fmt)

    def loss_weights(self, y: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        """Per-sample loss weights: ``sample_weight`` (1 by default) times the class weight of each label."""
        w = (sample_weight if sample_weight is not None else torch.ones(len(y))).float().to(y.device)
        if self.config.class_weight == "balanced":
            w = w * balanced_class_weights(y).to(w.device)[y]
        return w

    def _schedule(self, opt, total_steps: int):
        cfg = self.config
        if cfg.schedule == "onecycle":
            # warm up, then anneal — reaches a good optimum in few epochs (>= 10 steps: its phases need
            # distinct boundaries)
            return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total_steps, 10),
                                                       pct_start=0.25)
        if cfg.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)

    def fit(self, x: Tensor, y: Tensor, *, sample_weight: Tensor | None = None,
            val: tuple[Tensor, Tensor] | None = None, on_epoch: EpochCallback | None = None,
            progress: bool = False, budget_n: int | None = None) -> dict[str, float]:
        """Train for a fixed step budget; an epoch is ⌊``budget_n`` / batch⌋ steps drawn from the whole (mixed) set.

        With ``budget_n`` = the real images, a mix of any size trains as many steps as its real-only baseline."""
        cfg = self.config
        torch.manual_seed(self.seed)
        dev = self.device
        # augmentation and the class-balanced sampler draw from their own stream, so switching them on leaves
        # the batch order and dropout draws of the plain recipe untouched
        rng = torch.Generator(device=dev).manual_seed(self.seed)
        x_all = (x if x.dim() == 4 else x.unsqueeze(1)).to(dev)
        y_all = y.to(dev)
        w_all = self.loss_weights(y_all, sample_weight)
        n = len(y_all)
        bs = min(cfg.batch_size, n)
        total_steps, steps_per_epoch = step_budget(cfg, min(budget_n or n, n))
        epochs = -(-total_steps // steps_per_epoch)
        optimizer = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]
        amp = resolve_amp(cfg.amp, dev)
        step_net = torch.compile(self.net) if cfg.compile else self.net  # shares the weights; predict stays eager
        levers = dev.type in self.step_levers_on and cfg.cuda_step != "eager"
        graphed = levers and cfg.cuda_step == "graph" and not cfg.compile
        # the optimizer step stays outside the graph: onecycle changes Adam's beta1 every step, which a captured
        # AdamW cannot take (its kernels read beta1 as a host float); fused, it is one kernel a step
        opt = optimizer(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                        **optimizer_options("fused" if levers else cfg.optimizer_impl))
        sched = self._schedule(opt, total_steps)

        def batch_loss(idx: Tensor) -> Tensor:
            yb = y_all[idx]
            xb = augment(x_all[idx], policy=cfg.augment, generator=rng, labels=yb, shift=cfg.shift,
                         flip_classes=cfg.flip_classes)  # real and synthetic alike
            with autocast(dev, amp, cache=not graphed):  # a graph must not keep autocast's cached casts
                logits = step_net(to_float(xb))
            loss_each = F.cross_entropy(logits.float(), yb, reduction="none", label_smoothing=cfg.label_smoothing)
            return weighted_loss(loss_each, w_all[idx])

        graph = None
        if graphed:
            static_idx = torch.zeros(bs, dtype=torch.long, device=dev)
            graph_total = torch.zeros((), device=dev)

            def graph_step() -> None:  # captured: backward then writes the gradients, it does not add to them
                opt.zero_grad(set_to_none=True)
                loss = batch_loss(static_idx)
                loss.backward()
                graph_total.add_(loss.detach() * bs)

            graph = StepGraph(graph_step, generators=[rng], capture=dev.type == "cuda")
        self.execution = {"cuda_graphs": str(graph is not None and graph.capture).lower(),
                          "fused_optimizer": str(any(g.get("fused") for g in opt.param_groups)).lower()}

        def stream():  # endless randperm passes over the (mixed) set, or class-balanced draws
            while True:
                if cfg.sampler == "class_balanced":
                    yield from class_balanced_indices(y_all, steps_per_epoch * bs, generator=rng).view(-1, bs)
                else:
                    yield from batches(n, bs, device=dev)

        draws = stream()
        stopping = cfg.early_stopping > 0 and val is not None
        period = eval_period(cfg, epochs)
        best_score, best_epoch, best_state = -1.0, -1, None
        last: dict[str, float] = {}
        step = 0
        with progress_bar(epochs, desc="cnn", enabled=progress) as bar:
            for epoch in range(epochs):
                self.net.train()
                total, seen = 0.0, 0
                for _ in range(min(steps_per_epoch, total_steps - step)):
                    idx = next(draws)
                    if graph is not None:  # a few launches: the batch's indices, the graph, fused AdamW
                        static_idx.copy_(idx)
                        graph()
                    else:
                        loss = batch_loss(idx)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        total = total + loss.detach() * len(idx)  # summed as a tensor: no sync per step
                    opt.step()
                    sched.step()
                    step += 1
                    seen += len(idx)
                if graph is not None:
                    total = graph_total.clone()
                    graph_total.zero_()
                last = {"loss": float(total) / max(seen, 1)}
                if val is not None and ((epoch + 1) % period == 0 or epoch + 1 == epochs):
                    pred = self.predict(val[0])
                    last["val_balanced_accuracy"] = balanced_accuracy(val[1].numpy(), pred)
                    if stopping and last["val_balanced_accuracy"] > best_score:
                        best_score, best_epoch = last["val_balanced_accuracy"], epoch
                        best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
                if on_epoch is not None:
                    on_epoch(epoch, last)
                bar.set_postfix(last)
                bar.update(1)
                if stopping and "val_balanced_accuracy" in last and epoch - best_epoch >= cfg.early_stopping:
                    break
        if graph is not None:
            self.execution["cuda_graphs"] = str(graph.capture).lower()  # false when the capture failed
            opt.zero_grad(set_to_none=True)  # the gradients live in the graph's memory pool: let it go
            del graph
        out = {**last, "epochs_run": epoch + 1, "steps": step}
        if best_state is not None:
            self.net.load_state_dict(best_state)  # the weights that scored best on validation
            out["best_epoch"] = best_epoch
        self.net.eval()
        return out

    @torch.no_grad()
    def predict_proba(self, x: Tensor, *, batch_size: int = 128) -> np.ndarray:
        # batches of 128 keep the activations in cache (2.4× less CPU than 2,000), bitwise equal in eval mode
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
    code_version = 1  # as CNNClassifier.code_version

    def __init__(self, config=None, *, seed: int = 0, device=None):
        self.config = config or build(self.Config)
        self.seed = seed
        self.model = self.make(class_weight=None if self.config.class_weight == "none" else "balanced")

    @staticmethod
    def _flat(x: Tensor) -> np.ndarray:
        return (x.reshape(len(x), -1).float() / 255.0).numpy()

    def fit(self, x: Tensor, y: Tensor, *, sample_weight: Tensor | None = None, val=None,
            on_epoch: EpochCallback | None = None, progress: bool = False, budget_n: int | None = None) -> dict[str, float]:
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

    def make(self, *, class_weight: str | None):
        from sklearn.tree import DecisionTreeClassifier

        return DecisionTreeClassifier(max_depth=self.config.max_depth, min_samples_leaf=self.config.min_samples_leaf,
                                      class_weight=class_weight, random_state=self.seed)

    def _proba(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), NUM_CLASSES))
        out[:, self.model.classes_] = self.model.predict_proba(x)
        return out


class SVMClassifier(_SklearnClassifier):
    name = "svm"
    Config = SVMConfig

    def make(self, *, class_weight: str | None):
        from sklearn.svm import LinearSVC

        return LinearSVC(C=self.config.C, max_iter=self.config.max_iter, class_weight=class_weight,
                         random_state=self.seed)

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
