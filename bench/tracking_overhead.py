"""Share of a `quick` run's wall time spent in MLflow calls (goal: <= 3%).

    python bench/tracking_overhead.py [--model vae] [--regime high] [--size 1000]

Runs one experiment into a throw-away SQLite store and prints the run's wall time, the seconds spent
inside tracking calls (run creation, look-ups, params/metrics/tags batches, artifacts) and their ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vae")
    ap.add_argument("--regime", default="high")
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--profile", default="quick")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        from synthboost.cell import make_config
        from synthboost.pipeline import run_experiment
        from synthboost.tracking import Tracker

        tracker = Tracker()
        tracker.experiment_id("bench")  # store creation (one-off migrations) is not part of a run
        tracker.seconds = 0.0
        cfg = make_config(model=args.model, regime=args.regime, size=args.size, seed=0, profile=args.profile,
                          gen_metrics=False)
        t0 = time.perf_counter()
        run_experiment(cfg, tracker=tracker, experiment="bench", progress=False)
        wall = time.perf_counter() - t0
    print(f"{args.model} {args.regime}/{args.size} {args.profile}: run wall time {wall:.1f} s, "
          f"in MLflow calls {tracker.seconds:.2f} s -> tracking overhead {100 * tracker.seconds / wall:.2f}%")


if __name__ == "__main__":
    main()
