"""bench/recipe.py's choice of the classifier recipe: by k-fold validation on held-out draws, never the test set."""

from __future__ import annotations

import subprocess
import sys

from benches import BENCH_DIR, load_bench


def _rows(val: dict[int, list[float]], test: dict[int, list[float]]) -> list[dict]:
    """Rows as the bench writes them: one per contender × seed × fold of high/1000, seeds 100–101, 2 folds."""
    return [{"cell": "high/1000", "recipe": f"r{o}", "order": o, "seed": 100 + i // 2, "fold": i % 2, "kfold": 2,
             "val_balanced_accuracy": v, "test_accuracy": test[o][i]}
            for o in val for i, v in enumerate(val[o])]


def test_the_choice_reads_validation_only_and_keeps_the_incumbent_unless_clearly_beaten():
    choose = load_bench("recipe").choose
    # contender 1 is far better on test but not on validation; contender 2 is better on every validation fold
    val = {0: [0.80, 0.81, 0.79, 0.80], 1: [0.80, 0.80, 0.80, 0.80], 2: [0.83, 0.84, 0.82, 0.835]}
    test = {0: [0.70] * 4, 1: [0.95] * 4, 2: [0.60] * 4}
    chosen, table = choose(_rows(val, test))
    assert chosen == "r2"
    assert "*report only:* test acc. %" in table and "Seeds 100, 101 × 2 folds" in table
    # a gain within the folds' noise leaves the incumbent in place
    noisy = {0: [0.80, 0.81, 0.79, 0.80], 1: [0.83, 0.78, 0.82, 0.79]}
    assert choose(_rows(noisy, {0: [0.7] * 4, 1: [0.9] * 4}))[0] == "r0"


def test_the_choice_refuses_the_report_seeds():
    out = subprocess.run([sys.executable, str(BENCH_DIR / "recipe.py"), "--table", "choice", "--seeds", "100,2"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "must not use the report seeds [0, 1, 2]" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
