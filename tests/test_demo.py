"""The demo (`synthboost demo`, `make demo`) says what it is doing, stage by stage, also in a pipe or a CI log."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

STAGE = re.compile(r"^\[\s*\d+\.\d s\] ([^:]+)(?::|$)")
#: what the demo does, in order: the baseline run, the generator run, then the report
DEMO_STAGES = ["run 1/2", "data", "classifier", "metrics",
               "run 2/2", "data", "generator training", "sampling", "classifier", "metrics", "report"]


def test_demo_prints_one_line_per_stage_as_it_goes_when_not_a_tty(tmp_path):
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)  # the demo itself must quiet MLflow's bars in a pipe
    proc = subprocess.Popen([sys.executable, "-m", "synthboost", "demo", "--profile", "smoke", "--out",
                             str(tmp_path / "report")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=tmp_path)
    stages, running = [], []
    for line in proc.stderr:  # a pipe: no terminal anywhere
        m = STAGE.match(line)
        if m:
            stages.append(m.group(1))
            running.append(proc.poll() is None)
    out = proc.stdout.read()
    assert proc.wait(timeout=300) == 0, out
    assert stages == DEMO_STAGES
    assert running[0], "the first stage line must arrive while the demo works, not at its end"
    assert "Gain over the real-only baseline" in out and "Δ accuracy" in out
    assert re.search(r"^\s*vae\s+high\s+1000\s+cnn\s+1×balance\s+none\b", out, re.M), out  # the gain row
    assert (tmp_path / "report" / "report.md").is_file()


def test_the_quality_extractor_announces_its_one_training_and_where_it_is_kept(tmp_path):
    from synthboost import pipeline
    from synthboost.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db")
    heard: list[tuple[str, str]] = []
    _, first = pipeline.feature_extractor(tracker, profile="smoke", stage=lambda n, d="": heard.append((n, d)))
    assert len(heard) == 1
    name, detail = heard[0]
    assert name == "quality extractor"
    assert "training the quality extractor once for this machine (~" in detail and str(tmp_path) in detail
    _, again = pipeline.feature_extractor(tracker, profile="smoke", stage=lambda n, d="": heard.append((n, d)))
    assert again == first and len(heard) == 1  # cached: loaded without a word
