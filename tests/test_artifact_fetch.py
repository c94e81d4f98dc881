"""Downloading a run's artifact: a missing file is told apart from a failed transfer (the outage-test flake of
stop 26: a server restarted mid-download made a study fail a trial as "no checkpoint", silently)."""

from __future__ import annotations

import mlflow
import pytest
import requests

from synthboost import tracking
from synthboost.errors import UserError
from synthboost.tracking import Tracker


@pytest.fixture
def run_with_file(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = tracker.client.create_run(tracker.experiment_id("fetch")).info.run_id
    src = tmp_path / "model.pt"
    src.write_bytes(b"weights" * 1000)
    tracker.client.log_artifact(run_id, str(src), "generator")
    return tracker, run_id


def test_a_transfer_broken_mid_download_is_retried_not_taken_for_a_missing_file(run_with_file, tmp_path, monkeypatch,
                                                                              capsys):
    tracker, run_id = run_with_file
    real, calls = mlflow.artifacts.download_artifacts, []

    def flaky(**kw):  # the server's process group killed mid-stream: no "connection refused" anywhere in it
        calls.append(kw["artifact_path"])
        if len(calls) == 1:
            raise requests.exceptions.ChunkedEncodingError("('Connection broken: IncompleteRead(4 bytes read, "
                                                           "6996 more expected)')")
        return real(**kw)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", flaky)
    monkeypatch.setenv("SYNTHBOOST_OUTAGE_SECONDS", "30")
    (tmp_path / "dst").mkdir()
    local = tracking.fetch_artifact(tracker.uri, run_id, "generator/model.pt", tmp_path / "dst")
    assert local is not None and open(local, "rb").read() == b"weights" * 1000
    assert len(calls) == 2
    err = capsys.readouterr().err
    assert "waiting for it with backoff" in err and "is back after" in err, err


def test_a_missing_file_is_none_at_once_and_a_missing_config_one_clear_error(run_with_file, tmp_path, monkeypatch):
    tracker, run_id = run_with_file
    real, calls = mlflow.artifacts.download_artifacts, []
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", lambda **kw: calls.append(1) or real(**kw))
    (tmp_path / "dst").mkdir()
    assert tracking.fetch_artifact(tracker.uri, run_id, "generator/other.pt", tmp_path / "dst") is None
    assert len(calls) == 1  # not retried: the run's listing says it is not there
    with pytest.raises(UserError, match=f"run {run_id} has no config.yaml"):
        tracker.run_config(run_id)
    assert tracking.fetch_artifact(tracker.uri, "0" * 32, "config.yaml", tmp_path / "dst") is None  # no such run
