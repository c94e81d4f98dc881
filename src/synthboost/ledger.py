"""The ledger: a store's finished runs as plain files, so measurements travel in git and outlive the machine.

A SQLite store (or a server's database) lives on one machine; the ledger is its portable copy.  ``export`` writes
the FINISHED runs of the named experiments (and the parent runs they nest under) as one gzip JSON-lines file per
experiment, ``<dir>/<experiment>.jsonl.gz``: per run its info, params, tags and every metric's whole history, with
the small artifacts the report and a re-run read inline (``config.yaml``, CSVs).  A sample grid (~80 kB) is carried
only for the runs a report shows it from (per experiment and variant the latest one, ``report.figures.grid_runs``),
once per distinct image, so a run costs a few kB.  ``import_`` reads that form and the first one (one JSON file per
run, ``<dir>/<experiment>/<run id>.json`` with its artifacts in a folder beside it), or a ``.tar.gz`` of either; it
puts the runs a store lacks into it and brings the tags of those it has up to date (a run marked superseded since),
so after an import the grid skips the finished cells and the report shows the same tables.

A run keeps one identity across stores: its id in the store it was first recorded in (the tag
``ledger.origin_run_id`` on an imported run).  Tags that name another run (the parent, the superseding run, the
generator's run) are written as origin ids and mapped back on import.  Generator checkpoints are not carried by
default (megabytes each; ``--checkpoints`` writes them beside the file, ``<dir>/<experiment>/<run id>/``, git-ignored):
an imported run that trained one loses its ``generator_trained`` tag, so a grid that needs that generator again
trains it anew instead of failing to load it; the runs that only hold an auxiliary model (the quality extractor, a
CLIP) are left out with their weights.  MLflow's dataset inputs and logged models are not carried either.  Both
directions write only what changed, and are safe to repeat; an export keeps the records of runs the store lacks.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fnmatch
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import queue, tracking
from .errors import UserError

FORMAT = "synthboost-ledger/1"  # one JSON file per run (read, no longer written)
FORMAT2 = "synthboost-ledger/2"  # one gzip JSON-lines file per experiment
SUFFIX = ".jsonl.gz"
JOURNAL = "optuna.journal"
#: what a ledger carries of each run's artifacts by default: what the report and `synthboost evaluate` read
DEFAULT_ARTIFACTS = ("config.yaml", "*/config.yaml", "*.csv", "samples/grid.png")
GRID = "samples/grid.png"
CHECKPOINT = "generator/model.pt"
#: artifacts kept inline as text; any other carried artifact but a checkpoint is a blob (base64, once per content)
TEXT = ("*.yaml", "*.csv", "*.json", "*.txt", "*.md")


def default_dir() -> Path:
    return tracking.tracking_dir() / "ledger"


@dataclasses.dataclass
class Summary:
    written: int = 0  # records created or changed (export), runs created (import)
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
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------- blobs: a sample grid stored in grey, restored whole
def _blob(data: bytes) -> dict[str, str]:
    """A binary artifact as a blob line; a PNG whose pixels are all grey and opaque (a sample grid) is stored as an
    8-bit grey PNG, half its RGBA size, and restored to RGBA with the same pixels on import."""
    import numpy as np
    from PIL import Image

    kind = "base64"
    with contextlib.suppress(Exception):
        image = Image.open(io.BytesIO(data))
        if image.format == "PNG" and image.mode == "RGBA":
            px = np.asarray(image)
            if (px[..., 3] == 255).all() and (px[..., 0] == px[..., 1]).all() and (px[..., 1] == px[..., 2]).all():
                buf = io.BytesIO()
                Image.fromarray(px[..., 0], mode="L").save(buf, format="PNG", optimize=True)
                data, kind = buf.getvalue(), "grey-png"
    return {"blob": hashlib.sha256(data).hexdigest(), kind: base64.b64encode(data).decode()}


def _unblob(line: dict[str, str]) -> bytes:
    from PIL import Image

    if "grey-png" not in line:
        return base64.b64decode(line["base64"])
    buf = io.BytesIO()
    Image.open(io.BytesIO(base64.b64decode(line["grey-png"]))).convert("RGBA").save(buf, format="PNG")
    return buf.getvalue()


def _pack(record: dict[str, Any], folder: Path, side: Path) -> dict[str, dict[str, str]]:
    """Put the artifacts downloaded under ``folder`` into ``record["files"]`` (text inline, others as blob ids;
    checkpoints copied to ``side``); returns the new blobs by id."""
    files, blobs = {}, {}
    for rel in record["artifacts"]:
        data = (folder / rel).read_bytes()
        if rel.endswith(".pt"):
            target = side / rel
            if not target.is_file() or target.read_bytes() != data:
                _write(target, data)
            continue
        if any(fnmatch.fnmatch(rel, p) for p in TEXT):
            with contextlib.suppress(UnicodeDecodeError):
                files[rel] = {"text": data.decode()}
                continue
        line = _blob(data)
        blobs[line["blob"]] = line
        files[rel] = {"blob": line["blob"]}
    record["files"] = files
    return blobs


def _encode(records: list[dict[str, Any]], blobs: list[dict[str, str]]) -> bytes:
    """The experiment's file: its records by start time, then the blobs they name; byte-stable (no timestamp)."""
    text = "".join(_dump(r) + "\n" for r in records) + "".join(_dump(b) + "\n" for b in blobs)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(text.encode())
    return buf.getvalue()


