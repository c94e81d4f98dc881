"""Does the classifier's bf16 autocast move results? Runs of one cell, seed and data draw that differ only in the
precision their training steps computed in, paired from the tracking store, side by side.

    OMP_NUM_THREADS=1 synthboost grid --config studies/fair-high.yaml --workers 2        # fp32 (the default)
    OMP_NUM_THREADS=1 synthboost grid --config studies/precision-high.yaml --workers 2   # the same cells in bf16
    python bench/precision.py --experiments fair-high-1000,precision-high-1000

A pair shares model, regime, size, seed, data digest, step count and every other ``clf.*`` value; precision is
``clf.precision`` where a run logged it (the resolved ``clf.amp``), else ``clf.amp`` (``off`` = fp32). Per model:
the fp32 and bf16 means ± std over seeds, the paired difference with its 95% t interval, and whether that
difference is inside the fp32 seeds' own spread (|mean difference| ≤ their std). The speed side is bench/bound.py's
lever table (steps per second side by side in one process).
"""

from __future__ import annotations

import argparse
import sys

LEVERS = ("amp", "precision")  # what may differ within a pair


def precision_of(params: dict) -> str:
    if isinstance(params.get("precision"), str):
        return params["precision"]
    return "bf16" if params.get("amp") == "bf16" else "fp32"


def pairs(frame):
    """(model, regime, size, seed) -> {precision: test accuracy}, for runs that differ only in precision."""
    import pandas as pd

    clf_cols = sorted(c for c in frame.columns if c.startswith("params.clf."))
    out: dict[tuple, dict[str, float]] = {}
    for _, r in frame.iterrows():
        params = {c.removeprefix("params.clf."): r[c] for c in clf_cols if isinstance(r[c], str)}
        recipe = tuple(sorted((k, v) for k, v in params.items() if k not in LEVERS))
        steps = r.get("metrics.train/clf_steps")
        key = (r.get("tags.model"), r.get("tags.regime"), r.get("tags.size"), r.get("tags.seed"),
               r.get("tags.data_digest"), None if pd.isna(steps) else int(steps), recipe)
        out.setdefault(key, {})[precision_of(params)] = float(r["metrics.test/accuracy"])
    return {k: v for k, v in out.items() if {"fp32", "bf16"} <= set(v)}


def summarise(matched: dict) -> str:
    import numpy as np
    from scipy import stats

    groups: dict[tuple, list[tuple[int, float, float]]] = {}
    for (model, regime, size, seed, _, steps, _), acc in matched.items():
        groups.setdefault((model, regime, size, steps), []).append((int(seed), acc["fp32"], acc["bf16"]))
    lines = ["| model | cell | steps | n | fp32 % (mean ± std) | bf16 % (mean ± std) | bf16 − fp32, pp [95% CI] "
             "| per seed (fp32 / bf16) | within the fp32 seeds' spread |",
             "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for (model, regime, size, steps), rows in sorted(groups.items(), key=lambda kv: str(kv[0])):
        rows.sort()
        fp, bf = np.array([r[1] for r in rows]) * 100, np.array([r[2] for r in rows]) * 100
        d = bf - fp
        n = len(d)
        sd = fp.std(ddof=1) if n > 1 else float("nan")
        if n > 1:
            half = stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n)
            ci = f"{d.mean():+.2f} [{d.mean() - half:+.2f}, {d.mean() + half:+.2f}]"
        else:
            ci = f"{d.mean():+.2f} (n = 1)"
        within = "—" if n < 3 else ("yes" if abs(d.mean()) <= sd else "no")
        per_seed = ", ".join(f"s{s}: {a * 100:.1f} / {b * 100:.1f}" for s, a, b in rows)
        bf_sd = bf.std(ddof=1) if n > 1 else float("nan")
        lines.append(f"| {model} | {regime}/{size} | {steps} | {n} | {fp.mean():.2f} ± {sd:.2f} | "
                     f"{bf.mean():.2f} ± {bf_sd:.2f} | {ci} | {per_seed} | {within} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", default="fair-high-1000,precision-high-1000",
                    help="comma-separated MLflow experiments holding both precisions' runs")
    args = ap.parse_args(argv)
    from synthboost.errors import UserError
    from synthboost.tracking import Tracker, runs_frame

    try:
        frame = runs_frame(Tracker(), args.experiments.split(","))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if frame.empty or "metrics.test/accuracy" not in frame:
        print(f"error: no finished runs in {args.experiments}; run the grids in this file's docstring first",
              file=sys.stderr)
        return 2
    matched = pairs(frame)
    if not matched:
        print(f"error: no run in {args.experiments} has a twin in the other precision (same model, cell, seed, "
              "data and recipe); run studies/precision-high.yaml beside its fp32 grid", file=sys.stderr)
        return 2
    print(summarise(matched))
    return 0


if __name__ == "__main__":
    sys.exit(main())
