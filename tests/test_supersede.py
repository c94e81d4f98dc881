"""Superseded runs: a cell re-run after a change marks its older run, and the report never mixes the two."""

import pytest
from smoke_configs import smoke_grid
from typer.testing import CliRunner

from synthboost import cell, generators, pipeline
from synthboost import grid as grid_mod
from synthboost.cli import app
from synthboost.report import build_report

runner = CliRunner()
EXP = "supersede"
# gen.latent_dim 14 keeps this grid's VAE apart from other tests' smoke VAEs
GRID = smoke_grid(experiment=EXP, mixes="[{ratio: 0.5, strategy: balance}]", fixed="clf.epochs: 1, gen.latent_dim: 14",
                  seeds="[0]")


def cell_runs(tracker, exp=EXP):
    e = tracker.client.get_experiment_by_name(exp)
    return [r for r in tracker.client.search_runs([e.experiment_id], "attributes.status = 'FINISHED'")
            if r.data.tags.get("synthboost.kind") == "experiment"]


def by_model(tracker, model):
    return sorted((r for r in cell_runs(tracker) if r.data.tags["model"] == model), key=lambda r: r.info.start_time)


@pytest.fixture(scope="module")
def regrid(tracker, tmp_path_factory):
    """The 2-cell grid (none, vae) run, then run again after the VAE's code version was bumped; yields the grid
    command's arguments and the dry-run's and the second run's output, with the bump still in place."""
    folder = tmp_path_factory.mktemp("supersede")
    path = folder / "grid.yaml"
    path.write_text(GRID)
    args = ["grid", "--config", str(path), "--storage", str(folder / "q.journal")]
    out = runner.invoke(app, args)
    assert out.exit_code == 0 and "2 cells run now" in out.stdout, out.output
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(generators.get("vae"), "code_version", 2)  # re-keys the vae cell only
        dry = runner.invoke(app, [*args, "--dry-run"])
        again = runner.invoke(app, args)
        yield {"args": args, "dry": dry, "again": again}


def test_rerunning_a_rekeyed_cell_marks_exactly_its_old_run(tracker, regrid):
    assert regrid["dry"].exit_code == 0, regrid["dry"].output
    assert "1 older runs of re-run cells will be marked superseded (0 when the grid starts, 1 as their cells " \
           "finish); 0 are marked superseded" in regrid["dry"].stdout
    out = regrid["again"]
    assert out.exit_code == 0 and "1 cells run now, 1 were already done" in out.stdout, out.output
    assert "1 older runs of re-run cells marked superseded" in out.stdout

    old, new = by_model(tracker, "vae")
    assert old.data.tags["superseded_by"] == new.info.run_id and "superseded_by" not in new.data.tags
    reason = old.data.tags["superseded_reason"]
    assert reason.startswith(f"config_key {old.data.tags['config_key'][:8]}… → {new.data.tags['config_key'][:8]}…")
    assert "code_version.generator 1 → 2" in reason
    (none,) = by_model(tracker, "none")
    assert not any(k.startswith("superseded") for k in none.data.tags)


def test_the_report_leaves_superseded_runs_out_and_says_so(tracker, regrid, tmp_path):
    res = build_report(experiments=[EXP], out_dir=tmp_path / "r", formats={"md", "csv"}, tracker=tracker,
                       log_to_mlflow=False)
    results = res.tables["results"]
    assert res.n_runs == 2 and len(results) == 2  # one row per cell
    assert "superseded" not in results or set(results["superseded"]) == {""}
    md = (tmp_path / "r" / "report.md").read_text()
    assert "1 superseded run was left out" in md and "--include-superseded" in md

    out = runner.invoke(app, ["report", "--experiment", EXP, "--out", str(tmp_path / "all"), "--format", "csv",
                              "--include-superseded"])
    assert out.exit_code == 0, out.output
    res = build_report(experiments=[EXP], out_dir=tmp_path / "all", formats={"md", "csv"}, tracker=tracker,
                       log_to_mlflow=False, include_superseded=True)
    results = res.tables["results"]
    assert res.n_runs == 3 and len(results) == 3  # the old vae run is a cell of its own, not a second repeat
    vae = results[results["variant"] == "vae"]
    assert sorted(s != "" for s in vae["superseded"]) == [False, True]
    assert "1 superseded runs are included as cells of their own" in (tmp_path / "all" / "report.md").read_text()


