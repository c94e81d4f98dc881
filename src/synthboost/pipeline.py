"""One experiment, start to end: data -> generator (cached) -> sample pool -> mix -> classifier -> metrics.

``make_config`` validates everything a user typed *before* any run is opened, so bad input never leaves a
half-written run.  ``run_experiment`` then records one MLflow run.  A generator is trained once per
``generator_key`` (a hash of everything its training depends on); any later run with the same key loads
the checkpoint from the run that trained it, and a process keeps recent sample pools (and the filter's
classifier) in memory, so a study that tunes only the mix never retrains or resamples.

Baselines train no generator: ``none`` is the plain real-only run, ``none-strong`` starts the classifier from
its strong recipe, ``oversample`` adds random copies of real training images up to the ``balance`` mix's
per-class counts, ``pseudo-label`` adds the unlabelled pool images ``ssvae`` sees, labelled by the strong recipe
(pseudo_label.py).  A run that learns from such a pool is tagged ``unlabeled_pool`` (its size and digest): the
report pairs it only with a baseline on the same pool.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import yaml

from . import classifiers, cost, faults, generators, pseudo_label, sample_cache, tracking
from .config import PROFILES, DataConfig, MixConfig, RunConfig, as_dict, build, check_choice, key_dict, replace
from .data import (NUM_CLASSES, Split, check_folds, dataset_digest, load_fashion_mnist, make_split, regime_counts,
                   unlabeled_indices)
from .regimes import train_counts
from .errors import CheckpointIncomplete, UserError
from .metrics import classification_metrics, confusion
from .mixing import filter_samples, labels_for, mix, oversample_indices, synthetic_counts
from .snapshots import Snapshots
from .stages import StageFn, silent
from .timing import timed
from .training import EpochCallback


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_config(*, model: str, classifier: str = "cnn", regime: str = "balanced", size: int = 1000, seed: int = 0,
                profile: str = "quick", mix_ratio: float | None = None, mix_strategy: str | None = None,
                overrides: dict[str, dict] | None = None, gen_metrics: bool | None = None) -> RunConfig:
    """Validate the user's choices into a RunConfig; every mistake raises a one-line ``UserError``."""
    overrides = {k: dict(v) for k, v in (overrides or {}).items()}
    check_choice("model", model, generators.model_names())
    check_choice("classifier", classifier, list(classifiers.CLASSIFIERS))
    check_choice("profile", profile, PROFILES)
    if seed < 0:
        raise UserError(f"seed must be >= 0, got {seed}")
    data = build(DataConfig, {"regime": regime, "size": size, **overrides.pop("data", {})}, prefix="data")
    counts = regime_counts(data.regime, data.size, seed, minority_classes=data.minority_classes)  # size vs pool
    if data.kfold is not None:  # early, before a run is opened
        check_folds(counts, data.kfold, where=f"{data.regime}/{data.size} seed {seed}")
        if data.fold >= data.kfold:
            raise UserError(f"data.fold {data.fold} is not one of the {data.kfold} folds (0…{data.kfold - 1})")
    mix_values = {**({"ratio": mix_ratio} if mix_ratio is not None else {}),
                  **({"strategy": mix_strategy} if mix_strategy is not None else {}), **overrides.pop("mix", {})}
    clf_cls = classifiers.get(classifier)
    clf_values = overrides.pop("clf", {})
    if model in generators.STRONG_RECIPE:  # the recipe's defaults, under what the user (or a study) sets
        clf_values = {**clf_cls.Config.strong.get(profile, {}), **clf_values}
    recipe = clf_values.get("recipe")
    if recipe is not None and recipe in getattr(clf_cls.Config, "recipes", {}):  # e.g. the seed study's
        clf_values = {**clf_cls.Config.recipes[recipe], **clf_values}
    clf = build(clf_cls.Config, clf_values, profile=profile, prefix="clf")
    gen_values = overrides.pop("gen", {})
    if generators.is_baseline(model):
        if gen_values:
            raise UserError(f"model {model!r} trains no generator, so gen.* options "
                            f"({', '.join(sorted(gen_values))}) do not apply")
        _check_baseline_mix(model, mix_values)
        gen = None
    else:
        gen = build(generators.get(model).Config, gen_values, profile=profile, prefix="gen")
    pseudo_values = overrides.pop("pseudo", {})
    pseudo = None
    if model in generators.POOL_BASELINES:
        pseudo = build(pseudo_label.PseudoLabelConfig, pseudo_values, profile=profile, prefix="pseudo")
    elif pseudo_values:
        raise UserError(f"pseudo.* options ({', '.join(sorted(pseudo_values))}) apply only to model "
                        f"{', '.join(sorted(generators.POOL_BASELINES))}, not {model!r}")
    mix_cfg = build(MixConfig, mix_values, prefix="mix")
    run_values = overrides.pop("run", {})
    if run_values:
        raise UserError(f"unknown key(s) run.{', run.'.join(sorted(run_values))}")
    if overrides:
        raise UserError(f"unknown config section(s): {', '.join(sorted(overrides))}")
    if gen_metrics is None:
        gen_metrics = profile != "smoke" and gen is not None
    return RunConfig(model=model, classifier=classifier, profile=profile, seed=seed, data=data, mix=mix_cfg,
                     clf=clf, gen=gen, gen_metrics=bool(gen_metrics and gen is not None), pseudo=pseudo)


