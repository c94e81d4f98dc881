"""The classifier recipe, measured: each change alone against the old recipe, and whether the budget converged.

Every row trains the CNN on the *same* real training split of each seed (the pipeline's ``make_split``) and
reports the official test set's accuracy, mean ± std over the seeds — a measurement of recipes, not a selection:
nothing here feeds back into a run.  One process per job, one thread each.

    python bench/recipe.py --cells high/1000,balanced/1000 --seeds 0,1,2 --jobs 2 --out docs/recipe
    python bench/recipe.py --cells high/1000,balanced/5000 --table convergence --jobs 2 --out docs/recipe
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

OLD_PLAIN = {"net": "small3", "batch_size": 128, "epochs": 20, "dropout": 0.25}
OLD_STRONG = {**OLD_PLAIN, "epochs": 40, "augment": "shift_flip", "shift": 4, "flip_classes": "all",
              "class_weight": "balanced"}
NEW_STRONG = {"augment": "shift_flip", "class_weight": "balanced"}

TABLES = {
    # each change alone, applied to the old strong recipe, then everything together (the new defaults)
    "ablation": [
        ("old plain (3×3 map, batch 128, 20 epochs)", OLD_PLAIN),
        ("old strong (flip all, ±4 px, 40 epochs)", OLD_STRONG),
        ("  + keep the 7×7 map (small7)", {**OLD_STRONG, "net": "small7"}),
        ("  + two double-conv blocks (vgg, 7×7)", {**OLD_STRONG, "net": "vgg"}),
        ("  + shifts of ±2 px", {**OLD_STRONG, "shift": 2}),
        ("  + flips only where the class allows", {**OLD_STRONG, "flip_classes": "mirror_safe"}),
        ("  + no flips at all", {**OLD_STRONG, "augment": "shift"}),
        ("  + batch 64 (same epochs: 2× steps)", {**OLD_STRONG, "batch_size": 64}),
        ("  + dropout 0.3", {**OLD_STRONG, "dropout": 0.3}),
        ("new plain (defaults)", {}),
        ("new strong (defaults + shift_flip + balanced)", NEW_STRONG),
        ("new strong, batch 128", {**NEW_STRONG, "batch_size": 128}),
        ("new strong, lr 1e-3", {**NEW_STRONG, "lr": 1e-3}),
        ("new strong, lr 4e-3", {**NEW_STRONG, "lr": 4e-3}),
    ],
    # does doubling the default budget still move the real-only accuracy?
    "convergence": [
        ("new plain, default budget", {}),
        ("new plain, 2× budget", {"epochs": 80}),
        ("new strong, default budget", NEW_STRONG),
        ("new strong, 2× budget", {**NEW_STRONG, "epochs": 80}),
    ],
}


def one(job: tuple[str, str, int, int, dict, str]) -> dict:
    cell, label, order, seed, overrides, profile = job
    import torch

    torch.set_num_threads(1)
    from synthboost.classifiers import CNNClassifier, CNNConfig
    from synthboost.config import build
    from synthboost.metrics import classification_metrics

    regime, size = cell.split("/")
    split = make_split_cached(regime, int(size), seed)
    cfg = build(CNNConfig, overrides, profile=profile, prefix="clf")
    t0 = time.perf_counter()
    clf = CNNClassifier(cfg, seed=seed, device="cpu")
    fitted = clf.fit(split.train_x, split.train_y)
    seconds = time.perf_counter() - t0
    m = classification_metrics(split.test_y.numpy(), clf.predict(split.test_x), minority_classes=split.minority_classes)
    return {"cell": cell, "recipe": label, "order": order, "seed": seed, "steps": fitted["steps"],
            "test_accuracy": m["accuracy"], "test_balanced_accuracy": m["balanced_accuracy"],
            "test_min_recall": min(m[f"recall_{k}"] for k in range(10)), "seconds": seconds}


_SPLITS: dict = {}


def make_split_cached(regime: str, size: int, seed: int):
    from synthboost.config import DataConfig
    from synthboost.data import make_split

    key = (regime, size, seed)
    if key not in _SPLITS:
        _SPLITS[key] = make_split(DataConfig(regime=regime, size=size), seed)
    return _SPLITS[key]


def summarise(rows: list[dict]) -> str:
    import numpy as np

    out = ["| cell | recipe | steps | test accuracy % (mean ± std) | per seed | weakest-class recall % | s/run |",
           "|---|---|---:|---:|---|---:|---:|"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["cell"], r["order"], r["recipe"]), []).append(r)
    for (cell, _, label), g in sorted(groups.items()):
        g = sorted(g, key=lambda r: r["seed"])
        acc = np.array([r["test_accuracy"] for r in g]) * 100
        low = np.array([r["test_min_recall"] for r in g]) * 100
        out.append(f"| {cell} | {label} | {g[0]['steps']} | {acc.mean():.2f} ± {acc.std(ddof=1) if len(acc) > 1 else 0:.2f} "
                   f"| {' / '.join(f'{a:.1f}' for a in acc)} | {low.mean():.1f} | {np.mean([r['seconds'] for r in g]):.0f} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default="high/1000,balanced/1000")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--table", choices=sorted(TABLES), default="ablation")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--only", default="", help="comma-separated row numbers of the table to run (default: all)")
    ap.add_argument("--out", default="", help="folder for <table>.csv and <table>.md")
    args = ap.parse_args()
    rows_spec = list(enumerate(TABLES[args.table]))
    if args.only:
        keep = {int(i) for i in args.only.split(",")}
        rows_spec = [r for r in rows_spec if r[0] in keep]
    jobs = [(cell, label, order, int(seed), overrides, args.profile)
            for cell in args.cells.split(",") for order, (label, overrides) in rows_spec
            for seed in args.seeds.split(",")]
    print(f"{len(jobs)} trainings, {args.jobs} process(es), one thread each", file=sys.stderr, flush=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for r in pool.map(one, jobs):
            rows.append(r)
            print(f"{r['cell']:<14} {r['recipe']:<48} seed {r['seed']}: {100 * r['test_accuracy']:.2f}% "
                  f"({r['steps']} steps, {r['seconds']:.0f} s)", file=sys.stderr, flush=True)
    table = summarise(rows)
    print(table)
    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{args.table}.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        (folder / f"{args.table}.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
