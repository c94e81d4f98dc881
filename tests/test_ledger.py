"""The ledger: a store's runs exported as files and imported into a fresh store give the same report, the grid
resumes from them, later tags (superseded) follow, the first form (a JSON per run) and an archive import too, and
a bad ledger is a one-line error."""

import gzip
import json
import tarfile
from pathlib import Path

import pytest
from smoke_configs import smoke_grid
from typer.testing import CliRunner

from synthboost import ledger
from synthboost.cli import app
from synthboost.report import build_report
from synthboost.tracking import Tracker

runner = CliRunner()
EXP = "ledger"
# gen.latent_dim 13 keeps this grid's VAE apart from other tests' smoke VAEs
GRID = smoke_grid(experiment=EXP, mixes="[{ratio: 0.5, strategy: balance}]", fixed="clf.epochs: 1, gen.latent_dim: 13",
                  seeds="[0]")


def cells(tracker):
    e = tracker.client.get_experiment_by_name(EXP)
    runs = tracker.client.search_runs([e.experiment_id], "attributes.status = 'FINISHED'")
    return {r.data.tags["model"]: r for r in runs if r.data.tags.get("synthboost.kind") == "experiment"}


@pytest.fixture(scope="module")
def world(tracker, tmp_path_factory):
    """The 2-cell grid (none, vae) in the session's store, exported to a ledger, imported into a second store."""
    folder = tmp_path_factory.mktemp("ledger")
    (folder / "grid.yaml").write_text(GRID)
    grid_args = ["grid", "--config", str(folder / "grid.yaml"), "--storage", str(folder / "q.journal")]
    out = runner.invoke(app, grid_args)
    assert out.exit_code == 0 and "2 cells run now" in out.stdout, out.output
    exported = runner.invoke(app, ["ledger", "export", "--experiment", EXP, "--dir", str(folder / "ledger")])
    copy_uri = f"sqlite:///{folder / 'copy' / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", copy_uri)
        imported = runner.invoke(app, ["ledger", "import", "--dir", str(folder / "ledger")])
    return {"folder": folder, "dir": folder / "ledger", "grid_args": grid_args, "exported": exported,
            "imported": imported, "copy": Tracker(copy_uri)}


def test_export_writes_one_small_file_per_experiment_with_the_small_artifacts_inline(tracker, world):
    assert world["exported"].exit_code == 0, world["exported"].output
    assert sorted(p.name for p in world["dir"].iterdir()) == [f"{EXP}.jsonl.gz"]  # one file, nothing beside it
    records = {r["tags"].get("model", r["tags"].get("synthboost.kind")): r
               for r, _ in ledger.read_records(world["dir"])}
    assert {"none", "vae", "grid"} <= set(records)  # the two cells and the grid's parent run they nest under
    assert "3 run(s) written" in world["exported"].stdout
    vae = records["vae"]
    assert vae["run_id"] == cells(tracker)["vae"].info.run_id
    assert "samples/grid.png" in vae["artifacts"] and "config.yaml" in vae["artifacts"]
    assert "model: vae" in vae["files"]["config.yaml"]["text"]  # text artifacts inline, readable in the file
    assert "generator/model.pt" in vae["left_behind"]
    assert vae["metrics"]["test/accuracy"][0][2] == cells(tracker)["vae"].data.metrics["test/accuracy"]
    assert vae["tags"]["mlflow.parentRunId"] == records["grid"]["run_id"]
    # the sample grid is stored once, as a grey PNG: the whole experiment's file is smaller than the grid as logged
    with gzip.open(world["dir"] / f"{EXP}.jsonl.gz", "rt") as f:
        blobs = [line for line in map(json.loads, f) if "blob" in line]
    assert len(blobs) == 1 and "grey-png" in blobs[0]
    logged = tracker.client.download_artifacts(vae["run_id"], "samples/grid.png", str(world["folder"] / "logged"))
    assert (world["dir"] / f"{EXP}.jsonl.gz").stat().st_size < Path(logged).stat().st_size

    before = (world["dir"] / f"{EXP}.jsonl.gz").read_bytes()
    again = runner.invoke(app, ["ledger", "export", "--experiment", EXP, "--dir", str(world["dir"])])
    assert again.exit_code == 0 and "0 run(s) written, 0 updated, 3 unchanged" in again.stdout, again.output
    assert (world["dir"] / f"{EXP}.jsonl.gz").read_bytes() == before  # byte for byte: git sees no change


