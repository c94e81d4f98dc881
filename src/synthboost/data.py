"""Fashion-MNIST as uint8 tensors in memory, the three regimes, the stratified validation split, the digest.

Lookup order for the four IDX files: ``$SYNTHBOOST_DATA`` -> Debian's ``dataset-fashion-mnist``
(/usr/share/datasets/fashion-mnist) -> the user cache dir -> a torchvision download into that cache.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import DataConfig
from .errors import DataError
# the regimes' arithmetic lives apart so that the report computes counts without importing torch; re-exported
from .regimes import (  # noqa: F401
    CLASS_NAMES, NUM_CLASSES, POOL_PER_CLASS, check_folds, regime_counts, train_counts,
)


FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = (
    "install it with `sudo apt-get install dataset-fashion-mnist`, or set SYNTHBOOST_DATA to a folder "
    "holding the four Fashion-MNIST IDX files (train/t10k images and labels, .gz or raw)"
)


def user_cache_dir() -> Path:
    """The project's folder in the user's cache (``XDG_CACHE_HOME`` if set): the data, kept synthetic draws."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "synthboost"


def cache_dir() -> Path:
    return user_cache_dir() / "fashion-mnist"


@dataclass(frozen=True)
class FashionMNIST:
    train_x: torch.Tensor  # uint8 N×28×28
    train_y: torch.Tensor  # int64 N
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path} is unreadable or corrupt ({err}); {INSTALL_HINT}") from None
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an IDX uint8 file; {INSTALL_HINT}")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise DataError(f"{path} is truncated ({len(raw) - offset} of {expected} bytes); {INSTALL_HINT}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _load_folder(folder: Path) -> FashionMNIST | None:
    paths = {k: _find(folder, stem) for k, stem in FILES.items()}
    if any(p is None for p in paths.values()):
        return None
    arr = {k: _read_idx(p) for k, p in paths.items()}
    shapes = {k: a.shape for k, a in arr.items()}
    if shapes["train_images"] != (60000, 28, 28) or shapes["test_images"] != (10000, 28, 28) \
            or shapes["train_labels"] != (60000,) or shapes["test_labels"] != (10000,):
        raise DataError(f"Fashion-MNIST files in {folder} have unexpected shapes {shapes}; {INSTALL_HINT}")
    if arr["train_labels"].max() >= NUM_CLASSES or arr["test_labels"].max() >= NUM_CLASSES:
        raise DataError(f"Fashion-MNIST labels in {folder} are out of range; {INSTALL_HINT}")
    return FashionMNIST(
        train_x=torch.from_numpy(arr["train_images"].copy()),
        train_y=torch.from_numpy(arr["train_labels"].astype(np.int64)),
        test_x=torch.from_numpy(arr["test_images"].copy()),
        test_y=torch.from_numpy(arr["test_labels"].astype(np.int64)),
        source=str(folder),
    )


def _download(folder: Path) -> None:
    try:
        from torchvision.datasets import FashionMNIST as TVFashionMNIST

        TVFashionMNIST(str(folder.parent / "torchvision"), train=True, download=True)
        TVFashionMNIST(str(folder.parent / "torchvision"), train=False, download=True)
    except Exception as err:  # network errors come in many types; all mean "not available here"
        raise DataError(f"Fashion-MNIST not found locally and the download failed ({type(err).__name__}); "
                        f"{INSTALL_HINT}") from None


@functools.lru_cache(maxsize=2)
def load_fashion_mnist(root: str | None = None) -> FashionMNIST:
    """Load the dataset (cached per process). ``root`` overrides the lookup order."""
    env = os.environ.get("SYNTHBOOST_DATA")
    if root or env:
        folder = Path(root or env)
        found = _load_folder(folder) if folder.is_dir() else None
        if found is None:
            raise DataError(f"no Fashion-MNIST IDX files in {folder} (from "
                            f"{'SYNTHBOOST_DATA' if env and not root else 'the given path'}); {INSTALL_HINT}")
        return found
    for folder in (DEBIAN_DIR, cache_dir(), cache_dir().parent / "torchvision" / "FashionMNIST" / "raw"):
        if folder.is_dir():
            found = _load_folder(folder)
            if found is not None:
                return found
    _download(cache_dir())
    found = _load_folder(cache_dir().parent / "torchvision" / "FashionMNIST" / "raw")
    if found is None:
        raise DataError(f"Fashion-MNIST could not be found; {INSTALL_HINT}")
    return found


