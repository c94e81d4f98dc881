"""FID, KID, label consistency and sampling time of one diffusion generator at several sampler:steps settings.

    python bench/diffusion_steps.py [--run-id RUN_ID] [--profile quick] [--family ddpm]
        [--settings dpm:20,ddim:25,ddim:50,ddpm:1000] [--per-class 20] [--fast-per-class 100] [--seed 0]

The question: is a few-step sampler within 10% of the 1000-step ancestral chain's FID, and how much faster is it?
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import get_args

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP waiters slow a shared CPU (bench/generators.py)

import torch  # noqa: E402

from synthboost import cell, generators, pipeline, quality, tracking  # noqa: E402
from synthboost.config import PROFILES  # noqa: E402
from synthboost.data import NUM_CLASSES, load_fashion_mnist, make_split, to_uint8  # noqa: E402
from synthboost.errors import UserError  # noqa: E402
from synthboost.generators.ddpm import Sampler  # noqa: E402
from synthboost.mixing import labels_for  # noqa: E402

DIFFUSION_FAMILIES = ("ddpm", "clip")  # generators with generate(labels, *, guidance_scale, sampler, steps)
SAMPLERS = get_args(Sampler)
FULL_CHAIN = 1000  # settings with fewer steps also get the bigger --fast-per-class draw


def parse_settings(text: str) -> list[tuple[str, int]]:
    settings = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        sampler, _, steps = item.partition(":")
        if sampler not in SAMPLERS or not steps.isdigit() or int(steps) < 1:
            raise argparse.ArgumentTypeError(f"bad setting {item!r}: want sampler:steps with sampler in "
                                             f"{', '.join(SAMPLERS)} and steps >= 1")
        settings.append((sampler, int(steps)))
    if not settings:
        raise argparse.ArgumentTypeError("no settings given")
    return settings


def logged_generator(tracker, *, run_id: str):
    """The generator a run used, and the run's profile tag (None when the run has none)."""
    tags = tracker.run_info(run_id)["tags"]
    gen_run = tags.get("generator_run_id") or run_id  # a run that trained its generator holds the checkpoint
    gen = generators.load(tracker.load_checkpoint(gen_run))
    return gen, gen_run, tags.get("profile")


def trained_generator(tracker, *, family: str, profile: str):
    cfg = cell.make_config(model=family, regime="balanced", size=5000, seed=0, profile=profile)
    split = make_split(cfg.data, cfg.seed)
    pipeline.seed_everything(cfg.seed)
    gen = generators.get(family)(cfg.gen)
    inputs = gen.fit_inputs(split, seed=cfg.seed, models=pipeline.ProjectModels(tracker))
    gen.fit(split.train_x, split.train_y, **inputs.kwargs)
    return gen


