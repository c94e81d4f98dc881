"""Synthetic images kept on disk, so that a draw is made once per generator, sampling setting, counts and seed.

A grid's variants of one generator each drew the same images (a diffusion pool is ~20 min of a core); the draw is
seeded by the run's seed, not by RNG history, so a cached read is the very images it would have drawn.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import torch

from . import local_cache

FORMAT = 1


def cache_dir() -> Path:
    return local_cache.folder("samples", env="SYNTHBOOST_SAMPLES")


def path_for(identity: str) -> Path:
    return cache_dir() / f"{hashlib.sha256(identity.encode()).hexdigest()[:32]}.pt"


def load(identity: str, *, generator_run: str) -> Any | None:
    """The value saved for ``identity`` from the generator of run ``generator_run``, or None."""
    path = path_for(identity)
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, weights_only=True)
    except Exception as err:  # noqa: BLE001 — a damaged file is drawn again (and overwritten), never trusted
        print(f"warning: cached samples {path} unreadable ({type(err).__name__}); drawing them again", file=sys.stderr)
        return None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or blob.get("identity") != identity \
            or blob.get("generator_run") != generator_run:
        return None
    return blob["value"]


def save(identity: str, value: Any, *, generator_run: str) -> None:
    """Write atomically (a temporary file renamed into place): two workers saving one draw leave one whole file."""
    path = path_for(identity)
    try:
        local_cache.save({"format": FORMAT, "identity": identity, "generator_run": generator_run, "value": value},
                          path)
    except OSError as err:  # a full disk or a read-only folder costs the next run a draw, not this run
        print(f"warning: could not keep the samples in {path.parent} ({err.strerror or err}); "
              "the next run that needs them draws them again", file=sys.stderr)