def _decode(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, str]]]:
    """({run id: record}, {blob id: blob line}) of one experiment's file; unreadable -> UserError naming it."""
    records, blobs = {}, {}
    try:
        with gzip.open(path, "rt") as f:
            lines = [json.loads(line) for line in f if line.strip()]
    except (OSError, EOFError, ValueError) as err:
        raise UserError(f"{path} is not a readable ledger file ({err}); restore it from git") from None
    for line in lines:
        if isinstance(line, dict) and "blob" in line:
            blobs[line["blob"]] = line
        elif isinstance(line, dict) and line.get("format") == FORMAT2:
            records[line["run_id"]] = line
        else:
            raise UserError(f"{path} holds a line that is not a {FORMAT2} record; restore it from git or export again")
    return records, blobs


# ---------------------------------------------------------------- export
def export(tracker: tracking.Tracker, *, experiments: list[str] | None, dst: Path,
           artifacts: tuple[str, ...] = DEFAULT_ARTIFACTS, checkpoints: bool = False, max_artifact_mb: float = 2.0,
           journal: str | None = None) -> Summary:
    """Write the runs of ``experiments`` (None: every experiment) under ``dst``; with ``journal`` (an Optuna
    journal file) a copy of it as ``dst/optuna.journal``."""
    tracking.quiet_artifact_bars()
    summary = Summary()
    runs = [r for r in tracking.ledger_runs(tracker, experiments, generators=checkpoints)
            # an auxiliary model's run is a cache of its weights: without them it is nothing to keep
            if checkpoints or r.data.tags.get(tracking.TAG_KIND) != tracking.KIND_MODEL]
    to_origin = {local: origin for origin, local in tracking.origin_ids(tracker).items()}
    by_experiment: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
    for run in runs:
        head = tracking.run_head(tracker, run)
        head["tags"] = _map_ids(head["tags"], to_origin)
        by_experiment.setdefault(head["experiment"], []).append((run, head))
    max_bytes = int(max_artifact_mb * 1e6)
    for name, group in by_experiment.items():
        grids = _grid_runs(tracker, name) if any(fnmatch.fnmatch(GRID, p) for p in artifacts) else set()
        path = dst / f"{name}{SUFFIX}"
        old_records, old_blobs = _decode(path) if path.is_file() else ({}, {})
        records, blobs = dict(old_records), dict(old_blobs)  # a run this store lacks keeps its record
        for run, head in group:
            old = old_records.get(head["run_id"])
            with_grid = run.info.run_id in grids
            if old is not None and _unchanged(old, head, checkpoints=checkpoints, with_grid=with_grid):
                summary.unchanged += 1  # told from one search's data: no metric history or artifact is fetched
                continue
            keep = _keeper(tuple(p for p in artifacts if with_grid or not fnmatch.fnmatch(GRID, p)),
                           checkpoints=checkpoints, max_bytes=max_bytes)
            with tempfile.TemporaryDirectory(prefix="synthboost-ledger-") as tmp:
                record = tracking.run_record(tracker, run, keep=keep, dst=Path(tmp))
                record["tags"] = _map_ids(record["tags"], to_origin)
                record["format"] = FORMAT2
                blobs.update(_pack(record, Path(tmp), side=dst / name / record["run_id"]))
            records[record["run_id"]] = record
            if old is None or _dump(old) != _dump(record):
                summary.written += 1
            else:
                summary.unchanged += 1
        ordered = sorted(records.values(), key=lambda r: (r["start_time"] or 0, r["run_id"]))
        named = sorted({f["blob"] for r in ordered for f in r["files"].values() if "blob" in f})
        data = _encode(ordered, [blobs[b] for b in named])
        if not path.is_file() or path.read_bytes() != data:
            _write(path, data)
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


def _grid_runs(tracker: tracking.Tracker, experiment: str) -> set[str]:
    """The (local) ids of the experiment's runs whose sample grid some report shows."""
    from .report.figures import grid_runs
    from .report.frame import tidy

    frame = tracking.runs_frame(tracker, [experiment])
    if frame.empty:
        return set()
    has_grid = lambda run_id: tracking.has_artifact(tracker, run_id, GRID)  # noqa: E731
    try:
        return grid_runs(tidy(frame), has_grid)
    except UserError:  # runs the report cannot read: keep every grid rather than lose the one it might show
        return {run_id for run_id in frame["run_id"] if has_grid(run_id)}


