"""Superseded runs: a cell re-run because the code or its config changed marks its older runs, never mixes them in.

A cell's *identity* is what the user asked for, its ``config_key`` how it was computed; nothing is deleted, and
marking again changes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from .config import MixConfig
from .errors import UserError
from .tracking.tags import TAG_CONFIG_KEY, TAG_SUPERSEDED_BY, TAG_TUNED_STUDY, TAG_VARIANT

Identity = tuple[str, ...]
_MIX = MixConfig()
MAX_DIFFS = 8  # config values named in a reason; the rest are counted


def mix_setting(*, ratio, strategy, weight, filter_, threshold) -> str:
    """The mix as the user asked for it; values as floats, so "1" and "1.0" (a param's text) are one setting."""
    if float(ratio) == 0:
        return "real only"
    text = f"{float(ratio):g}×{strategy} w={float(weight):g}"
    return text + (f" {filter_}≥{float(threshold):g}" if filter_ != "none" else "")


def identity(*, variant: str, profile: str, regime: str, size, seed, classifier: str, mix: str,
             tuned_study: str = "") -> Identity:
    return (variant, profile, regime, str(int(size)), str(int(seed)), classifier, mix, tuned_study)


def config_identity(cfg, *, variant: str, tuned_study: str = "") -> Identity:
    """The identity of a planned cell (``cfg``: its RunConfig)."""
    m = cfg.mix
    return identity(variant=variant, profile=cfg.profile, regime=cfg.data.regime, size=cfg.data.size, seed=cfg.seed,
                    classifier=cfg.classifier, tuned_study=tuned_study,
                    mix=mix_setting(ratio=m.ratio, strategy=m.strategy, weight=m.synthetic_weight, filter_=m.filter,
                                    threshold=m.filter_threshold))


def run_identity(run) -> Identity | None:
    """The identity of a recorded cell run (MLflow ``Run``); None when its tags do not say which cell it is."""
    t, p = run.data.tags, run.data.params
    try:
        mix = mix_setting(ratio=p.get("mix.ratio", _MIX.ratio), strategy=p.get("mix.strategy", _MIX.strategy),
                          weight=p.get("mix.synthetic_weight", _MIX.synthetic_weight),
                          filter_=p.get("mix.filter", _MIX.filter),
                          threshold=p.get("mix.filter_threshold", _MIX.filter_threshold))
        return identity(variant=t.get(TAG_VARIANT) or t["model"], profile=t.get("profile", ""), regime=t["regime"],
                        size=t["size"], seed=t["seed"], classifier=t.get("classifier") or p.get("classifier", ""),
                        mix=mix, tuned_study=t.get(TAG_TUNED_STUDY, ""))
    except (KeyError, ValueError, TypeError):  # logged by hand, or before these tags existed
        return None


def reason(old, new) -> str:
    """Why ``old`` is superseded by ``new``: their keys, then the config values (params, code versions) that differ."""
    def short(run) -> str:
        key = run.data.tags.get(TAG_CONFIG_KEY, "")
        return f"{key[:8]}…" if key else "(none)"

    def values(run) -> dict[str, str]:
        return dict(run.data.params) | {k: v for k, v in run.data.tags.items() if k.startswith("code_version.")}

    a, b = values(old), values(new)
    diffs = [f"{k} {a.get(k, '—')} → {b.get(k, '—')}" for k in sorted(a.keys() | b.keys())
             if a.get(k) != b.get(k)]
    more = f", and {len(diffs) - MAX_DIFFS} more" if len(diffs) > MAX_DIFFS else ""
    what = f": {', '.join(diffs[:MAX_DIFFS])}{more}" if diffs else " (same params: a code or key change)"
    return f"config_key {short(old)} → {short(new)}{what}"


@dataclass(frozen=True)
class Mark:
    run_id: str  # the older run
    by: str  # the run that supersedes it
    reason: str


@dataclass
class Sweep:
    marks: list[Mark]  # older runs whose newer counterpart is FINISHED: marked now
    pending: int  # older runs whose cell is still to be re-run: marked once it finishes
    already: int  # runs of the planned cells' identities marked before
    #: cells whose only runs under the planned key are themselves marked superseded (a change was reverted): their
    #: other runs are left unmarked, so a table never loses the cell; the user decides (re-run, or re-tag)
    reverted: int = 0


def sweep(cells: Iterable[tuple[Identity, str]], runs, *, protected: Iterable[str] = ()) -> Sweep:
    """What to mark, given the planned cells as (identity, config_key) and the FINISHED cell runs of the grid's
    experiment.  A run whose key is planned (or ``protected``) is never marked: its cell is current."""
    cells = list(cells)
    planned = {key for _, key in cells} | set(protected)
    by_identity: dict[Identity, list] = defaultdict(list)
    for r in runs:
        ident = run_identity(r)
        if ident is not None:
            by_identity[ident].append(r)
    marks, pending, already, reverted, seen = [], 0, 0, 0, set()
    for ident, key in cells:
        if ident in seen:
            continue
        seen.add(ident)
        group = by_identity.get(ident, [])
        already += sum(bool(r.data.tags.get(TAG_SUPERSEDED_BY)) for r in group)
        older = [r for r in group if r.data.tags.get(TAG_CONFIG_KEY, "") not in planned
                 and not r.data.tags.get(TAG_SUPERSEDED_BY)]
        current = [r for r in group if r.data.tags.get(TAG_CONFIG_KEY, "") == key]
        if not older:
            continue
        if current and all(r.data.tags.get(TAG_SUPERSEDED_BY) for r in current):
            reverted += 1  # never mark a run by one that is itself marked
            continue
        if not current:
            pending += len(older)
            continue
        new = max(current, key=lambda r: r.info.start_time or 0)
        marks += [Mark(r.info.run_id, new.info.run_id, reason(r, new)) for r in older]
    return Sweep(marks=marks, pending=pending, already=already, reverted=reverted)


def apply(tracker, marks: Iterable[Mark]) -> int:
    n = 0
    for m in marks:
        tracker.mark_superseded(m.run_id, by=m.by, reason=m.reason)
        n += 1
    return n


def mark_by_hand(tracker, run_ids: list[str], *, by: str, reason: str) -> list[str]:
    """``synthboost supersede``: mark runs not made by a grid (single runs) as superseded by ``by``.  Every id must
    exist, ``by`` must be FINISHED and not among them; returns the ids marked."""
    if not run_ids:
        raise UserError("name at least one run to mark with --run-id")
    if not reason.strip():
        raise UserError("--reason must say why the runs are superseded")
    if by in run_ids:
        raise UserError(f"run {by} cannot supersede itself; --by names the newer run")
    newer = tracker.run_info(by)  # UserError for an unknown id
    if newer["status"] != "FINISHED":
        raise UserError(f"--by run {by} is {newer['status']}, not FINISHED; mark runs superseded only once the "
                        "newer run has finished")
    if newer["tags"].get(TAG_SUPERSEDED_BY):
        raise UserError(f"--by run {by} is itself superseded by {newer['tags'][TAG_SUPERSEDED_BY]}; name the "
                        "current run")
    for run_id in run_ids:
        tracker.run_info(run_id)  # every id is checked before anything is tagged
    for run_id in dict.fromkeys(run_ids):
        tracker.mark_superseded(run_id, by=by, reason=reason.strip())
    return list(dict.fromkeys(run_ids))
