"""Running one experiment cell: data → generator (trained once per key) → added samples → classifier → metrics.

Each stage returns its values and a ``Record`` of what it leaves on the run, which ``run_experiment`` logs when the
stage ends, so that logging sits in one place (what a cell *is* lives in ``cell.py``).
"""

from __future__ import annotations

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

from . import classifiers, faults, generators, pseudo_label, sample_cache, tracking, work
from .cell import (code_versions, config_key, epoch_images, external_tags, filter_key, generator_key, make_config,
                   run_name, sampling_values, unlabeled_tags)
from .config import MixConfig, RunConfig, replace
from .data import NUM_CLASSES, Split, load_fashion_mnist, make_split
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


def load_generator(tracker, run_id: str, gen_cfg):
    """The generator checkpointed by ``run_id``, set to sample with ``gen_cfg``'s sampling-only values (they are
    not part of the generator key, so the checkpoint may carry others)."""
    gen = generators.load(tracker.load_checkpoint(run_id))
    gen.config = replace(gen.config, sampling_values(gen_cfg), prefix="gen")
    return gen


@dataclass
class RunResult:
    run_id: str
    metrics: dict[str, float]
    generator_run_id: str | None = None
    generator_reused: bool = False
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Record:
    """What one stage leaves on the run; ``seconds`` (time/*) and ``work`` (work/*) are logged once, at the end."""

    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)
    model_input: str | None = None  # the run of a reused generator, whose MLflow model this run samples from
    metrics: dict[str, float] = field(default_factory=dict)
    step: int = 0
    figures: dict[str, Any] = field(default_factory=dict)  # artifact path -> matplotlib figure
    texts: dict[str, str] = field(default_factory=dict)  # artifact path -> text
    seconds: dict[str, float] = field(default_factory=dict)
    work: dict[str, float] = field(default_factory=dict)


def log_record(run, record: Record) -> None:
    """Everything ``record`` holds but its seconds and work, logged into ``run``."""
    if record.params:
        run.log_params(record.params)
    if record.tags:
        run.set_tags(record.tags)
    if record.model_input is not None:
        run.log_model_input(record.model_input)
    if record.metrics:
        run.log_metrics(record.metrics, step=record.step)
    for path, fig in record.figures.items():
        run.log_figure(fig, path)
    for path, text in record.texts.items():
        run.log_text(text, path)


# this process's memory: a study or grid worker asks for the same pool, filter and teacher many times
_POOLS: OrderedDict = OrderedDict()
_MODELS: OrderedDict = OrderedDict()  # the filter's and pseudo-label's classifiers, apart so pools never evict them
_MEMORY_SIZE = 8


def forget_pools() -> None:
    """Empty this process's in-memory sample pools (what a new worker process starts with)."""
    _POOLS.clear()


def _in_memory(key: tuple, make: Callable[[], object], *, enabled: bool = True, store: OrderedDict = _POOLS):
    """``make()``'s value, kept in the in-memory LRU ``store``."""
    if not enabled:
        return make()
    if key in store:
        store.move_to_end(key)
        return store[key]
    value = make()
    store[key] = value
    if len(store) > _MEMORY_SIZE:
        store.popitem(last=False)
    return value


def _in_memory_or_on_disk(key: tuple, make: Callable[[], object], *, enabled: bool, generator_run: str):
    """``_in_memory``, backed by the disk (``sample_cache``): a draw of another process or an earlier run of the
    same generator run is read instead of drawn again."""
    def from_disk():
        identity = json.dumps(key, default=str)
        value = sample_cache.load(identity, generator_run=generator_run)
        if value is None:
            value = make()
            sample_cache.save(identity, value, generator_run=generator_run)
        return value

    return _in_memory(key, from_disk if enabled else make, enabled=enabled)


def _draw(gen, labels: torch.Tensor, *, seed: int, offset: int) -> torch.Tensor:
    torch.manual_seed(seed * 1000 + offset)  # samples depend on the seed, not on RNG history
    return gen.sample_batched(labels)


def _count_metrics(kind: str, counts) -> dict[str, float]:
    return {f"mix/{kind}_count_{k}": c for k, c in enumerate(counts)} | {f"mix/{kind}_total": sum(counts)}