def _check_baseline_mix(model: str, mix_values: dict) -> None:
    """A baseline mixes in no synthetic data; ``oversample`` takes mix.ratio (strategy balance) for its copies."""
    if model in generators.OVERSAMPLING:
        mix_values.setdefault("strategy", "balance")
        if mix_values["strategy"] != "balance":
            raise UserError(f"model {model!r} oversamples to the balance strategy's counts; drop --mix-strategy "
                            f"{mix_values['strategy']} (or use a generator)")
        allowed = {"ratio", "strategy"}
    else:
        if mix_values.get("ratio", 0) > 0:
            raise UserError(f"model {model!r} uses no synthetic data; drop --mix-ratio (or use a generator)")
        mix_values["ratio"] = 0.0
        allowed = {"ratio", "strategy", "synthetic_weight"}  # inert without synthetic samples, as before
    defaults = as_dict(MixConfig())
    extra = sorted(k for k, v in mix_values.items() if k in defaults and k not in allowed and v != defaults[k])
    if extra:
        raise UserError(f"model {model!r} mixes in no synthetic samples, so {', '.join('mix.' + k for k in extra)} "
                        f"{'does' if len(extra) == 1 else 'do'} not apply")


def budget_images(cfg: RunConfig, n_real: int) -> int | None:
    """How many images one classifier epoch passes over: the cell's real training images under the fair
    protocol (every run of a cell trains the same number of steps, whatever it mixes in); None — the whole
    mixed set — under the seed study's protocol (``clf.recipe=seed``), where synthetic images add steps."""
    return None if getattr(cfg.clf, "recipe", "fair") == "seed" else n_real


def uses_mix(cfg: RunConfig) -> bool:
    """Whether the run adds samples to the real ones (a generator's, or ``oversample``'s copies)."""
    return cfg.gen is not None or cfg.model in generators.OVERSAMPLING


def sampling_values(gen_cfg) -> dict[str, Any]:
    """The config fields a family reads only when sampling (``Config.sampling_fields``): guidance, steps, …"""
    return {k: getattr(gen_cfg, k) for k in getattr(type(gen_cfg), "sampling_fields", ())}


def load_generator(tracker, run_id: str, gen_cfg):
    """The generator checkpointed by ``run_id``, set to sample with ``gen_cfg``'s sampling-only values (they are
    not part of the generator key, so the checkpoint may carry others)."""
    gen = generators.load(tracker.load_checkpoint(run_id))
    gen.config = replace(gen.config, sampling_values(gen_cfg), prefix="gen")
    return gen


