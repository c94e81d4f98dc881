"""A generator's training state between epochs, on local disk, so a run killed mid-training resumes from it.

A diffusion generator trains for about an hour of a core; the saved RNG state makes a resumed training bit for bit
the uninterrupted one.  A snapshot that cannot be read or written costs the resume, never the run.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import local_cache
from .errors import UserError

FORMAT = 1
#: seconds of training between two snapshots: writing one (~20 MB for quick's networks) takes well under a second
EVERY = 300.0
#: a snapshot untouched this long belongs to a training nobody ran again (a changed config, a dropped cell)
STALE_DAYS = 30


def snapshot_dir() -> Path:
    return local_cache.folder("training", env="SYNTHBOOST_SNAPSHOTS")


def snapshot_every() -> float:
    """``SYNTHBOOST_SNAPSHOT_SECONDS`` (0: after every epoch), else ``EVERY``."""
    value = os.environ.get("SYNTHBOOST_SNAPSHOT_SECONDS")
    try:
        return max(0.0, float(value)) if value else EVERY
    except ValueError:
        raise UserError(f"SYNTHBOOST_SNAPSHOT_SECONDS={value!r} is not a number of seconds: set it to one (0: a "
                        "snapshot after every epoch) or unset it") from None


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Snapshots:
    """The snapshots of one generator's training: ``restore`` once before the first epoch, ``end_epoch`` after each."""

    def __init__(self, key: str, *, every: float | None = None, folder: Path | None = None):
        self.key = key
        self.every = snapshot_every() if every is None else every
        self.path = (folder or snapshot_dir()) / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.pt"
        self.resumed_epoch: int | None = None  # the epoch training went on from (None: from scratch)
        self.earlier_seconds = 0.0  # training time of the attempts before this one, up to their last snapshot
        self.history: list[tuple[int, dict[str, float]]] = []
        self._phases: list[Snapshots] = []
        self._t0 = self._saved = time.perf_counter()

    def phase(self, name: str) -> Snapshots:
        """The snapshots of one of several trainings in a row (VQ-VAE: its autoencoder, then its prior)."""
        child = Snapshots(f"{self.key}|{name}", every=self.every, folder=self.path.parent)
        self._phases.append(child)
        return child

    def resumed(self) -> str | None:
        """Where a resumed training went on from (``epoch 40``, ``prior epoch 3``), None when from scratch."""
        parts = [f"epoch {self.resumed_epoch}"] if self.resumed_epoch else []
        parts += [f"{c.key.rpartition('|')[2]} epoch {c.resumed_epoch}" for c in self._phases if c.resumed_epoch]
        return ", ".join(parts) or None

    def earlier(self) -> float:
        """Training time of the attempts before this one (up to their last snapshots), every phase's included."""
        return self.earlier_seconds + sum(c.earlier_seconds for c in self._phases)

    def _read(self) -> dict | None:
        if not self.path.is_file():
            return None
        try:
            blob = torch.load(self.path, weights_only=True)
        except Exception as err:  # noqa: BLE001 — a damaged snapshot is never trusted: train from scratch
            print(f"warning: training snapshot {self.path} unreadable ({type(err).__name__}); training from scratch",
                  file=sys.stderr)
            return None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT or blob.get("key") != self.key:
            return None
        return blob

    def restore(self, objects: dict[str, Any], *, on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                ) -> tuple[int, dict[str, float], dict[str, Any]]:
        """Load the last snapshot and replay its curve to ``on_epoch``; returns (first epoch, last means, counters).

        Snapshots of other trainings untouched for ``STALE_DAYS`` are deleted on the way."""
        self._t0 = self._saved = time.perf_counter()
        self._sweep()
        blob = self._read()
        if blob is None:
            return 0, {}, {}
        if set(blob["objects"]) != set(objects):
            print(f"warning: training snapshot {self.path} holds {sorted(blob['objects'])}, not {sorted(objects)}; "
                  "training from scratch", file=sys.stderr)
            return 0, {}, {}
        try:
            for name, obj in objects.items():
                obj.load_state_dict(blob["objects"][name])
        except (RuntimeError, ValueError, KeyError) as err:  # the objects are half-loaded now: this attempt ends
            self.path.unlink(missing_ok=True)
            raise RuntimeError(f"training snapshot {self.path} does not fit this training "
                               f"({str(err).splitlines()[0][:160]}); it is deleted: run the same command again "
                               "to train from scratch") from None
        _set_rng_state(blob["rng"])
        self.history = [(int(e), dict(m)) for e, m in blob["history"]]
        self.resumed_epoch = int(blob["epoch"])
        self.earlier_seconds = float(blob["seconds"])
        print(f"resuming {self.key[:12]}'s training at epoch {self.resumed_epoch} from {self.path}", file=sys.stderr)
        if on_epoch is not None:  # the curve of the epochs before: the new run records the whole training
            for epoch, means in self.history:
                on_epoch(epoch, means)
        return self.resumed_epoch, (self.history[-1][1] if self.history else {}), dict(blob["counters"])

    def seconds(self) -> float:
        """Training time so far, the earlier attempts' included."""
        return self.earlier_seconds + time.perf_counter() - self._t0

    def end_epoch(self, epoch: int, means: dict[str, float], objects: dict[str, Any], *,
                  counters: dict[str, Any] | None = None, last: bool = False) -> None:
        """Record ``epoch``'s means; write a snapshot when ``every`` seconds have passed since the last one (and
        after the last epoch, so that a run killed while uploading its checkpoint does not train again)."""
        self.history.append((epoch, dict(means)))
        now = time.perf_counter()
        if not last and now - self._saved < self.every:
            return
        blob = {"format": FORMAT, "key": self.key, "epoch": epoch + 1, "seconds": self.seconds(),
                "history": self.history, "counters": dict(counters or {}), "rng": _rng_state(),
                "objects": {name: obj.state_dict() for name, obj in objects.items()}}
        try:
            local_cache.save(blob, self.path)  # atomic: a kill while writing leaves the previous snapshot whole
        except OSError as err:
            print(f"warning: training snapshot not written ({err.strerror or err}); a killed run would train again "
                  "from an earlier snapshot", file=sys.stderr)
        self._saved = time.perf_counter()

    def _sweep(self) -> None:
        cutoff = time.time() - STALE_DAYS * 86400
        for old in [*self.path.parent.glob("*.pt"), *self.path.parent.glob("*.tmp")]:  # .tmp: a write cut short
            try:
                if old != self.path and old.stat().st_mtime < cutoff:
                    old.unlink()
            except OSError:  # another process swept it first, or the folder is read-only: nothing lost
                pass

    def clear(self) -> None:
        """The generator is safely in the store: its snapshots are no longer needed."""
        self.path.unlink(missing_ok=True)
        for child in self._phases:
            child.clear()
