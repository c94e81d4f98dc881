"""Test isolation: every test session gets its own tracking store and never touches tracking/."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("synthboost_home")
    saved = {k: os.environ.get(k) for k in ("SYNTHBOOST_HOME", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID",
                                            "MLFLOW_EXPERIMENT_ID", "SYNTHBOOST_OPTUNA_STORAGE")}
    os.environ["SYNTHBOOST_HOME"] = str(home)
    for k in saved:
        if k != "SYNTHBOOST_HOME":
            os.environ.pop(k, None)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    yield home
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tracker(isolated_home):
    from synthboost.tracking import Tracker

    return Tracker()
