"""Is `synthboost grid --dry-run` honest?  Its estimate for a small grid beside the grid's measured wall time.

    python bench/grid_cost.py [--profile smoke] [--sizes 500,1500] [--clf-epochs 6] [--from-runs]

In one process, on a throw-away store and calibration file: calibrate this machine (`grid --calibrate`: one
small cell per family), print the dry-run's estimate for a grid of 20 cells (none, oversample, vae, cgan, ddpm ×
balanced/high × two sizes, seed 0), run the grid with one worker and print the measured wall time and the ratio.
``--from-runs`` adds a second pass: the same grid at seed 1, estimated from the first pass's runs instead.
The goal (issue 19) is a ratio within 0.7–1.3.  The machine is shared: the load average is printed with it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

GRID = """
experiment: {exp}
profile: {profile}
models: [none, oversample, vae, cgan, ddpm]
regimes: [balanced, high]
sizes: [{sizes}]
seeds: [{seed}]
classifiers: [cnn]
mixes: [{{ratio: 1.0, strategy: balance}}]
fixed: {{clf.epochs: {epochs}}}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--sizes", default="500,1500")
    ap.add_argument("--clf-epochs", type=int, default=6)
    ap.add_argument("--from-runs", action="store_true", help="a second pass estimated from the first pass's runs")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
        from synthboost import cost
        from synthboost import grid as grid_mod
        from synthboost.tracking import Tracker

        storage = f"{tmp}/queue.journal"
        calibration = Path(tmp, "calibration.json")
        tracker = Tracker()
        tracker.experiment_id("bench")  # one-off store creation is part of neither figure

        def spec_for(exp: str, seed: int):
            path = Path(tmp, f"{exp}.yaml")
            path.write_text(GRID.format(exp=exp, profile=args.profile, sizes=args.sizes, seed=seed,
                                        epochs=args.clf_epochs))
            return grid_mod.load_grid(path)

        t0 = time.perf_counter()
        grid_mod.calibrate(spec_for("calibrate", 0), storage_url=storage, path=calibration)
        print(f"calibration ({args.profile}, {cost.machine_key(cost.machine())}): {time.perf_counter() - t0:.0f} s")

        passes = [("model", "calibration", 0)] + ([("runs", "runs", 1)] if args.from_runs else [])
        for exp, expected, seed in passes:
            spec = spec_for(exp, seed)
            units = grid_mod.plan(spec, storage)
            est = grid_mod.cost_estimate(spec, units, tracker, calibration=calibration)
            cells = sum(len(u["cells"]) for u in units)
            print(f"\n== pass '{exp}': {cells} cells, {len(est.families)} families; estimate from {expected}")
            for line in cost.report_lines(est, workers=1):
                print("  " + line)
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            out = grid_mod.run_grid(spec, storage_url=storage, workers=1, show_progress=False)
            measured = time.perf_counter() - t0
            ratio = est.wall_seconds(1) / measured
            print(f"  measured: {measured:.0f} s for {out['ran']} cells ({out['missing']} missing); estimate "
                  f"{est.wall_seconds(1):.0f} s; estimate / measured = {ratio:.2f} "
                  f"({'within' if 0.7 <= ratio <= 1.3 else 'OUTSIDE'} ±30%; load average "
                  f"{load0:.1f} → {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