def generator_key(cfg: RunConfig, data_digest: str) -> str:
    """Hash of everything a generator's training depends on (not the mix, not the classifier, and not the
    sampling-only fields: a trial that changes only the guidance scale or the temperature reuses the weights)."""
    gen = {k: v for k, v in key_dict(cfg.gen).items() if k not in sampling_values(cfg.gen)}
    payload = {"data": data_digest, "model": cfg.model, "gen": gen, "seed": cfg.seed,
               "profile": cfg.profile, "val_fraction": cfg.data.val_fraction,
               **_versions(generator=generators.get(cfg.model).code_version)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def real_train_count(cfg: RunConfig) -> int:
    """How many real images the run's classifier trains on (the regime's counts less the validation split)."""
    counts = regime_counts(cfg.data.regime, cfg.data.size, cfg.seed, minority_classes=cfg.data.minority_classes)
    return sum(train_counts(counts, val_fraction=cfg.data.val_fraction, kfold=cfg.data.kfold, fold=cfg.data.fold))


def clf_key_dict(cfg: RunConfig) -> dict[str, Any]:
    """The classifier's config as keys see it: ``key_dict``, less a step floor that does not bind on this cell, and
    with an idle validation cadence at its old default."""
    out = key_dict(cfg.clf)
    if "eval_every" in out:  # keyed as it trains: without early stopping the weights do not depend on it, and
        # under early stopping auto (0) validates every epoch, as 1, the default before auto, did
        out["eval_every"] = (cfg.clf.eval_every or 1) if cfg.clf.early_stopping else 1
    if "min_steps" in out and not classifiers.floor_binds(
            epochs=cfg.clf.epochs, batch_size=cfg.clf.batch_size, min_steps=cfg.clf.min_steps, steps=cfg.clf.steps,
            n_budget=real_train_count(cfg)):
        del out["min_steps"]
    return out


def config_key(cfg: RunConfig) -> str:
    """Hash of the whole cell config and the code versions that train it: a grid skips a cell whose FINISHED run
    has the same key, and re-runs it once the classifier's or the generator's code version is bumped."""
    gen_version = 1 if cfg.gen is None else generators.get(cfg.model).code_version
    payload = cfg.to_dict() | {"clf": clf_key_dict(cfg), "gen": key_dict(cfg.gen) if cfg.gen is not None else {}}
    payload |= _versions(classifier=classifiers.get(cfg.classifier).code_version, generator=gen_version)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_versions(cfg: RunConfig) -> dict[str, int]:
    """The code versions a run was trained with (logged as tags, so the UI shows them)."""
    out = {"code_version.classifier": classifiers.get(cfg.classifier).code_version}
    if cfg.gen is not None:
        out["code_version.generator"] = generators.get(cfg.model).code_version
    return out


def _versions(**versions: int) -> dict[str, int]:
    # version 1 adds nothing, so keys from before versions existed stay valid (and their caches reused)
    return {f"code_version.{k}": v for k, v in versions.items() if v != 1}


def external_data(cfg: RunConfig) -> str | None:
    """What the run learns from beyond its cell's real images (its generator's ``external_data``), or None."""
    return None if cfg.gen is None else generators.get(cfg.model).external_data(cfg.gen)


def external_tags(cfg: RunConfig) -> dict[str, str]:
    """The tags of a run that uses external data (none otherwise): the report keeps such runs apart."""
    source = external_data(cfg)
    return {} if source is None else {tracking.TAG_EXTERNAL_DATA: "true", tracking.TAG_EXTERNAL_SOURCE: source}


def unlabeled_count(cfg: RunConfig) -> int:
    """How many unlabelled pool images (``data.unlabeled_pool``) the run learns from beyond its cell: ssvae's
    ``gen.unlabeled_size``, pseudo-label's ``pseudo.unlabeled_size``, 0 for every other run."""
    if cfg.pseudo is not None:
        return cfg.pseudo.unlabeled_size
    return 0 if cfg.gen is None else generators.get(cfg.model).unlabeled_data(cfg.gen)


def unlabeled_tags(cfg: RunConfig, split: Split) -> dict[str, str]:
    """The tags of a run that learns from an unlabelled pool (none otherwise): its size, and the digest of the
    pool's indices — equal on every run that saw the same images; the report pairs such runs apart."""
    n = unlabeled_count(cfg)
    if not n:
        return {}
    return {tracking.TAG_UNLABELED_POOL: str(n),
            tracking.TAG_UNLABELED_DIGEST: dataset_digest(unlabeled_indices(split, n, cfg.seed))[:16]}


def run_name(cfg: RunConfig, *, variant: str | None = None) -> str:
    """Says what the run is, since the MLflow runs table shows names first; a grid's ``variant`` (e.g.
    ``cgan-strong``: cgan under the careful recipe) leads it, so that a model's variants are told apart there."""
    mix_part = f" mix={cfg.mix.ratio:g}×{cfg.mix.strategy}" if uses_mix(cfg) else ""
    # runs under the seed study's recipe must not read like fair-protocol runs in the runs table
    recipe = getattr(cfg.clf, "recipe", "fair")
    recipe_part = f" recipe={recipe}" if recipe != "fair" else ""
    external = " +external data" if external_data(cfg) else ""  # nor may runs that saw more labelled images
    pool = f" +{unlabeled_count(cfg)} unlabeled" if unlabeled_count(cfg) else ""  # nor more unlabelled ones
    return (f"{variant or cfg.model} {cfg.data.regime}/{cfg.data.size} {cfg.classifier}{mix_part}{recipe_part}"
            f"{external}{pool} seed={cfg.seed}")


@dataclass
class RunResult:
    run_id: str
    metrics: dict[str, float]
    generator_run_id: str | None = None
    generator_reused: bool = False
    tags: dict[str, str] = field(default_factory=dict)


# in-process caches: a study or grid worker asks for the same generator, pool and filter many times
_POOLS: OrderedDict = OrderedDict()
_FILTERS: OrderedDict = OrderedDict()  # apart from the pools, so that new pools never evict a trained filter
_POOL_CACHE_SIZE = 8


def _cached(key: tuple, make: Callable[[], object], *, enabled: bool = True, store: OrderedDict = _POOLS):
    """``make()``'s value, kept in the LRU ``store`` (sample pools by default; the filter's classifier has its own)."""
    if not enabled:
        return make()
    if key in store:
        store.move_to_end(key)
        return store[key]
    value = make()
    store[key] = value
    if len(store) > _POOL_CACHE_SIZE:
        store.popitem(last=False)
    return value


def _kept(key: tuple, make: Callable[[], object], *, enabled: bool, generator_run: str):
    """``_cached``, backed by the disk (``sample_cache``): the draw of another process or an earlier run of the same
    generator run is read instead of drawn again."""
    def from_disk():
        identity = json.dumps(key, default=str)
        value = sample_cache.load(identity, generator_run=generator_run)
        if value is None:
            value = make()
            sample_cache.save(identity, value, generator_run=generator_run)
        return value

    return _cached(key, from_disk if enabled else make, enabled=enabled)


def filter_key(mix_cfg: MixConfig) -> tuple:
    """What a mix's filter adds to the identity of a draw (nothing without a filter): the pipeline's kept draws
    and the grid's pricing of them key on it alike."""
    if mix_cfg.filter == "none":
        return ()
    return mix_cfg.filter, mix_cfg.filter_threshold, mix_cfg.filter_max_factor


def _draw(gen, labels: torch.Tensor, *, seed: int, offset: int) -> torch.Tensor:
    torch.manual_seed(seed * 1000 + offset)  # samples depend on the seed, not on RNG history
    return gen.sample_batched(labels)


def _count_metrics(kind: str, counts) -> dict[str, float]:
    return {f"mix/{kind}_count_{k}": c for k, c in enumerate(counts)} | {f"mix/{kind}_total": sum(counts)}


def filter_score(split: Split, *, profile: str, seed: int, use_cache: bool = True):
    """``score(x, y)``: the probability a CNN trained on the real training images (never validation or test)
    gives each requested label.  Its loss is class-balanced so that it does not turn down the minority
    classes' samples — the ones a long-tailed regime needs — for being rare.  Trained once per data digest,
    profile and seed in a process."""
    def train():
        clf = classifiers.CNNClassifier(classifiers.judge_config(profile, class_weight="balanced"), seed=seed)
        clf.fit(split.train_x, split.train_y)
        return clf

    clf = _cached(("filter", split.digest, profile, seed), train, enabled=use_cache, store=_FILTERS)

    def score(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(clf.predict_proba(x))[torch.arange(len(y)), y]

    return score


def synthetic_pool(gen, counts, *, mix_cfg: MixConfig, seed: int, score=None):
    """The synthetic images and labels for per-class ``counts`` and the mix/* metrics that describe them.

    Without a filter this is one seeded draw; with ``mix.filter`` only samples that ``score`` accepts are kept
    (``mixing.filter_samples``), so the counts may fall short; round 0 is the unfiltered pool's very draw.
    """
    def draw(labels: torch.Tensor, rnd: int) -> torch.Tensor:
        return _draw(gen, labels, seed=seed, offset=1 if rnd == 0 else 100 + rnd)

    if mix_cfg.filter == "none":
        labels = labels_for(counts)
        return draw(labels, 0), labels, _count_metrics("synthetic", counts)
    kept = filter_samples(draw, score, counts, threshold=mix_cfg.filter_threshold,
                          max_factor=mix_cfg.filter_max_factor)
    metrics = (_count_metrics("synthetic", kept.kept) | {"mix/filter_shortfall": kept.shortfall,
                                                         "mix/filter_drawn": sum(kept.drawn)}
               | {f"mix/kept_fraction_{k}": f for k, f in kept.kept_fraction().items()})
    return kept.x, kept.y, metrics


@dataclass(frozen=True)
class ProjectModels:
    """The auxiliary models a family's ``fit_inputs`` may ask for (``generators.base.AuxModels``), each trained
    once and then loaded from its own MLflow run."""

    tracker: Any

    def clip(self, profile: str, *, split: Split | None = None) -> tuple[dict, str]:
        return project_clip(self.tracker, profile=profile, split=split)


def obtain_generator(cfg: RunConfig, split: Split, key: str, *, tracker, run, progress: bool, use_cache: bool,
                     stage: StageFn = silent, snapshots: Snapshots | None = None):
    """Load the generator with ``key`` from the run that trained it, or train it here and log it; with
    ``snapshots`` a training killed earlier goes on from its last snapshot, and leaves its own as it goes."""
    cls = generators.get(cfg.model)
    if use_cache:
        for found in tracker.generator_runs(key):
            try:
                gen = load_generator(tracker, found, cfg.gen)
            except CheckpointIncomplete as err:  # partly written or damaged: never sampled from
                print(f"warning: {err}; not reusing it", file=sys.stderr)
                continue
            stage("generator", f"{cfg.model} reused from run {found} (same generator key {key})")
            return gen, found, True
    epochs = getattr(cfg.gen, "epochs", None)
    stage("generator training", f"{cfg.model} on {len(split.train_y)} real images"
          + (f", {epochs} epoch{'s' if epochs != 1 else ''}" if epochs else "")
          + " (trained once per generator key, then reused)")
    seed_everything(cfg.seed)
    gen = cls(cfg.gen)
    curves: list[tuple[int, dict[str, float]]] = []
    inputs = gen.fit_inputs(split, seed=cfg.seed, models=ProjectModels(tracker))  # e.g. ssvae's pool, clip's CLIP
    if inputs.tags:
        run.set_tags(inputs.tags)
    t0 = time.perf_counter()

    def on_epoch(epoch: int, m: dict[str, float]) -> None:
        curves.append((epoch, {f"train/gen_{k}": v for k, v in m.items()}))
        faults.point("generator-training")

    final = gen.fit(split.train_x, split.train_y, progress=progress, on_epoch=on_epoch, snapshots=snapshots,
                    **inputs.kwargs)
    # an uninterrupted training's time: this attempt's and the earlier ones' up to the snapshot it went on from
    seconds = time.perf_counter() - t0 + (snapshots.earlier() if snapshots is not None else 0.0)
    if snapshots is not None and (resumed := snapshots.resumed()):
        stage("generator training", f"went on from a snapshot ({resumed}) of a killed attempt")
        run.set_tags({tracking.TAG_GENERATOR_RESUMED: resumed})
    run.log_series(curves)
    run.log_metrics({f"train/gen_final_{k}": v for k, v in final.items()} | {"train/gen_seconds": seconds})
    state = gen.state_dict()
    digest = run.log_checkpoint(state, config_yaml=yaml.safe_dump(
        {"family": cfg.model, "generator_key": key, "config": cfg.to_dict()["gen"]}, sort_keys=False))
    faults.point("checkpoint-uploaded")
    run.log_generator_model(state, name=f"{cfg.model}-generator", tags={tracking.TAG_GENERATOR_KEY: key})
    # last, once everything is up: only now may another run take this checkpoint as a cached generator
    run.set_tags(digest | {tracking.TAG_GENERATOR_TRAINED: "true"})
    if snapshots is not None:
        snapshots.clear()
    return gen, run.id, False


def run_experiment(cfg: RunConfig, *, tracker=None, experiment: str | None = None, parent_run_id: str | None = None,
                   use_env_run: bool = True, on_epoch: EpochCallback | None = None, progress: bool = True,
                   use_cache: bool = True, resume: bool | None = None, extra_tags: dict[str, str] | None = None,
                   killed_on: tuple[type[BaseException], ...] = (),
                   on_start: Callable[[str], None] | None = None, stage: StageFn = silent) -> RunResult:
    """Run one experiment cell and record it as one MLflow run.

    ``use_cache=False`` trains the generator even when its checkpoint is in the store; ``resume`` (default: as
    ``use_cache``) lets a training killed earlier go on from its snapshot, charged the killed attempt's time too.
    ``on_epoch`` sees the classifier's per-epoch values (a study reports them to Optuna and may raise a
    pruning exception, listed in ``killed_on`` so the run ends KILLED); ``on_start`` gets the run id first;
    ``stage`` hears of each stage as it starts (data, generator, sampling, classifier, metrics, quality).
    """
    from . import plots

    tracker = tracker or tracking.Tracker()
    experiment = experiment or tracking.DEFAULT_EXPERIMENT
    split = make_split(cfg.data, cfg.seed)
    stage("data", f"Fashion-MNIST {cfg.data.regime}/{cfg.data.size}, seed {cfg.seed}: {len(split.train_y)} train, "
          f"{len(split.val_y)} validation, {len(split.test_y)} test images")
    digest = split.digest
    key = generator_key(cfg, digest) if cfg.gen is not None else ""
    tags = {
        "model": cfg.model, "regime": cfg.data.regime, "size": cfg.data.size, "seed": cfg.seed,
        "profile": cfg.profile, "classifier": cfg.classifier, "data_digest": digest,
        "git_commit": tracking.git_commit(), tracking.TAG_GENERATOR_KEY: key,
        tracking.TAG_KIND: tracking.KIND_EXPERIMENT, tracking.TAG_VARIANT: cfg.model,
        tracking.TAG_CONFIG_KEY: config_key(cfg), **code_versions(cfg),
        "minority_classes": ",".join(map(str, split.minority_classes)), **external_tags(cfg),
        **unlabeled_tags(cfg, split), **cost.machine_tags(),
        **(extra_tags or {}),
    }
    name = run_name(cfg, variant=tags[tracking.TAG_VARIANT])
    with tracker.run(experiment=experiment, name=name, tags=tags, parent_run_id=parent_run_id,
                     use_env_run=use_env_run, killed_on=killed_on) as run:
        if on_start is not None:
            on_start(run.id)
        # wall time (time/*) and work (work/*) of each part of the cell, for the grid's cost estimates (cost.py)
        t_cell, cpu_cell = time.perf_counter(), time.process_time()
        seconds: dict[str, float] = {}
        work: dict[str, float] = {}
        run.log_params(cfg.params())
        run.log_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), "config.yaml")
        run.log_dataset(split, name=f"fashion-mnist {cfg.data.regime}/{cfg.data.size} seed={cfg.seed}",
                        source=load_fashion_mnist().source)
        real_counts = torch.bincount(split.train_y, minlength=NUM_CLASSES).tolist()
        synth_x = torch.zeros(0, 1, 28, 28, dtype=torch.uint8)
        synth_y = torch.zeros(0, dtype=torch.long)
        gen_run_id, reused = None, False
        if cfg.gen is not None:
            # a training killed earlier (a session's end) goes on from its snapshot; use_cache=False starts afresh
            # unless told to resume (a bench timing trainings across sessions)
            snapshots = Snapshots(key) if (use_cache if resume is None else resume) else None
            with tracker.exclusive(f"generator-{key}"):  # one worker trains it, the others wait and reuse it
                with timed(seconds, "gen"):
                    gen, gen_run_id, reused = obtain_generator(cfg, split, key, tracker=tracker, run=run,
                                                               progress=progress, use_cache=use_cache, stage=stage,
                                                               snapshots=snapshots)
            if snapshots is not None:
                seconds["gen"] += snapshots.earlier()
            if not reused:
                work["gen_images"] = cost.generator_images(cfg.gen, len(split.train_y))
            precision = gen.precisions()
            run.set_tags({tracking.TAG_GENERATOR_RUN_ID: gen_run_id, tracking.TAG_GENERATOR_REUSED: str(reused).lower(),
                          tracking.TAG_SAMPLING_PRECISION: precision["sampling"]}
                         | ({} if reused else {tracking.TAG_TRAINING_PRECISION: precision["training"]}))
            if reused:
                run.log_model_input(gen_run_id)  # the MLflow model it samples from, as the run's input
            if gen.extra_metrics:
                run.log_metrics({f"gen/{k}": v for k, v in gen.extra_metrics.items()})
            counts = synthetic_counts(real_counts, cfg.mix)
            stage("sampling", f"{sum(counts)} synthetic images ({cfg.mix.ratio:g}×{cfg.mix.strategy}"
                  + (f", filter {cfg.mix.filter}" if cfg.mix.filter != "none" else "") + ")")
            filtering = cfg.mix.filter != "none"
            sampling = json.dumps(sampling_values(cfg.gen), sort_keys=True, default=str)

            def draw_pool():
                out = synthetic_pool(gen, counts, mix_cfg=cfg.mix, seed=cfg.seed, score=filter_score(
                    split, profile=cfg.profile, seed=cfg.seed, use_cache=use_cache) if filtering else None)
                work["sampled"] = work.get("sampled", 0) + out[2].get("mix/filter_drawn", sum(counts))
                return out

            def draw_grid():
                work["sampled"] = work.get("sampled", 0) + len(grid_y)
                return _draw(gen, grid_y, seed=cfg.seed, offset=2)

            grid_y = labels_for([10] * NUM_CLASSES)
            # a pool already drawn (in this process, or kept on disk by any run of this generator) costs and counts
            # nothing: the same seeded draw gives the same images
            with timed(seconds, "sample"):
                pool = (key, sampling, tuple(counts), cfg.seed, *filter_key(cfg.mix))
                synth_x, synth_y, mix_metrics = _kept(pool, draw_pool, enabled=use_cache, generator_run=gen_run_id)
                grid_x = _kept((key, sampling, "grid", cfg.seed), draw_grid, enabled=use_cache,
                               generator_run=gen_run_id)
            run.set_tags({tracking.TAG_SAMPLES_REUSED: str("sampled" not in work).lower()})
            run.log_figure(plots.sample_grid(grid_x, grid_y, title=f"{cfg.model} samples (one row per class)"),
                           "samples/grid.png")
            run.log_metrics(mix_metrics)
        elif cfg.model in generators.OVERSAMPLING:
            counts = synthetic_counts(real_counts, cfg.mix)  # the balance strategy's (make_config insists)
            idx = oversample_indices(split.train_y, counts, seed=cfg.seed)
            synth_x, synth_y = split.train_x[idx], split.train_y[idx]  # copies of real training images only
            run.log_metrics(_count_metrics("oversampled", counts))
        elif cfg.model in generators.POOL_BASELINES:
            stage("pseudo-labels", f"the strong recipe labels {cfg.pseudo.unlabeled_size} unlabelled pool images "
                  f"(kept where ≥ {cfg.pseudo.threshold:g} sure)")

            def teach():
                return pseudo_label.train_teacher(split, profile=cfg.profile, seed=cfg.seed)

            with timed(seconds, "teacher"):  # once per data draw, profile and seed in a process
                teacher, score = _cached(("teacher", split.digest, cfg.profile, cfg.seed), teach, enabled=use_cache,
                                         store=_FILTERS)
                synth_x, synth_y, pseudo_metrics = pseudo_label.pseudo_labeled(split, cfg.pseudo, seed=cfg.seed,
                                                                               teacher=teacher, teacher_score=score)
            run.log_metrics(pseudo_metrics)
        x, y, w, _ = mix(split.train_x, split.train_y, synth_x, synth_y, synthetic_weight=cfg.mix.synthetic_weight)

        seed_everything(cfg.seed)
        added = ("copied" if cfg.model in generators.OVERSAMPLING else
                 "pseudo-labelled" if cfg.model in generators.POOL_BASELINES else "synthetic")
        stage("classifier", f"{cfg.classifier} on {len(split.train_y)} real + {len(synth_y)} {added} images")
        clf = classifiers.get(cfg.classifier)(cfg.clf, seed=cfg.seed)
        if isinstance(cfg.clf, classifiers.CNNConfig):  # what clf.amp resolved to here: the report pairs on it
            run.log_params({"clf.precision": classifiers.training_precision(cfg.clf, clf.device)})
        curve: list[tuple[int, dict[str, float]]] = []

        def epoch_hook(epoch: int, m: dict[str, float]) -> None:
            row = {"train/clf_loss": m["loss"]} if "loss" in m else {}
            if "val_balanced_accuracy" in m:
                row["val/balanced_accuracy"] = m["val_balanced_accuracy"]
            curve.append((epoch, row))
            faults.point("classifier-training")
            if on_epoch is not None:
                on_epoch(epoch, m)

        try:
            with timed(seconds, "classifier"):
                fitted = clf.fit(x, y, sample_weight=w, val=(split.val_x, split.val_y), on_epoch=epoch_hook,
                                 progress=progress, budget_n=budget_images(cfg, len(split.train_y)))
        finally:
            run.log_series(curve)  # a pruned trial keeps its curve
        # how the step ran on this device (CUDA graphs, fused AdamW): tags, as they change no recipe
        run.set_tags({f"clf.{k}": v for k, v in getattr(clf, "execution", {}).items()})
        work["classifier"] = cost.classifier_work(cfg.clf, n_budget=budget_images(cfg, len(split.train_y)) or len(y),
                                                  n_total=len(y))
        run.log_metrics({f"train/clf_{k}": v for k, v in fitted.items() if k in ("epochs_run", "best_epoch", "steps")})
        last_step = curve[-1][0] if curve else 0
        minority = split.minority_classes
        stage("metrics", f"validation and official test set ({len(split.test_y)} images)")
        metrics: dict[str, float] = {}
        for part, (px, py) in {"val": (split.val_x, split.val_y), "test": (split.test_x, split.test_y)}.items():
            pred = clf.predict(px)
            for k, v in classification_metrics(py.numpy(), pred, minority_classes=minority).items():
                metrics[f"{part}/{k}"] = v
            if part == "test":
                test_pred = pred
        run.log_metrics(metrics, step=last_step)
        if cfg.gen_metrics and cfg.gen is not None:
            with timed(seconds, "quality"):
                log_quality(gen, cfg, split, tracker=tracker, run=run, stage=stage)
        matrix = confusion(split.test_y.numpy(), test_pred)
        run.log_figure(plots.confusion_figure(matrix, title=f"{name} — test"), "classifier/confusion_matrix.png")
        run.log_text(_per_class_csv(metrics, matrix), "classifier/per_class.csv")
        seconds["cell"] = time.perf_counter() - t_cell
        # the process's CPU time (all its threads): against the wall time, the share of the cores the cell got
        seconds["cell_cpu"] = time.process_time() - cpu_cell
        run.log_metrics({f"time/{k}": v for k, v in seconds.items()} | {f"work/{k}": v for k, v in work.items()})
    return RunResult(run_id=run.id, metrics=metrics, generator_run_id=gen_run_id, generator_reused=reused,
                     tags={k: str(v) for k, v in tags.items()})


