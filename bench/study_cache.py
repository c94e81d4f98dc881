"""What the generator cache buys a study: 8 mix-only trials with the cache vs the same 8 without it.

    python bench/study_cache.py [--model vae] [--profile quick] [--trials 8]

Both studies run in one process against a throw-away store, with the same sampler seed (so the same 8 mix
settings).  Printed: both wall times and their ratio, and the cached study's cost relative to its floor —
one generator training plus 8 classifier trainings on the same data, timed here side by side.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

SPEC = """
regime: high
size: 1000
classifier: cnn
profile: {profile}
seeds: [0]
n_trials: {trials}
sampler: {{name: random, seed: 0}}
pruner: {{name: none}}
search_space: {{mix.ratio: null, mix.strategy: null, mix.synthetic_weight: null}}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vae")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--trials", type=int, default=8)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        from synthboost import classifiers, generators, pipeline
        from synthboost import study as study_mod
        from synthboost.data import make_split
        from synthboost.mixing import labels_for, mix, synthetic_counts
        from synthboost.tracking import Tracker

        Tracker().experiment_id("bench")  # one-off store creation is not part of either study
        path = Path(tmp, "spec.yaml")
        path.write_text(SPEC.format(profile=args.profile, trials=args.trials))
        spec = study_mod.load_spec(model=args.model, path=path)
        times = {}
        for label, cache in (("with cache", True), ("without cache", False)):
            pipeline._POOLS.clear()
            t0 = time.perf_counter()
            study_mod.run_study(spec, name=f"bench-{cache}", storage_url=str(Path(tmp, f"{cache}.journal")),
                                experiment="bench", use_cache=cache)
            times[label] = time.perf_counter() - t0

        # the floor: one generator training and the same 8 classifier trainings, no tracking at all
        import optuna

        trials = optuna.load_study(study_name="bench-True", storage=study_mod.open_storage(
            str(Path(tmp, "True.journal")))).trials
        cfg0 = pipeline.make_config(model=args.model, regime=spec.regime, size=spec.size, seed=0,
                                    profile=spec.profile)
        split = make_split(cfg0.data, 0)
        t0 = time.perf_counter()
        pipeline.seed_everything(0)
        gen = generators.get(args.model)(cfg0.gen)
        gen.fit(split.train_x, split.train_y)
        t_gen = time.perf_counter() - t0
        t_clf = 0.0
        for t in trials:
            overrides = {"mix": {k.split(".", 1)[1]: v for k, v in t.params.items()}}
            cfg = pipeline.make_config(model=args.model, regime=spec.regime, size=spec.size, seed=0,
                                       profile=spec.profile, overrides=overrides)
            counts = synthetic_counts(split.train_y.bincount(minlength=10).tolist(), cfg.mix)
            sy = labels_for(counts)
            x, y, w, _ = mix(split.train_x, split.train_y, gen.sample_batched(sy), sy,
                             synthetic_weight=cfg.mix.synthetic_weight)
            t0 = time.perf_counter()
            classifiers.get("cnn")(cfg.clf, seed=0).fit(x, y, sample_weight=w, val=(split.val_x, split.val_y))
            t_clf += time.perf_counter() - t0
    floor = t_gen + t_clf
    print(f"{args.model} {spec.regime}/{spec.size} {spec.profile}, {args.trials} mix-only trials")
    for label, t in times.items():
        print(f"  study {label:<14} {t:8.1f} s")
    print(f"  speed-up from the cache: {times['without cache'] / times['with cache']:.2f}x")
    print(f"  floor (1 generator training {t_gen:.1f} s + {args.trials} classifier trainings {t_clf:.1f} s) = "
          f"{floor:.1f} s; cached study / floor = {times['with cache'] / floor:.2f} (goal <= 1.15)")


if __name__ == "__main__":
    main()
