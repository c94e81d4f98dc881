"""CLIP-gradient guidance against caption conditioning (classifier-free guidance), side by side, on one cell.

    python bench/clip_guidance.py [--profile smoke] [--regime high] [--size 1000] [--seeds 0,1,2]
        [--modes cfg,clip_grad,both] [--clip-scale 20] [--set gen.key=value ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP waiters slow a shared CPU

from synthboost import cell, pipeline, tracking  # noqa: E402
from synthboost.config import parse_overrides  # noqa: E402
from synthboost.errors import UserError  # noqa: E402

EXPERIMENT = "clip-guidance"
MODES = ("cfg", "clip_grad", "both")
CHEAP = {"width": 16, "min_steps": 300, "sampling_steps": 10}
COLUMNS = [("label_consistency", "gen/label_consistency", 1.0), ("fid", "gen/fid", 1.0),
           ("cas_cnn", "gen/cas_cnn", 1.0), ("gain_pp", None, 100.0),
           ("s/1000", "gen/sample_seconds_per_1000", 1.0)]


def fmt(values: list[float]) -> str:
    if not values:
        return "—"
    mean = statistics.fmean(values)
    return f"{mean:.3g}" + (f" ± {statistics.stdev(values):.2g}" if len(values) > 1 else "")


def run_or_read(cfg, tracker) -> pipeline.RunResult:
    """One cell into ``EXPERIMENT``, or its FINISHED run from an earlier invocation on the same store."""
    result, read_back = pipeline.run_or_read(cfg, tracker=tracker, experiment=EXPERIMENT)
    if read_back:
        print(f"seed {cfg.seed} {cfg.model}: run {result.run_id} finished earlier in this store; read back",
              file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--regime", default="high")
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--clip-scale", type=float, default=20.0, help="gen.clip_guidance_scale of clip_grad / both")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="section.key=value (gen./clf.)")
    args = ap.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        bad = sorted(set(modes) - set(MODES))
        if bad or not modes or not seeds:
            raise UserError(f"--modes: choose from {', '.join(MODES)} (got {args.modes!r}); --seeds: e.g. 0,1,2")
        overrides = parse_overrides(args.sets)
        # smoke's UNet is too small to say anything; quick and paper keep their own (and a store's generators)
        gen_over = {**(CHEAP if args.profile == "smoke" else {}), **overrides.pop("gen", {})}
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{tempfile.mkdtemp(prefix='clip-guidance-')}/m.db"
        tracker = tracking.Tracker(uri)
        rows: dict[str, dict[str, list[float]]] = {m: {c: [] for c, _, _ in COLUMNS} for m in modes}
        trained_s: list[float] = []
        for seed in seeds:
            common = dict(regime=args.regime, size=args.size, seed=seed, profile=args.profile)
            base = run_or_read(cell.make_config(model="none", overrides=dict(overrides), **common), tracker)
            for mode in modes:
                gen = {**gen_over, "guidance": mode, **({"clip_guidance_scale": args.clip_scale} if mode != "cfg"
                                                        else {})}
                cfg = cell.make_config(model="clip", mix_ratio=1.0, gen_metrics=True,
                                       overrides={**overrides, "gen": gen}, **common)
                res = run_or_read(cfg, tracker)
                if not res.generator_reused:
                    trained_s.append(res.metrics["time/gen"])
                m = res.metrics
                for col, name, mult in COLUMNS:
                    value = (m["test/accuracy"] - base.metrics["test/accuracy"]) if name is None else m.get(name)
                    if value is not None:
                        rows[mode][col].append(mult * value)
                print(f"seed {seed} {mode:9s} reused={res.generator_reused!s:5s} "
                      + " ".join(f"{c}={rows[mode][c][-1]:.4g}" for c, _, _ in COLUMNS if rows[mode][c]),
                      file=sys.stderr, flush=True)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"\nclip guidance — {args.profile} {args.regime}/{args.size}, seeds {','.join(map(str, seeds))}, "
          f"gen {gen_over}, clip_guidance_scale {args.clip_scale:g}, 1× uniform mix; one generator per seed "
          f"({f'trained in {fmt(trained_s)} s' if trained_s else 'each found in the store'}), every mode samples it")
    header = ["guidance", *[c for c, _, _ in COLUMNS]]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for mode in modes:
        print("| " + " | ".join([mode, *[fmt(rows[mode][c]) for c, _, _ in COLUMNS]]) + " |")
    for mode in (m for m in modes if m != "cfg" and "cfg" in modes):
        print(f"{mode} − cfg, paired over seeds (same weights, same data): "
              + "; ".join(paired(rows[mode][c], rows["cfg"][c], c) for c in PAIRED))
    return 0


PAIRED = ("gain_pp", "label_consistency", "fid")


def paired(a: list[float], b: list[float], name: str) -> str:
    """Mean of the per-seed differences with its 95% t-interval (every mode runs on every seed, in seed order)."""
    from synthboost.report.stats import t_interval

    diffs = [x - y for x, y in zip(a, b)]
    if len(diffs) < 2:
        return f"{name} {diffs[0]:+.3g} (n = 1, no interval)" if diffs else f"{name} —"
    mean, std = statistics.fmean(diffs), statistics.stdev(diffs)
    lo, hi = t_interval(mean, std, len(diffs))
    return f"{name} {mean:+.3g} [95% CI {float(lo):+.3g}, {float(hi):+.3g}] (n = {len(diffs)})"


if __name__ == "__main__":
    sys.exit(main())