def run_or_read(cfg: RunConfig, *, tracker, experiment: str, extra_tags: dict[str, str] | None = None,
                use_cache: bool = True, resume: bool | None = None,
                read_only: bool = False) -> tuple[RunResult | None, bool]:
    """The FINISHED run of ``cfg`` in ``experiment`` (same ``config_key`` and ``extra_tags``) if an earlier call
    left one, else a new run of it (``read_only``: None); and whether it was read back.  What a long bench calls,
    so that the same command after a cut runs only what did not finish.  ``metrics`` are everything it logged."""
    done = tracker.finished_config_run(experiment, config_key(cfg), tags=extra_tags)
    if done is None and read_only:
        return None, False
    run_id = done.info.run_id if done is not None else run_experiment(
        cfg, tracker=tracker, experiment=experiment, use_env_run=False, progress=False, use_cache=use_cache,
        resume=resume, extra_tags=extra_tags).run_id
    info = tracker.run_info(run_id)
    tags = info["tags"]
    return RunResult(run_id=run_id, metrics=info["metrics"], generator_run_id=tags.get(tracking.TAG_GENERATOR_RUN_ID),
                     generator_reused=tags.get(tracking.TAG_GENERATOR_REUSED) == "true", tags=tags), done is not None


def project_clip(tracker, *, profile: str, split: Split | None = None, progress: bool = False) -> tuple[dict, str]:
    """The project's CLIP of ``profile``: trained once, then loaded from its run.

    With ``split``, trained on its training images alone (not validation, not test) and cached per data digest
    (the ``clip`` family's default); without, the full CLIP on the official train set (``synthboost clip train``).
    Returns (state, run id); the run (experiment ``synthboost-models``) holds the zero-shot test accuracy.
    """
    from . import clip_model

    if split is None:
        return tracking.cached_model(tracker, kind="clip", key=clip_model.clip_key(profile), name=f"CLIP ({profile})",
                                     train=lambda: clip_model.train_clip(profile=profile, progress=progress))
    return tracking.cached_model(
        tracker, kind="clip", key=clip_model.clip_key(profile, data_digest=split.digest),
        name=f"CLIP ({profile}, own data {split.digest[:8]})",
        train=lambda: clip_model.train_clip(profile=profile, images=split.train_x, labels=split.train_y,
                                            progress=progress))


