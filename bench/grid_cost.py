"""Is `synthboost grid --dry-run` honest?  Its estimate for a small grid beside the grid's measured wall time.

    python bench/grid_cost.py [--profile smoke] [--sizes 500,1500] [--clf-epochs 6] [--from-runs]

In one process, on a throw-away store and calibration file: calibrate this machine (`grid --calibrate`: one
small cell per family), print the dry-run's estimate for a grid of 20 cells (none, oversample, vae, cgan, ddpm ×
balanced/high × two sizes, seed 0), run the grid with one worker and print the measured wall time and the ratio.
``--from-runs`` adds a second pass: the same grid at seed 1, estimated from the first pass's runs instead.
The goal (issue 19) is a ratio within 0.7–1.3.  The machine is shared: the load average is printed with it.

    python bench/grid_cost.py --replay studies/fair-balanced.yaml --as-of 2026-12-01T20:08 [--workers 2]

The same check on a real grid that ran over hours or sessions, from the store in ``MLFLOW_TRACKING_URI`` (and this
machine's calibration): the dry-run's estimate as the store stood at ``--as-of`` (UTC; only runs ended by then
price it, ``cost.estimate_grid(as_of=…)``) beside the wall time of the grid's cells that FINISHED since, per
family and in all, summed over cells (each cell is one process with one thread: core-time, which session breaks do
not inflate).  Cells tagged ``timings_disturbed`` (a paused process) and cells not finished yet are left out of
both sides; a generator's training is priced on the cell that actually trained it.  *share* is the CPU time the
cells' processes got over their wall time and threads (``time/cell_cpu``, logged since 2026-12-02): below 1 the
cells shared their cores with other jobs; ``--min-share 0.8`` leaves out the cells that got less than that.
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
    ap.add_argument("--replay", metavar="GRID_YAML", help="check a grid that ran in this store (see above)")
    ap.add_argument("--as-of", help="with --replay: when the estimate is made (UTC, ISO: 2026-12-01T20:08)")
    ap.add_argument("--workers", type=int, default=2, help="with --replay: workers the wall time is spread over")
    ap.add_argument("--cells", action="store_true", help="with --replay: a line per measured cell too")
    ap.add_argument("--min-share", type=float, default=0.0,
                    help="with --replay: leave out cells that got less than this share of their cores")
    args = ap.parse_args()
    if args.replay:
        if not args.as_of:
            ap.error("--replay needs --as-of: when the estimate is made (UTC, e.g. 2026-12-01T20:08)")
        replay(args.replay, as_of=args.as_of, workers=args.workers, cells=args.cells, min_share=args.min_share)
        return

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
        from synthboost import cost, work
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
        spec = spec_for("calibrate", 0)
        cost.calibrate(grid_mod.calibration_units(spec, storage), profile=spec.profile, gen_metrics=spec.gen_metrics,
                       path=calibration)
        print(f"calibration ({args.profile}, {work.machine_key(work.machine())}): {time.perf_counter() - t0:.0f} s")

        passes = [("model", "calibration", 0)] + ([("runs", "runs", 1)] if args.from_runs else [])
        for exp, expected, seed in passes:
            spec = spec_for(exp, seed)
            units = grid_mod.plan(spec, storage)
            est = cost.estimate_grid(units, tracker, experiment=spec.experiment, calibration=calibration)
            cells = sum(len(u.cells) for u in units)
            print(f"\n== pass '{exp}': {cells} cells, {len(est.families)} families; estimate from {expected}")
            for line in cost.report_lines(est, workers=1):
                print("  " + line)
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            out = grid_mod.run_grid(spec, storage_url=storage, workers=1, show_progress=False)
            measured = time.perf_counter() - t0
            ratio = est.wall_seconds(1) / measured
            print(f"  measured: {measured:.0f} s for {out.ran_now} cells ({out.missing} missing); estimate "
                  f"{est.wall_seconds(1):.0f} s; estimate / measured = {ratio:.2f} "
                  f"({'within' if 0.7 <= ratio <= 1.3 else 'OUTSIDE'} ±30%; load average "
                  f"{load0:.1f} → {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


def share_of_cores(run) -> float | None:
    """The CPU time a cell's process got over its wall time and threads; None for runs from before it was logged."""
    m = run.data.metrics
    threads = int(run.data.tags.get("machine.threads") or 1)
    if "time/cell_cpu" not in m or not m.get("time/cell"):
        return None
    return m["time/cell_cpu"] / (m["time/cell"] * threads)