def timed_draw(gen, labels: torch.Tensor, *, sampler: str, steps: int, seed: int,
               batch_size: int = 250) -> tuple[torch.Tensor, float]:
    """uint8 images and wall seconds; one seed per draw, so every setting starts from the same noise."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        start = time.perf_counter()
        parts = [to_uint8(gen.generate(labels[i:i + batch_size], guidance_scale=gen.config.guidance_scale,
                                       sampler=sampler, steps=steps)).cpu()  # .cpu() waits for a GPU
                 for i in range(0, len(labels), batch_size)]
        return torch.cat(parts), time.perf_counter() - start


def scores(feats: quality.ExtractorFeatures, images: torch.Tensor, labels: torch.Tensor, *,
           real_features: torch.Tensor, seed: int) -> dict[str, float]:
    fake_f, logits = feats.features_and_logits(images)
    # half the draw per subset: the 100 subsets then differ, so KID's std says something
    kid, kid_std = quality.kid(real_features, fake_f, subset_size=min(1000, len(labels) // 2), seed=seed)
    return {"fid": quality.fid(real_features, fake_f), "kid": kid, "kid_std": kid_std,
            "consistency": float((logits.argmax(1) == labels).float().mean())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-id", default=None, help="MLflow run whose generator to use (default: train one here)")
    ap.add_argument("--profile", choices=PROFILES, default=None,
                    help="extractor profile, and the config trained without --run-id "
                         "(default: the run's profile tag, else quick)")
    ap.add_argument("--family", choices=DIFFUSION_FAMILIES, default=None,
                    help="family to train without --run-id (default ddpm); with it, a check on the checkpoint")
    ap.add_argument("--settings", type=parse_settings, default="dpm:20,ddim:25,ddim:50,ddpm:1000",
                    help="comma-separated sampler:steps")
    ap.add_argument("--per-class", type=int, default=20, help="images per class drawn by every setting")
    ap.add_argument("--fast-per-class", type=int, default=100,
                    help=f"images per class of the second draw of settings with < {FULL_CHAIN} steps")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for name in ("per_class", "fast_per_class"):
        if not 2 <= getattr(args, name) <= 1000:  # FID needs a covariance; the test set has 1000 per class
            ap.error(f"--{name.replace('_', '-')} must be between 2 and 1000")

    tracker = tracking.Tracker()
    if args.run_id:
        gen, gen_run, run_profile = logged_generator(tracker, run_id=args.run_id)
        if args.family and gen.name != args.family:
            ap.error(f"run {args.run_id} holds a {gen.name!r} generator, not {args.family!r}")
        if not getattr(gen, "slow_sampling", False):  # GANs have a generate(z, labels) too, without steps
            ap.error(f"run {args.run_id} holds a {gen.name!r} generator, which has no sampler/steps to vary")
        profile = args.profile or run_profile or "quick"
        origin = f"{gen.name} generator of run {args.run_id} (checkpoint from run {gen_run})"
    else:
        profile, family = args.profile or "quick", args.family or "ddpm"
        print(f"no --run-id: training {family} ({profile} profile) on the balanced regime, size 5000, seed 0",
              flush=True)
        gen = trained_generator(tracker, family=family, profile=profile)
        origin = f"{family} generator trained here ({profile} profile, balanced/5000, seed 0)"

    too_many = [f"{a}:{n}" for a, n in args.settings if n > gen.config.num_train_timesteps]
    if too_many:  # fail before any sampling, not after the slow settings
        ap.error(f"{', '.join(too_many)}: more steps than the generator's {gen.config.num_train_timesteps} "
                 "training timesteps")
    state, extractor_run = pipeline.feature_extractor(tracker, profile=profile)  # the gen/* metrics' own
    feats = quality.ExtractorFeatures(quality.load_extractor(state))
    test = load_fashion_mnist()
    print(f"{origin}; guidance scale {gen.config.guidance_scale:g}; extractor run {extractor_run} ({profile}); "
          f"device {gen.device}, threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}", flush=True)

    with torch.random.fork_rng():  # warm-up: allocations and lazy init stay out of the first timing
        gen.generate(torch.arange(NUM_CLASSES), sampler=args.settings[0][0], steps=2)

    draws = [(args.per_class, args.settings)]
    fast = [s for s in args.settings if s[1] < FULL_CHAIN]
    if fast and args.fast_per_class != args.per_class:
        draws.append((args.fast_per_class, fast))
    rows = []
    for i, (per_class, settings) in enumerate(draws):
        labels = labels_for([per_class] * NUM_CLASSES)
        real_f, _ = feats.features_and_logits(
            quality.reference_set(test.test_x, test.test_y, n_per_class=per_class)[0])
        for sampler, steps in settings:
            images, seconds = timed_draw(gen, labels, sampler=sampler, steps=steps, seed=args.seed * 1000 + i)
            rows.append({"setting": f"{sampler}:{steps}", "sampler": sampler, "steps": steps, "n": len(labels),
                         "s_per_1000": 1000 * seconds / len(labels),
                         **scores(feats, images, labels, real_features=real_f, seed=args.seed)})
            print(f"  done {sampler}:{steps} at n={len(labels)} in {seconds:.0f} s", file=sys.stderr, flush=True)

    n_common = args.per_class * NUM_CLASSES
    # the reference: the ancestral chain with the most steps (ddpm:1000 with the default settings)
    chains = [r for r in rows if r["sampler"] == "ddpm" and r["n"] == n_common]
    ref = max(chains, key=lambda r: r["steps"]) if chains else None
    ref_fid = {r["n"]: r["fid"] for r in rows if ref and r["setting"] == ref["setting"]}  # per n: same-n ratios only
    ratio_head = f" FID / FID({ref['setting']}) |" if ref else ""
    print(f"| setting | n | s/1000 images | FID | KID | label consistency |{ratio_head}")
    print("|---|---:|---:|---:|---:|---:|" + ("---:|" if ref else ""))
    for r in rows:
        ratio = (f" {r['fid'] / ref_fid[r['n']]:.3f} |" if r["n"] in ref_fid else " |") if ref else ""
        print(f"| {r['setting']} | {r['n']} | {r['s_per_1000']:.1f} | {r['fid']:.2f} | {r['kid']:.4f} ± "
              f"{r['kid_std']:.4f} | {r['consistency']:.3f} |{ratio}")

    if ref is None:
        print("no ancestral (ddpm:N) setting: no ratio column and no 10% check")
        return 0
    others = [r for r in rows if r["n"] == n_common and r is not ref]
    if not others:
        print(f"only {ref['setting']} was run: nothing to compare with it")
        return 0
    fastest = min(others, key=lambda r: (r["steps"], r["s_per_1000"]))  # fewest network evaluations
    ratio = fastest["fid"] / ref["fid"]
    within = math.isfinite(ratio) and ratio <= 1.10
    print(f"fastest setting {fastest['setting']} at n={n_common}: FID {fastest['fid']:.2f} vs {ref['fid']:.2f} for "
          f"{ref['setting']} (ratio {ratio:.3f}, {ref['s_per_1000'] / fastest['s_per_1000']:.0f}x faster) -> "
          f"{'within' if within else 'NOT within'} 10% of {ref['setting']}'s FID (one draw, seed {args.seed})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as err:
        sys.exit(f"error: {err}")
