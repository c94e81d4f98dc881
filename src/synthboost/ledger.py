"""The ledger: a store's finished runs as plain files, so measurements travel in git and outlive the machine.

A SQLite store (or a server's database) lives on one machine; the ledger is its portable copy.  ``export`` writes
each FINISHED run of the named experiments (and the parent runs they nest under) as one JSON file,
``<dir>/<experiment>/<run id>.json``: info, params, tags and every metric's whole history, with the small
artifacts the report and a re-run read (``config.yaml``, CSVs, the sample grid) beside it.  ``import_`` puts the
runs a store lacks into it and brings the tags of those it has up to date (a run marked superseded since), so
after an import the grid skips the finished cells and the report shows the same tables.

A run keeps one identity across stores: its id in the store it was first recorded in (the tag
``ledger.origin_run_id`` on an imported run).  Tags that name another run (the parent, the superseding run, the
generator's run) are written as origin ids and mapped back on import.  Generator checkpoints are not carried by
default (megabytes each): an imported run that trained one loses its ``generator_trained`` tag, so a grid that
needs that generator again trains it anew instead of failing to load it; the runs that only hold an auxiliary
model (the quality extractor, a CLIP) are left out with their weights.  MLflow's dataset inputs and logged
models are not carried either.  Both directions write only what changed, and are safe to repeat.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from . import queue, tracking
from .errors import UserError

FORMAT = "synthboost-ledger/1"
JOURNAL = "optuna.journal"
#: what a ledger carries of each run's artifacts by default: what the report and `synthboost evaluate` read
DEFAULT_ARTIFACTS = ("config.yaml", "*/config.yaml", "*.csv", "samples/grid.png")
CHECKPOINT = "generator/model.pt"


def default_dir() -> Path:
    return tracking.tracking_dir() / "ledger"


@dataclasses.dataclass
class Summary:
    written: int = 0  # files created or changed (export), runs created (import)
    unchanged: int = 0
    updated: int = 0  # import: runs already in the store whose tags were brought up to date
    journal: str = ""  # what happened to the Optuna journal, in words

    def line(self, verb: str) -> str:
        parts = [f"{self.written} run(s) {verb}", f"{self.updated} updated", f"{self.unchanged} unchanged"]
        return ", ".join(parts) + (f"; {self.journal}" if self.journal else "")


def _keeper(patterns: tuple[str, ...], *, checkpoints: bool, max_bytes: int):
    def keep(path: str, size: int) -> bool:
        if path.endswith(".pt"):
            return checkpoints
        return size <= max_bytes and any(fnmatch.fnmatch(path, p) for p in patterns)
    return keep


def _map_ids(tags: dict[str, str], mapping: dict[str, str]) -> dict[str, str]:
    return {k: (mapping.get(v, v) if k in tracking.RUN_ID_TAGS else v) for k, v in tags.items()}


def _write(path: Path, data: bytes) -> None:
    """Whole or not at all (an export cut off must not leave half a record): a temporary file, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _dump(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, indent=1) + "\n"


def export(tracker: tracking.Tracker, *, experiments: list[str] | None, dst: Path,
           artifacts: tuple[str, ...] = DEFAULT_ARTIFACTS, checkpoints: bool = False, max_artifact_mb: float = 2.0,
           journal: str | None = None) -> Summary:
    """Write the runs of ``experiments`` (None: every experiment) under ``dst``; with ``journal`` (an Optuna
    journal file) a copy of it as ``dst/optuna.journal``."""
    tracking.quiet_artifact_bars()
    summary = Summary()
    runs = tracking.ledger_runs(tracker, experiments, generators=checkpoints)
    to_origin = {local: origin for origin, local in tracking.origin_ids(tracker).items()}
    keep = _keeper(artifacts, checkpoints=checkpoints, max_bytes=int(max_artifact_mb * 1e6))
    for run in runs:
        if run.data.tags.get(tracking.TAG_KIND) == tracking.KIND_MODEL and not checkpoints:
            continue  # an auxiliary model's run is a cache of its weights: without them it is nothing to keep
        head = tracking.run_head(tracker, run)
        if _unchanged(dst / head["experiment"] / f"{head['run_id']}.json", head, to_origin, checkpoints=checkpoints):
            summary.unchanged += 1  # told from one search's data: no metric history or artifact is fetched
            continue
        with tempfile.TemporaryDirectory(prefix="synthboost-ledger-") as tmp:
            record = tracking.run_record(tracker, run, keep=keep, dst=Path(tmp))
            record["tags"] = _map_ids(record["tags"], to_origin)
            record["format"] = FORMAT
            folder = dst / record["experiment"]
            path = folder / f"{record['run_id']}.json"
            text = _dump(record)
            changed = not path.is_file() or path.read_text() != text
            for rel in record["artifacts"]:
                target = folder / record["run_id"] / rel
                new = Path(tmp, rel).read_bytes()
                if not target.is_file() or target.read_bytes() != new:
                    _write(target, new)
                    changed = True
            if changed:
                _write(path, text.encode())
                summary.written += 1
            else:
                summary.unchanged += 1
    if journal and Path(journal).is_file():
        target = dst / JOURNAL
        data = Path(journal).read_bytes()
        data = data[:data.rfind(b"\n") + 1]  # whole lines only: a worker may be appending one right now
        if target.is_file() and target.read_bytes() == data:
            summary.journal = "Optuna journal unchanged"
        else:
            _write(target, data)
            summary.journal = f"Optuna journal copied to {target}"
    return summary