def test_an_imported_store_gives_the_same_report_and_the_grid_resumes_from_it(tracker, world, tmp_path, monkeypatch):
    assert world["imported"].exit_code == 0 and "3 run(s) imported" in world["imported"].stdout, \
        world["imported"].output
    copy = world["copy"]
    here = build_report(experiments=[EXP], out_dir=tmp_path / "a", formats={"csv"}, tracker=tracker,
                        log_to_mlflow=False).tables["results"]
    there = build_report(experiments=[EXP], out_dir=tmp_path / "b", formats={"csv"}, tracker=copy,
                         log_to_mlflow=False).tables["results"]
    assert here.drop(columns=[c for c in here if "run" in c]).equals(there.drop(columns=[c for c in there if "run" in c]))

    vae = cells(copy)["vae"]
    assert vae.info.run_id != cells(tracker)["vae"].info.run_id
    assert vae.data.tags["ledger.origin_run_id"] == cells(tracker)["vae"].info.run_id
    # its checkpoint stayed behind: a grid needing this generator trains it anew rather than failing to load it
    assert "generator_trained" not in vae.data.tags and vae.data.tags["ledger.checkpoint"] == "not carried"
    parent = vae.data.tags["mlflow.parentRunId"]
    assert copy.client.get_run(parent).data.tags["synthboost.kind"] == "grid"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", copy.uri)
    fresh_queue = [*world["grid_args"][:-1], str(tmp_path / "fresh.journal")]  # a new machine: no queue either
    out = runner.invoke(app, fresh_queue)
    assert out.exit_code == 0 and "0 cells run now, 2 were already done" in out.stdout, out.output
    # the copy's sample grid is the original's, pixel for pixel (the ledger stored it in grey)
    import numpy as np
    from matplotlib.image import imread

    here_grid = tracker.client.download_artifacts(cells(tracker)["vae"].info.run_id, "samples/grid.png",
                                                  str(tmp_path / "here"))
    there_grid = copy.client.download_artifacts(vae.info.run_id, "samples/grid.png", str(tmp_path / "there"))
    assert np.array_equal(imread(here_grid), imread(there_grid))
    # and exporting the copy writes the same ledger (plus the second grid's parent run): every run kept its
    # identity and its tags
    out = runner.invoke(app, ["ledger", "export", "--experiment", EXP, "--dir", str(world["dir"])])
    assert out.exit_code == 0 and "1 run(s) written, 0 updated, 3 unchanged" in out.stdout, out.output


def test_a_run_superseded_after_the_export_is_marked_in_the_imported_store_too(tracker, world, monkeypatch):
    here = cells(tracker)
    out = runner.invoke(app, ["supersede", "--run-id", here["none"].info.run_id, "--by", here["vae"].info.run_id,
                              "--reason", "ledger test"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["ledger", "export", "--experiment", EXP, "--dir", str(world["dir"])])
    assert out.exit_code == 0 and "1 run(s) written" in out.stdout, out.output
    monkeypatch.setenv("MLFLOW_TRACKING_URI", world["copy"].uri)
    out = runner.invoke(app, ["ledger", "import", "--dir", str(world["dir"])])
    assert out.exit_code == 0 and "0 run(s) imported, 1 updated, 3 unchanged" in out.stdout, out.output
    there = cells(world["copy"])
    assert there["none"].data.tags["superseded_by"] == there["vae"].info.run_id  # the copy's own id
    assert there["none"].data.tags["superseded_reason"] == "ledger test"


def test_bad_ledgers_and_names_are_one_line_errors(world, tmp_path):
    out = runner.invoke(app, ["ledger", "import", "--dir", str(tmp_path / "nowhere")])
    assert out.exit_code == 2 and "no ledger at" in out.output and len(out.output.strip().splitlines()) == 1
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / f"{EXP}.jsonl.gz").write_bytes((world["dir"] / f"{EXP}.jsonl.gz").read_bytes()[:200])
    out = runner.invoke(app, ["ledger", "import", "--dir", str(tmp_path / "cut")])
    assert out.exit_code == 2 and f"{EXP}.jsonl.gz is not a readable ledger file" in out.output, out.output
    assert len(out.output.strip().splitlines()) == 1
    (tmp_path / "x.tar.gz").write_bytes(b"not an archive")
    out = runner.invoke(app, ["ledger", "import", "--dir", str(tmp_path / "x.tar.gz")])
    assert out.exit_code == 2 and "x.tar.gz is not a readable ledger archive" in out.output, out.output
    broken = tmp_path / "broken" / EXP
    broken.mkdir(parents=True)
    (broken / "abc.json").write_text(json.dumps({"format": "something else"}))
    out = runner.invoke(app, ["ledger", "import", "--dir", str(tmp_path / "broken")])
    assert out.exit_code == 2 and "abc.json is not a synthboost-ledger/1 record" in out.output
    (broken / "abc.json").write_text("{not json")
    out = runner.invoke(app, ["ledger", "import", "--dir", str(tmp_path / "broken")])
    assert out.exit_code == 2 and "abc.json is not a readable ledger record" in out.output
    out = runner.invoke(app, ["ledger", "export", "--experiment", "no-such", "--dir", str(tmp_path / "x")])
    assert out.exit_code == 2 and "no experiment named 'no-such'" in out.output


