"""The ledger's side of the store: runs as plain records and back (the export and import are ``synthboost.ledger``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .readers import experiments_named, paged_runs
from .runs import MAX_METRICS, MAX_PARAMS, Run, Tracker
from .tags import TAG_GENERATOR_TRAINED, TAG_LEDGER_CHECKPOINT, TAG_LEDGER_LEFT, TAG_LEDGER_ORIGIN


def ledger_runs(tracker: Tracker, experiment_names: list[str] | None, *, generators: bool = False) -> list:
    """What a ledger keeps: the FINISHED runs in the named experiments (None: all), those imported from a ledger,
    and the parents they nest under; with ``generators`` also unfinished runs that logged a whole generator.

    A cell cut off while sampling leaves a generator that later cells reuse."""
    ids = list(experiments_named(tracker, experiment_names))
    if not ids:
        return []
    runs = {r.info.run_id: r for r in paged_runs(tracker.client, ids, "attributes.status = 'FINISHED'")}
    # a run that came from a ledger goes back into it, finished or not (a cut-off cell whose generator others reuse)
    for r in paged_runs(tracker.client, ids, f"tags.`{TAG_LEDGER_ORIGIN}` LIKE '%'"):
        runs.setdefault(r.info.run_id, r)
    if generators:
        for r in paged_runs(tracker.client, ids, f"tags.{TAG_GENERATOR_TRAINED} = 'true'"):
            runs.setdefault(r.info.run_id, r)
    for r in list(runs.values()):
        parent = r.data.tags.get("mlflow.parentRunId")
        if parent and parent not in runs:
            with contextlib.suppress(Exception):  # a parent deleted from the store: the run is kept unnested
                runs[parent] = tracker.client.get_run(parent)
    return sorted(runs.values(), key=lambda r: (r.info.start_time or 0, r.info.run_id))


def origin_ids(tracker: Tracker) -> dict[str, str]:
    """{origin id: local run id} for every run of the store (a run never imported is its own origin)."""
    ids = list(experiments_named(tracker, None))
    out: dict[str, str] = {}
    for r in paged_runs(tracker.client, ids) if ids else ():
        out[r.data.tags.get(TAG_LEDGER_ORIGIN, r.info.run_id)] = r.info.run_id
    return out


def run_head(tracker: Tracker, run) -> dict[str, Any]:
    """A run as one search returns it, in the ledger's terms (origin ids, latest metrics): enough to see a change."""
    info, data = run.info, run.data
    return {"run_id": data.tags.get(TAG_LEDGER_ORIGIN, info.run_id),
            "experiment": tracker.client.get_experiment(info.experiment_id).name, "run_name": info.run_name,
            "status": info.status, "start_time": info.start_time, "end_time": info.end_time,
            "params": dict(sorted(data.params.items())), "tags": _origin_tags(data.tags),
            "latest": dict(sorted(data.metrics.items()))}


def run_record(tracker: Tracker, run, *, keep: Callable[[str, int], bool], dst: Path) -> dict[str, Any]:
    """One run as plain data: ``run_head`` with whole metric histories, the artifacts ``keep(path, size)`` selects
    copied under ``dst`` and the others listed as left behind."""
    client = tracker.client
    info, data = run.info, run.data
    metrics = {}
    for key in sorted(data.metrics):
        history = client.get_metric_history(info.run_id, key)
        metrics[key] = [[m.step, m.timestamp, m.value] for m in sorted(history, key=lambda m: (m.step, m.timestamp))]
    carried, left = [], [p for p in data.tags.get(TAG_LEDGER_LEFT, "").split(",") if p]
    pending = [""]
    while pending:
        for f in client.list_artifacts(info.run_id, pending.pop() or None):
            if f.is_dir:
                pending.append(f.path)
            elif keep(f.path, f.file_size or 0):
                (dst / f.path).parent.mkdir(parents=True, exist_ok=True)
                client.download_artifacts(info.run_id, f.path, str((dst / f.path).parent))
                carried.append(f.path)
            else:
                left.append(f.path)
    record = run_head(tracker, run)
    del record["latest"]
    return record | {"metrics": metrics, "artifacts": sorted(carried), "left_behind": sorted(set(left))}


def _origin_tags(tags: dict[str, str]) -> dict[str, str]:
    """A run's tags as the store it was first recorded in had them (an import's own marks taken back out)."""
    marks = (TAG_LEDGER_ORIGIN, TAG_LEDGER_CHECKPOINT, TAG_LEDGER_LEFT)
    out = {k: v for k, v in sorted(tags.items()) if k not in marks}
    if tags.get(TAG_LEDGER_CHECKPOINT) == "not carried":
        out[TAG_GENERATOR_TRAINED] = "true"
    return dict(sorted(out.items()))


def create_from_record(tracker: Tracker, record: dict[str, Any], *, tags: dict[str, str], src: Path) -> str:
    """A new run in this store holding ``record`` (tags already mapped to local ids) and its artifacts from ``src``."""
    from mlflow.entities import Metric, Param

    client = tracker.client
    run_id = client.create_run(tracker.experiment_id(record["experiment"]), start_time=record["start_time"],
                               tags=tags | {TAG_LEDGER_ORIGIN: record["run_id"],
                                            TAG_LEDGER_LEFT: ",".join(record["left_behind"])},
                               run_name=record["run_name"]).info.run_id
    params = [Param(k, v) for k, v in record["params"].items()]
    for i in range(0, len(params), MAX_PARAMS):
        client.log_batch(run_id, params=params[i:i + MAX_PARAMS])
    metrics = [Metric(k, v, ts, step) for k, rows in record["metrics"].items() for step, ts, v in rows]
    for i in range(0, len(metrics), MAX_METRICS):
        client.log_batch(run_id, metrics=metrics[i:i + MAX_METRICS])
    for path in record["artifacts"]:
        folder = path.rpartition("/")[0]
        client.log_artifact(run_id, str(src / path), folder or None)
    # a parent still open where it was recorded (its grid was cut off with the machine) runs nowhere now
    status = record["status"] if record["status"] in ("FINISHED", "FAILED", "KILLED") else "KILLED"
    client.set_terminated(run_id, status, end_time=record["end_time"])
    return run_id


def set_run_tags(tracker: Tracker, run_id: str, tags: dict[str, str]) -> None:
    """Set tags on a run of this store (an import mapping run ids to local ones)."""
    Run(tracker, run_id).set_tags(tags)
