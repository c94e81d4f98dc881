"""Time to quality: each generator family's wall time to a usable 1× mix, today's settings vs faster ones, side by side.

    python bench/time_to_quality.py [--families ddpm,cgan,...] [--seeds 0,1,2] [--regime balanced] [--size 5000]
        [--profile quick] [--fast ddpm:sampling_steps=10,epochs=8 ...] [--store DIR] [--report]

The question: does a cheaper setting reach today's generator quality — label consistency and FID within the spread
of today's seeds — in at most half the wall time?
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # sleeping OpenMP waiters: the CPU is shared

from synthboost import generators  # noqa: E402
from synthboost.config import PROFILES  # noqa: E402
from synthboost.errors import UserError  # noqa: E402

#: candidate settings, per family: halve what dominates its wall time
FAST: dict[str, dict[str, object]] = {
    # the VAE family trains 30 (ssvae 20) epochs; its sampling is near free.  Screened on seed 0 (2026-12-02, this
    # bench, one seed): half the epochs alone lost quality (vae FID 75 -> 104; at lr 2e-3 still 83), two thirds at
    # twice the lr held it (vae 75 -> 70, dvae 48 -> 47, cvae 189 -> 186); ssvae held at half its epochs at 2e-3
    # (LC 0.669 -> 0.687, FID 194 -> 196)
    "vae": {"epochs": 20, "lr": 0.002}, "cvae": {"epochs": 20, "lr": 0.002}, "dvae": {"epochs": 20, "lr": 0.002},
    "ssvae": {"epochs": 10, "lr": 0.002},
    # vqvae: the autoencoder and the transformer prior.  Halving both lost quality on seed 0 (LC 0.738 -> 0.656, FID
    # 65 -> 111; at twice the lrs 0.717 / 83), so two thirds of each at twice the lrs, as held for the VAEs
    "vqvae": {"epochs": 7, "prior_epochs": 27, "lr": 0.002, "prior_lr": 0.002},
    # GANs: the G-step floor is the budget at 5,000 (50 epochs ≈ the floor)
    "cgan": {"epochs": 25, "min_g_steps": 1650}, "biggan": {"epochs": 25, "min_g_steps": 825},
    # diffusion: sampling is half the wall time at 20 DPM-Solver++ steps, training the other half
    "ddpm": {"sampling_steps": 10, "epochs": 8, "min_steps": 527},
    "clip": {"sampling_steps": 10, "epochs": 8, "min_steps": 527},
}


EXPERIMENT = "time-to-quality"
#: the run's CPU seconds as the bench measured them around it (the pipeline in this process, one thread)
CPU_METRIC = "ttq/cpu_seconds"


def parse_fast(items: list[str]) -> dict[str, dict[str, str]]:
    """``["ddpm:sampling_steps=10,epochs=8"]`` -> ``{"ddpm": {"sampling_steps": "10", "epochs": "8"}}``."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        family, sep, rest = item.partition(":")
        pairs = [p.partition("=") for p in rest.split(",") if p]
        if not sep or not pairs or any(not eq or not k for k, eq, _ in pairs):
            raise UserError(f"--fast {item!r}: expected FAMILY:key=value[,key=value…], e.g. ddpm:sampling_steps=10")
        out[family] = {k.strip(): v.strip() for k, _, v in pairs}
    return out


def _config(*, family: str, gen: dict, seed: int, args):
    from synthboost import cell, pipeline

    return cell.make_config(model=family, regime=args.regime, size=args.size, seed=seed, profile=args.profile,
                            mix_ratio=1.0, mix_strategy="uniform", gen_metrics=False,
                            overrides={"gen": dict(gen), "clf": {"steps": 1}})


