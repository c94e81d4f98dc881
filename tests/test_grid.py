"""The grid: planned cells, resumable after an interruption, generators reused across cells."""

import pytest
from typer.testing import CliRunner

from synthboost import grid as grid_mod
from synthboost.cli import app
from synthboost.study import TunedStudies

runner = CliRunner()

GRID = """
experiment: {exp}
profile: smoke
models: [none, vae]
regimes: [balanced, high]
sizes: [300]
seeds: [0, 1]
classifiers: [cnn]
mixes: [{{ratio: 0.5, strategy: balance}}, {{ratio: 1.0, strategy: uniform}}]
fixed: {{clf.epochs: 1, gen.latent_dim: 12}}
"""
# gen.latent_dim (not the default) keeps these generators' keys apart from other tests' smoke VAEs, so
# "trained here" is this grid's doing whatever ran before


@pytest.fixture()
def grid_file(tmp_path):
    def make(exp, text=GRID):
        p = tmp_path / f"{exp}.yaml"
        p.write_text(text.format(exp=exp))
        return p
    return make


def cell_runs(tracker, exp):
    e = tracker.client.get_experiment_by_name(exp)
    return [r for r in tracker.client.search_runs([e.experiment_id])
            if r.data.tags.get("synthboost.kind") == "experiment"]


@pytest.mark.slow
def test_grid_runs_every_cell_once_and_resumes_after_an_interruption(tracker, tmp_path, grid_file, monkeypatch):
    path = grid_file("g1")
    storage = str(tmp_path / "q.journal")
    # 2 baseline units × 1 cell + 2 vae units... : none 2 regimes × 2 seeds = 4 cells; vae 4 units × 2 mixes = 8
    out = runner.invoke(app, ["grid", "--config", str(path), "--storage", storage, "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "12 cells in 8 units; 0 done, 12 to run" in out.stdout

    # interrupt: the 6th cell crashes the worker process (as a kill would), leaving 5 finished cells
    from synthboost import pipeline

    real = pipeline.run_experiment
    calls = {"n": 0}

    def crash_on_sixth(*a, **k):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "run_experiment", crash_on_sixth)
    with pytest.raises(KeyboardInterrupt):
        grid_mod.run_grid(grid_mod.load_grid(path), storage_url=storage, show_progress=False)
    monkeypatch.setattr(pipeline, "run_experiment", real)
    finished = [r for r in cell_runs(tracker, "g1") if r.info.status == "FINISHED"]
    assert len(finished) == 5

    out = runner.invoke(app, ["grid", "--config", str(path), "--storage", storage, "--dry-run"])
    # the rest is priced from the finished cells of each family (this machine's runs), none of it unknown
    assert "5 done, 7 to run" in out.stdout and "0 of " in out.stdout and "parts unknown" in out.stdout
    assert all(line.split()[-1] == "runs" for line in out.stdout.splitlines() if line.startswith(("none ", "vae ")))
    # the report of a grid cut off lists what its plan still lacks, as the dry-run counts it
    out = runner.invoke(app, ["report", "--plan", str(path), "--storage", storage, "--out", str(tmp_path / "rep"),
                              "--format", "md,csv"])
    assert out.exit_code == 0, out.output
    assert "plan g1.yaml: 5 of 12 cells FINISHED, 7 missing (missing_cells.csv)" in out.stdout
    import pandas as pd

    lacking = pd.read_csv(tmp_path / "rep" / "missing_cells.csv", dtype=str)
    assert sum(len(s.split(", ")) for s in lacking["seeds missing"]) == 7
    assert "## Cells the plan names" in (tmp_path / "rep" / "report.md").read_text()

    # the unit the interrupted process held is still RUNNING in the queue; its worker is this (live) process,
    # so pretend it died long ago — the resume must fail it, close its run and retry it
    import optuna

    from synthboost.queue import open_storage

    st = optuna.load_study(study_name="grid-g1", storage=open_storage(storage))
    for t in st.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
        st._storage.set_trial_user_attr(t._trial_id, "worker", "elsewhere:1")
        st._storage.set_trial_user_attr(t._trial_id, "heartbeat", 0.0)

    out = runner.invoke(app, ["grid", "--config", str(path), "--storage", storage])
    assert out.exit_code == 0, out.output
    assert "7 cells run now, 5 were already done, 0 missing of 12" in out.stdout
    runs = cell_runs(tracker, "g1")
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == 12
    assert len({r.data.tags["config_key"] for r in finished}) == 12  # no cell ran twice
    assert not [r for r in runs if r.info.status == "RUNNING"]
    # one generator per (regime, seed): trained once, reused by the other mix cell
    vae = [r for r in finished if r.data.tags["model"] == "vae"]
    trained = [r for r in vae if r.data.tags.get("generator_trained") == "true"]
    assert len(trained) == 4 and {r.data.tags["generator_run_id"] for r in vae} == {r.info.run_id for r in trained}
    # the parent run and the Optuna study name each other
    parent = tracker.client.get_run(st.user_attrs["mlflow_parent_run_id"])
    assert parent.data.tags["optuna.study_name"] == "grid-g1"
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in runs)

    # the parent deleted in the UI: the next run of the grid opens a new one instead of crashing
    tracker.client.delete_run(parent.info.run_id)
    out = runner.invoke(app, ["grid", "--config", str(path), "--storage", storage])
    assert out.exit_code == 0 and "0 cells run now, 12 were already done" in out.stdout, out.output
    st = optuna.load_study(study_name="grid-g1", storage=open_storage(storage))
    new_parent = tracker.client.get_run(st.user_attrs["mlflow_parent_run_id"])
    assert new_parent.info.run_id != parent.info.run_id and new_parent.info.status == "FINISHED"