def test_an_auxiliary_models_run_travels_only_with_its_weights(tracker, tmp_path, monkeypatch):
    """A cached model's run (quality extractor, CLIP) without its checkpoint would be found by the cache and fail to
    load: the ledger leaves it out unless --checkpoints carries the weights, and then the copy loads them."""
    import torch

    from synthboost import tracking

    state, _ = tracking.cached_model(tracker, kind="ledger-test", key="k1", name="tiny", experiment="ledger-models",
                                     train=lambda: ({"w": torch.arange(3.0)}, {"loss": 0.5}, {"size": 3}))
    without = runner.invoke(app, ["ledger", "export", "--experiment", "ledger-models",
                                  "--dir", str(tmp_path / "a")])
    assert without.exit_code == 0 and "0 run(s) written" in without.stdout, without.output
    carried = runner.invoke(app, ["ledger", "export", "--experiment", "ledger-models", "--checkpoints",
                                  "--dir", str(tmp_path / "b")])
    assert carried.exit_code == 0 and "1 run(s) written" in carried.stdout, carried.output
    copy_uri = f"sqlite:///{tmp_path / 'copy.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", copy_uri)
    out = runner.invoke(app, ["ledger", "import", "--dir", str(tmp_path / "b")])
    assert out.exit_code == 0 and "1 run(s) imported" in out.stdout, out.output
    loaded, _ = tracking.cached_model(Tracker(copy_uri), kind="ledger-test", key="k1", name="tiny",
                                      train=lambda: pytest.fail("the carried weights should have been found"))
    assert torch.equal(loaded["w"], state["w"])


def test_the_optuna_journal_travels_whole_lines_only_and_never_overwrites_a_local_one(world, tmp_path, monkeypatch):
    journal = tmp_path / "here.journal"
    journal.write_bytes(b'{"op_code": 0}\n{"op_code": 1}\n{"op_co')  # a worker halfway through a line
    monkeypatch.setenv("SYNTHBOOST_OPTUNA_STORAGE", str(journal))
    out = runner.invoke(app, ["ledger", "export", "--experiment", EXP, "--dir", str(tmp_path / "l")])
    assert out.exit_code == 0 and "Optuna journal copied" in out.stdout, out.output
    assert (tmp_path / "l" / "optuna.journal").read_bytes() == b'{"op_code": 0}\n{"op_code": 1}\n'

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'there.db'}")
    monkeypatch.setenv("SYNTHBOOST_OPTUNA_STORAGE", str(tmp_path / "there.journal"))
    out = runner.invoke(app, ["ledger", "import", "--dir", str(tmp_path / "l")])
    assert out.exit_code == 0 and "Optuna journal restored" in out.stdout, out.output
    (tmp_path / "there.journal").write_bytes(b'{"op_code": 0}\n')  # local studies moved on: they are kept
    out = runner.invoke(app, ["ledger", "import", "--dir", str(tmp_path / "l")])
    assert out.exit_code == 0 and "kept the Optuna journal already at" in out.stdout, out.output
    assert (tmp_path / "there.journal").read_bytes() == b'{"op_code": 0}\n'


def test_with_checkpoints_a_later_cell_reuses_the_carried_generator(world, tmp_path, monkeypatch):
    out = runner.invoke(app, ["ledger", "export", "--experiment", EXP, "--checkpoints", "--dir", str(tmp_path / "l")])
    assert out.exit_code == 0, out.output
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'third.db'}")
    out = runner.invoke(app, ["ledger", "import", "--dir", str(tmp_path / "l")])
    assert out.exit_code == 0, out.output
    # a new cell (another mix) on the grid's VAE: the generator is loaded from the carried checkpoint
    out = runner.invoke(app, ["run", "--model", "vae", "--regime", "balanced", "--size", "300", "--seed", "0",
                              "--profile", "smoke", "--mix-ratio", "0.25", "--mix-strategy", "balance",
                              "--set", "clf.epochs=1", "--set", "gen.latent_dim=13", "--experiment", "ledger-later"])
    assert out.exit_code == 0, out.output
    third = Tracker(f"sqlite:///{tmp_path / 'third.db'}")
    (run,) = third.client.search_runs([third.experiment_id("ledger-later")])
    assert run.data.tags["generator_reused"] == "true"


