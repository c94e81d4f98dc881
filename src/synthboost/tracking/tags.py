"""The store's schema: experiment names, run kinds and tag names, importable without MLflow."""

from __future__ import annotations

DEFAULT_EXPERIMENT = "synthboost"
MODELS_EXPERIMENT = "synthboost-models"  # auxiliary models: feature extractor, CLIP

KIND_EXPERIMENT, KIND_STUDY, KIND_GRID, KIND_REPORT, KIND_MODEL = "experiment", "study", "grid", "report", "model"
TAG_KIND = "synthboost.kind"  # one of the KIND_* above
TAG_CONFIG_KEY = "config_key"  # hash of a cell's whole config: a grid skips a FINISHED cell with the same key
TAG_GENERATOR_KEY = "generator_key"  # hash of what a generator's training depends on
TAG_GENERATOR_TRAINED = "generator_trained"  # "true" on the run that trained (and logged) the generator
TAG_GENERATOR_RUN_ID = "generator_run_id"  # the run whose checkpoint a run used
TAG_GENERATOR_REUSED = "generator_reused"
TAG_GENERATOR_RESUMED = "generator_resumed"  # where its training went on from a killed attempt's snapshot
#: "true" on a run whose wall times are known to be wrong (e.g. paused mid-run): the cost model does not use them
TAG_TIMINGS_DISTURBED = "timings_disturbed"
TAG_SAMPLES_REUSED = "samples_reused"  # "true" when a run drew no image: its synthetic ones were kept (sample_cache)
# what amp resolved to on the run's machine (fp32 | bf16 | fp16); the classifier's is the param clf.precision
TAG_SAMPLING_PRECISION, TAG_TRAINING_PRECISION = "gen.sampling_precision", "gen.training_precision"
TAG_VARIANT = "variant"  # the grid's name for a configured model (e.g. dvae-blur); the model otherwise
TAG_ERROR = "error"
#: "true" on runs that learned from more than their cell's real images (e.g. a CLIP trained on the official train
#: set): the report keeps them apart; TAG_EXTERNAL_SOURCE says what the external data was
TAG_EXTERNAL_DATA = "uses_external_data"
TAG_EXTERNAL_SOURCE = "external_data"
#: how many unlabelled official-train images outside its cell a run learned from, and a digest of which: the report
#: pairs such a run only with a baseline on the same pool
TAG_UNLABELED_POOL = "unlabeled_pool"
TAG_UNLABELED_DIGEST = "unlabeled_pool.digest"
TAG_SHA256 = "sha256."  # + an artifact path: the digest of a checkpoint, set only once it is wholly uploaded
TAG_TUNED_STUDY = "tuned.study"  # a grid cell run from a study's best: that study's name
TAG_TUNED_BUDGET = "tuned.budget"  # … and its tuning budget (study.budget_label), which the report pairs on
#: on a FINISHED cell run whose cell was re-run under another config_key (supersede.py): the newer run's id, and
#: why; the report leaves such runs out unless asked for them
TAG_SUPERSEDED_BY = "superseded_by"
TAG_SUPERSEDED_REASON = "superseded_reason"

#: on a run imported from a ledger: its id in the store it was first recorded in (its id in the ledger)
TAG_LEDGER_ORIGIN = "ledger.origin_run_id"
#: on an imported run that trained a generator whose weights the ledger did not carry: the grid trains it anew
TAG_LEDGER_CHECKPOINT = "ledger.checkpoint"
#: on an imported run: the artifacts its record listed as left behind, so a re-export writes the same record
TAG_LEDGER_LEFT = "ledger.left_behind"
#: tags whose value is a run id: the ledger writes them as origin ids and maps them back to local ids on import
RUN_ID_TAGS = ("mlflow.parentRunId", TAG_SUPERSEDED_BY, TAG_GENERATOR_RUN_ID)


def kind_filter(kind: str, *, finished: bool = True) -> str:
    """The ``search_runs`` filter for runs of one kind (FINISHED ones by default)."""
    status = " and attributes.status = 'FINISHED'" if finished else ""
    return f"tags.`{TAG_KIND}` = '{kind}'{status}"