@dataclass(frozen=True)
class Split:
    """The real images of one run: train and val are disjoint and carved from the same regime subset."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    train_index: torch.Tensor  # indices into the official train set (train ∪ val = the regime subset)
    val_index: torch.Tensor
    counts: tuple[int, ...]  # the regime's per-class counts (train + val)

    @property
    def digest(self) -> str:
        return dataset_digest(self.train_x, self.train_y, self.val_x, self.val_y)

    @property
    def minority_classes(self) -> list[int]:
        """Classes with fewer real training images than the median class (empty when balanced)."""
        per_class = torch.bincount(self.train_y, minlength=NUM_CLASSES).float()
        return torch.nonzero(per_class < per_class.median() * 0.999).flatten().tolist()


def make_split(cfg: DataConfig, seed: int, *, data: FashionMNIST | None = None) -> Split:
    """Draw the regime subset (seeded), then carve a stratified validation split from it."""
    data = data or load_fashion_mnist()
    counts = regime_counts(cfg.regime, cfg.size, seed, minority_classes=cfg.minority_classes)
    if cfg.kfold is not None:
        check_folds(counts, cfg.kfold, where=f"{cfg.regime}/{cfg.size} seed {seed}")
        if cfg.fold >= cfg.kfold:
            raise DataError(f"data.fold {cfg.fold} is not one of the {cfg.kfold} folds (0…{cfg.kfold - 1})")
    gen = torch.Generator().manual_seed(seed)
    train_idx, val_idx = [], []
    for k, n in enumerate(counts):
        pool = torch.nonzero(data.train_y == k).flatten()
        chosen = pool[torch.randperm(len(pool), generator=gen)[:n]]  # the same draw for the holdout and the folds
        if cfg.kfold is not None:
            # stratified k-fold: every k-th image of each class's (already shuffled) draw, so the folds partition
            # the regime subset and each holds ⌊n/k⌋ or ⌈n/k⌉ images of every class
            held = torch.zeros(n, dtype=torch.bool)
            held[cfg.fold::cfg.kfold] = True
            val_idx.append(chosen[held])
            train_idx.append(chosen[~held])
            continue
        n_val = max(1, int(round(n * cfg.val_fraction)))
        val_idx.append(chosen[:n_val])
        train_idx.append(chosen[n_val:])
    tr, va = torch.cat(train_idx).sort().values, torch.cat(val_idx).sort().values
    return Split(
        train_x=data.train_x[tr], train_y=data.train_y[tr],
        val_x=data.train_x[va], val_y=data.train_y[va],
        test_x=data.test_x, test_y=data.test_y,
        train_index=tr, val_index=va, counts=tuple(counts),
    )


def unlabeled_indices(split: Split, n: int, seed: int, *, data: FashionMNIST | None = None) -> torch.Tensor:
    """The official-train indices of the ``n`` pool images outside the regime subset that ``unlabeled_pool`` returns:
    one seeded draw, so every model that learns from the pool (``ssvae``, ``pseudo-label``) sees the same images."""
    data = data or load_fashion_mnist()
    used = torch.zeros(len(data.train_y), dtype=torch.bool)
    used[split.train_index] = True
    used[split.val_index] = True
    free = torch.nonzero(~used).flatten()
    if n > len(free):
        raise DataError(f"unlabeled_size {n} is larger than the {len(free)} train images left outside the "
                        "regime subset; lower gen.unlabeled_size (ssvae) or pseudo.unlabeled_size (pseudo-label)")
    gen = torch.Generator().manual_seed(seed + 104729)
    return free[torch.randperm(len(free), generator=gen)[:n]]


def unlabeled_pool(split: Split, n: int, seed: int, *, data: FashionMNIST | None = None) -> torch.Tensor:
    """``n`` train-set images outside the regime subset, returned *without* labels (for semi-supervised models)."""
    data = data or load_fashion_mnist()
    return data.train_x[unlabeled_indices(split, n, seed, data=data)]


def dataset_digest(*tensors: torch.Tensor) -> str:
    """sha256 over the exact bytes (and shapes) of the given tensors."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.contiguous().cpu()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 N×28×28 (or N×1×28×28) -> float N×1×28×28 in [0, 1]."""
    x = images if images.dim() == 4 else images.unsqueeze(1)
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [0,1] or uint8, N×1×28×28 or N×28×28 -> uint8 N×1×28×28."""
    x = images if images.dim() == 4 else images.unsqueeze(1)
    if x.dtype == torch.uint8:
        return x
    return x.clamp(0, 1).mul(255).round().to(torch.uint8)