@pytest.mark.slow
def test_a_tracking_server_takes_the_ledger_like_a_file_store(tracker, world, server, tmp_path, monkeypatch):
    """The team's path: the committed ledger into a PostgreSQL-backed MLflow server, artifacts and report alike."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.tracking_uri)
    monkeypatch.setenv("SYNTHBOOST_OPTUNA_STORAGE", server.storage)
    out = runner.invoke(app, ["ledger", "import", "--dir", str(world["dir"])])
    assert out.exit_code == 0 and "run(s) imported" in out.stdout, out.output
    remote = Tracker(server.tracking_uri)
    vae = cells(remote)["vae"]
    assert remote.client.download_artifacts(vae.info.run_id, "samples/grid.png", str(tmp_path))
    here = cells(remote)
    assert set(here) == {"none", "vae"}
    assert here["none"].data.metrics["test/accuracy"] == cells(tracker)["none"].data.metrics["test/accuracy"]
    if "superseded_by" in here["none"].data.tags:  # an earlier test superseded it: mapped to the server's own id
        assert here["none"].data.tags["superseded_by"] == vae.info.run_id
    again = runner.invoke(app, ["ledger", "import", "--dir", str(world["dir"])])
    assert again.exit_code == 0 and "0 run(s) imported, 0 updated" in again.stdout, again.output


def test_a_listed_checkpoint_missing_from_the_copy_counts_as_not_carried(world, tmp_path, monkeypatch):
    """Checkpoints are git-ignored: a clone has the record that lists one but not the file."""
    out = runner.invoke(app, ["ledger", "export", "--experiment", EXP, "--checkpoints", "--dir", str(tmp_path / "l")])
    assert out.exit_code == 0, out.output
    for pt in (tmp_path / "l").rglob("*.pt"):
        pt.unlink()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'clone.db'}")
    out = runner.invoke(app, ["ledger", "import", "--dir", str(tmp_path / "l")])
    assert out.exit_code == 0, out.output
    vae = cells(Tracker(f"sqlite:///{tmp_path / 'clone.db'}"))["vae"]
    assert "generator_trained" not in vae.data.tags and vae.data.tags["ledger.checkpoint"] == "not carried"


def test_import_takes_only_the_experiments_asked_for(world, tmp_path, monkeypatch):
    """A bench's own store resumed on a new machine wants its experiment's runs, not the whole ledger."""
    import shutil

    lg = tmp_path / "lg"
    lg.mkdir()
    shutil.copy(world["dir"] / f"{EXP}.jsonl.gz", lg)
    record = next(r for r, _ in ledger.read_records(lg) if r["tags"].get("model") == "none")
    other = {k: v for k, v in record.items() if k != "files"} | {  # a record of the first form, beside the second
        "format": ledger.FORMAT, "experiment": "ledger-other", "run_id": "0" * 32, "artifacts": [],
        "tags": {k: v for k, v in record["tags"].items() if k != "mlflow.parentRunId"}}
    (lg / "ledger-other").mkdir()
    (lg / "ledger-other" / f"{other['run_id']}.json").write_text(json.dumps(other))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'only.db'}")
    out = runner.invoke(app, ["ledger", "import", "--experiment", "ledger-other", "--dir", str(lg)])
    assert out.exit_code == 0 and "1 run(s) imported" in out.stdout, out.output
    only = Tracker(f"sqlite:///{tmp_path / 'only.db'}")
    assert only.client.get_experiment_by_name(EXP) is None
    (run,) = only.client.search_runs([only.client.get_experiment_by_name("ledger-other").experiment_id])
    assert run.data.tags["ledger.origin_run_id"] == "0" * 32
    out = runner.invoke(app, ["ledger", "import", "--experiment", "no-such", "--dir", str(lg)])
    assert out.exit_code == 2 and "has no experiment no-such (it has: ledger, ledger-other)" in out.output
    assert len(out.output.strip().splitlines()) == 1


def test_a_run_imported_unfinished_goes_back_into_the_ledger(world, tmp_path, monkeypatch):
    """A cell cut off after logging its generator (exported with --checkpoints; later cells reuse that generator)
    is imported KILLED: an export of that store keeps it, so no run is lost on the way from one store to the next."""
    record = next(r for r, _ in ledger.read_records(world["dir"]) if r["tags"].get("model") == "vae")
    cut = {k: v for k, v in record.items() if k != "files"} | {
        "format": ledger.FORMAT, "experiment": "ledger-cut", "run_id": "c" * 32, "status": "RUNNING",
        "end_time": None, "artifacts": [], "tags": {k: v for k, v in record["tags"].items() if k != "mlflow.parentRunId"}}
    (tmp_path / "lg" / "ledger-cut").mkdir(parents=True)
    (tmp_path / "lg" / "ledger-cut" / f"{cut['run_id']}.json").write_text(json.dumps(cut))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'cut.db'}")
    out = runner.invoke(app, ["ledger", "import", "--dir", str(tmp_path / "lg"), "--no-journal"])
    assert out.exit_code == 0 and "1 run(s) imported" in out.stdout, out.output
    out = runner.invoke(app, ["ledger", "export", "--dir", str(tmp_path / "again"), "--no-journal"])
    assert out.exit_code == 0 and "1 run(s) written" in out.stdout, out.output
    ((again, _),) = ledger.read_records(tmp_path / "again")
    assert again["run_id"] == "c" * 32 and again["status"] == "KILLED" and again["metrics"] == cut["metrics"]


def first_form(src, dst):
    """The ledger at ``src`` rewritten in the first form, as exports wrote it until 2026-12-06: one JSON per run
    (indented), its carried artifacts in a folder beside it."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        for record, folder in ledger.read_records(src, Path(scratch)):
            out = dst / record["experiment"]
            out.mkdir(parents=True, exist_ok=True)
            old = {k: v for k, v in record.items() if k != "files"} | {"format": ledger.FORMAT}
            (out / f"{record['run_id']}.json").write_text(json.dumps(old, sort_keys=True, indent=1) + "\n")
            for rel in record["artifacts"]:
                (out / record["run_id"] / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folder / rel, out / record["run_id"] / rel)