def feature_extractor(tracker, *, profile: str, stage: StageFn = silent) -> tuple[dict, str]:
    """The quality metrics' feature extractor of ``profile``: trained once, then loaded from its run.

    Returns (state, run id); the run (experiment ``synthboost-models``) holds its test accuracy.  Training it is
    minutes of silence on a CPU, so ``stage`` hears of it first, with the estimate and where it will be kept.
    """
    from . import quality

    key = quality.extractor_key(profile)

    def train():
        stage("quality extractor", f"training the quality extractor once for this machine "
                                   f"(~{quality.extractor_seconds(profile):.0f} s on a 2-core CPU); cached at "
                                   f"{tracking.redact(tracker.uri)}, experiment {tracking.MODELS_EXPERIMENT}, "
                                   f"key {key}")
        return quality.train_extractor(profile=profile)

    return tracking.cached_model(tracker, kind="extractor", key=key, name=f"feature extractor ({profile})", train=train)


#: generated samples per class for FID/KID/IS/precision-recall (the real reference has as many per class)
QUALITY_PER_CLASS = {"smoke": 50, "quick": 500, "paper": 1000}
#: the same for families whose ``slow_sampling`` is set (diffusion: ~5 images/s on a 2-core CPU, so quick's
#: 5,000 + a CAS set would cost half an hour of sampling); their CAS reuses that one draw
SLOW_QUALITY_PER_CLASS = {"smoke": 20, "quick": 100, "paper": 1000}