@pytest.mark.parametrize("text,message", [
    (GRID.replace("[none, vae]", "[none, vea]"), "unknown model 'vea'"),
    (GRID + "colour: red\n", "colour"),
    (GRID.replace("clf.epochs: 1,", "clf.epochz: 1,"), "clf.epochz"),
    (GRID.replace("[none, vae]", "[none, {{model: vae, clf: {{augmnt: shift_flip}}}}]"), "clf.augmnt"),
    (GRID.replace("strategy: uniform}}", "strategy: uniform, filtr: confidence}}"), "filtr"),
    (GRID.replace("classifiers: [cnn]", "classifiers: [forest]"), "unknown classifier"),
])
def test_bad_grid_files_exit_2(grid_file, tmp_path, text, message):
    out = runner.invoke(app, ["grid", "--config", str(grid_file("bad", text)), "--storage",
                              str(tmp_path / "q.journal"), "--dry-run"])
    assert out.exit_code == 2 and message in out.stderr, out.output


def test_a_variant_can_carry_classifier_options_and_mixes_can_filter(grid_file, tmp_path):
    """The strong recipe under a generator's mix, filtered or not, is a grid of its own (issue 11's runs)."""
    text = GRID.replace("[none, vae]", "[none-strong, {{model: vae, name: vae-strong, clf: {{augment: shift_flip}}}}]")
    text = text.replace("strategy: uniform}}", "strategy: uniform, filter: confidence, filter_threshold: 0.7}}")
    spec = grid_mod.load_grid(grid_file("g-strong", text))
    units = grid_mod.plan(spec, str(tmp_path / "q.journal"))
    strong = [u for u in units if u.variant == "vae-strong"]
    assert strong and all(c.overrides["clf"] == {"epochs": 1, "augment": "shift_flip"}
                          for u in strong for c in u.cells)
    mixes = [c.overrides["mix"] for u in strong for c in u.cells]
    assert {"ratio": 1.0, "strategy": "uniform", "filter": "confidence", "filter_threshold": 0.7} in mixes
    baseline = [c for u in units if u.variant == "none-strong" for c in u.cells]
    assert len(baseline) == 4 and all("mix" not in c.overrides for c in baseline)