def _unchanged(path: Path, head: dict[str, Any], to_origin: dict[str, str], *, checkpoints: bool) -> bool:
    """Whether the record at ``path`` already says what ``head`` (tracking.run_head) says of the run."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if checkpoints and CHECKPOINT in old.get("left_behind", []):
        return False  # exported without its checkpoint before: carry it now
    latest = {k: rows[-1][2] for k, rows in old.get("metrics", {}).items() if rows}
    now = head | {"tags": _map_ids(head["tags"], to_origin)}
    fields = ("run_id", "experiment", "run_name", "status", "start_time", "end_time", "params", "tags")
    return (_dump({k: old.get(k) for k in fields} | {"latest": latest})
            == _dump({k: now[k] for k in fields} | {"latest": now["latest"]}))


def read_records(src: Path) -> list[tuple[dict[str, Any], Path]]:
    """Every record under ``src`` with its artifact folder, parents before their children; a file that is not a
    ledger record -> UserError naming it."""
    if not src.is_dir():
        raise UserError(f"no ledger at {src}: export one with `synthboost ledger export`, or pass --dir")
    out = []
    for path in sorted(src.glob("*/*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise UserError(f"{path} is not a readable ledger record ({err}); restore it from git") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise UserError(f"{path} is not a {FORMAT} record; restore it from git or export it again")
        out.append((record, path.with_suffix("")))
    ids = {r["run_id"] for r, _ in out}
    depth: dict[str, int] = {}

    def level(record: dict[str, Any]) -> int:
        parent = record["tags"].get("mlflow.parentRunId")
        if parent not in ids:
            return 0
        if parent not in depth:
            depth[parent] = level(next(r for r, _ in out if r["run_id"] == parent)) + 1
        return depth[parent]

    return sorted(out, key=lambda rp: (level(rp[0]), rp[0]["start_time"] or 0, rp[0]["run_id"]))


def import_(tracker: tracking.Tracker, *, src: Path, journal: str | None = None,
            experiments: list[str] | None = None) -> Summary:
    """Create the runs of the ledger at ``src`` that the store lacks and update the tags of those it has; with
    ``journal`` (the local Optuna journal path) restore the ledger's journal there when there is none yet;
    ``experiments``: only those experiments' runs (a name the ledger lacks -> UserError)."""
    tracking.quiet_artifact_bars()
    summary = Summary()
    records = read_records(src)
    if experiments:
        have = {r["experiment"] for r, _ in records}
        missing = sorted(set(experiments) - have)
        if missing:
            raise UserError(f"the ledger at {src} has no experiment {', '.join(missing)} "
                            f"(it has: {', '.join(sorted(have)) or 'none'})")
        records = [(r, f) for r, f in records if r["experiment"] in experiments]
    to_local = tracking.origin_ids(tracker)
    created = set()
    for record, folder in records:  # parents first, so a child nests under its parent's new id
        if record["run_id"] not in to_local:
            # an artifact the ledger lists but this copy lacks (checkpoints are git-ignored) counts as left behind
            present = [a for a in record["artifacts"] if (folder / a).is_file()]
            record = record | {"artifacts": present,
                               "left_behind": sorted(set(record["left_behind"]) | set(record["artifacts"]) - set(present))}
            tags = _map_ids(record["tags"], to_local)
            if tracking.TAG_GENERATOR_TRAINED in tags and CHECKPOINT not in record["artifacts"]:
                del tags[tracking.TAG_GENERATOR_TRAINED]
                tags[tracking.TAG_LEDGER_CHECKPOINT] = "not carried"
            to_local[record["run_id"]] = tracking.create_from_record(tracker, record, tags=tags, src=folder)
            created.add(record["run_id"])
    for record, _ in records:  # then every id is known: tags naming a later run (or the run itself) are mapped
        local = to_local[record["run_id"]]
        have = tracking.run_tags(tracker, local)
        tags = _map_ids(record["tags"], to_local)
        if tracking.TAG_GENERATOR_TRAINED not in have:
            tags.pop(tracking.TAG_GENERATOR_TRAINED, None)  # its checkpoint was not carried
        stale = {k: v for k, v in tags.items() if have.get(k) != v and not k.startswith("mlflow.")}
        if stale:
            tracking.set_run_tags(tracker, local, stale)
        if record["run_id"] in created:
            summary.written += 1
        elif stale:
            summary.updated += 1
        else:
            summary.unchanged += 1
    source = src / JOURNAL
    if journal and source.is_file():
        target = Path(journal)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            summary.journal = f"Optuna journal restored to {target}"
        elif target.read_bytes() != source.read_bytes():
            summary.journal = f"kept the Optuna journal already at {target} (it differs from the ledger's)"
    return summary


def default_journal() -> str | None:
    """The default Optuna storage when it is a journal file (a database holds its studies itself)."""
    url = queue.default_storage()
    return url if queue.is_journal(url) else None