def measure(*, family: str, gen: dict, seed: int, args, tracker) -> dict[str, float] | None:
    """One pipeline run, or the FINISHED one a cut-off earlier invocation left in ``--store`` (the bench takes hours:
    it resumes); what it logged, with its training time (today's when it reused today's weights)."""
    from synthboost import cell, pipeline
    from synthboost.tracking import TAG_GENERATOR_RESUMED

    cfg = _config(family=family, gen=gen, seed=seed, args=args)
    setting = "fast" if gen else "today"
    # only a sampling-only fast setting may reuse weights (today's); anything else trains, so its time/gen is a
    # training time even when an interrupted run of the same key left a checkpoint behind
    reuse = bool(gen) and set(gen) <= set(cell.sampling_values(cfg.gen))
    cpu0 = time.process_time()
    result, read_back = pipeline.run_or_read(cfg, tracker=tracker, experiment=EXPERIMENT, use_cache=reuse,
                                             resume=True, extra_tags={"ttq_setting": setting}, read_only=args.report)
    if result is None:  # --report runs nothing
        return None
    if not read_back:  # the run's CPU seconds (training, sampling, a one-step classifier), kept for a read-back
        result.metrics[CPU_METRIC] = time.process_time() - cpu0
        tracker.attach(result.run_id).log_metrics({CPU_METRIC: result.metrics[CPU_METRIC]})
    else:
        print(f"{family} seed {seed} {setting}: run {result.run_id} finished earlier in this store; read back",
              flush=True)
    m = result.metrics
    if "gen/fid" not in m:  # finished, but cut before (or not yet at) its quality: computed now, logged in the run
        m = m | {f"gen/{k}": v for k, v in pipeline.evaluate_run(result.run_id, tracker=tracker, cas=False).items()}
    resumed = result.tags.get(TAG_GENERATOR_RESUMED, "")
    # CPU seconds compare under any load, but only for a run trained in one go here (a resumed run's cut attempt
    # and a reused generator's training are not in them)
    cpu = m.get(CPU_METRIC) if not resumed and not result.generator_reused else None
    return {"gen": m.get("time/gen", 0.0), "sample": m.get("time/sample", 0.0), "reused": result.generator_reused,
            "resumed": resumed, "cpu": cpu, "lc": m["gen/label_consistency"],
            "fid": m["gen/fid"], "machine": result.tags.get("machine.cpu", "unknown CPU")}


def warm_shared_inputs(*, family: str, seed: int, args, tracker) -> None:
    """Train (or load) what a family's generators of one data draw share before either setting runs — clip's
    CLIP, trained once per draw — so that neither wall time carries it: it is the same for both settings."""
    from synthboost import cell, pipeline
    from synthboost.data import make_split

    cfg = _config(family=family, gen={}, seed=seed, args=args)
    t0 = time.perf_counter()
    inputs = generators.get(family)(cfg.gen).fit_inputs(make_split(cfg.data, seed), seed=seed,
                                                      models=pipeline.ProjectModels(tracker))
    if inputs.kwargs:
        print(f"{family} seed {seed}: shared inputs ({', '.join(inputs.kwargs)}) ready in "
              f"{time.perf_counter() - t0:.1f} s, left out of both settings' wall time", flush=True)


def summarise(family: str, today: list[dict], fast: list[dict], fast_values: dict) -> dict[str, object]:
    # a fast setting that changes only sampling reuses today's weights: charge it today's training time
    for t, f in zip(today, fast):
        if f["reused"]:
            f["gen"] = t["gen"]
    wall_t = statistics.fmean(r["gen"] + r["sample"] for r in today)
    wall_f = statistics.fmean(r["gen"] + r["sample"] for r in fast)
    # a store resumed on another machine (runs read back from the ledger) holds wall times of two CPUs: quality
    # still compares, wall times only within one machine
    machines = sorted({r["machine"] for r in today + fast})
    cpus = [r["cpu"] for r in today + fast]
    cpu_t = statistics.fmean(cpus[:len(today)]) if None not in cpus else None
    cpu_f = statistics.fmean(cpus[len(today):]) if None not in cpus else None
    lc_f, fid_f = statistics.fmean(r["lc"] for r in fast), statistics.fmean(r["fid"] for r in fast)
    eps = 1e-9  # a mean of equal values may round below them
    holds = lc_f >= min(r["lc"] for r in today) - eps and fid_f <= max(r["fid"] for r in today) + eps
    return {"family": family, "fast": ", ".join(f"{k}={v}" for k, v in fast_values.items()),
            "seeds": len(today), "today_wall": wall_t, "fast_wall": wall_f,
            "speedup": (wall_t / wall_f if wall_f > 0 else float("inf")) if len(machines) == 1 else None,
            "machines": machines, "today_cpu": cpu_t, "fast_cpu": cpu_f,
            "cpu_speedup": cpu_t / cpu_f if cpu_t is not None and cpu_f and len(machines) == 1 else None,
            "today_lc": [r["lc"] for r in today], "fast_lc": [r["lc"] for r in fast],
            "today_fid": [r["fid"] for r in today], "fast_fid": [r["fid"] for r in fast], "holds": holds}


