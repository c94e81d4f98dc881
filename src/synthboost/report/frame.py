"""Runs -> tidy frame: one row per finished experiment run, with the columns that name its cell.

A *cell* is everything in ``CELL``; its runs on different seeds are the repeats, and a gain pairs runs of one recipe.
"""

from __future__ import annotations

import ast
import hashlib

import numpy as np
import pandas as pd

from .. import generators, tracking
from ..regimes import NUM_CLASSES, regime_counts, train_counts
from ..errors import DataError, UserError

#: the real-only controls a gain is measured against, strongest last; `none` is the seed study's baseline
BASELINES: tuple[str, ...] = tuple(dict.fromkeys(("none", "none-strong", "oversample", *generators.BASELINES)))
#: the control "generators" (held-out real images, noise): mixes like a family's, never a family in a claim
CONTROLS: frozenset[str] = generators.CONTROLS
METRICS = {"accuracy": "test/accuracy", "balanced_accuracy": "test/balanced_accuracy",
           "macro_f1": "test/macro_f1", "minority_recall": "test/minority_recall"}
QUALITY = {"fid": "gen/fid", "cas_cnn": "gen/cas_cnn",  # generator quality, when it was measured
           "label_consistency": "gen/label_consistency"}
#: what makes a cell (its seeds are the repeats); `setup` hashes gen.* and clf.* so tuned trials stay apart
CELL = ["protocol", "variant", "model", "profile", "regime", "size", "classifier", "mix_ratio", "mix_strategy",
        "mix_weight", "mix_filter", "setup", "recipe", "tuned", "superseded"]
#: ``superseded``: "" for a current run, else "superseded #<hash of params but seed, and code versions>", so each
#: superseded way of computing a cell stays a cell of its own.  ``tuned``: a study-made run's tag ``tuned.budget``.
#: ``protocol``: how the classifier's budget was set (``fair`` steps, ``seed`` or ``legacy`` epochs); never pooled.
PROTOCOLS = ("fair", "seed", "legacy")
REGIME_ORDER = ("balanced", "semi", "high")
#: a study trial carries ``optuna.study_name`` without ``grid``; a grid cell carries both
TAG_STUDY, TAG_GRID = "optuna.study_name", "grid"
SEP = "; "  # between the key=value pairs of a run's ``clf`` column


def recipe_values(text: str) -> dict[str, str]:
    """A run's ``clf`` column (``key=value; …``) as a dict."""
    return dict(kv.split("=", 1) for kv in text.split(SEP) if "=" in kv)


