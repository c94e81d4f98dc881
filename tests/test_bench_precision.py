"""bf16 autocast for the classifier: runs record it and never pair with fp32 ones (test_speed_levers.py,
test_report.py); here, that it keeps results within the seeds' spread, and bench/precision.py's pairing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from benches import load_bench

from synthboost.classifiers import CNNClassifier, CNNConfig
from synthboost.config import DataConfig, build
from synthboost.data import make_split
from synthboost.metrics import classification_metrics


@pytest.mark.slow
def test_bf16_training_stays_within_the_fp32_seeds_spread():
    """Same split, seed and steps; only the precision of the training steps differs (emulated, so slower, on a
    CPU without native bf16 — the result must hold there too)."""
    acc = {"off": [], "bf16": []}
    for seed in range(3):
        split = make_split(DataConfig(regime="balanced", size=600), seed)
        for amp in acc:
            clf = CNNClassifier(build(CNNConfig, {"steps": 80, "amp": amp}, prefix="clf"), seed=seed, device="cpu")
            clf.fit(split.train_x, split.train_y)
            m = classification_metrics(split.test_y.numpy(), clf.predict(split.test_x), minority_classes=())
            acc[amp].append(100 * m["accuracy"])
    fp32, bf16 = np.array(acc["off"]), np.array(acc["bf16"])
    assert fp32.mean() > 60  # it learned (chance is 10%)
    assert abs(bf16.mean() - fp32.mean()) <= max(2 * fp32.std(ddof=1), 1.0), (fp32, bf16)


def _run(run_id, model, seed, acc, **clf):
    return {"run_id": run_id, "tags.model": model, "tags.regime": "high", "tags.size": "1000", "tags.seed": str(seed),
            "tags.data_digest": f"d{seed}", "metrics.train/clf_steps": 1040.0, "metrics.test/accuracy": acc,
            **{f"params.clf.{k}": v for k, v in ({"lr": "0.002"} | clf).items()}}


def test_pairs_only_runs_that_differ_in_precision_alone():
    bench = load_bench("precision")
    frame = pd.DataFrame([
        _run("a", "none", 0, 0.780), _run("b", "none", 0, 0.784, amp="bf16"),  # old fp32 run: no clf.precision
        _run("c", "none", 1, 0.800, precision="fp32"), _run("d", "none", 1, 0.806, amp="auto", precision="bf16"),
        _run("e", "none", 2, 0.797), _run("f", "none", 2, 0.800, amp="bf16", precision="bf16"),
        _run("g", "none", 2, 0.900, amp="bf16", lr="0.004"),  # another recipe: no twin
        _run("h", "oversample", 0, 0.79),  # fp32 only
    ])
    matched = bench.pairs(frame)
    assert {k[0] for k in matched} == {"none"} and len(matched) == 3
    table = bench.summarise(matched)
    row = next(line for line in table.splitlines() if line.startswith("| none |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == "3" and cells[6].startswith("+0.43 [")  # (0.4 + 0.6 + 0.3) / 3 pp
    assert cells[-1] == "yes"  # 0.43 pp is inside the fp32 seeds' std (1.1 pp)


def test_cli_without_matching_runs_exits_2_naming_the_fix(tracker, capsys):
    bench = load_bench("precision")
    assert bench.main(["--experiments", "no-such-experiment"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1