def test_mixes_for_gives_a_variant_its_own_mixes_and_the_others_keep_the_grids(grid_file, tmp_path):
    """The seed protocol's variants take its 1:1 mix beside the fair variants' mixes (studies/verdict.yaml)."""
    text = GRID.replace("[none, vae]", "[none, vae, {{model: vae, name: vae-seedrecipe, clf: {{recipe: seed}}}}]")
    text += "mixes_for: {{vae-seedrecipe: [{{ratio: 2.0, strategy: uniform}}]}}\n"
    units = grid_mod.plan(grid_mod.load_grid(grid_file("g-own", text)), str(tmp_path / "q.journal"))
    mixes = {v: [c.overrides["mix"] for u in units if u.variant == v for c in u.cells]
             for v in ("vae", "vae-seedrecipe")}
    assert mixes["vae-seedrecipe"] == [{"ratio": 2.0, "strategy": "uniform"}] * 4  # 2 regimes × 2 seeds
    assert len(mixes["vae"]) == 8 and {"ratio": 2.0, "strategy": "uniform"} not in mixes["vae"]
    bad = grid_file("g-own-bad", text.replace("vae-seedrecipe: [", "vae-seedrecpe: ["))
    out = runner.invoke(app, ["grid", "--config", str(bad), "--storage", str(tmp_path / "q.journal"), "--dry-run"])
    assert out.exit_code == 2 and "mixes_for names 'vae-seedrecpe'" in out.stderr, out.output


@pytest.mark.parametrize("name", ["grid", "gan-balanced", "gan-high", "diffusion-balanced", "diffusion-high",
                                  "tuned-high", "tuned-balanced", "verdict", "verdict-headline", "verdict-paper"])
def test_the_shipped_grid_files_are_valid(name):
    from synthboost.study import studies_dir

    spec = grid_mod.load_grid(studies_dir() / f"{name}.yaml")
    assert grid_mod.variants(spec) and spec.profile == ("paper" if name == "verdict-paper" else "quick")


def _finished_study(storage: str, name: str, model: str, params: dict, path=None) -> None:
    """A study of ``model`` (its shipped study file, or ``path``) with one COMPLETE trial of ``params``."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    from synthboost import queue
    from synthboost import study as study_mod

    spec = study_mod.load_spec(model=model, path=path)
    st = optuna.create_study(study_name=name, storage=queue.open_storage(storage), direction="maximize")
    st.set_user_attr("synthboost.spec", study_mod.spec_json(spec))
    trial = st.ask({k: CategoricalDistribution([v]) for k, v in params.items()})
    st.tell(trial, 0.8)


def test_from_study_carries_the_best_classifier_recipe_and_tags_tuned_cells(grid_file, tmp_path):
    """A baseline's study adds its tuned cell (its best clf.*, oversample's ratio too) beside the default one; a
    generator's study gives its mix, gen.* and clf.*; every such cell names its study and budget."""
    storage = str(tmp_path / "q.journal")
    _finished_study(storage, "ns", "none-strong", {"clf.lr": 0.004, "clf.dropout": 0.1})
    _finished_study(storage, "os", "oversample", {"mix.ratio": 2.0, "clf.class_weight": "none"})
    _finished_study(storage, "cs", "cgan", {"mix.ratio": 0.5, "gen.truncation": 0.8, "clf.lr": 0.001})
    text = GRID.replace("[none, vae]", "[none, none-strong, oversample, cgan]").replace(
        "gen.latent_dim: 12", "clf.lr: 0.002").replace(
        "mixes: [{{ratio: 0.5, strategy: balance}}, {{ratio: 1.0, strategy: uniform}}]",
        "mixes: [{{ratio: 1.0, strategy: uniform}}, {{from_study: ns}}, {{from_study: os}}, {{from_study: cs}}]")
    units = grid_mod.plan(grid_mod.load_grid(grid_file("g-tuned", text)), storage)
    cells = {(u.variant, c.mix_label): c for u in units if u.seed == 0 and u.regime == "high"
             for c in u.cells}
    budget = "12 complete trials of val/balanced_accuracy, 3-fold"  # the shipped none-strong/oversample/cgan budgets
    assert set(cells) == {("none", "real only"), ("none-strong", "real only"), ("none-strong", "best of ns"),
                          ("oversample", "real only"), ("oversample", "best of os"),
                          ("cgan", '{"ratio": 1.0, "strategy": "uniform"}'), ("cgan", "best of cs")}
    tuned = cells[("none-strong", "best of ns")]
    assert tuned.overrides["clf"] == {"epochs": 1, "lr": 0.004, "dropout": 0.1}  # the study's lr over the grid's
    assert tuned.tags == {"tuned.study": "ns", "tuned.budget": budget}
    assert cells[("none-strong", "real only")].tags == {}
    assert cells[("none-strong", "real only")].overrides["clf"] == {"epochs": 1, "lr": 0.002}
    over = cells[("oversample", "best of os")]
    assert over.overrides["mix"] == {"ratio": 2.0} and over.overrides["clf"]["class_weight"] == "none"
    gan = cells[("cgan", "best of cs")]
    assert gan.overrides["clf"]["lr"] == 0.001 and gan.overrides["gen"]["truncation"] == 0.8
    assert gan.overrides["mix"]["ratio"] == 0.5 and gan.tags["tuned.budget"] == budget
    assert cells[("cgan", '{"ratio": 1.0, "strategy": "uniform"}')].overrides["clf"]["lr"] == 0.002
    assert len({c.key for c in cells.values()}) == len(cells)  # every tuned cell is a cell of its own
    # another family borrows cgan's best mix, but neither its gen.*/clf.* nor its tuned tags
    borrowed = grid_mod.plan(grid_mod.load_grid(grid_file("g-borrow", text.replace("cgan]", "cgan, vae]"))), storage)
    vae = [c for u in borrowed if u.variant == "vae" for c in u.cells if c.mix_label == "best of cs"]
    assert vae and all(c.tags == {} and c.overrides["mix"]["ratio"] == 0.5 and c.overrides["clf"]["lr"] == 0.002
                       for c in vae)