def replay(path: str, *, as_of: str, workers: int, cells: bool = False, min_share: float = 0.0) -> None:
    import datetime as dt

    from synthboost import cost, queue
    from synthboost import grid as grid_mod
    from synthboost.tracking import KIND_EXPERIMENT, TAG_CONFIG_KEY, TAG_TIMINGS_DISTURBED, Tracker

    try:
        when = dt.datetime.fromisoformat(as_of).replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise SystemExit(f"--as-of {as_of!r} is not an ISO time: write e.g. 2026-12-01T20:08 (UTC)") from None
    ms = int(when.timestamp() * 1000)
    spec = grid_mod.load_grid(path)
    tracker = Tracker()
    units = grid_mod.plan(spec, queue.default_storage())
    est = cost.estimate_grid(units, tracker, experiment=spec.experiment, as_of=ms)
    print(f"== {spec.experiment}: the dry-run's estimate as of {when:%Y-%m-%d %H:%M} UTC "
          f"({len(est.cell_seconds)} cells to run then)")
    for line in cost.report_lines(est, workers=workers):
        print("  " + line)
    rows: dict[str, list[float]] = {}  # family -> [cells, measured s, estimated s]
    shares: dict[str, list[float]] = {}
    disturbed = unknown = contended = 0
    for r in tracker.finished_runs(KIND_EXPERIMENT, experiment_ids=[tracker.experiment_id(spec.experiment)]):
        key = r.data.tags.get(TAG_CONFIG_KEY, "")
        if key not in est.cell_seconds:  # not in the grid, or done by then
            continue
        if r.data.tags.get(TAG_TIMINGS_DISTURBED) == "true":
            disturbed += 1
            continue
        if est.cell_seconds[key] is None:
            unknown += 1
            continue
        share = share_of_cores(r)
        if min_share and (share is None or share < min_share):
            contended += 1
            continue
        family = r.data.tags.get("model", "?")
        if share is not None:
            shares.setdefault(family, []).append(share)
        row = rows.setdefault(family, [0, 0.0, 0.0])
        seconds = (r.info.end_time - r.info.start_time) / 1000
        row[0] += 1
        row[1] += seconds
        row[2] += est.cell_seconds[key]
        if cells:
            start = dt.datetime.fromtimestamp(r.info.start_time / 1000, dt.timezone.utc)
            print(f"  {start:%m-%d %H:%M} {r.data.tags.get('variant', '?'):<18} seed {r.data.tags.get('seed', '?')}: "
                  f"measured {seconds / 60:6.1f} min, estimated {est.cell_seconds[key] / 60:6.1f} min"
                  + (f", {share:.0%} of a core" if share is not None else ""))
    waiting = len(est.cell_seconds) - sum(r[0] for r in rows.values()) - disturbed - unknown - contended
    print(f"\n== measured since: cells FINISHED after {when:%H:%M} (left out: {disturbed} with disturbed timings, "
          f"{unknown} priced unknown, " + (f"{contended} below {min_share:.0%} of a core, " if min_share else "")
          + f"{waiting} not finished yet)")
    print(f"  {'family':<12} {'cells':>5} {'measured':>10} {'estimated':>10} {'est/meas':>9} {'share':>6}")
    for fam, (n, meas, guess) in sorted(rows.items(), key=lambda kv: -kv[1][1]):
        got = shares.get(fam)
        share = f"{sum(got) / len(got):.0%}" if got else "—"
        print(f"  {fam:<12} {n:>5} {meas / 3600:>9.2f}h {guess / 3600:>9.2f}h {guess / meas:>9.2f} {share:>6}")
    n, meas, guess = (sum(r[i] for r in rows.values()) for i in range(3))
    if not n:
        print("  no cell finished since then: nothing to check yet")
        return
    ratio = guess / meas
    print(f"  {'total':<12} {n:>5} {meas / 3600:>9.2f}h {guess / 3600:>9.2f}h {ratio:>9.2f}  "
          f"({len(rows)} families; {'within' if 0.7 <= ratio <= 1.3 else 'OUTSIDE'} ±30%)")


if __name__ == "__main__":
    main()