def _spread(values: list[float], fmt: str) -> str:
    mean = statistics.fmean(values)
    return format(mean, fmt) + (f" [{min(values):{fmt}}, {max(values):{fmt}}]" if len(values) > 1 else "")


def _speedup(row: dict, key: str) -> str:
    if len(row["machines"]) > 1:
        return f"— (runs of {len(row['machines'])} machines: run the family again on one)"
    return "—" if row[key] is None else f"{row[key]:.2f}×"


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def table(rows: list[dict]) -> str:
    lines = ["| family | fast setting | seeds | today: wall s | fast: wall s | speed-up | today: CPU s | fast: CPU s | "
             "CPU speed-up | label consistency today → fast | FID today → fast | quality holds | machine |",
             "|" + "---|" * 13]
    for r in rows:
        lines.append(f"| {r['family']} | {r['fast']} | {r['seeds']} | {r['today_wall']:.1f} | {r['fast_wall']:.1f} | "
                     f"{_speedup(r, 'speedup')} | {_num(r['today_cpu'])} | {_num(r['fast_cpu'])} | "
                     f"{_speedup(r, 'cpu_speedup')} | "
                     f"{_spread(r['today_lc'], '.3f')} → {_spread(r['fast_lc'], '.3f')} | "
                     f"{_spread(r['today_fid'], '.1f')} → {_spread(r['fast_fid'], '.1f')} | "
                     f"{'yes' if r['holds'] else 'no'} | {'; '.join(r['machines'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    trainable = [n for n in generators.FAMILIES if not generators.is_control(n)]
    ap.add_argument("--families", default=",".join(trainable))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--regime", default="balanced")
    ap.add_argument("--size", type=int, default=5000)
    ap.add_argument("--profile", choices=PROFILES, default="quick")
    ap.add_argument("--fast", action="append", default=[], help="FAMILY:key=value[,key=value…] (repeatable)")
    ap.add_argument("--report", action="store_true", help="print the table from the runs already in --store and "
                    "run nothing (a family with a run missing is named, not tabled)")
    ap.add_argument("--store", default=None, help="folder for the store (default: a temporary one); run the same "
                    "command with the same --store again to resume: finished runs are read back, not re-run")
    args = ap.parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in trainable]
    if unknown:
        ap.error(f"unknown or untrainable families {', '.join(unknown)} (choose from {', '.join(trainable)})")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        fast = FAST | parse_fast(args.fast)
    except (ValueError, UserError) as err:
        ap.error(str(err))
    if args.report and not args.store:
        ap.error("--report reads a store: give --store DIR (the folder of an earlier run of this bench)")
    missing = [f for f in families if f not in fast]
    if missing:
        ap.error(f"no fast setting for {', '.join(missing)}: give --fast {missing[0]}:key=value")

    from synthboost.tracking import Tracker

    folder = Path(args.store or tempfile.mkdtemp(prefix="synthboost-ttq-"))
    folder.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(f"sqlite:///{folder / 'mlflow.db'}")
    print(f"store {tracker.uri}; {args.regime}/{args.size}, {args.profile}, seeds {seeds}; load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    rows, unfinished = [], []
    for family in families:
        today, quick = [], []
        for seed in seeds:  # interleaved, so both settings see the same load
            if not args.report:
                warm_shared_inputs(family=family, seed=seed, args=args, tracker=tracker)
            today.append(measure(family=family, gen={}, seed=seed, args=args, tracker=tracker))
            quick.append(measure(family=family, gen=fast[family], seed=seed, args=args, tracker=tracker))
            print(f"{family} seed {seed}: today {today[-1]}, fast {quick[-1]}", flush=True)
        done = [r for r in today + quick if r is not None]
        if len(done) < len(today + quick):
            unfinished.append(f"{family} ({len(done)} of {len(today + quick)} runs)")
        else:
            rows.append(summarise(family, today, quick, fast[family]))
    print(table(rows))
    if unfinished:
        print(f"not finished in this store, so not in the table: {', '.join(unfinished)}")
    print(f"load average at the end {os.getloadavg()[0]:.1f} (wall times are comparable within a row only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