def test_the_first_form_converts_to_the_same_ledger_and_an_archive_imports_as_is(world, tmp_path, monkeypatch):
    """A ledger of the first form, imported and exported again, is the second form's file byte for byte; the
    archive a GPU host brings back (`tar -czf ledger.tar.gz ledger`) imports without unpacking it first."""
    import shutil

    shutil.copytree(world["dir"], tmp_path / "now")  # the world's ledger as it is at this point of the module
    first_form(tmp_path / "now", tmp_path / "first")
    assert not list((tmp_path / "first").glob("*.jsonl.gz")) and list((tmp_path / "first").glob("*/*.json"))
    n = len(ledger.read_records(tmp_path / "now"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'old.db'}")
    out = runner.invoke(app, ["ledger", "import", "--dir", str(tmp_path / "first"), "--no-journal"])
    assert out.exit_code == 0 and f"{n} run(s) imported" in out.stdout, out.output
    out = runner.invoke(app, ["ledger", "export", "--dir", str(tmp_path / "second"), "--no-journal"])
    assert out.exit_code == 0 and f"{n} run(s) written" in out.stdout, out.output
    assert (tmp_path / "second" / f"{EXP}.jsonl.gz").read_bytes() == (tmp_path / "now" / f"{EXP}.jsonl.gz").read_bytes()

    with tarfile.open(tmp_path / "ledger.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "second", arcname="ledger")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'archive.db'}")
    out = runner.invoke(app, ["ledger", "import", "--dir", str(tmp_path / "ledger.tar.gz"), "--no-journal"])
    assert out.exit_code == 0 and f"{n} run(s) imported" in out.stdout, out.output
    vae = cells(Tracker(f"sqlite:///{tmp_path / 'archive.db'}"))["vae"]
    assert vae.data.tags["ledger.origin_run_id"] == cells(world["copy"])["vae"].data.tags["ledger.origin_run_id"]


def test_the_ledger_carries_the_grid_of_the_run_each_report_would_show_and_no_other():
    import pandas as pd

    from synthboost.report.figures import grid_runs

    runs = pd.DataFrame([  # (run, variant, start, study, superseded_by, has a grid)
        dict(run_id=r, experiment="e", model=m, variant=v, start_time=t, study=st, superseded_by=sb,
             external_data=False) for r, m, v, t, st, sb in [
            ("a", "vae", "vae", 1, "", ""), ("b", "vae", "vae", 2, "", ""),
            ("c", "vae", "vae", 3, "", "b"),  # superseded: only --include-superseded shows it
            ("d", "vae", "vae", 4, "study-1", ""),  # a study trial: only --include-studies
            ("e", "cgan", "cgan", 5, "", ""), ("f", "cgan", "cgan", 6, "", ""),  # f has no grid (upload cut)
            ("g", "none", "none", 7, "", "")]])  # a baseline draws no samples
    assert grid_runs(runs, lambda run_id: run_id != "f") == {"b", "c", "d", "e"}
