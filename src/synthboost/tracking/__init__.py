"""The only place that talks to MLflow; ``tracking.X`` re-exports the names the rest of the package uses.

``tags`` the store's schema (experiment, kind and tag names; no MLflow import), ``store`` where the store is and
how to reach and lock it, ``runs`` the objects that write runs (``Tracker``, ``Run``, ``cached_model``),
``readers`` what the report and the grid read back, ``ledger`` runs as the ledger's records and back.
"""

from .ledger import create_from_record, ledger_runs, origin_ids, run_head, run_record, set_run_tags
from .readers import (download_artifact, experiment_names, has_artifact, run_tags, runs_frame,
                      unfinished_runs)
from .runs import MAX_METRICS, MAX_PARAMS, MAX_TAGS, Run, Tracker, cached_model, env_run_id, figure_png
from .store import (check_database, check_reachable, fetch_artifact, file_lock, git_commit, project_root,
                    quiet_artifact_bars, redact, store_refusals, tracking_dir, tracking_uri)
from .tags import (DEFAULT_EXPERIMENT, KIND_EXPERIMENT, KIND_GRID, KIND_MODEL, KIND_REPORT, KIND_STUDY,
                   MODELS_EXPERIMENT, RUN_ID_TAGS, TAG_CONFIG_KEY, TAG_ERROR, TAG_EXTERNAL_DATA, TAG_EXTERNAL_SOURCE,
                   TAG_GENERATOR_KEY, TAG_GENERATOR_RESUMED, TAG_GENERATOR_REUSED, TAG_GENERATOR_RUN_ID,
                   TAG_GENERATOR_TRAINED, TAG_KIND, TAG_LEDGER_CHECKPOINT, TAG_LEDGER_LEFT, TAG_LEDGER_ORIGIN,
                   TAG_SAMPLES_REUSED, TAG_SAMPLING_PRECISION, TAG_SHA256, TAG_SUPERSEDED_BY, TAG_SUPERSEDED_REASON,
                   TAG_TIMINGS_DISTURBED, TAG_TRAINING_PRECISION, TAG_TUNED_BUDGET, TAG_TUNED_STUDY,
                   TAG_UNLABELED_DIGEST, TAG_UNLABELED_POOL, TAG_VARIANT, kind_filter)
