"""bench/clip_guidance.py end to end on the smoke profile: the real-only baseline and one ``clip`` run per guidance
mode, every mode sampling one trained generator; the same command on the same store resumes instead of re-running."""

from __future__ import annotations

import re

import pytest
from benches import load_bench

CHEAP = ["--profile", "smoke", "--seeds", "0", "--set", "gen.min_steps=20", "--set", "gen.sampling_steps=2",
         "--set", "clf.steps=5"]


def _table(out: str) -> dict[str, list[str]]:
    return {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")]
            for line in out.splitlines() if line.startswith(("| cfg ", "| clip_grad "))}


@pytest.mark.slow
def test_modes_share_one_generator_and_a_second_invocation_reads_the_runs_back(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    bench = load_bench("clip_guidance")
    assert bench.main([*CHEAP, "--modes", "cfg,clip_grad"]) == 0
    first = capsys.readouterr()
    assert "reused=False" in first.err and "reused=True" in first.err  # clip_grad samples cfg's weights
    rows = _table(first.out)
    assert set(rows) == {"cfg", "clip_grad"}
    assert all(0.0 <= float(r[1]) <= 1.0 and float(r[2]) > 0 for r in rows.values())  # label consistency, FID
    # clip_grad against cfg seed by seed: on one seed the difference of the two gains, and no interval
    paired = re.search(r"clip_grad − cfg, paired over seeds .*: gain_pp ([-+0-9.e]+) \(n = 1, no interval\)",
                       first.out)
    assert paired and float(paired[1]) == pytest.approx(float(rows["clip_grad"][4]) - float(rows["cfg"][4]), abs=0.2)
    assert bench.main([*CHEAP, "--modes", "cfg,clip_grad"]) == 0
    again = capsys.readouterr()
    assert again.err.count("finished earlier in this store; read back") == 3  # none, cfg, clip_grad
    assert _table(again.out) == rows


def test_an_unknown_mode_is_refused_with_the_choices(capsys):
    assert load_bench("clip_guidance").main(["--modes", "cfg,steer"]) == 2
    assert "--modes: choose from cfg, clip_grad, both" in capsys.readouterr().err
