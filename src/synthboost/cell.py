"""What one experiment cell is: its validated config, its keys, its run name, its step budget and its workload.

Grid, cost and study need these without running anything, and every key here is what a finished run is found by,
so none of them may hash anything new (tests/test_code_versions.py pins them).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from . import classifiers, generators, pseudo_label, tracking
from .config import PROFILES, DataConfig, MixConfig, RunConfig, as_dict, build, check_choice, key_dict
from .data import Split, check_folds, dataset_digest, regime_counts, unlabeled_indices
from .errors import UserError
from .mixing import synthetic_counts
from .regimes import train_counts


def make_config(*, model: str, classifier: str = "cnn", regime: str = "balanced", size: int = 1000, seed: int = 0,
                profile: str = "quick", mix_ratio: float | None = None, mix_strategy: str | None = None,
                overrides: dict[str, dict] | None = None, gen_metrics: bool | None = None) -> RunConfig:
    """Validate the user's choices into a RunConfig; every mistake raises a one-line ``UserError``, before any
    run is opened."""
    overrides = {k: dict(v) for k, v in (overrides or {}).items()}
    check_choice("model", model, generators.model_names())
    check_choice("classifier", classifier, list(classifiers.CLASSIFIERS))
    check_choice("profile", profile, PROFILES)
    if seed < 0:
        raise UserError(f"seed must be >= 0, got {seed}")
    data = build(DataConfig, {"regime": regime, "size": size, **overrides.pop("data", {})}, prefix="data")
    counts = regime_counts(data.regime, data.size, seed, minority_classes=data.minority_classes)  # size vs pool
    if data.kfold is not None:
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


def epoch_images(cfg: RunConfig, *, n_real: int, n_added: int) -> int:
    """How many images one classifier epoch passes over, which sets its step budget: the real ones under the fair
    protocol (every run of a cell trains as many steps), the whole mixed set under the seed study's recipe."""
    return n_real + n_added if getattr(cfg.clf, "recipe", "fair") == "seed" else n_real


def uses_mix(cfg: RunConfig) -> bool:
    """Whether the run adds samples to the real ones (a generator's, or ``oversample``'s copies)."""
    return cfg.gen is not None or cfg.model in generators.OVERSAMPLING


def sampling_values(gen_cfg) -> dict[str, Any]:
    """The config fields a family reads only when sampling (``Config.sampling_fields``): guidance, steps, …"""
    return {k: getattr(gen_cfg, k) for k in getattr(type(gen_cfg), "sampling_fields", ())}


def filter_key(mix_cfg: MixConfig) -> tuple:
    """What a mix's filter adds to the identity of a draw (nothing without a filter)."""
    if mix_cfg.filter == "none":
        return ()
    return mix_cfg.filter, mix_cfg.filter_threshold, mix_cfg.filter_max_factor