def log_quality(gen, cfg: RunConfig, split: Split, *, tracker, run, stage: StageFn = silent,
                cas: bool = True) -> dict[str, float]:
    """Generator-quality metrics (gen/*), their plots and the extractor's run id, logged into ``run``; without
    ``cas`` the classifier-based CAS is left out (param ``gen_metrics.cas``).

    The real reference set is the official test set (first n per class): these numbers are reported, never
    used for selection.  The feature extractor is trained once per data digest and profile and kept as an
    MLflow run of its own (tag ``gen.extractor_run_id``).
    """
    from . import quality

    slow = getattr(gen, "slow_sampling", False)
    state, extractor_run = feature_extractor(tracker, profile=cfg.profile, stage=stage)
    n_per_class = (SLOW_QUALITY_PER_CLASS if slow else QUALITY_PER_CLASS)[cfg.profile]
    stage("generator quality", f"FID, KID, IS, precision/recall on {n_per_class} samples per class"
                               + (", CAS" if cas else ""))
    result = quality.generator_quality(
        gen, extractor=quality.load_extractor(state), real_x=split.test_x, real_y=split.test_y,
        test_x=split.test_x, test_y=split.test_y, train_x=split.train_x, train_y=split.train_y,
        n_per_class=n_per_class, seed=cfg.seed,
        cas_classifier_profile=cfg.profile, cas_from_quality_draw=slow, cas=cas)
    run.set_tags({"gen.extractor_run_id": extractor_run})
    run.log_params({f"gen_metrics.{k}": v for k, v in result.params.items()})
    # wall time of the metrics' own draw, so samplers can be compared across runs (bench/ has the clean ratio)
    per_1000 = {"sample_seconds_per_1000": 1000 * result.seconds["sample"] / result.params["n_fake"]}
    run.log_metrics({f"gen/{k}": v for k, v in (result.metrics | per_1000).items()})
    for path, fig in result.figures.items():
        run.log_figure(fig, path)
    return result.metrics


