"""Test isolation: every test session gets its own tracking store and never touches tracking/.  Below: what the
generator families' tests share (a small real split, the smoke CLIP, each family trained once)."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("synthboost_home")
    saved = {k: os.environ.get(k) for k in ("SYNTHBOOST_HOME", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID",
                                            "MLFLOW_EXPERIMENT_ID", "SYNTHBOOST_OPTUNA_STORAGE", "SYNTHBOOST_SAMPLES",
                                            "SYNTHBOOST_SNAPSHOTS", "SYNTHBOOST_SNAPSHOT_SECONDS")}
    os.environ["SYNTHBOOST_HOME"] = str(home)
    for k in saved:
        if k != "SYNTHBOOST_HOME":
            os.environ.pop(k, None)
    os.environ["SYNTHBOOST_SAMPLES"] = str(home / "samples")  # the kept draws too, not the user's ~/.cache
    os.environ["SYNTHBOOST_SNAPSHOTS"] = str(home / "snapshots")  # and the training snapshots
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    yield home
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture()
def resumable_env(tmp_path) -> dict[str, str]:
    """The environment of a subprocess killed in a generator's training and run again: no fault inherited, a
    snapshot after every epoch, kept in ``tmp_path / "snap"``, one thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHBOOST_FAULT")}
    return env | {"SYNTHBOOST_SNAPSHOTS": str(tmp_path / "snap"), "SYNTHBOOST_SNAPSHOT_SECONDS": "0",
                  "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="session")
def tracker(isolated_home):
    from synthboost.tracking import Tracker

    return Tracker()


def unavailable(reason: str):
    """A prerequisite is missing: the test fails (`make test` installs them first, tools/system-deps), since a test
    that cannot run has shown nothing."""
    pytest.fail(f"{reason} — `make test` installs it (tools/system-deps, as root with apt)")


# ---------------------------------------------------------------- server mode (tests/servers.py)
@pytest.fixture(scope="module")
def server(request):
    """A local PostgreSQL + MLflow server for one test module, stopped (and anything left killed, by pid) even
    when a test fails."""
    from servers import HAVE_POSTGRES, Server, free_port

    if not HAVE_POSTGRES:
        unavailable("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="synthboost-server-"))
    srv = Server(folder, free_port(), free_port())

    def cleanup():
        srv.stop()
        for line in srv.leftovers():  # a failed stop must not leave servers behind: end what we started, by pid
            try:
                os.kill(int(line.split()[0]), signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(folder, ignore_errors=True)

    request.addfinalizer(cleanup)
    srv.start()
    return srv


# ---------------------------------------------------------------- generator families (tests/test_<kind>_family.py)
@pytest.fixture(scope="session")
def split():
    """The small real split the family tests train on: balanced, 300 images, seed 0."""
    from synthboost.config import DataConfig
    from synthboost.data import make_split

    return make_split(DataConfig(regime="balanced", size=300), seed=0)


@functools.cache
def _project_clip(profile: str):
    from synthboost.clip_model import train_clip

    return train_clip(profile=profile, device="cpu")


_OWN_CLIPS: dict = {}


def _own_clip(profile: str, split):
    from synthboost.clip_model import train_clip

    key = (profile, split.digest)
    if key not in _OWN_CLIPS:
        _OWN_CLIPS[key] = train_clip(profile=profile, images=split.train_x, labels=split.train_y, device="cpu")
    return _OWN_CLIPS[key]


@pytest.fixture(scope="session")
def smoke_clip():
    """(state, metrics, params) of the full smoke CLIP (official train set), trained once per session."""
    return _project_clip("smoke")


@pytest.fixture(scope="session")
def own_smoke_clip(split):
    """(state, metrics, params) of the smoke CLIP trained on ``split``'s training images (the one ``trained``
    uses: the clip family's default, gen.clip_data=own)."""
    return _own_clip("smoke", split)


class _TestModels:
    """``generators.base.AuxModels`` for tests: the project CLIP trained in-process, once per profile and data."""

    def clip(self, profile: str, *, split=None) -> tuple[dict, str]:
        with torch.random.fork_rng():  # whether or not it trains here, the caller's RNG stream stays as it was
            if split is None:
                return _project_clip(profile)[0], f"test-clip-{profile}"
            return _own_clip(profile, split)[0], f"test-clip-own-{profile}-{split.digest[:8]}"


class Trained:
    """``trained(name, **values)``: family ``name`` fitted once per session on ``split`` with its smoke config
    (``values`` override it), seed 0, on the CPU, with what its ``fit_inputs`` asks for; ``trained.losses(name,
    **values)``: what that fit returned."""

    def __init__(self, split):
        self.split = split
        self._fits: dict[tuple, tuple] = {}

    def _fit(self, name: str, values: dict) -> tuple:
        from synthboost import generators
        from synthboost.config import build

        key = (name, tuple(sorted(values.items())))
        if key not in self._fits:
            cls = generators.get(name)
            torch.manual_seed(0)
            gen = cls(build(cls.Config, values, profile="smoke", prefix="gen"), device="cpu")
            inputs = gen.fit_inputs(self.split, seed=0, models=_TestModels())
            losses = gen.fit(self.split.train_x, self.split.train_y, **inputs.kwargs)
            assert (losses or name in generators.CONTROLS) and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
            self._fits[key] = gen, losses
        return self._fits[key]

    def __call__(self, name: str, **values):
        return self._fit(name, values)[0]

    def losses(self, name: str, **values) -> dict[str, float]:
        return self._fit(name, values)[1]


@pytest.fixture(scope="session")
def trained(split) -> Trained:
    return Trained(split)


# ---------------------------------------------------------------- outcomes for fixtures (test_faults.py's record)
@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)  # item.rep_call: whether the test body passed, and how long it took
    return rep
