"""A generator training killed part-way goes on from its last snapshot and ends where an unbroken one would.

What a user notices: a grid cut at a session's end does not train its diffusion generators again from scratch
(an hour of a core each at balanced/5,000), and the resumed generator is the very one the unbroken training makes —
the same weights, so the same synthetic images and the same classifier numbers.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from synthboost import generators
from synthboost.config import build
from synthboost.snapshots import Snapshots
from synthboost.tracking import TAG_GENERATOR_RESUMED, Tracker

# one family per training loop: the likelihood loop (vae), with an EMA (ddpm), two trainings in a row (vqvae), the
# adversarial loop with its counters (cgan); cvae only to be told apart from vae
FAMILIES = {"vae": {"epochs": 3}, "cvae": {"epochs": 3}, "ddpm": {"epochs": 2, "min_steps": 0},
            "vqvae": {"epochs": 2, "prior_epochs": 2}, "cgan": {"epochs": 3, "min_g_steps": 0}}
KILL_AT = {"vae": 2, "ddpm": 1, "vqvae": 3, "cgan": 2}  # vqvae: in its prior's training, the autoencoder's done


class Killed(Exception):
    """Stands for the end of the process (a session's end, Ctrl-C) after an epoch."""


def fit(name: str, split, *, snapshots=None, kill_at: int | None = None):
    """Seed, build and fit a smoke-profile ``name`` as the pipeline does; ``kill_at``: raise after that many epochs
    (counting every training of the family); returns the generator and the epoch curve ``on_epoch`` saw."""
    torch.manual_seed(0)
    cls = generators.get(name)
    gen = cls(build(cls.Config, FAMILIES[name], profile="smoke"), device="cpu")
    seen: list[tuple[int, dict]] = []

    def on_epoch(epoch, values):
        seen.append((epoch, values))
        if kill_at is not None and len(seen) == kill_at:
            raise Killed

    gen.fit(split.train_x, split.train_y, on_epoch=on_epoch, snapshots=snapshots)
    return gen, seen


def weights(gen) -> dict[str, torch.Tensor]:
    return gen.state_dict()["weights"]


@pytest.mark.parametrize("name", KILL_AT)
def test_a_killed_training_resumes_to_the_unbroken_ones_weights(name, split, tmp_path):
    unbroken, curve = fit(name, split)
    key = f"test-{name}"
    with pytest.raises(Killed):
        fit(name, split, snapshots=Snapshots(key, every=0, folder=tmp_path), kill_at=KILL_AT[name])
    assert list(tmp_path.glob("*.pt")), "the killed training left no snapshot"
    snaps = Snapshots(key, every=0, folder=tmp_path)
    resumed, replayed = fit(name, split, snapshots=snaps)
    assert snaps.resumed() == ("autoencoder epoch 2, prior epoch 1" if name == "vqvae" else f"epoch {KILL_AT[name]}")
    assert snaps.earlier() > 0  # the killed attempt's training time is counted, as an unbroken run would have spent
    ours, theirs = weights(resumed), weights(unbroken)
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert torch.equal(ours[k], theirs[k]), f"{name}: {k} differs from the unbroken training's"
    assert [e for e, _ in replayed] == [e for e, _ in curve]  # the new run's curve holds every epoch
    assert replayed == curve
    snaps.clear()
    assert not list(tmp_path.glob("*.pt"))


def test_a_snapshot_of_another_generator_or_a_damaged_one_is_never_used(split, tmp_path):
    unbroken, _ = fit("vae", split)
    with pytest.raises(Killed):
        fit("vae", split, snapshots=Snapshots("one key", every=0, folder=tmp_path), kill_at=1)
    other = Snapshots("another key", every=0, folder=tmp_path)
    gen, _ = fit("vae", split, snapshots=other)
    assert other.resumed() is None
    (path,) = [p for p in tmp_path.glob("*.pt") if p != other.path]
    path.write_bytes(path.read_bytes()[:100])
    damaged = Snapshots("one key", every=0, folder=tmp_path)
    gen, _ = fit("vae", split, snapshots=damaged)
    assert damaged.resumed() is None
    assert all(torch.equal(a, b) for a, b in zip(weights(gen).values(), weights(unbroken).values()))


@pytest.mark.slow
def test_a_run_killed_in_generator_training_resumes_there_with_the_same_numbers(tmp_path, resumable_env):
    """The real thing: ``synthboost run`` killed (SIGKILL) after its generator's first epoch, run again."""
    args = [sys.executable, "-m", "synthboost", "run", "--model", "cgan", "--profile", "smoke", "--regime",
            "balanced", "--size", "300", "--seed", "0", "--set", "gen.epochs=3", "--set", "gen.min_g_steps=0",
            "--set", "clf.epochs=2"]

    def run(store: str, **env):
        e = resumable_env | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/{store}.db", **env}
        return subprocess.run(args, env=e, cwd=tmp_path, capture_output=True, text=True, timeout=600)

    killed = run("a", SYNTHBOOST_FAULT="generator-training:SIGKILL")
    assert killed.returncode == -9, killed.stderr[-2000:]
    again = run("a")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "went on from a snapshot (epoch 1)" in again.stdout + again.stderr
    unbroken = run("b")
    assert unbroken.returncode == 0, unbroken.stderr[-2000:]
    assert not list((tmp_path / "snap").glob("*.pt"))  # cleared once the generator was in the store

    def finished(store: str):
        tracker = Tracker(f"sqlite:///{tmp_path}/{store}.db")
        (r,) = [r for r in tracker.search("attributes.status = 'FINISHED'") if "test/accuracy" in r.data.metrics]
        return r

    a, b = finished("a"), finished("b")
    assert a.data.tags.get(TAG_GENERATOR_RESUMED) == "epoch 1"
    assert TAG_GENERATOR_RESUMED not in b.data.tags
    for k in ("test/accuracy", "test/balanced_accuracy", "train/gen_final_g_loss"):
        assert a.data.metrics[k] == b.data.metrics[k], k


def test_snapshots_left_behind_for_a_month_are_swept_away(split, tmp_path):
    import os
    import time

    stale, cut_short, recent = tmp_path / "stale.pt", tmp_path / "stale.tmp", tmp_path / "recent.pt"
    for path in (stale, cut_short, recent):
        path.write_bytes(b"x")
    month_ago = time.time() - 31 * 86400
    for path in (stale, cut_short):
        os.utime(path, (month_ago, month_ago))
    fit("vae", split, snapshots=Snapshots("sweeper", every=0, folder=tmp_path))
    assert not stale.exists() and not cut_short.exists() and recent.exists()


def test_a_snapshot_that_does_not_fit_its_networks_is_deleted_with_a_clear_error(split, tmp_path):
    with pytest.raises(Killed):
        fit("vae", split, snapshots=Snapshots("same key", every=0, folder=tmp_path), kill_at=1)
    with pytest.raises(RuntimeError, match="does not fit this training .* run the same command again"):
        fit("cvae", split, snapshots=Snapshots("same key", every=0, folder=tmp_path))
    assert not list(tmp_path.glob("*.pt"))