def _recipes(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Per run: its sorted ``clf.*`` values as ``key=value; …`` and their 6-hex-digit hash (``""`` when none).

    A run's hash does not depend on which other runs are in the selection."""
    cols = sorted(c for c in frame.columns if c.startswith("params.clf."))
    if not cols:
        return [""] * len(frame), [""] * len(frame)
    names = [c.removeprefix("params.clf.") for c in cols]
    texts, hashes = [], []
    for row in frame[cols].itertuples(index=False, name=None):
        text = SEP.join(f"{k}={v}" for k, v in zip(names, row) if isinstance(v, str) or pd.notna(v))
        texts.append(text)
        hashes.append(hashlib.sha1(text.encode()).hexdigest()[:6] if text else "")
    return texts, hashes


def neutral_params(models) -> dict[str, str]:
    """``params.<section>.<field>`` -> its ``key_neutral`` value, which counts as absent when runs are keyed.

    So runs from before a field was added share their recipe with runs that leave it at that value."""
    from .. import classifiers

    out = {f"params.clf.{k}": str(v) for c in classifiers.CLASSIFIERS.values()
           for k, v in getattr(c.Config, "key_neutral", {}).items()}
    for name in sorted({m for m in models if m in generators.FAMILIES}):
        out |= {f"params.gen.{k}": str(v) for k, v in getattr(generators.get(name).Config, "key_neutral", {}).items()}
    return out


def tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run with typed columns: the cell keys, seed, data digest, the four test metrics, quality."""
    frame = frame.copy()
    models = frame.get("tags.model", pd.Series(dtype=object)).dropna().unique()
    for name, value in neutral_params(models).items():  # so recipe and setup hashes match runs from before the field
        if name in frame:
            frame[name] = frame[name].where(frame[name].astype(str) != value)
    def col(name: str, fallback: str | None = None) -> pd.Series:
        s = frame[name] if name in frame else pd.Series(np.nan, index=frame.index, dtype=object)
        if fallback is not None and fallback in frame:
            s = s.where(s.notna(), frame[fallback])
        return s

    runs = pd.DataFrame({"run_id": col("run_id"), "experiment": col("experiment"), "run_name": col("run_name"),
                         "start_time": col("start_time")})
    runs["model"] = col("tags.model", "params.model")
    runs["variant"] = col(f"tags.{tracking.TAG_VARIANT}").where(lambda s: s.notna() & (s != ""), runs["model"])
    runs["profile"] = col("tags.profile", "params.profile").fillna("")
    runs["regime"] = col("tags.regime", "params.data.regime")
    runs["size"] = pd.to_numeric(col("tags.size", "params.data.size"), errors="coerce")
    runs["classifier"] = col("tags.classifier", "params.classifier")
    recipe = col("params.clf.recipe")
    # scikit-learn models have no step budget, so every run of theirs is on the fair protocol
    runs["protocol"] = recipe.where(recipe.notna(), np.where(runs["classifier"] == "cnn", "legacy", "fair"))
    runs["clf_steps"] = pd.to_numeric(col("metrics.train/clf_steps"), errors="coerce")
    runs["seed"] = pd.to_numeric(col("tags.seed", "params.seed"), errors="coerce")
    runs["data_digest"] = col("tags.data_digest").fillna("")
    runs["minority"] = col("tags.minority_classes").fillna("").astype(str)  # what test/minority_recall averages
    runs["mix_ratio"] = pd.to_numeric(col("params.mix.ratio"), errors="coerce").fillna(0.0)
    runs["mix_strategy"] = col("params.mix.strategy").fillna("uniform")
    runs["mix_weight"] = pd.to_numeric(col("params.mix.synthetic_weight"), errors="coerce").fillna(1.0)
    # "" (no filter, or runs from before mix.filter existed) or e.g. "confidence≥0.5"
    kind = col("params.mix.filter").fillna("none")
    threshold = col("params.mix.filter_threshold").fillna("").astype(str)
    runs["mix_filter"] = np.where(kind == "none", "", kind + "≥" + threshold)
    real = _real_counts(runs, frame)
    _drop_idle_floor(frame, real.sum(axis=1))
    _key_eval_cadence(frame)
    setup_cols = sorted(c for c in frame.columns if c.startswith(("params.gen.", "params.clf.")))
    if setup_cols:
        hashed = pd.util.hash_pandas_object(frame[setup_cols].fillna("").astype(str), index=False)
        runs["setup"] = [f"{h:016x}"[:6] for h in hashed]
    else:
        runs["setup"] = ""
    runs["clf"], runs["recipe"] = _recipes(frame)
    gen_cols = sorted(c for c in frame.columns if c.startswith("params.gen."))  # a generator's settings alone
    runs["gen_setup"] = ([f"{h:016x}"[:6] for h in pd.util.hash_pandas_object(
        frame[gen_cols].fillna("").astype(str), index=False)] if gen_cols else "")
    runs["tuned"] = col(f"tags.{tracking.TAG_TUNED_BUDGET}").fillna("").astype(str)
    runs["superseded_by"] = col(f"tags.{tracking.TAG_SUPERSEDED_BY}").fillna("").astype(str)
    runs["superseded"] = _superseded_labels(frame, runs["superseded_by"] != "")
    # a study trial: tagged with its study's name, and not a grid cell (those carry `grid` too)
    grid = col(f"tags.{TAG_GRID}").fillna("").astype(str)
    runs["study"] = col(f"tags.{TAG_STUDY}").fillna("").astype(str).where(grid == "", "")
    # runs that learned from more than their cell's real images: reported apart (``split_external``)
    runs["external_data"] = col(f"tags.{tracking.TAG_EXTERNAL_DATA}").fillna("").astype(str) == "true"
    runs["external_source"] = col(f"tags.{tracking.TAG_EXTERNAL_SOURCE}").fillna("").astype(str)
    runs["unlabeled"] = unlabeled_counts(frame)  # runs that learned from an unlabelled pool: ``split_unlabeled``
    version = pd.to_numeric(col("tags.code_version.generator"), errors="coerce").fillna(1)
    for model in sorted(set(runs["model"].dropna()) & set(generators.FAMILIES)):
        until = generators.get(model).external_data_until  # runs from before the family stopped using more data
        old = (runs["model"] == model) & (version <= until) & ~runs["external_data"]
        runs.loc[old, "external_data"] = True
        runs.loc[old, "external_source"] = f"{model} code version ≤ {until}"
    for short, name in METRICS.items():
        runs[short] = pd.to_numeric(col(f"metrics.{name}"), errors="coerce")
    # validation for selection (claims/goal.py); the runs' own timings for the cost table (costs.py)
    runs["val_balanced_accuracy"] = pd.to_numeric(col("metrics.val/balanced_accuracy"), errors="coerce")
    runs["time_cell"] = pd.to_numeric(col("metrics.time/cell"), errors="coerce")
    runs["time_gen"] = pd.to_numeric(col("metrics.time/gen"), errors="coerce")
    runs["threads"] = pd.to_numeric(col("tags.machine.threads"), errors="coerce")
    # a run imported from the ledger without its checkpoint lost the tag but trained all the same (ledger.py)
    runs["generator_trained"] = ((col(f"tags.{tracking.TAG_GENERATOR_TRAINED}").fillna("").astype(str) == "true")
                                 | (col(f"tags.{tracking.TAG_LEDGER_CHECKPOINT}").fillna("").astype(str) != ""))
    for short, name in QUALITY.items():
        if f"metrics.{name}" in frame:
            runs[short] = pd.to_numeric(frame[f"metrics.{name}"], errors="coerce")
    # for the exchange rate (exchange.py): per-class recall, real images trained on and synthetic ones added
    for k in range(NUM_CLASSES):
        runs[f"recall_{k}"] = pd.to_numeric(col(f"metrics.test/recall_{k}"), errors="coerce")
        runs[f"synthetic_{k}"] = pd.to_numeric(col(f"metrics.mix/synthetic_count_{k}",
                                                   f"metrics.mix/oversampled_count_{k}"), errors="coerce").fillna(0)
    total = pd.to_numeric(col("metrics.mix/synthetic_total", "metrics.mix/oversampled_total"), errors="coerce")
    runs["n_synthetic"] = total.fillna(0)
    # a run that added no synthetic image (e.g. minority-only on balanced) is no evidence about synthetic images
    runs["no_synthetic"] = ~runs["model"].isin(BASELINES) & (total == 0)
    runs[[f"real_{k}" for k in range(NUM_CLASSES)]] = real
    runs["n_real"] = real.sum(axis=1)
    runs = runs.dropna(subset=["model", "regime", "size", "classifier", "seed", "accuracy"])
    runs = runs.astype({"size": int, "seed": int})
    return runs.reset_index(drop=True)


def _superseded_labels(frame: pd.DataFrame, old: pd.Series) -> pd.Series:
    """"" per current run; per superseded run a label that names how it was computed (see ``CELL``)."""
    out = pd.Series("", index=frame.index, dtype=object)
    if not old.any():
        return out
    cols = sorted(c for c in frame.columns if (c.startswith("params.") and c != "params.seed")
                  or c.startswith("tags.code_version."))
    hashed = pd.util.hash_pandas_object(frame.loc[old, cols].fillna("").astype(str), index=False)
    out[old] = [f"superseded #{h:016x}"[:17] for h in hashed]
    return out


def _drop_idle_floor(frame: pd.DataFrame, n_real: np.ndarray) -> None:
    """Blank ``params.clf.min_steps`` where the floor did not raise the budget, as ``cell.clf_key_dict`` keys it.

    Such a run trained exactly as one without the floor, so it shares its recipe and setup."""
    if "params.clf.min_steps" not in frame:
        return
    from ..classifiers import floor_binds

    def num(name: str) -> pd.Series:
        col = f"params.clf.{name}"
        return pd.to_numeric(frame[col], errors="coerce") if col in frame else pd.Series(np.nan, index=frame.index)

    epochs, batch, floor, steps = num("epochs"), num("batch_size"), num("min_steps"), num("steps")
    binds = [False if np.isnan([e, b, f, n]).any() else
             floor_binds(epochs=int(e), batch_size=int(b), min_steps=int(f), steps=None if np.isnan(s) else int(s),
                         n_budget=int(n))
             for e, b, f, s, n in zip(epochs, batch, floor, steps, n_real)]
    frame["params.clf.min_steps"] = frame["params.clf.min_steps"].where(binds)


def _key_eval_cadence(frame: pd.DataFrame) -> None:
    """``params.clf.eval_every`` as ``cell.clf_key_dict`` keys it: 1 without early stopping and for auto (0).

    So runs from before auto share their recipe with runs after it."""
    if "params.clf.eval_every" not in frame:
        return
    every = frame["params.clf.eval_every"]
    stopping = pd.to_numeric(frame.get("params.clf.early_stopping", pd.Series(0, index=frame.index)),
                             errors="coerce").fillna(0) > 0
    frame["params.clf.eval_every"] = every.where(every.isna() | (stopping & (every.astype(str) != "0")), "1")


def _real_counts(runs: pd.DataFrame, frame: pd.DataFrame) -> np.ndarray:
    """Per run and class, its real training images (``train_counts``; NaN where unknown), once per distinct setting."""
    def param(name: str, default) -> pd.Series:
        s = frame[f"params.data.{name}"] if f"params.data.{name}" in frame else pd.Series(np.nan, index=frame.index)
        return s.where(s.notna() & (s.astype(str) != "None"), default)

    keys = pd.DataFrame({"regime": runs["regime"], "size": runs["size"], "seed": runs["seed"],
                         "val": param("val_fraction", 0.15).astype(str),
                         "minority": param("minority_classes", "(2, 6)").astype(str),
                         "kfold": param("kfold", "").astype(str), "fold": param("fold", 0).astype(str)})
    out = np.full((len(runs), NUM_CLASSES), np.nan)
    for key, idx in keys.groupby(list(keys.columns), dropna=False, sort=False).indices.items():
        regime, size, seed, val, minority, kfold, fold = key
        try:
            counts = regime_counts(regime, int(size), int(seed), minority_classes=tuple(ast.literal_eval(minority)))
            out[idx] = train_counts(counts, val_fraction=float(val), kfold=int(float(kfold)) if kfold else None,
                                    fold=int(float(fold)))
        except (ValueError, TypeError, SyntaxError, DataError):  # a run without these params: counts unknown
            continue
    return out


def select_runs(runs: pd.DataFrame, *, include_studies: bool = False) -> pd.DataFrame:
    """The runs a report reads: grid cells and single runs; study trials only with ``include_studies``.

    A study trial is one seed of one sampled setting, not a repeat of a cell."""
    trial = runs["study"] != ""
    if include_studies:
        if not trial.any():
            exps = ", ".join(map(repr, sorted(runs["experiment"].unique())))
            raise UserError(f"--include-studies: the selected experiment(s) {exps} hold no study trials (runs tagged "
                            f"{TAG_STUDY} without a {TAG_GRID} tag); drop the flag or name a study's experiment "
                            f"with --experiment")
        return runs
    if trial.all():
        studies = ", ".join(map(repr, sorted(runs["study"].unique())))
        raise UserError(f"the selection holds only study trials ({len(runs)} runs of study {studies}); the report "
                        f"reads grid and run experiments by default — add --include-studies to report on them")
    return runs[~trial].reset_index(drop=True)


def select_current(runs: pd.DataFrame, *, include_superseded: bool = False) -> tuple[pd.DataFrame, int]:
    """(the runs a report reads, how many superseded runs it left out); ``include_superseded`` keeps them.

    A run tagged ``superseded_by`` was replaced by a re-run of its cell under a new config (supersede.py)."""
    old = runs["superseded_by"] != "" if "superseded_by" in runs else pd.Series(False, index=runs.index)
    if include_superseded:
        return runs, 0
    if len(runs) and old.all():
        raise UserError(f"all {len(runs)} selected runs are superseded (tag {tracking.TAG_SUPERSEDED_BY}: their cells "
                        "were re-run under a newer config) — add --include-superseded to report on them")
    return runs[~old].reset_index(drop=True), int(old.sum())


def select_models(runs: pd.DataFrame, models: list[str] | None) -> pd.DataFrame:
    """Only the generator families in ``models`` (``None``: all); every baseline stays, gains are measured on them."""
    if not models:
        return runs
    unknown = [m for m in models if m not in generators.FAMILIES]
    if unknown:
        raise UserError(f"--model {unknown[0]}: not a generator family (families: {', '.join(generators.FAMILIES)}; "
                        "baselines are always in the report)")
    present = set(runs["model"])
    missing = [m for m in models if m not in present]
    if missing:
        have = ", ".join(sorted(present & set(generators.FAMILIES))) or "none"
        raise UserError(f"--model {missing[0]}: no runs of that family in the selected experiment(s) "
                        f"(families there: {have})")
    return runs[runs["model"].isin(models) | runs["model"].isin(BASELINES)].reset_index(drop=True)


def _split(runs: pd.DataFrame, apart: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the runs outside ``apart``, the runs in it), each renumbered from 0."""
    return runs[~apart].reset_index(drop=True), runs[apart].reset_index(drop=True)


def split_external(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(own-data runs, runs tagged ``uses_external_data``).

    Those saw more labelled images than their cell's baseline, so they are never paired nor pooled into a claim."""
    ext = runs["external_data"] if "external_data" in runs else pd.Series(False, index=runs.index)
    own, external = _split(runs, ext)
    if own.empty:
        raise UserError(f"all {len(external)} selected runs use external data (tag {tracking.TAG_EXTERNAL_DATA}"
                        f"=true, e.g. gen.clip_data=full), which the report never pairs with a baseline — add the "
                        f"experiments of own-data runs with --experiment, or record them (the default gen.clip_data=own)")
    return own, external


def unlabeled_counts(frame: pd.DataFrame) -> pd.Series:
    """Per run, the unlabelled pool images it learned from: tag ``unlabeled_pool``, else ``gen.unlabeled_size``."""
    out = pd.Series(0, index=frame.index, dtype=int)
    for name in ("params.gen.unlabeled_size", f"tags.{tracking.TAG_UNLABELED_POOL}"):  # the tag wins
        if name in frame:
            n = pd.to_numeric(frame[name], errors="coerce")
            out = out.where(n.isna(), n.fillna(0).astype(int))
    return out


def split_unlabeled(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the other runs, runs that learned from an unlabelled pool).

    Against ``none`` such a gain would be semi-supervised learning, so it is paired with ``pseudo-label`` only."""
    pooled = runs["unlabeled"] > 0 if "unlabeled" in runs else pd.Series(False, index=runs.index)
    other, apart = _split(runs, pooled)
    if other.empty:
        raise UserError(f"all {len(apart)} selected runs learned from an unlabelled pool (tag "
                        f"{tracking.TAG_UNLABELED_POOL}: ssvae, pseudo-label) — add the experiments of the real-only "
                        f"baselines and other families with --experiment")
    return other, apart


def check_recipes(runs: pd.DataFrame) -> None:
    """Refuse runs without any ``params.clf.*`` (e.g. logged by hand): they cannot be matched to a baseline."""
    unknown = runs[runs["recipe"] == ""]
    if unknown.empty:
        return
    exps = ", ".join(map(repr, sorted(unknown["experiment"].astype(str).unique())))
    first = unknown.iloc[0]
    raise UserError(f"{len(unknown)} run(s) in experiment(s) {exps} carry no params.clf.* (e.g. run "
                    f"{str(first['run_id'])[:8]} {first['run_name']!r}), so their classifier recipe is unknown and no "
                    f"baseline can be matched to them — log the classifier's clf.* params with each run (as "
                    f"`synthboost run` does) or leave those experiments out with --experiment")


def recipe_labels(runs: pd.DataFrame) -> dict[str, str]:
    """recipe hash -> its name: the hash plus the values that tell it apart, e.g. ``1a2b3c (augment=shift_flip)``."""
    labels: dict[str, str] = {}
    table = runs.drop_duplicates("recipe")[["recipe", "clf", "classifier"]]
    for _, group in table.groupby("classifier", sort=False):
        values = {r: recipe_values(text) for r, text in zip(group["recipe"], group["clf"])}
        keys = sorted({k for v in values.values() for k in v})
        varying = [k for k in keys if len({v.get(k, "—") for v in values.values()}) > 1]
        for r, v in values.items():
            shown = ", ".join(f"{k}={v.get(k, '—')}" for k in varying)
            labels[r] = f"{r} ({shown})" if shown else r
    return labels


def recipe_diff(runs: pd.DataFrame, have: str, want: str) -> str:
    """The ``--set clf.k=v`` options that turn recipe ``have`` into ``want`` (the values that differ)."""
    def values(r: str) -> dict[str, str]:
        text = runs.loc[runs["recipe"] == r, "clf"]
        return recipe_values(text.iloc[0] if len(text) else "")

    a, b = values(have), values(want)
    return " ".join(f"--set clf.{k}={b[k]}" for k in sorted(b) if a.get(k) != b[k])


def regime_rank(regime: str) -> tuple[int, str]:
    """Sort key of a regime: the known ones in ``REGIME_ORDER``, then any other by name."""
    return (REGIME_ORDER.index(regime), "") if regime in REGIME_ORDER else (len(REGIME_ORDER), regime)


def ordered_regimes(values) -> list[str]:
    return sorted(set(values), key=regime_rank)


NO_SYNTHETIC = "no synthetic images"


def mix_label(ratio: float, strategy: str, weight: float, *, baseline: bool = False, filter_: str = "",
              empty: bool = False) -> str:
    if baseline or ratio == 0:
        return "real only"
    # three significant digits: a study's best ratio (0.0808736…) is a label here, the exact value is in the run
    return (f"{ratio:.3g}×{strategy}" + (f" w={weight:.3g}" if weight != 1 else "") + (f" {filter_}" if filter_ else "")
            + (f" ({NO_SYNTHETIC})" if empty else ""))


def row_mix(row) -> str:
    """``mix_label`` of a cell row (results, runs or gains); ``no_synthetic`` rows say they added none."""
    return mix_label(row["mix_ratio"], row["mix_strategy"], row["mix_weight"], baseline=row["model"] in BASELINES,
                     filter_=row.get("mix_filter", ""), empty=bool(row.get("no_synthetic", False)))


def cell_name(row) -> str:
    """A cell row in a few words, e.g. ``dvae high/500 cnn 1×uniform``."""
    return f"{row['variant']} {row['regime']}/{row['size']} {row['classifier']} {row_mix(row)}"
