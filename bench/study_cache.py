"""What the generator cache buys a study: 8 mix-only trials with the cache vs the same 8 without it.

    python bench/study_cache.py [--model vae] [--profile quick] [--trials 8]
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
        from synthboost import cell, classifiers, generators, pipeline
        from synthboost import queue
        from synthboost import study as study_mod
        from synthboost.data import make_split
        from synthboost.mixing import labels_for, mix, synthetic_counts
        from synthboost.tracking import Tracker

        Tracker().experiment_id("bench")  # one-off store creation is not part of either study
        path = Path(tmp, "spec.yaml")
        path.write_text(SPEC.format(profile=args.profile, trials=args.trials))
        spec = study_mod.load_spec(model=args.model, path=path)
        cfg0 = cell.make_config(model=args.model, regime=spec.regime, size=spec.size, seed=0,
                                profile=spec.profile)
        split = make_split(cfg0.data, 0)
        # the trials' mix settings, replayed from the studies' own seeded sampler (checked against them below)
        import optuna

        replay = optuna.create_study(sampler=study_mod.make_sampler(spec, 0))
        settings = [study_mod.suggest(replay.ask(), study_mod.resolve_space(spec)) for _ in range(args.trials)]

        def floor() -> tuple[float, float]:
            """One generator training and the same classifier trainings (+ the val/test predictions every trial
            reports), with no tracking, no plots, no Optuna."""
            t0 = time.perf_counter()
            pipeline.seed_everything(0)
            gen = generators.get(args.model)(cfg0.gen)
            gen.fit(split.train_x, split.train_y)
            t_gen, t_clf = time.perf_counter() - t0, 0.0
            for overrides in settings:
                cfg = cell.make_config(model=args.model, regime=spec.regime, size=spec.size, seed=0,
                                       profile=spec.profile, overrides=overrides)
                counts = synthetic_counts(split.train_y.bincount(minlength=10).tolist(), cfg.mix)
                sy = labels_for(counts)
                x, y, w, _ = mix(split.train_x, split.train_y, gen.sample_batched(sy), sy,
                                 synthetic_weight=cfg.mix.synthetic_weight)
                t0 = time.perf_counter()
                clf = classifiers.get("cnn")(cfg.clf, seed=0)
                clf.fit(x, y, sample_weight=w, val=(split.val_x, split.val_y))
                clf.predict(split.val_x), clf.predict(split.test_x)
                t_clf += time.perf_counter() - t0
            return t_gen, t_clf

        def study(cache: bool) -> float:
            pipeline.forget_pools()
            t0 = time.perf_counter()
            study_mod.run_study(spec, name=f"bench-{cache}", storage_url=str(Path(tmp, f"{cache}.journal")),
                                experiment="bench", use_cache=cache)
            return time.perf_counter() - t0

        # floor, cached study, floor again: this CPU's speed drifts by 10-20% over minutes, and the mean of the
        # floors on either side of the cached study cancels a steady drift
        before = floor()
        times = {"with cache": study(True)}
        after = floor()
        times["without cache"] = study(False)
        ran = optuna.load_study(study_name="bench-True", storage=queue.open_storage(
            str(Path(tmp, "True.journal")))).trials
        assert [t.params for t in ran] == [t.params for t in replay.trials], "replayed mix settings differ"
    t_gen, t_clf = ((a + b) / 2 for a, b in zip(before, after))
    floor_s = t_gen + t_clf
    print(f"{args.model} {spec.regime}/{spec.size} {spec.profile}, {args.trials} mix-only trials")
    for label, t in times.items():
        print(f"  study {label:<14} {t:8.1f} s")
    print(f"  speed-up from the cache: {times['without cache'] / times['with cache']:.2f}x")
    print(f"  floor before / after the cached study: {sum(before):.1f} s / {sum(after):.1f} s")
    print(f"  floor (1 generator training {t_gen:.1f} s + {args.trials} classifier trainings with their val/test "
          f"predictions {t_clf:.1f} s) = {floor_s:.1f} s; cached study / floor = "
          f"{times['with cache'] / floor_s:.2f} (goal <= 1.15)")

if __name__ == "__main__":
    main()