def generator_key(cfg: RunConfig, data_digest: str) -> str:
    """Hash of everything a generator's training depends on: not the mix, the classifier or the sampling-only
    fields, so a trial that changes only those reuses the weights."""
    gen = {k: v for k, v in key_dict(cfg.gen).items() if k not in sampling_values(cfg.gen)}
    payload = {"data": data_digest, "model": cfg.model, "gen": gen, "seed": cfg.seed,
               "profile": cfg.profile, "val_fraction": cfg.data.val_fraction,
               **_versions(generator=generators.get(cfg.model).code_version)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def real_train_counts(cfg: RunConfig) -> list[int]:
    """Per class, the real images the run's classifier trains on (the regime's counts less the validation split)."""
    counts = regime_counts(cfg.data.regime, cfg.data.size, cfg.seed, minority_classes=cfg.data.minority_classes)
    return train_counts(counts, val_fraction=cfg.data.val_fraction, kfold=cfg.data.kfold, fold=cfg.data.fold)


def real_train_count(cfg: RunConfig) -> int:
    """How many real images the run's classifier trains on."""
    return sum(real_train_counts(cfg))


def clf_key_dict(cfg: RunConfig) -> dict[str, Any]:
    """The classifier's config as keys see it: ``key_dict``, less a step floor that does not bind on this cell, and
    with an idle validation cadence at its old default."""
    out = key_dict(cfg.clf)
    if "eval_every" in out:  # as it trains: idle without early stopping; under it, auto (0) acts as 1 (the old default)
        out["eval_every"] = (cfg.clf.eval_every or 1) if cfg.clf.early_stopping else 1
    if "min_steps" in out and not classifiers.floor_binds(
            epochs=cfg.clf.epochs, batch_size=cfg.clf.batch_size, min_steps=cfg.clf.min_steps, steps=cfg.clf.steps,
            n_budget=real_train_count(cfg)):
        del out["min_steps"]
    return out


def config_key(cfg: RunConfig) -> str:
    """Hash of the whole cell config and the code versions that train it: a grid skips a cell whose FINISHED run
    has the same key, and re-runs it once a code version is bumped."""
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
    """How many unlabelled pool images the run learns from beyond its cell (ssvae's ``gen.unlabeled_size``,
    pseudo-label's ``pseudo.unlabeled_size``; 0 for every other run)."""
    if cfg.pseudo is not None:
        return cfg.pseudo.unlabeled_size
    return 0 if cfg.gen is None else generators.get(cfg.model).unlabeled_data(cfg.gen)


def unlabeled_tags(cfg: RunConfig, split: Split) -> dict[str, str]:
    """The tags of a run that learns from an unlabelled pool (none otherwise): its size and the digest of its
    indices, equal on every run that saw the same images, so the report pairs such runs only with each other."""
    n = unlabeled_count(cfg)
    if not n:
        return {}
    return {tracking.TAG_UNLABELED_POOL: str(n),
            tracking.TAG_UNLABELED_DIGEST: dataset_digest(unlabeled_indices(split, n, cfg.seed))[:16]}


def run_name(cfg: RunConfig, *, variant: str | None = None) -> str:
    """Says what the run is, since the MLflow runs table shows names first; a grid's ``variant`` (e.g.
    ``cgan-strong``) leads it, so that a model's variants are told apart there."""
    mix_part = f" mix={cfg.mix.ratio:g}×{cfg.mix.strategy}" if uses_mix(cfg) else ""
    # runs under the seed study's recipe, or that saw more labelled or unlabelled images, must not read like
    # fair-protocol runs
    recipe = getattr(cfg.clf, "recipe", "fair")
    recipe_part = f" recipe={recipe}" if recipe != "fair" else ""
    external = " +external data" if external_data(cfg) else ""
    pool = f" +{unlabeled_count(cfg)} unlabeled" if unlabeled_count(cfg) else ""
    return (f"{variant or cfg.model} {cfg.data.regime}/{cfg.data.size} {cfg.classifier}{mix_part}{recipe_part}"
            f"{external}{pool} seed={cfg.seed}")


@dataclass(frozen=True)
class Workload:
    """What pricing a cell needs; the identities say which cells share a generator's training or a kept draw."""

    n_real: int  # real training images
    n_added: int  # images the mix adds (a generator's, or oversample's copies)
    epoch_images: int  # images of one classifier epoch (the step budget)
    generator_identity: str | None = None  # the generator key's contents, less the data digest
    pool_identity: str | None = None  # what the kept draw is keyed by (sample_cache); the recipe is not part of it


def workload(cfg: RunConfig) -> Workload:
    """A cell's workload, from its config alone (no data loaded)."""
    counts = real_train_counts(cfg)
    n_real = sum(counts)
    added = synthetic_counts(counts, cfg.mix) if uses_mix(cfg) else []
    sizes = dict(n_real=n_real, n_added=sum(added), epoch_images=epoch_images(cfg, n_real=n_real, n_added=sum(added)))
    if cfg.gen is None:
        return Workload(**sizes)
    # the same data config and seed draw the same data, so the data config stands in for its digest
    values, sampling = cfg.to_dict(), sampling_values(cfg.gen)
    gen = {k: v for k, v in values["gen"].items() if k not in sampling}
    gen_identity = json.dumps([cfg.model, gen, values["data"], cfg.seed, cfg.profile], sort_keys=True, default=str)
    pool_identity = json.dumps([gen_identity, sampling, synthetic_counts(counts, cfg.mix), *filter_key(cfg.mix)],
                               sort_keys=True, default=str)
    return Workload(**sizes, generator_identity=gen_identity, pool_identity=pool_identity)
