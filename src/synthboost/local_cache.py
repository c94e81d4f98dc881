"""Machine-local files under the user's cache (``~/.cache/synthboost/``): where each kind lives, and atomic writes.

Written so that a crash, a full disk or a second writer never leaves a torn file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def folder(name: str, *, env: str) -> Path:
    """``$env`` if set, else ``<user cache>/synthboost/<name>``."""
    from .data import user_cache_dir

    return Path(os.environ.get(env) or user_cache_dir() / name)


def save(value: Any, path: Path) -> None:
    """``torch.save`` to a temporary file renamed into place.  Raises ``OSError`` when it cannot be written — also
    for a full disk, which torch's zip writer reports as a RuntimeError — and leaves no temporary file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(value, f)
        os.replace(tmp, path)
    except RuntimeError as err:
        raise OSError(f"{path.name}: {str(err).splitlines()[0][:120]}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