def test_a_templated_study_tunes_each_variant_per_regime_and_missing_ones_wait(grid_file, tmp_path):
    """The verdict's plan: each family at its own study's best for the regime; a study not run yet leaves its tuned
    cells out (`missing: skip`) and the dry-run names it; sizes_for gives the baselines' learning curve more sizes."""
    storage = str(tmp_path / "q.journal")
    _finished_study(storage, "cgan-high-1000-smoke", "cgan", {"mix.ratio": 0.5})
    _finished_study(storage, "none-strong-balanced-1000-smoke", "none-strong", {"clf.lr": 0.004})
    text = GRID.replace("[none, vae]", "[none, none-strong, cgan]").replace("gen.latent_dim: 12", "clf.lr: 0.002").replace(
        "sizes: [300]", "sizes: [300]\nsizes_for: {{none: [300, 600]}}").replace(
        "mixes: [{{ratio: 0.5, strategy: balance}}, {{ratio: 1.0, strategy: uniform}}]",
        'mixes: [{{ratio: 1.0, strategy: uniform}}, {{from_study: "{{model}}-{{regime}}-1000-{{profile}}", '
        'missing: skip}}]')
    path = grid_file("g-verdict", text)
    studies = TunedStudies(storage)
    units = grid_mod.plan(grid_mod.load_grid(path), storage, studies=studies)
    labels = {(u.variant, u.regime, u.size): sorted(c.mix_label for c in u.cells)
              for u in units if u.seed == 0}
    assert labels == {
        ("none", "balanced", 300): ["real only"], ("none", "balanced", 600): ["real only"],
        ("none", "high", 300): ["real only"], ("none", "high", 600): ["real only"],
        ("none-strong", "balanced", 300): ["best of none-strong-balanced-1000-smoke", "real only"],
        ("none-strong", "high", 300): ["real only"],
        ("cgan", "balanced", 300): ['{"ratio": 1.0, "strategy": "uniform"}'],
        ("cgan", "high", 300): ["best of cgan-high-1000-smoke", '{"ratio": 1.0, "strategy": "uniform"}']}
    assert studies.waiting == {"cgan-balanced-1000-smoke", "none-strong-high-1000-smoke"}
    out = runner.invoke(app, ["grid", "--config", str(path), "--storage", storage, "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "tuned cells wait for 2 studies not run yet (cgan-balanced-1000-smoke, none-strong-high-1000-smoke)" \
        in out.stdout
    # without `missing: skip` a study not run yet is an error naming it
    strict = grid_file("g-strict", text.replace(", missing: skip", ""))
    out = runner.invoke(app, ["grid", "--config", str(strict), "--storage", storage, "--dry-run"])
    assert out.exit_code == 2 and "no study named 'none-strong-high-1000-smoke'" in out.stderr, out.output


@pytest.mark.parametrize("change,message", [
    (("sizes: [300]", "sizes: [300]\nsizes_for: {{vea: [600]}}"), "sizes_for names 'vea'"),
    (("{{ratio: 1.0, strategy: uniform}}]", '{{from_study: "{{model}}-{{size}}"}}]'), "may use only {model}"),
    (("{{ratio: 1.0, strategy: uniform}}]", "{{from_study: x, missing: skip}}]"), "'missing' is for a templated"),
    (("{{ratio: 1.0, strategy: uniform}}]", '{{from_study: "{{model}}", missing: later}}]'),
     "only 'missing: error|skip'"),
])
def test_bad_templates_and_sizes_exit_2(grid_file, tmp_path, change, message):
    out = runner.invoke(app, ["grid", "--config", str(grid_file("bad", GRID.replace(*change))), "--storage",
                              str(tmp_path / "q.journal"), "--dry-run"])
    assert out.exit_code == 2 and message in out.stderr, out.output


def test_coverage_counts_a_cell_done_by_its_config_key_and_groups_the_missing_seeds(grid_file, tmp_path):
    import pandas as pd

    from synthboost.errors import UserError
    from synthboost.report.coverage import load_plan, plan_coverage

    path = grid_file("g-cov", GRID.replace("[none, vae]", "[none]"))  # 2 regimes × 2 seeds
    storage = str(tmp_path / "q.journal")
    units = grid_mod.plan(grid_mod.load_grid(path), storage)
    key = {(u.regime, u.seed): u.cells[0].key for u in units}
    frame = pd.DataFrame({"experiment": ["g-cov", "g-cov", "other"],
                          "tags.config_key": [key["balanced", 0], key["high", 1], key["high", 0]]})
    cov = plan_coverage(frame, load_plan(path, ["g-cov", "other"]), name=path.name, storage_url=storage)
    assert (cov.planned, cov.finished) == (4, 2)  # high/0's key in another experiment does not count
    assert cov.missing[["regime", "seeds missing"]].values.tolist() == [["balanced", "1"], ["high", "0"]]
    assert "names 4 cells; 2 are FINISHED in this store, 2 are missing" in cov.text()
    with pytest.raises(UserError, match="add --experiment g-cov"):
        load_plan(path, ["other"])


# ---------------------------------------------------------------- sittings of bounded time (issue 37)
def _trials(storage: str, name: str, state: str) -> list:
    import optuna

    from synthboost.queue import open_storage

    st = optuna.load_study(study_name=name, storage=open_storage(storage))
    return st.get_trials(states=(getattr(optuna.trial.TrialState, state),))


def test_a_time_limit_cuts_the_running_cell_and_the_next_grid_runs_it_once(tracker, tmp_path, grid_file, monkeypatch):
    """A sitting ends at its time limit: the cell running then ends KILLED, no unit starts after it, and the next
    grid command runs every missing cell, the cut one included, once."""
    from synthboost import faults

    path = grid_file("g-limit", GRID.replace("[none, vae]", "[none]"))  # 2 regimes × 2 seeds: 4 one-cell units
    storage = str(tmp_path / "q.journal")
    # the first cell stalls after its classifier's first epoch, as a long cell would, until the limit cuts it
    monkeypatch.setenv("SYNTHBOOST_FAULT", "classifier-training:wait")
    monkeypatch.setattr(faults, "_fired", set())
    out = runner.invoke(app, ["grid", "--config", str(path), "--storage", storage, "--time-limit", "30"])
    assert out.exit_code == 3, out.output
    assert "time limit (30 s) reached" in out.stdout
    assert "0 cells run now, 0 were already done, 4 missing of 4" in out.stdout
    runs = cell_runs(tracker, "g-limit")
    assert [r.info.status for r in runs] == ["KILLED"]  # the cut cell; none started after the limit
    assert not _trials(storage, "grid-g-limit", "RUNNING")

    monkeypatch.delenv("SYNTHBOOST_FAULT")
    out = runner.invoke(app, ["grid", "--config", str(path), "--storage", storage])
    assert out.exit_code == 0, out.output
    assert "4 cells run now, 0 were already done, 0 missing of 4" in out.stdout
    finished = [r for r in cell_runs(tracker, "g-limit") if r.info.status == "FINISHED"]
    keys = [r.data.tags["config_key"] for r in finished]
    assert len(keys) == len(set(keys)) == 4 and runs[0].data.tags["config_key"] in keys
    assert not _trials(storage, "grid-g-limit", "WAITING") and not _trials(storage, "grid-g-limit", "RUNNING")


@pytest.mark.slow
def test_a_time_limit_ends_every_worker_and_nothing_is_lost_or_doubled(tracker, tmp_path, grid_file, monkeypatch):
    """With worker processes: one stalls in its cell and is cut at the limit, the other finishes what it took; the
    finished cells stay, and the next command runs only the rest."""
    path = grid_file("g-limit-w", GRID.replace("[none, vae]", "[none]").replace("seeds: [0, 1]", "seeds: [0, 1, 2]"))
    storage = str(tmp_path / "q.journal")
    monkeypatch.setenv("SYNTHBOOST_FAULT", "classifier-training:wait")
    monkeypatch.setenv("SYNTHBOOST_FAULT_ONCE", str(tmp_path / "fault-once"))  # one worker stalls
    out = runner.invoke(app, ["grid", "--config", str(path), "--storage", storage, "--workers", "2",
                              "--time-limit", "90"])
    assert out.exit_code == 3, out.output
    runs = cell_runs(tracker, "g-limit-w")
    done = {r.data.tags["config_key"] for r in runs if r.info.status == "FINISHED"}
    assert "KILLED" in {r.info.status for r in runs} and "RUNNING" not in {r.info.status for r in runs}
    assert f"{len(done)} cells run now" in out.stdout and len(done) < 6

    monkeypatch.delenv("SYNTHBOOST_FAULT")
    out = runner.invoke(app, ["grid", "--config", str(path), "--storage", storage, "--workers", "2"])
    assert out.exit_code == 0, out.output
    assert f"{6 - len(done)} cells run now, {len(done)} were already done, 0 missing of 6" in out.stdout
    finished = [r.data.tags["config_key"] for r in cell_runs(tracker, "g-limit-w") if r.info.status == "FINISHED"]
    assert len(finished) == len(set(finished)) == 6


ORDERED = GRID.replace("[none, vae]", "[none, none-strong, vae]").replace("sizes: [300]", "sizes: [300, 400]") + """
order:
  - {{models: [vae, none], regimes: [high]}}
  - {{regimes: [high]}}
"""


def test_order_runs_the_selected_units_first_size_by_size_and_the_queue_keeps_it(tracker, tmp_path, grid_file):
    """The headline units first (a sitting cut short has answered them), whole comparisons first within them; a
    unit cut and retried (queued last) is put back in its place by the next grid."""
    from synthboost.queue import interrupted, load_study

    spec = grid_mod.load_grid(grid_file("g-order", ORDERED))
    storage = str(tmp_path / "q.journal")
    units = grid_mod.plan(spec, storage)
    ids = [u.id for u in units]
    first = [(u.variant, u.size, u.seed) for u in units[:8]]
    assert first == [(v, size, seed) for size in (300, 400) for seed in (0, 1) for v in ("none", "vae")]
    assert {u.variant for u in units[8:12]} == {"none-strong"} and {u.regime for u in units[:12]} == {"high"}
    assert {u.regime for u in units[12:]} == {"balanced"} and len(units) == 24

    study, _ = grid_mod.prepare(spec, units, storage_url=storage, tracker=tracker)
    queued = lambda: [t.user_attrs["unit_id"] for t in _trials(storage, "grid-g-order", "WAITING")]  # noqa: E731
    assert queued() == ids
    st = load_study("grid-g-order", storage)
    trial = st.ask()  # a worker takes the first unit and is cut: its retry waits at the end of the queue
    interrupted(st, trial, reason="cut at the grid's time limit")
    assert queued() == ids[1:] + ids[:1]
    grid_mod.prepare(spec, units, storage_url=storage, tracker=tracker)
    assert queued() == ids  # back in the plan's order, each unit once
    # another grid file of the experiment (a slice) queues its own units only, in its order
    sliced = grid_mod.load_grid(grid_file("g-order", ORDERED.replace("regimes: [balanced, high]", "regimes: [high]")))
    grid_mod.prepare(sliced, grid_mod.plan(sliced, storage), storage_url=storage, tracker=tracker)
    assert queued() == ids[:12]


def test_a_unit_queued_by_the_untyped_plan_resumes_as_it_stood(tracker, tmp_path, grid_file):
    """A grid's queue holds each unit as JSON: the typed plan writes the very bytes the dict-based one did, reads them
    back, and a second `grid` on a waiting queue leaves it as it is (nothing withdrawn and queued again)."""
    import json

    spec = grid_mod.load_grid(grid_file("g-payload"))
    storage = str(tmp_path / "q.journal")
    units = grid_mod.plan(spec, storage)
    u = units[-1]
    untyped = {"variant": u.variant, "model": u.model, "regime": u.regime, "size": u.size, "seed": u.seed,
               "profile": u.profile, "gen_metrics": u.gen_metrics,
               "cells": [{"classifier": c.classifier, "overrides": c.overrides, "key": c.key, "mix_label": c.mix_label,
                          "tags": c.tags, "identity": list(c.identity)} for c in u.cells]}
    assert json.dumps(u.payload()) == json.dumps(untyped)
    assert grid_mod.Unit.from_payload(json.dumps(untyped)) == u
    grid_mod.prepare(spec, units, storage_url=storage, tracker=tracker)
    grid_mod.prepare(spec, units, storage_url=storage, tracker=tracker)
    assert len(_trials(storage, "grid-g-payload", "WAITING")) == len(units)
    assert not _trials(storage, "grid-g-payload", "FAIL")


PART = """
experiment: {exp}
profile: quick
models: [none, vae]
regimes: [high]
sizes: [300]
seeds: [0, 1]
fixed: {{clf.epochs: 1, gen.latent_dim: 12}}
gen_metrics: true
"""


def test_an_included_file_of_another_profile_is_planned_with_the_grid(tracker, tmp_path, grid_file):
    """One plan over grid files of one experiment: the `paper` rows of the verdict beside its `quick` grid, each cell
    at its own profile, counted by the dry-run and by `report --plan`; a bad include is one line, exit 2."""
    grid_file("g-mixed-part", PART.replace("{exp}", "g-mixed"))
    path = grid_file("g-mixed", GRID + "include: [g-mixed-part.yaml]\norder: [{{profiles: [smoke]}}]\n")
    storage = str(tmp_path / "q.journal")
    units = grid_mod.plan(grid_mod.load_grid(path), storage)
    quick, extra = units[:8], units[8:]  # none 2 regimes × 2 seeds + vae 4 units; the part's 4 units last
    assert {u.profile for u in quick} == {"smoke"} and {u.profile for u in extra} == {"quick"}
    assert sorted((u.variant, u.gen_metrics) for u in extra) == [("none", True)] * 2 + [("vae", True)] * 2
    assert len({u.id for u in units}) == 12  # high/none/seed 0 at two profiles: two units
    assert len({c.key for u in units for c in u.cells}) == 12 + 4
    out = runner.invoke(app, ["grid", "--config", str(path), "--storage", storage, "--dry-run"])
    assert out.exit_code == 0 and "grid g-mixed (smoke, quick): 16 cells in 12 units" in out.stdout, out.output
    import pandas as pd

    from synthboost.report.coverage import load_plan, plan_coverage

    held = pd.DataFrame({"experiment": ["g-mixed"], "tags.config_key": [extra[0].cells[0].key]})
    cov = plan_coverage(held, load_plan(path, ["g-mixed"]), name=path.name, storage_url=storage)
    assert (cov.planned, cov.finished) == (16, 1)  # `report --plan` counts the included file's cells too

    for text, message in [
        (PART.replace("{exp}", "other"), "must run in experiment 'g-mixed'"),
        (PART.replace("{exp}", "g-mixed").replace("profile: quick", "profile: smoke").replace(
            "gen_metrics: true", "gen_metrics: false"), "plans a cell that"),
    ]:
        grid_file("g-mixed-part", text)
        out = runner.invoke(app, ["grid", "--config", str(path), "--storage", storage, "--dry-run"])
        assert out.exit_code == 2 and message in out.stderr, out.output
    out = runner.invoke(app, ["grid", "--config", str(grid_file("g-bad-order", GRID + "order: [{{models: [vea]}}]\n")),
                              "--storage", storage, "--dry-run"])
    assert out.exit_code == 2 and "order names models 'vea'" in out.stderr, out.output


def test_the_verdict_plans_its_headline_first_and_the_cpu_slice_is_the_same_cells(tmp_path):
    """studies/verdict.yaml: the seed's headline cell (DVAE × 6 and VQ-VAE with the baselines on high/1,000, seeds
    0–4, both protocols, default and tuned mixes) runs first, then high, semi, balanced, paper; the CPU slice file
    plans exactly those cells, under the same keys, so the full grid skips them once they are in."""
    from synthboost.study import studies_dir

    storage = str(tmp_path / "q.journal")
    for model in ("dvae", "vqvae", "none-strong", "oversample"):  # their studies on high exist: tuned cells too
        _finished_study(storage, f"{model}-high-1000-quick", model, {"mix.ratio": 0.5} if model in ("dvae", "vqvae")
                        else {"clf.lr": 0.004})
    units = grid_mod.plan(grid_mod.load_grid(studies_dir() / "verdict.yaml"), storage)
    head = grid_mod.plan(grid_mod.load_grid(studies_dir() / "verdict-headline.yaml"), storage)
    assert len(head) == 18 * 5 and sum(len(u.cells) for u in head) == 90 + 7 * 5 + 2 * 5  # + tuned dvae×6, vqvae
    assert [(u.id, [c.key for c in u.cells]) for u in units[:90]] == \
        sorted(((u.id, [c.key for c in u.cells]) for u in head),
               key=lambda x: [u.id for u in units].index(x[0]))
    groups = [("head" if u.regime == "high" and u.profile == "quick" and u.model in
               ("none", "none-strong", "oversample", "dvae", "vqvae") else (u.regime, u.profile)) for u in units]
    assert list(dict.fromkeys(groups)) == ["head", ("high", "quick"), ("semi", "quick"), ("balanced", "quick"),
                                           ("high", "paper"), ("semi", "paper")]
    assert groups == sorted(groups, key=list(dict.fromkeys(groups)).index)[:len(groups) - 180] + groups[-180:]
    assert {u.seed for u in units} == {0, 1, 2, 3, 4}
    paper = [u for u in units if u.profile == "paper"]
    assert len(paper) == 18 * 2 * 5  # 17 variants + pseudo-label (ssvae's pool baseline)
    assert {(u.regime, u.size) for u in paper} == {("high", 1000), ("semi", 1000)}
    assert all(u.gen_metrics for u in paper) and not any(u.gen_metrics for u in units if u not in paper)
    seed = {(u.variant, u.regime) for u in units if u.variant.endswith("-seedrecipe")}
    assert {v for v, r in seed if r == "balanced"} == {"none-seedrecipe", "vqvae-seedrecipe"} | {
        f"dvae-{n}-seedrecipe" for n in ("gaussian", "salt_pepper", "rotation", "brightness", "contrast", "blur")}
    assert ("ddpm-seedrecipe", "high") in seed and ("ddpm-seedrecipe", "semi") not in seed
    curve = {(u.regime, u.size) for u in units if u.variant == "none"}
    assert {("high", 19500), ("semi", 50000), ("balanced", 60000), ("high", 10000)} <= curve
