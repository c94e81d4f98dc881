"""The offline GPU host's scripts (tools/offline/, docs/gpu.md) on this CPU machine: `.offline/env.sh` warns instead
of failing without CUDA, refuses a Python the bundle was not built for, and `.offline/run-grid` leaves one archive
that `synthboost ledger import` takes as it is."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from smoke_configs import smoke_grid
from typer.testing import CliRunner

from synthboost.cli import app
from synthboost.data import DEBIAN_DIR
from synthboost.tracking import Tracker

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def checkout(tmp_path):
    """A copy of the project as the host gets it: src/ and an .offline/ laid out as `make offline` lays it, with an
    empty site (this venv's python already holds the packages the bundle carries; `make offline` itself needs PyPI)."""
    root = tmp_path / "checkout"
    off = root / ".offline"
    (off / "site").mkdir(parents=True)
    (root / "src").symlink_to(ROOT / "src")
    (off / "site" / "PYTHON_VERSION").write_text("%d.%d\n" % sys.version_info[:2])
    with tarfile.open(off / "site.tar.xz", "w:xz") as tar:
        tar.add(off / "site", arcname="site")
    shutil.rmtree(off / "site")
    data = Path(os.environ.get("SYNTHBOOST_DATA") or DEBIAN_DIR)
    (off / "data").symlink_to(data)
    for name in ("env.sh", "run-grid"):
        shutil.copy(ROOT / "tools" / "offline" / name, off / name)
    return root


def host_env(tmp_path, **more):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SYNTHBOOST_"))}
    return env | {"SYNTHBOOST_PYTHON": sys.executable, "SYNTHBOOST_SITE": str(tmp_path / "site"),
                  "SYNTHBOOST_WORK": str(tmp_path / "work")} | more


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_env_sh_warns_without_cuda_unless_asked_to_require_it_and_refuses_another_python(checkout, tmp_path):
    source = ["bash", "-c", ". .offline/env.sh && echo sourced"]
    out = subprocess.run(source, cwd=checkout, env=host_env(tmp_path), capture_output=True, text=True)
    assert out.returncode == 0 and "warning: no CUDA device" in out.stdout and "sourced" in out.stdout, out
    out = subprocess.run(["bash", "-c", ". .offline/env.sh || exit 2; echo sourced"], cwd=checkout,
                         env=host_env(tmp_path, SYNTHBOOST_REQUIRE_CUDA="1"), capture_output=True, text=True)
    assert out.returncode == 2 and "no CUDA device (SYNTHBOOST_REQUIRE_CUDA=1)" in out.stderr, out

    other = tmp_path / "other"
    (other / "site").mkdir(parents=True)
    (other / "site" / "PYTHON_VERSION").write_text("3.99\n")  # a bundle built for another host
    with tarfile.open(checkout / ".offline" / "site.tar.xz", "w:xz") as tar:
        tar.add(other / "site", arcname="site")
    out = subprocess.run(["bash", "-c", ". .offline/env.sh || exit 2"], cwd=checkout, env=host_env(tmp_path),
                         capture_output=True, text=True)
    assert out.returncode == 2 and "the bundle is for Python 3.99" in out.stderr, out


@pytest.mark.slow
def test_run_grid_leaves_one_archive_that_imports_into_a_fresh_store(checkout, tmp_path, monkeypatch):
    (checkout / "grid.yaml").write_text(smoke_grid(experiment="offline", mixes="[{ratio: 0.5, strategy: balance}]",
                                                   fixed="clf.epochs: 1, gen.latent_dim: 11", seeds="[0]"))
    out = subprocess.run(["bash", ".offline/run-grid", "grid.yaml", "2", str(tmp_path / "out")], cwd=checkout,
                         env=host_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "grid grid.yaml: exit 0" in out.stdout and "runs: " in out.stdout, out.stdout
    archive = tmp_path / "out" / "ledger.tar.gz"
    with tarfile.open(archive) as tar:
        assert tar.getnames() == ["ledger", "ledger/offline.jsonl.gz"]  # one experiment, one file

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'home.db'}")
    imported = CliRunner().invoke(app, ["ledger", "import", "--dir", str(archive), "--no-journal"])
    assert imported.exit_code == 0 and "3 run(s) imported" in imported.stdout, imported.output
    home = Tracker(f"sqlite:///{tmp_path / 'home.db'}")
    runs = home.client.search_runs([home.experiment_id("offline")], "attributes.status = 'FINISHED'")
    assert sorted(r.data.tags.get("model", "") for r in runs) == ["", "none", "vae"]  # the grid's parent and cells

    # a second sitting through tools/verdict-slice: the ledger that travelled is imported, its cells are skipped,
    # and the whole experiment comes back again in one archive
    ledger = checkout / "tracking" / "ledger"
    ledger.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extract("ledger/offline.jsonl.gz", checkout / "tracking")
    (checkout / "tools").mkdir()
    shutil.copy(ROOT / "tools" / "verdict-slice", checkout / "tools" / "verdict-slice")
    again = subprocess.run(["bash", "tools/verdict-slice", "400", "1", str(tmp_path / "out2")], cwd=checkout,
                           env=host_env(tmp_path, SYNTHBOOST_WORK=str(tmp_path / "work2"), VERDICT_GRID="grid.yaml",
                                        VERDICT_EXPERIMENT="offline"), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 cells run now" in again.stdout and "--time-limit" not in again.stderr, again.stdout
    with tarfile.open(tmp_path / "out2" / "ledger.tar.gz") as tar:
        assert tar.getnames() == ["ledger", "ledger/offline.jsonl.gz"]