def test_the_sweep_marks_runs_rerun_before_marking_existed(tracker, regrid):
    old, new = by_model(tracker, "vae")
    for tag in ("superseded_by", "superseded_reason"):
        tracker.client.delete_tag(old.info.run_id, tag)  # as if re-run by a version without marking
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(generators.get("vae"), "code_version", 2)  # (as regrid left it)
        dry = runner.invoke(app, [*regrid["args"], "--dry-run"])
        assert "1 older runs of re-run cells will be marked superseded (1 when the grid starts" in dry.stdout
        out = runner.invoke(app, regrid["args"])
        assert out.exit_code == 0 and "0 cells run now" in out.stdout, out.output
        assert "1 older runs of re-run cells marked superseded" in out.stdout
        assert tracker.client.get_run(old.info.run_id).data.tags["superseded_by"] == new.info.run_id
        again = runner.invoke(app, regrid["args"])  # idempotent: nothing more to mark
        assert again.exit_code == 0 and "marked superseded" not in again.stdout, again.output
    # the change reverted: the old run's key is planned again, but it is marked, so it marks nothing in turn
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(generators.get("vae"), "code_version", 1)  # (regrid holds the bump for the module)
        spec = grid_mod.load_grid(regrid["args"][2])
        found = grid_mod.superseded(spec, grid_mod.plan(spec, regrid["args"][4]), tracker, mark=False)
    assert not found.marks and found.reverted == 1


def test_single_runs_are_marked_by_hand_and_a_selection_of_only_superseded_runs_exits_2(tracker, regrid, tmp_path):
    cfg = cell.make_config(model="none", size=300, profile="smoke", overrides={"clf": {"epochs": 1}})
    single = pipeline.run_experiment(cfg, tracker=tracker, experiment="supersede-hand", progress=False).run_id
    (current,) = by_model(tracker, "none")
    out = runner.invoke(app, ["supersede", "--run-id", single, "--by", current.info.run_id, "--reason",
                              "re-run in the grid"])
    assert out.exit_code == 0 and "1 run(s) marked superseded" in out.stdout, out.output
    tags = tracker.client.get_run(single).data.tags
    assert tags["superseded_by"] == current.info.run_id and tags["superseded_reason"] == "re-run in the grid"

    out = runner.invoke(app, ["report", "--experiment", "supersede-hand", "--out", str(tmp_path / "r")])
    assert out.exit_code == 2 and "--include-superseded" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args,message", [
    (["--run-id", "nope", "--by", "{current}", "--reason", "x"], "no run with id 'nope'"),
    (["--run-id", "{old}", "--by", "nope", "--reason", "x"], "no run with id 'nope'"),
    (["--run-id", "{current}", "--by", "{current}", "--reason", "x"], "cannot supersede itself"),
    (["--run-id", "{current}", "--by", "{old}", "--reason", "x"], "is itself superseded"),
    (["--run-id", "{current}", "--by", "{running}", "--reason", "x"], "not FINISHED"),
    (["--run-id", "{old}", "--by", "{current}", "--reason", " "], "--reason"),
])
def test_supersede_bad_input_exits_2_with_one_line(tracker, regrid, args, message):
    old, current = by_model(tracker, "vae")
    running = tracker.client.create_run(tracker.experiment_id("supersede-hand")).info.run_id
    ids = {"old": old.info.run_id, "current": current.info.run_id, "running": running}
    out = runner.invoke(app, ["supersede", *(a.format(**ids) for a in args)])
    assert out.exit_code == 2 and message in out.stderr, out.output
    assert len(out.stderr.strip().splitlines()) == 1
    assert "superseded_by" not in tracker.client.get_run(current.info.run_id).data.tags  # nothing was tagged
