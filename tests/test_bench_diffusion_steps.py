"""bench/diffusion_steps.py end to end with the smoke profile, against the session's temporary store."""

from __future__ import annotations

import math

import pytest
from benches import load_bench


@pytest.mark.slow
def test_prints_a_finite_fid_row_per_setting_and_the_ratio_column(tracker, capsys):
    from synthboost import quality

    bench = load_bench("diffusion_steps")
    assert bench.main(["--profile", "smoke", "--settings", "dpm:4,ddpm:20", "--per-class", "3",
                       "--fast-per-class", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("| setting |"))
    assert "FID / FID(ddpm:20)" in header  # ddpm:20 is the only (so the longest) ancestral chain here
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| d")]
    # both settings at the common n (30), both again at the fast n (50): fewer than 1000 steps each
    assert sorted((c[0], c[1]) for c in cells) == [("ddpm:20", "30"), ("ddpm:20", "50"), ("dpm:4", "30"),
                                                   ("dpm:4", "50")]
    assert all(math.isfinite(float(c[3])) for c in cells)
    assert [c[6] for c in cells if c[0] == "ddpm:20" and c[1] == "30"] == ["1.000"]
    assert any(line.startswith("fastest setting dpm:4 at n=30") for line in lines)
    # the extractor is the pipeline's cached one: kept in the store for the next run to reuse
    assert tracker.find_model_run("extractor", quality.extractor_key("smoke")) is not None