def filter_score(split: Split, *, profile: str, seed: int, use_cache: bool = True):
    """``score(x, y)``: the probability a CNN trained on the real training images (never validation or test)
    gives each requested label; its loss is class-balanced so that it does not turn down the minority classes'
    samples, the ones a long-tailed regime needs, for being rare."""
    def train():
        clf = classifiers.CNNClassifier(classifiers.judge_config(profile, class_weight="balanced"), seed=seed)
        clf.fit(split.train_x, split.train_y)
        return clf

    clf = _in_memory(("filter", split.digest, profile, seed), train, enabled=use_cache, store=_MODELS)

    def score(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(clf.predict_proba(x))[torch.arange(len(y)), y]

    return score


def synthetic_pool(gen, counts, *, mix_cfg: MixConfig, seed: int, score=None):
    """The synthetic images and labels for per-class ``counts`` and the mix/* metrics that describe them; with
    ``mix.filter`` only samples ``score`` accepts are kept, so the counts may fall short."""
    def draw(labels: torch.Tensor, rnd: int) -> torch.Tensor:
        return _draw(gen, labels, seed=seed, offset=1 if rnd == 0 else 100 + rnd)  # round 0: the unfiltered draw

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


def _data(cfg: RunConfig, stage: StageFn) -> Split:
    split = make_split(cfg.data, cfg.seed)
    stage("data", f"Fashion-MNIST {cfg.data.regime}/{cfg.data.size}, seed {cfg.seed}: {len(split.train_y)} train, "
          f"{len(split.val_y)} validation, {len(split.test_y)} test images")
    return split


def _run_tags(cfg: RunConfig, split: Split, key: str, extra_tags: dict[str, str] | None) -> dict[str, Any]:
    return {
        "model": cfg.model, "regime": cfg.data.regime, "size": cfg.data.size, "seed": cfg.seed,
        "profile": cfg.profile, "classifier": cfg.classifier, "data_digest": split.digest,
        "git_commit": tracking.git_commit(), tracking.TAG_GENERATOR_KEY: key,
        tracking.TAG_KIND: tracking.KIND_EXPERIMENT, tracking.TAG_VARIANT: cfg.model,
        tracking.TAG_CONFIG_KEY: config_key(cfg), **code_versions(cfg),
        "minority_classes": ",".join(map(str, split.minority_classes)), **external_tags(cfg),
        **unlabeled_tags(cfg, split), **work.machine_tags(),
        **(extra_tags or {}),
    }


def _generator(cfg: RunConfig, split: Split, key: str, *, tracker, run, progress: bool, use_cache: bool,
               resume: bool | None, stage: StageFn):
    """The run's generator, reused or trained here; returns (generator, its run id, reused, record)."""
    record = Record()
    # a training killed earlier (a session's end) goes on from its snapshot; use_cache=False starts afresh
    # unless told to resume (a bench timing trainings across sessions)
    snapshots = Snapshots(key) if (use_cache if resume is None else resume) else None
    with tracker.exclusive(f"generator-{key}"):  # one worker trains it, the others wait and reuse it
        with timed(record.seconds, "gen"):
            gen, gen_run_id, reused = obtain_generator(cfg, split, key, tracker=tracker, run=run, progress=progress,
                                                       use_cache=use_cache, stage=stage, snapshots=snapshots)
    if snapshots is not None:
        record.seconds["gen"] += snapshots.earlier()
    if not reused:
        record.work["gen_images"] = work.generator_images(cfg.gen, len(split.train_y))
    precision = gen.precisions()
    record.tags = ({tracking.TAG_GENERATOR_RUN_ID: gen_run_id, tracking.TAG_GENERATOR_REUSED: str(reused).lower(),
                    tracking.TAG_SAMPLING_PRECISION: precision["sampling"]}
                   | ({} if reused else {tracking.TAG_TRAINING_PRECISION: precision["training"]}))
    if reused:
        record.model_input = gen_run_id
    if gen.extra_metrics:
        record.metrics = {f"gen/{k}": v for k, v in gen.extra_metrics.items()}
    return gen, gen_run_id, reused, record


def _added_samples(cfg: RunConfig, split: Split, *, gen, gen_run_id: str | None, key: str, use_cache: bool,
                   stage: StageFn) -> tuple[torch.Tensor, torch.Tensor, Record]:
    """The images (and labels) the run adds to the real ones: a generator's draw, ``oversample``'s copies,
    ``pseudo-label``'s labelled pool images, or none."""
    real_counts = torch.bincount(split.train_y, minlength=NUM_CLASSES).tolist()
    if cfg.gen is not None:
        return _sampled(cfg, split, gen, real_counts, gen_run_id=gen_run_id, key=key, use_cache=use_cache,
                        stage=stage)
    if cfg.model in generators.OVERSAMPLING:
        counts = synthetic_counts(real_counts, cfg.mix)  # the balance strategy's (make_config insists)
        idx = oversample_indices(split.train_y, counts, seed=cfg.seed)
        return split.train_x[idx], split.train_y[idx], Record(metrics=_count_metrics("oversampled", counts))
    if cfg.model in generators.POOL_BASELINES:
        return _pseudo_labelled(cfg, split, use_cache=use_cache, stage=stage)
    return torch.zeros(0, 1, 28, 28, dtype=torch.uint8), torch.zeros(0, dtype=torch.long), Record()


def _sampled(cfg: RunConfig, split: Split, gen, real_counts: list[int], *, gen_run_id: str, key: str,
             use_cache: bool, stage: StageFn) -> tuple[torch.Tensor, torch.Tensor, Record]:
    from . import plots

    record = Record()
    counts = synthetic_counts(real_counts, cfg.mix)
    stage("sampling", f"{sum(counts)} synthetic images ({cfg.mix.ratio:g}×{cfg.mix.strategy}"
          + (f", filter {cfg.mix.filter}" if cfg.mix.filter != "none" else "") + ")")
    filtering = cfg.mix.filter != "none"
    sampling = json.dumps(sampling_values(cfg.gen), sort_keys=True, default=str)

    def draw_pool():
        out = synthetic_pool(gen, counts, mix_cfg=cfg.mix, seed=cfg.seed, score=filter_score(
            split, profile=cfg.profile, seed=cfg.seed, use_cache=use_cache) if filtering else None)
        record.work["sampled"] = record.work.get("sampled", 0) + out[2].get("mix/filter_drawn", sum(counts))
        return out

    def draw_grid():
        record.work["sampled"] = record.work.get("sampled", 0) + len(grid_y)
        return _draw(gen, grid_y, seed=cfg.seed, offset=2)

    grid_y = labels_for([10] * NUM_CLASSES)
    # a pool already drawn (in this process, or kept on disk by any run of this generator) costs and counts
    # nothing: the same seeded draw gives the same images
    with timed(record.seconds, "sample"):
        pool = (key, sampling, tuple(counts), cfg.seed, *filter_key(cfg.mix))
        synth_x, synth_y, mix_metrics = _in_memory_or_on_disk(pool, draw_pool, enabled=use_cache,
                                                              generator_run=gen_run_id)
        grid_x = _in_memory_or_on_disk((key, sampling, "grid", cfg.seed), draw_grid, enabled=use_cache,
                                       generator_run=gen_run_id)
    record.tags = {tracking.TAG_SAMPLES_REUSED: str("sampled" not in record.work).lower()}
    record.metrics = mix_metrics
    record.figures = {"samples/grid.png": plots.sample_grid(grid_x, grid_y,
                                                            title=f"{cfg.model} samples (one row per class)")}
    return synth_x, synth_y, record


def _pseudo_labelled(cfg: RunConfig, split: Split, *, use_cache: bool,
                     stage: StageFn) -> tuple[torch.Tensor, torch.Tensor, Record]:
    stage("pseudo-labels", f"the strong recipe labels {cfg.pseudo.unlabeled_size} unlabelled pool images "
          f"(kept where ≥ {cfg.pseudo.threshold:g} sure)")
    record = Record()

    def teach():
        return pseudo_label.train_teacher(split, profile=cfg.profile, seed=cfg.seed)

    with timed(record.seconds, "teacher"):  # once per data draw, profile and seed in a process
        teacher, score = _in_memory(("teacher", split.digest, cfg.profile, cfg.seed), teach, enabled=use_cache,
                                    store=_MODELS)
        synth_x, synth_y, record.metrics = pseudo_label.pseudo_labeled(split, cfg.pseudo, seed=cfg.seed,
                                                                       teacher=teacher, teacher_score=score)
    return synth_x, synth_y, record


def _classifier(cfg: RunConfig, split: Split, *, n_added: int, stage: StageFn):
    """The untrained classifier, seeded; returns (classifier, record)."""
    seed_everything(cfg.seed)
    added = ("copied" if cfg.model in generators.OVERSAMPLING else
             "pseudo-labelled" if cfg.model in generators.POOL_BASELINES else "synthetic")
    stage("classifier", f"{cfg.classifier} on {len(split.train_y)} real + {n_added} {added} images")
    clf = classifiers.get(cfg.classifier)(cfg.clf, seed=cfg.seed)
    record = Record()
    if isinstance(cfg.clf, classifiers.CNNConfig):  # what clf.amp resolved to here: the report pairs on it
        record.params = {"clf.precision": classifiers.training_precision(cfg.clf, clf.device)}
    return clf, record


def _fit(clf, cfg: RunConfig, split: Split, x, y, w, *, curve: list[tuple[int, dict[str, float]]],
         on_epoch: EpochCallback | None, progress: bool) -> Record:
    """Train ``clf`` on the mixed set; ``curve`` gathers the per-epoch values as they come, for the caller to log
    even when training stops early (a pruned trial keeps its curve)."""
    record = Record()

    def epoch_hook(epoch: int, m: dict[str, float]) -> None:
        row = {"train/clf_loss": m["loss"]} if "loss" in m else {}
        if "val_balanced_accuracy" in m:
            row["val/balanced_accuracy"] = m["val_balanced_accuracy"]
        curve.append((epoch, row))
        faults.point("classifier-training")
        if on_epoch is not None:
            on_epoch(epoch, m)

    n_real = len(split.train_y)
    budget = epoch_images(cfg, n_real=n_real, n_added=len(y) - n_real)
    with timed(record.seconds, "classifier"):
        fitted = clf.fit(x, y, sample_weight=w, val=(split.val_x, split.val_y), on_epoch=epoch_hook,
                         progress=progress, budget_n=budget)
    # how the step ran on this device (CUDA graphs, fused AdamW): tags, as they change no recipe
    record.tags = {f"clf.{k}": v for k, v in getattr(clf, "execution", {}).items()}
    record.work["classifier"] = work.classifier_work(cfg.clf, n_budget=budget, n_total=len(y))
    record.metrics = {f"train/clf_{k}": v for k, v in fitted.items() if k in ("epochs_run", "best_epoch", "steps")}
    return record


def _evaluate(clf, split: Split, *, step: int, stage: StageFn) -> tuple[dict[str, float], np.ndarray, Record]:
    """Validation and official-test metrics (logged at the curve's last ``step``); returns them, the test
    predictions and the record."""
    stage("metrics", f"validation and official test set ({len(split.test_y)} images)")
    metrics: dict[str, float] = {}
    for part, (px, py) in {"val": (split.val_x, split.val_y), "test": (split.test_x, split.test_y)}.items():
        pred = clf.predict(px)
        for k, v in classification_metrics(py.numpy(), pred, minority_classes=split.minority_classes).items():
            metrics[f"{part}/{k}"] = v
        if part == "test":
            test_pred = pred
    return metrics, test_pred, Record(metrics=metrics, step=step)


def _classifier_report(metrics: dict[str, float], test_pred: np.ndarray, split: Split, name: str) -> Record:
    from . import plots

    matrix = confusion(split.test_y.numpy(), test_pred)
    return Record(figures={"classifier/confusion_matrix.png": plots.confusion_figure(matrix, title=f"{name} — test")},
                  texts={"classifier/per_class.csv": _per_class_csv(metrics, matrix)})


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
    tracker = tracker or tracking.Tracker()
    experiment = experiment or tracking.DEFAULT_EXPERIMENT
    split = _data(cfg, stage)
    key = generator_key(cfg, split.digest) if cfg.gen is not None else ""
    tags = _run_tags(cfg, split, key, extra_tags)
    name = run_name(cfg, variant=tags[tracking.TAG_VARIANT])
    with tracker.run(experiment=experiment, name=name, tags=tags, parent_run_id=parent_run_id,
                     use_env_run=use_env_run, killed_on=killed_on) as run:
        if on_start is not None:
            on_start(run.id)
        # wall time (time/*) and work (work/*) of each stage, for the grid's cost estimates (cost.py)
        t_cell, cpu_cell = time.perf_counter(), time.process_time()
        seconds: dict[str, float] = {}
        done: dict[str, float] = {}

        def log(record: Record) -> None:
            log_record(run, record)
            seconds.update(record.seconds)
            done.update(record.work)

        log(Record(params=cfg.params(), texts={"config.yaml": yaml.safe_dump(cfg.to_dict(), sort_keys=False)}))
        run.log_dataset(split, name=f"fashion-mnist {cfg.data.regime}/{cfg.data.size} seed={cfg.seed}",
                        source=load_fashion_mnist().source)
        gen, gen_run_id, reused = None, None, False
        if cfg.gen is not None:
            gen, gen_run_id, reused, record = _generator(cfg, split, key, tracker=tracker, run=run, progress=progress,
                                                         use_cache=use_cache, resume=resume, stage=stage)
            log(record)
        synth_x, synth_y, record = _added_samples(cfg, split, gen=gen, gen_run_id=gen_run_id, key=key,
                                                  use_cache=use_cache, stage=stage)
        log(record)
        x, y, w, _ = mix(split.train_x, split.train_y, synth_x, synth_y, synthetic_weight=cfg.mix.synthetic_weight)
        clf, record = _classifier(cfg, split, n_added=len(synth_y), stage=stage)
        log(record)
        curve: list[tuple[int, dict[str, float]]] = []
        try:
            record = _fit(clf, cfg, split, x, y, w, curve=curve, on_epoch=on_epoch, progress=progress)
        finally:
            run.log_series(curve)
        log(record)
        metrics, test_pred, record = _evaluate(clf, split, step=curve[-1][0] if curve else 0, stage=stage)
        log(record)
        if cfg.gen_metrics and cfg.gen is not None:
            with timed(seconds, "quality"):
                log(_quality(gen, cfg, split, tracker=tracker, stage=stage)[1])
        log(_classifier_report(metrics, test_pred, split, name))
        seconds["cell"] = time.perf_counter() - t_cell
        # the process's CPU time (all its threads): against the wall time, the share of the cores the cell got
        seconds["cell_cpu"] = time.process_time() - cpu_cell
        log(Record(metrics={f"time/{k}": v for k, v in seconds.items()} | {f"work/{k}": v for k, v in done.items()}))
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
    """The project's CLIP of ``profile`` as (state, run id), trained once and then loaded from its run: with
    ``split`` on its training images alone, per data digest; without, on the official train set."""
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
    """The quality metrics' feature extractor of ``profile`` as (state, run id), trained once and then loaded from
    its run; training it is minutes of silence on a CPU, so ``stage`` hears of it first."""
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


def _quality(gen, cfg: RunConfig, split: Split, *, tracker, stage: StageFn = silent,
             cas: bool = True) -> tuple[dict[str, float], Record]:
    """Generator-quality metrics (gen/*, the classifier-based CAS only with ``cas``) and the record that logs them,
    their plots and the extractor's run; the reference set is the official test set, so they are reported, never
    used for selection."""
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
    # wall time of the metrics' own draw, so samplers can be compared across runs (bench/ has the clean ratio)
    per_1000 = {"sample_seconds_per_1000": 1000 * result.seconds["sample"] / result.params["n_fake"]}
    return result.metrics, Record(tags={"gen.extractor_run_id": extractor_run},
                                  params={f"gen_metrics.{k}": v for k, v in result.params.items()},
                                  metrics={f"gen/{k}": v for k, v in (result.metrics | per_1000).items()},
                                  figures=dict(result.figures))


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
    metrics, record = _quality(gen, cfg, split, tracker=tracker, stage=stage, cas=cas)
    log_record(tracker.attach(run_id), record)
    return metrics


def _per_class_csv(metrics: dict[str, float], matrix: np.ndarray) -> str:
    from .data import CLASS_NAMES

    lines = ["class,name,test_support,test_precision,test_recall,val_precision,val_recall"]
    for k in range(NUM_CLASSES):
        lines.append(f"{k},{CLASS_NAMES[k]},{int(matrix[k].sum())},{metrics[f'test/precision_{k}']:.4f},"
                     f"{metrics[f'test/recall_{k}']:.4f},{metrics[f'val/precision_{k}']:.4f},"
                     f"{metrics[f'val/recall_{k}']:.4f}")
    return "\n".join(lines) + "\n"
