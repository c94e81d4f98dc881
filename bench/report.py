"""The report's read path: one search_runs vs a per-run get_run loop on 1,000 runs (goals: >= 10x, <= 3 s).

    python bench/report.py [--runs 1000] [--gc-compare]

Builds a throw-away SQLite store (on tmpfs when /dev/shm is writable — building it is not what is measured)
holding runs of this project's shape: ≈40 params, 60 metrics and 10 tags, each run logged with one
``log_batch`` through the real MlflowClient, every generator run with a ``samples/grid.png``.  Then, side by side:

  report   ``tracking.runs_frame`` (one paginated search_runs) + the report's tables and claims
  loop     ``client.get_run`` for every run id + the same tables (the ids are given to it for free)
  full     ``build_report`` end to end: query, tables, plots, sample grids, md/html/csv, its own MLflow run

and prints loop / report (goal >= 10x) and the absolute times (goal <= 3 s).  ``--gc-compare`` also times the
same search_runs with Python's cyclic GC left on (runs_frame pauses it during the query).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = ["none", "none-strong", "oversample", "vae", "cvae", "dvae", "vqvae", "cgan", "biggan", "ddpm"]
REGIMES = ["semi", "high"]
SIZES = [200, 500, 1000, 2000, 5000]
GAIN = {"dvae": 0.05, "vqvae": 0.045, "ddpm": 0.03, "cvae": 0.02, "vae": 0.015, "biggan": 0.01, "cgan": 0.0,
        "none-strong": 0.01, "oversample": 0.015, "none": 0.0}


def run_shape(model: str, regime: str, size: int, seed: int, rng) -> tuple[dict, dict, dict]:
    """Tags (10), params (~40) and metrics (60) as `synthboost run` writes them."""
    generator = model not in ("none", "none-strong", "oversample")
    tags = {"synthboost.kind": "experiment", "model": model, "variant": model, "regime": regime, "size": str(size),
            "seed": str(seed), "profile": "quick", "classifier": "cnn", "data_digest": f"{regime}-{size}-{seed}",
            "generator_key": f"{model}-{regime}-{size}-{seed}" if generator else ""}
    params = {"model": model, "classifier": "cnn", "profile": "quick", "seed": seed, "gen_metrics": generator,
              "data.regime": regime, "data.size": size, "data.val_fraction": 0.15, "data.minority_classes": "[2, 6]",
              "mix.ratio": 1.0 if generator else 0.0, "mix.strategy": "uniform", "mix.synthetic_weight": 1.0,
              **{f"clf.p{k}": k for k in range(8)}, **({"clf.p0": "strong"} if model == "none-strong" else {})}
    params |= {f"gen.p{k:02d}": k for k in range(40 - len(params))}
    base = 0.62 + 0.05 * np.log10(size / 200) - (0.06 if regime == "high" else 0.0)
    boost = GAIN[model] * (1.5 if regime == "high" else 1.0) * (200 / size) ** 0.3
    acc = float(np.clip(base + boost + rng.normal(0, 0.01), 0, 1))
    metrics = {"test/accuracy": acc, "test/balanced_accuracy": acc, "test/macro_f1": acc - 0.02,
               "test/minority_recall": acc - 0.15}
    for part in ("test", "val"):
        metrics |= {f"{part}/recall_{k}": float(rng.uniform(0.4, 1)) for k in range(10)}
        metrics |= {f"{part}/precision_{k}": float(rng.uniform(0.4, 1)) for k in range(10)}
    metrics |= {"val/accuracy": acc + 0.01, "val/balanced_accuracy": acc + 0.01, "val/macro_f1": acc - 0.01,
                "val/minority_recall": acc - 0.14}
    extra = ["gen/fid", "gen/kid", "gen/is", "gen/precision", "gen/recall", "gen/cas_cnn", "mix/synthetic_total",
             "train/clf_loss", "train/gen_final_loss", "train/gen_final_kl", "train/gen_final_rec", "val/loss"]
    metrics |= {name: float(rng.uniform(0, 10)) for name in extra[:60 - len(metrics)]}
    return tags, params, metrics


def build_store(tracker, n_runs: int, grid_png: Path) -> tuple[str, list[str]]:
    from mlflow.entities import Metric, Param

    exp_id = tracker.experiment_id("bench-report")
    client, rng, ids = tracker.client, np.random.default_rng(0), []
    cells = [(m, r, s) for m in MODELS for r in REGIMES for s in SIZES]
    for i in range(n_runs):
        model, regime, size = cells[i % len(cells)]
        seed = i // len(cells)
        tags, params, metrics = run_shape(model, regime, size, seed, rng)
        run = client.create_run(exp_id, run_name=f"{model} {regime}/{size} seed={seed}", tags=tags)
        ts = int(time.time() * 1000)
        client.log_batch(run.info.run_id, metrics=[Metric(k, v, ts, 0) for k, v in metrics.items()],
                         params=[Param(k, str(v)) for k, v in params.items()])
        if tags["generator_key"]:
            client.log_artifact(run.info.run_id, str(grid_png), "samples")
        client.set_terminated(run.info.run_id, "FINISHED")
        ids.append(run.info.run_id)
    return exp_id, ids


def frame_by_get_run(client, ids: list[str], experiment: str):
    """The same frame as tracking.runs_frame, one get_run per run."""
    import pandas as pd

    rows = []
    for run_id in ids:
        r = client.get_run(run_id)
        row = {"run_id": r.info.run_id, "experiment_id": r.info.experiment_id, "experiment": experiment,
               "run_name": r.info.run_name, "status": r.info.status, "start_time": r.info.start_time,
               "artifact_uri": r.info.artifact_uri}
        row.update({f"metrics.{k}": v for k, v in r.data.metrics.items()})
        row.update({f"params.{k}": v for k, v in r.data.params.items()})
        row.update({f"tags.{k}": v for k, v in r.data.tags.items()})
        rows.append(row)
    return pd.DataFrame.from_records(rows)


def tables(frame):
    from synthboost.report import analyse, tidy
    from synthboost.report.claims import seed

    analysis = analyse(tidy(frame))
    return analysis, seed.claims(analysis)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--gc-compare", action="store_true")
    args = ap.parse_args()

    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    tmp = Path(tempfile.mkdtemp(prefix="synthboost-bench-report-", dir=shm))
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        from matplotlib.figure import Figure

        from synthboost import report, tracking

        tracker = tracking.Tracker(f"sqlite:///{tmp / 'mlflow.db'}")
        fig = Figure(figsize=(6.1, 4.9))
        fig.add_subplot().imshow(np.random.default_rng(1).integers(0, 255, (300, 300)), cmap="gray")
        fig.savefig(tmp / "grid.png", dpi=100)
        t0 = time.perf_counter()
        _, ids = build_store(tracker, args.runs, tmp / "grid.png")
        frame = tracking.runs_frame(tracker, ["bench-report"])
        shape = (frame.filter(like="params.").notna().sum(axis=1).mean(),
                 frame.filter(like="metrics.").notna().sum(axis=1).mean(),
                 frame.filter(like="tags.").drop(columns=["tags.mlflow.runName", "tags.mlflow.user",
                                                          "tags.mlflow.source.name", "tags.mlflow.source.type",
                                                          "tags.mlflow.source.git.commit"], errors="ignore")
                 .notna().sum(axis=1).mean())
        print(f"store: {len(frame)} runs (avg {shape[0]:.0f} params, {shape[1]:.0f} metrics, {shape[2]:.0f} tags) "
              f"built in {time.perf_counter() - t0:.0f} s under {tmp}")
        tables(frame)  # warm-up: scipy/pandas code paths, SQLite page cache

        # wall time, and this process's CPU time: on a shared machine the CPU figure is the steadier one
        print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        best = {}
        for _ in range(3):
            t0, c0 = time.perf_counter(), time.process_time()
            frame = tracking.runs_frame(tracker, ["bench-report"])
            t1 = time.perf_counter()
            tables(frame)
            t2, c2 = time.perf_counter(), time.process_time()
            if not best or t2 - t0 < best["total"]:
                best = {"total": t2 - t0, "query": t1 - t0, "tables": t2 - t1, "cpu": c2 - c0}
        t0, c0 = time.perf_counter(), time.process_time()
        looped = frame_by_get_run(tracker.client, ids, "bench-report")
        t1 = time.perf_counter()
        tables(looped)
        loop, loop_cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"report query + tables (one search_runs): {best['total']:.2f} s wall, {best['cpu']:.2f} s CPU "
              f"(query {best['query']:.2f} s, tables + claims {best['tables']:.2f} s; best of 3)")
        print(f"per-run get_run loop + same tables:      {loop:.2f} s wall, {loop_cpu:.2f} s CPU "
              f"(get_run loop {t1 - t0:.2f} s)")
        print(f"ratio loop / report: {loop / best['total']:.1f}x wall, {loop_cpu / best['cpu']:.1f}x CPU "
              "(goal >= 10x)")
        if args.gc_compare:
            import gc

            t0 = time.perf_counter()
            tracker.client.search_runs([tracker.experiment_id("bench-report")], tracking.kind_filter("experiment"),
                                       max_results=5000)
            on = time.perf_counter() - t0
            print(f"(the same search_runs with the cyclic GC on: {on:.2f} s; gc enabled: {gc.isenabled()})")

        t0, c0 = time.perf_counter(), time.process_time()
        result = report.build_report(experiments=["bench-report"], out_dir=tmp / "out",
                                     formats={"md", "html", "csv"}, tracker=tracker)
        full, full_cpu = time.perf_counter() - t0, time.process_time() - c0
        parts = ", ".join(f"{k} {v:.2f}" for k, v in result.seconds.items())
        print(f"full build_report ({len(result.figures)} figures, md/html/csv, its MLflow run): {full:.2f} s wall, "
              f"{full_cpu:.2f} s CPU (goal <= 3 s) [wall: {parts}]")
        print("claims: " + "; ".join(f"({c.key}) {c.verdict}" for c in result.claims))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
