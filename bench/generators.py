"""Training time per epoch and sampling throughput of every registered generator family, in one table.

    python bench/generators.py --profile quick [--families vae,cvae,...] [--epochs N] [--size 5000]
        [--steps 10,20,25,50]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once when torch's OpenMP runtime starts

import torch  # noqa: E402

from synthboost import generators  # noqa: E402
from synthboost.config import PROFILES, DataConfig, build, replace  # noqa: E402
from synthboost.data import NUM_CLASSES, make_split, to_uint8  # noqa: E402
from synthboost.training import pick_device  # noqa: E402


def capped_config(cls, profile: str, epochs: int | None):
    cfg = build(cls.Config, profile=profile)
    if epochs is None:
        return cfg
    values = {k: min(v, epochs) for k, v in vars(cfg).items() if k.endswith("epochs") and isinstance(v, int)}
    # the step floors (gen.min_steps, gen.min_g_steps) would raise the epochs again: a cap drops them
    values |= {k: 0 for k in vars(cfg) if k.startswith("min_") and k.endswith("steps")}
    return build(cls.Config, values, profile=profile)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def chain_img_per_s(gen, labels: torch.Tensor, **generate) -> float:
    """Images/s of a diffusion family's ``generate`` (``sampler``/``steps`` overrides) over ``labels``."""
    start = time.perf_counter()
    for i in range(0, len(labels), 500):  # sample_batched's chunks; .cpu() waits for a GPU
        to_uint8(gen.generate(labels[i:i + 500], **generate)).cpu()
    return len(labels) / (time.perf_counter() - start)


def bench_family(name: str, split, *, profile: str, epochs: int | None, samples: int, seed: int,
                 steps: list[int], step_samples: int) -> dict:
    cls = generators.get(name)
    cfg = capped_config(cls, profile, epochs)
    torch.manual_seed(seed)
    gen = cls(cfg)
    inputs = gen.fit_inputs(split, seed=seed, models=None)  # no cache: clip trains its CLIP inside the timed fit
    ticks: list[float] = []
    start = time.perf_counter()
    gen.fit(split.train_x, split.train_y, on_epoch=lambda epoch, parts: ticks.append(time.perf_counter()),
            **inputs.kwargs)
    sync(gen.device)
    fit_s = time.perf_counter() - start
    n_epochs = len(ticks) or cfg.epochs
    first_s = ticks[0] - start if ticks else fit_s
    steady_s = (fit_s - first_s) / (n_epochs - 1) if len(ticks) >= 2 else fit_s / n_epochs

    labels = torch.arange(NUM_CLASSES).repeat_interleave(max(1, samples // NUM_CLASSES))
    gen.sample_batched(labels[:NUM_CLASSES])  # warm-up (allocations, lazy init)
    start = time.perf_counter()
    gen.sample_batched(labels)
    sample_s = time.perf_counter() - start

    steps_img_per_s = {}
    if getattr(gen, "slow_sampling", False):  # diffusion: the step count sets the sampling cost, so time a few
        few = labels[torch.linspace(0, len(labels) - 1, min(step_samples, len(labels))).long()]
        for n_steps in steps:
            steps_img_per_s[n_steps] = chain_img_per_s(gen, few, sampler="dpm", steps=n_steps)
        # the sampling precision, side by side: fp32 against what gen.sampling_amp=auto picks on this machine
        for amp in ("off", "auto"):
            gen.config = replace(cfg, {"sampling_amp": amp}, prefix="gen")
            steps_img_per_s[f"amp_{amp}"] = chain_img_per_s(gen, few)
        gen.config = cfg
    return {"family": name, "epochs": n_epochs, "fit_s": fit_s, "first_s": first_s, "s_per_epoch": steady_s,
            "img_per_s": len(labels) / sample_s, "steps_img_per_s": steps_img_per_s, "note": ""}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=PROFILES, default="quick")
    ap.add_argument("--families", default="", help="comma-separated subset of the registry (default: all)")
    ap.add_argument("--epochs", type=int, default=None, help="cap every *epochs config field at N")
    ap.add_argument("--size", type=int, default=5000, help="balanced regime size (train + val)")
    ap.add_argument("--samples", type=int, default=1000, help="images generated for the throughput column")
    ap.add_argument("--step-samples", type=int, default=200,
                    help="images per step count for the diffusion columns (each costs a reverse chain)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--steps", default="10,20,25,50",
                    help="DPM-Solver++ step counts timed for slow-sampling (diffusion) families ('' = none)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        ap.error("--epochs must be at least 1")
    try:
        steps = [int(s) for s in args.steps.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--steps wants comma-separated integers, got {args.steps!r}")
    if any(s < 1 for s in steps):
        ap.error("--steps must all be at least 1")
    names = [n.strip() for n in args.families.split(",") if n.strip()] or [n for n in generators.FAMILIES if not generators.is_control(n)]
    unknown = [n for n in names if n not in generators.FAMILIES]
    if unknown:
        ap.error(f"unknown families {', '.join(unknown)} (registered: {', '.join(generators.FAMILIES)})")

    torch.set_num_threads(args.threads)
    split = make_split(DataConfig(regime="balanced", size=args.size), seed=args.seed)
    device = pick_device()
    print(f"profile={args.profile} train images={len(split.train_y)} device={device} "
          f"threads={torch.get_num_threads()} torch={torch.__version__}"
          + (f" epochs capped at {args.epochs}" if args.epochs else ""), flush=True)

    rows = []
    for name in names:
        try:
            rows.append(bench_family(name, split, profile=args.profile, epochs=args.epochs,
                                     samples=args.samples, seed=args.seed, steps=steps,
                                     step_samples=args.step_samples))
        except Exception as err:  # one broken family must not hide the others' numbers
            rows.append({"family": name, "note": f"failed: {type(err).__name__}: {err}"})
        print(f"  done {name}", file=sys.stderr, flush=True)

    print("| family | epochs | fit s | first epoch s | s/epoch | sample img/s | "
          + "".join(f"dpm {n} steps img/s | " for n in steps) + "fp32 img/s | auto-precision img/s | ratio | note |")
    print("|---|---:|---:|---:|---:|---:|" + "---:|" * (len(steps) + 3) + "---|")
    for r in rows:
        if "fit_s" in r:
            by_steps = r["steps_img_per_s"]
            amp = (f"{by_steps['amp_off']:.1f} | {by_steps['amp_auto']:.1f} | "
                   f"{by_steps['amp_auto'] / by_steps['amp_off']:.2f} | ") if "amp_off" in by_steps else " | | | "
            print(f"| {r['family']} | {r['epochs']} | {r['fit_s']:.1f} | {r['first_s']:.2f} | {r['s_per_epoch']:.2f} "
                  f"| {r['img_per_s']:.0f} | "
                  + "".join(f"{by_steps[n]:.1f} | " if n in by_steps else " | " for n in steps) + amp + f"{r['note']} |")
        else:
            print(f"| {r['family']} | | | | | | " + " | " * (len(steps) + 3) + f"{r['note']} |")
    return 1 if any(r["note"].startswith("failed") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