def _unchanged(old: dict[str, Any], head: dict[str, Any], *, checkpoints: bool, with_grid: bool) -> bool:
    """Whether the record ``old`` already says what ``head`` (tracking.run_head) says of the run."""
    if checkpoints and CHECKPOINT in old.get("left_behind", []):
        return False  # exported without its checkpoint before: carry it now
    if (GRID in old.get("artifacts", [])) != with_grid:
        return False  # the grid a report shows moved to a later run, or to this one
    latest = {k: rows[-1][2] for k, rows in old.get("metrics", {}).items() if rows}
    fields = ("run_id", "experiment", "run_name", "status", "start_time", "end_time", "params", "tags")
    return (_dump({k: old.get(k) for k in fields} | {"latest": latest})
            == _dump({k: head[k] for k in fields} | {"latest": head["latest"]}))


# ---------------------------------------------------------------- import
@contextlib.contextmanager
def opened(src: Path) -> Iterator[Path]:
    """The ledger folder at ``src``: the folder itself, or a ``.tar.gz`` of one unpacked into a temporary folder
    (its top folder, when it holds no ledger files itself)."""
    if src.is_file() and src.name.endswith((".tar.gz", ".tgz")):
        with tempfile.TemporaryDirectory(prefix="synthboost-ledger-") as tmp:
            try:
                with tarfile.open(src, "r:gz") as tar:
                    tar.extractall(tmp, filter="data")
            except (OSError, EOFError, tarfile.TarError) as err:
                raise UserError(f"{src} is not a readable ledger archive ({err})") from None
            root = Path(tmp)
            subs = [p for p in root.iterdir() if p.is_dir()]
            if not any(root.glob(f"*{SUFFIX}")) and not any(root.glob("*/*.json")) and len(subs) == 1:
                root = subs[0]  # `tar -C work -czf ledger.tar.gz ledger`
            yield root
    else:
        yield src


def read_records(src: Path, scratch: Path | None = None) -> list[tuple[dict[str, Any], Path]]:
    """Every record under ``src`` (either form) with the folder that holds its artifacts, parents before their
    children; ``scratch``: a folder to unpack the inline artifacts of the second form into (else the folder named
    holds only its side files).  A file that is not a ledger record -> UserError naming it."""
    if not src.is_dir():
        raise UserError(f"no ledger at {src}: export one with `synthboost ledger export`, or pass --dir")
    found: dict[str, tuple[dict[str, Any], Path]] = {}
    for path in sorted(src.glob("*/*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise UserError(f"{path} is not a readable ledger record ({err}); restore it from git") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise UserError(f"{path} is not a {FORMAT} record; restore it from git or export it again")
        found[record["run_id"]] = (record, path.with_suffix(""))
    for path in sorted(src.glob(f"*{SUFFIX}")):
        records, blobs = _decode(path)
        for record in records.values():  # the second form wins over a leftover record of the first
            side = src / record["experiment"] / record["run_id"]
            found[record["run_id"]] = (record, side if scratch is None else _unpack(record, blobs, side, scratch))
    out = list(found.values())
    depth: dict[str, int] = {}

    def level(record: dict[str, Any]) -> int:
        parent = record["tags"].get("mlflow.parentRunId")
        if parent not in found:
            return 0
        if parent not in depth:
            depth[parent] = level(found[parent][0]) + 1
        return depth[parent]

    return sorted(out, key=lambda rp: (level(rp[0]), rp[0]["start_time"] or 0, rp[0]["run_id"]))


def _unpack(record: dict[str, Any], blobs: dict[str, dict[str, str]], side: Path, scratch: Path) -> Path:
    """The run's artifacts as files under ``scratch``: inline ones written out, side files (checkpoints) copied."""
    folder = scratch / record["experiment"] / record["run_id"]
    for rel in record["artifacts"]:
        entry = record["files"].get(rel)
        target = folder / rel
        if entry is None and (side / rel).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(side / rel, target)
        elif entry is not None and ("text" in entry or entry["blob"] in blobs):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(entry["text"].encode() if "text" in entry else _unblob(blobs[entry["blob"]]))
    return folder


def import_(tracker: tracking.Tracker, *, src: Path, journal: str | None = None,
            experiments: list[str] | None = None) -> Summary:
    """Create the runs of the ledger at ``src`` (a folder, or a .tar.gz of one) that the store lacks and update the
    tags of those it has; with ``journal`` (the local Optuna journal path) restore the ledger's journal there when
    there is none yet; ``experiments``: only those experiments' runs (a name the ledger lacks -> UserError)."""
    tracking.quiet_artifact_bars()
    with opened(src) as folder, tempfile.TemporaryDirectory(prefix="synthboost-ledger-") as scratch:
        return _import(tracker, src=folder, scratch=Path(scratch), journal=journal, experiments=experiments,
                       label=src)


def _import(tracker: tracking.Tracker, *, src: Path, scratch: Path, journal: str | None,
            experiments: list[str] | None, label: Path) -> Summary:
    summary = Summary()
    records = read_records(src, scratch)
    if experiments:
        have = {r["experiment"] for r, _ in records}
        missing = sorted(set(experiments) - have)
        if missing:
            raise UserError(f"the ledger at {label} has no experiment {', '.join(missing)} "
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