def evaluate_run(run_id: str, *, tracker, stage: StageFn = silent, cas: bool = True) -> dict[str, float]:
    """Compute the generator-quality metrics later for an existing run, from its logged checkpoint (``cas``: with
    the classifier-based CAS, most of the time at ``quick``)."""
    info = tracker.run_info(run_id)
    gen_run = info["tags"].get(tracking.TAG_GENERATOR_RUN_ID)
    if not gen_run:
        raise UserError(f"run {run_id} has no generator (model {info['tags'].get('model', '?')!r}); "
                        "evaluate needs a run that trained or reused one")
    d = tracker.run_config(run_id)
    data = dict(d["data"])
    cfg = make_config(model=d["model"], classifier=d["classifier"], regime=data.pop("regime"), size=data.pop("size"),
                      seed=d["seed"], profile=d["profile"],
                      overrides={"data": data, "mix": d["mix"], "clf": d["clf"], "gen": d["gen"]}, gen_metrics=True)
    split = make_split(cfg.data, cfg.seed)
    if split.digest != info["tags"].get("data_digest"):
        raise UserError(f"run {run_id}: the data on this machine differs from the run's (data_digest mismatch)")
    gen = load_generator(tracker, gen_run, cfg.gen)  # with the run's own guidance / temperature / truncation
    return log_quality(gen, cfg, split, tracker=tracker, run=tracker.attach(run_id), stage=stage, cas=cas)


def _per_class_csv(metrics: dict[str, float], matrix: np.ndarray) -> str:
    from .data import CLASS_NAMES

    lines = ["class,name,test_support,test_precision,test_recall,val_precision,val_recall"]
    for k in range(NUM_CLASSES):
        lines.append(f"{k},{CLASS_NAMES[k]},{int(matrix[k].sum())},{metrics[f'test/precision_{k}']:.4f},"
                     f"{metrics[f'test/recall_{k}']:.4f},{metrics[f'val/precision_{k}']:.4f},"
                     f"{metrics[f'val/recall_{k}']:.4f}")
    return "\n".join(lines) + "\n"
