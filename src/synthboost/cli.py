"""The ``synthboost`` command line: parse, validate, delegate.  No logic of its own.

Exit codes: 0 done, 2 the user's input is wrong (one line on stderr says what to fix), 1 anything else.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from . import cost, generators, ledger, queue, server, tracking, work
from .errors import ResourceError, StoreOutage, TrainingError, UserError
from .outage import OUTAGE_EXIT
from .stages import Stages

# Deferred on purpose, for start-up time (`--help` answers at once): config (pydantic), pipeline, study, grid,
# demo, selection, supersede (torch, numpy), report (pandas) and optuna are imported by the commands that use them.

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Does synthetic data from a generative model help a classifier? Tracked in MLflow.")


def _models() -> list[str]:
    return generators.model_names()


def guarded(fn):
    """Turn UserError into exit 2 and a training failure into exit 1, each as one line on stderr."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        except TrainingError as err:
            typer.echo(f"failed: {err}", err=True)
            raise typer.Exit(1) from None
        except ResourceError as err:  # a full disk, a store gone too long: what happened and how to resume
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: the run in progress ended KILLED; re-run the same command to resume (finished "
                       "trials and cells are kept)", err=True)
            raise typer.Exit(130) from None

    return wrapper


SetOption = Annotated[list[str] | None, typer.Option("--set", help="Override any config value: section.key=value "
                                                                    "(sections: data, mix, clf, gen).")]


@app.command()
@guarded
def run(
    model: Annotated[str, typer.Option(help="Generator family or baseline (see `synthboost models`).",
                                       autocompletion=_models)] = "vae",
    regime: Annotated[str, typer.Option(help="balanced | semi | high")] = "balanced",
    size: Annotated[int, typer.Option(help="Real training-pool size (train + validation), 100…60,000.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed for the data draw, generator and classifier.")] = 0,
    classifier: Annotated[str, typer.Option(help="cnn | cart | svm")] = "cnn",
    profile: Annotated[str, typer.Option(help="smoke (seconds) | quick (minutes, CPU) | paper (GPU)")] = "quick",
    mix_ratio: Annotated[float | None, typer.Option(help="Synthetic count / real count (0 = real only).")] = None,
    mix_strategy: Annotated[str | None, typer.Option(help="uniform | balance | minority")] = None,
    set_: SetOption = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "synthboost",
    gen_metrics: Annotated[bool | None, typer.Option("--gen-metrics/--no-gen-metrics",
                                                     help="Generator-quality metrics (default: on except smoke).")] = None,
) -> None:
    """Run one experiment cell and record it as one MLflow run."""
    from . import cell, config, pipeline

    cfg = cell.make_config(model=model, classifier=classifier, regime=regime, size=size, seed=seed,
                           profile=profile, mix_ratio=mix_ratio, mix_strategy=mix_strategy,
                           overrides=config.parse_overrides(set_), gen_metrics=gen_metrics)
    if not sys.stderr.isatty():
        tracking.quiet_artifact_bars()
    tracker = tracking.Tracker()
    result = pipeline.run_experiment(cfg, tracker=tracker, experiment=experiment, progress=sys.stderr.isatty(),
                                     stage=Stages())
    m = result.metrics
    typer.echo(f"run {result.run_id}: test accuracy {m['test/accuracy']:.4f}, balanced accuracy "
               f"{m['test/balanced_accuracy']:.4f}, macro-F1 {m['test/macro_f1']:.4f}"
               + (f" (generator {'reused from' if result.generator_reused else 'trained in'} run "
                  f"{result.generator_run_id})" if result.generator_run_id else ""))
    typer.echo(f"store: {tracker.uri}  (open it with `synthboost ui`)")


@app.command()
@guarded
def demo(
    profile: Annotated[str, typer.Option(help="quick (the demo: ~80 s of one CPU core) | smoke (seconds, wiring "
                                              "only) | paper (GPU)")] = "quick",
    experiment: Annotated[str, typer.Option(help="MLflow experiment of the two runs.")] = "demo",
    out: Annotated[str, typer.Option(help="Folder for the demo's report (report.md and CSVs).")] = "report/demo",
    gen_metrics: Annotated[bool, typer.Option("--gen-metrics/--no-gen-metrics", help=(
        "Also compute generator quality (FID, KID, IS, precision/recall, CAS); the first time trains the quality "
        "extractor for this machine (minutes)."))] = False,
) -> None:
    """The main job: a real-only baseline and a VAE mix on one long-tailed draw, then their gain table."""
    from . import config
    from . import demo as demo_mod

    config.check_choice("profile", profile, config.PROFILES)
    tty = sys.stderr.isatty()
    if not tty:
        tracking.quiet_artifact_bars()
    tracker = tracking.Tracker()
    result = demo_mod.run_demo(tracker=tracker, out_dir=Path(out), profile=profile, experiment=experiment,
                               gen_metrics=gen_metrics, progress=tty, stage=Stages())
    tables = result.tables()
    typer.echo("\nResults (official test set, %; † fewer than 3 seeds):")
    typer.echo(tables["results"].to_string(index=False))
    typer.echo("\nGain over the real-only baseline (pp; an interval needs 3 seeds or more):")
    typer.echo(tables["gains"].to_string(index=False) if len(tables["gains"]) else "(no paired baseline)")
    generator = result.runs[-1]
    typer.echo(f"\nruns: {', '.join(r.run_id for r in result.runs)} in experiment {experiment!r} of "
               f"{tracking.redact(tracker.uri)}; "
               f"report: {result.report.out_dir / 'report.md'}; open the runs with `synthboost ui`")
    if not gen_metrics:
        typer.echo(f"generator quality (FID, KID, IS, precision/recall, CAS) was skipped to keep the demo short: "
                   f"`synthboost evaluate --run-id {generator.run_id}` adds it (its first use trains the quality "
                   "extractor once for this machine, a few minutes on a CPU)")


@app.command()
def models() -> None:
    """List the generator families and baselines."""
    for name, doc in generators.BASELINES.items():
        typer.echo(f"{name:<12} baseline  {doc}")
    for name, entry in generators.FAMILIES.items():
        typer.echo(f"{name:<12} generator {entry.summary}")


@app.command()
@guarded
def ui(
    port: Annotated[int, typer.Option(help="Port for the MLflow UI.")] = 5000,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
) -> None:
    """Start the MLflow UI on the project's tracking store."""
    uri = tracking.tracking_uri()
    tracking.check_reachable(uri)
    if uri.startswith(("http://", "https://")):
        typer.echo(f"the store is a server already: open {uri}")
        return
    typer.echo(f"MLflow UI for {uri} at http://{host}:{port}  (runs table: the 'Model training' toggle, "
               "or /#/experiments/<id>/runs?workflowType=machine_learning)")
    # one browser's UI: by default MLflow starts 4 web workers and 7 job-queue processes (GenAI jobs), each a
    # full Python with mlflow imported — on a 2-core CPU that is seconds of start-up and memory for nothing
    os.environ.setdefault("MLFLOW_WORKERS", "1")
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.execvp(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                               "--host", host, "--port", str(port)])


@app.command()
@guarded
def evaluate(run_id: Annotated[str, typer.Option("--run-id", help="An existing run with a generator.")],
             cas: Annotated[bool, typer.Option("--cas/--no-cas", help="Also the classifier-based CAS (four classifier "
                                                                       "fits: most of the time at quick).")] = True,
             ) -> None:
    """Compute generator-quality metrics (gen/*) for an existing run from its logged checkpoint."""
    from . import pipeline

    m = pipeline.evaluate_run(run_id, tracker=tracking.Tracker(), stage=Stages(), cas=cas)
    typer.echo(f"run {run_id}: FID {m['fid']:.2f}, KID {m['kid_mean']:.4f}±{m['kid_std']:.4f}, IS "
               f"{m['inception_score']:.2f}, precision {m['precision']:.3f}, recall {m['recall']:.3f}, "
               f"label consistency {m['label_consistency']:.3f}"
               + (f", CAS cnn {m['cas_cnn']:.3f} (real {m['real_cnn']:.3f})" if cas else ""))


clip_app = typer.Typer(no_args_is_help=True, help="The project's small CLIP (conditions the `clip` family).")
app.add_typer(clip_app, name="clip")


@clip_app.command("train")
@guarded
def clip_train(
    profile: Annotated[str, typer.Option(help="smoke (seconds) | quick (minutes, CPU) | paper (GPU)")] = "quick",
) -> None:
    """Train the project's full CLIP (official train set) once per profile and log it as an MLflow run.

    It is what `clip` runs with gen.clip_data=full use (tagged as external data); by default a `clip` run trains
    its CLIP on its own training images instead."""
    from . import config, pipeline

    config.check_choice("profile", profile, config.PROFILES)
    tracker = tracking.Tracker()
    state, run_id = pipeline.project_clip(tracker, profile=profile, progress=sys.stderr.isatty())
    acc = tracker.run_info(run_id)["metrics"].get("test/zero_shot_accuracy", float("nan"))
    typer.echo(f"CLIP ({profile}) in run {run_id} (experiment {tracking.MODELS_EXPERIMENT}): zero-shot test "
               f"accuracy {acc:.4f}; `clip` runs with gen.clip_profile={profile} gen.clip_data=full use it "
               "(external data)")


@app.command()
@guarded
def study(
    model: Annotated[str, typer.Option(help="Generator family or baseline to tune.", autocompletion=_models)] = "vae",
    config: Annotated[str | None, typer.Option(help="Study YAML (default: studies/<model>.yaml, else "
                                                    "studies/default.yaml).")] = None,
    n_trials: Annotated[int | None, typer.Option(help="Complete trials the study needs (across workers and "
                                                      "resumes; pruned and failed ones are replaced, up to 3× "
                                                      "started).")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes pulling trials from the storage.")] = 1,
    regime: Annotated[str | None, typer.Option(help="Override the study file's regime.")] = None,
    size: Annotated[int | None, typer.Option(help="Override the study file's size.")] = None,
    profile: Annotated[str | None, typer.Option(help="Override the study file's profile.")] = None,
    recipe: Annotated[str | None, typer.Option(help="Override the study file's classifier recipe under every trial: "
                                                    "plain or strong (the study's name gains -strong).")] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage: a journal file path or a database URL "
                                                     "(default: tracking/optuna.journal).")] = None,
    name: Annotated[str | None, typer.Option(help="Study name; the same name resumes it.")] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment of the parent run.")] = "synthboost-studies",
) -> None:
    """Tune the mix and the generator with Optuna; every trial is a nested MLflow run."""
    from . import study as study_mod

    if n_trials is not None and n_trials < 1:
        raise UserError(f"--n-trials must be >= 1, got {n_trials}")
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    spec = study_mod.load_spec(model=model, path=config, overrides={
        "n_trials": n_trials, "regime": regime, "size": size, "profile": profile, "recipe": recipe})
    name = name or study_mod.default_name(spec)
    url = storage or queue.default_storage()
    queue.check_storage(url)
    summary = study_mod.run_study(spec, name=name, storage_url=url, experiment=experiment, workers=workers,
                                  progress=sys.stderr.isatty())
    t = summary["trials"]
    retried = f" ({t['RETRIED']} retried after a crash or an interrupt)" if t["RETRIED"] else ""
    typer.echo(f"study {name}: {t['COMPLETE']} complete, {t['PRUNED']} pruned, {t['FAIL']} failed{retried}; "
               + (f"best {spec.objective} {summary['best_value']:.4f} (trial {summary['best_trial']}, run "
                  f"{summary['best_run_id']}) with {summary['best_params']}" if "best_value" in summary
                  else "no complete trial yet"))
    if spec.counts == "complete" and t["COMPLETE"] < spec.n_trials and not t["RUNNING"]:
        typer.echo(f"study {name} stopped at its limit of {study_mod.trial_limit(spec)} started trials with "
                   f"{t['COMPLETE']} of {spec.n_trials} complete; raise max_trials in the study file to go on")
    if "agreement" in summary:
        typer.echo(summary["agreement"])
    typer.echo(f"MLflow parent run {summary['parent_run_id']}; watch it with `synthboost dashboard --name {name}`")


@app.command()
@guarded
def agreement(
    name: Annotated[str, typer.Option(help="The study to check.")],
    storage: Annotated[str | None, typer.Option(help="Optuna storage (default: the project's).")] = None,
    first: Annotated[int | None, typer.Option(help="Only trials numbered below N (to compare two studies of one "
                                                   "seeded random sampler on the same settings); not logged.")] = None,
) -> None:
    """How far a study's choice can be trusted: Spearman rank agreement of its validation objective with test
    accuracy over its complete trials (n, 95% bootstrap CI); logged into the study's parent run."""
    from . import study as study_mod

    if first is not None and first < 3:
        raise UserError(f"--first must be >= 3 (rank agreement needs 3 trials), got {first}")
    url = storage or queue.default_storage()
    queue.check_storage(url)
    typer.echo(study_mod.agreement(name, url, tracker=tracking.Tracker(), first=first).text())


@contextlib.contextmanager
def _outage_exit():
    """A worker that gave up on a store exits with its own code, so the command that started it stops as well."""
    try:
        yield
    except StoreOutage as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(OUTAGE_EXIT) from None


# a database URL holds its password: `study --workers N` hands it over in SYNTHBOOST_OPTUNA_STORAGE, not argv
WorkerStorage = Annotated[str | None, typer.Option(help="Optuna storage URL or journal path (default: "
                                                        "SYNTHBOOST_OPTUNA_STORAGE, else the project's).")]


@app.command("study-worker", hidden=True)
@guarded
def study_worker(
    name: Annotated[str, typer.Option(help="Study name.")],
    storage: WorkerStorage = None,
    worker_index: Annotated[int, typer.Option(help="Distinct per worker (seeds its sampler).")] = 0,
) -> None:
    """Pull trials of an existing study until its budget is met (any machine that reaches both stores)."""
    from . import study as study_mod

    with _outage_exit():
        study_mod.work(name, storage or queue.default_storage(), worker_index=worker_index)


@app.command()
@guarded
def dashboard(
    name: Annotated[str | None, typer.Option(help="Study to open (prints its page).")] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage (default: the project's).")] = None,
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
) -> None:
    """Start optuna-dashboard on the project's Optuna storage and print the URL."""
    url = storage or queue.default_storage()
    if queue.is_journal(url) and not os.path.isfile(url):
        raise UserError(f"no Optuna storage at {url} yet; run `synthboost study` first")
    page = f"http://{host}:{port}/dashboard"
    if name is not None:
        import optuna

        store = queue.open_storage(url)
        names = optuna.study.get_all_study_names(store)
        if name not in names:
            raise UserError(f"no study named {name!r} in {queue.redact(url)} (studies: {', '.join(names) or 'none'})")
        page += f"/studies/{store.get_study_id_from_name(name)}"
    exe = shutil.which("optuna-dashboard", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    if exe is None:
        raise UserError("optuna-dashboard is not installed; `pip install optuna-dashboard`")
    typer.echo(f"optuna-dashboard for {queue.redact(url)} at {page}", err=False)
    sys.stdout.flush()
    os.execv(exe, [exe, url, "--host", host, "--port", str(port)])


@app.command()
@guarded
def grid(
    config: Annotated[str | None, typer.Option(help="Grid YAML (default: studies/grid.yaml).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes pulling units from the storage (default: 1; "
                                                   "on a CUDA host, one per core).")] = None,
    profile: Annotated[str | None, typer.Option(help="Override the grid file's profile.")] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage (the work queue); default: the project's.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print cells, done, and what the rest costs (per "
                                                            "family, and where each estimate comes from).")] = False,
    calibrate: Annotated[bool, typer.Option("--calibrate", help="Time one small cell per family of the grid on this "
                                                                "machine (throw-away store) for --dry-run's estimates; "
                                                                "kept in tracking/calibration.json.")] = False,
    time_limit: Annotated[float | None, typer.Option(
        "--time-limit", help="Seconds: no unit starts after them and the units running then are cut (their "
                             "unfinished cells re-run by the next grid command); exit 3 when cells are left.")] = None,
) -> None:
    """Run every model × regime × size × seed × classifier × mix cell; resumable; one MLflow run per cell."""
    from . import grid as grid_mod

    workers = grid_mod.default_workers() if workers is None else workers
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if time_limit is not None and time_limit <= 0:
        raise UserError(f"--time-limit must be > 0 seconds, got {time_limit:g}")
    spec = grid_mod.load_grid(config, profile=profile)
    url = storage or queue.default_storage()
    queue.check_storage(url)
    if calibrate:
        path, records = cost.calibrate(grid_mod.calibration_units(spec, url), profile=spec.profile,
                                       gen_metrics=spec.gen_metrics, log=lambda line: typer.echo(line, err=True))
        typer.echo(f"calibrated {len({r.family for r in records})} families ({spec.profile}) on "
                   f"{work.machine_key(work.machine())}: {path}")
        if not dry_run:
            return
    if dry_run:
        grid_mod.dry_run(spec, url, workers=workers, tracker=tracking.Tracker(), say=typer.echo)
        return
    outcome = grid_mod.run_grid(spec, storage_url=url, workers=workers, show_progress=sys.stderr.isatty(),
                                time_limit=time_limit)
    for line in outcome.summary_lines():
        typer.echo(line)
    if outcome.missing:
        raise typer.Exit(3 if outcome.timed_out else 1)


@app.command("grid-worker", hidden=True)
@guarded
def grid_worker(
    name: Annotated[str, typer.Option(help="The grid's Optuna study name (grid-<experiment>).")],
    experiment: Annotated[str, typer.Option(help="The grid's MLflow experiment.")],
    storage: WorkerStorage = None,
    deadline: Annotated[float | None, typer.Option(help="time.time() after which no unit starts and the running "
                                                        "one is cut (grid --time-limit).")] = None,
) -> None:
    """Pull grid units until the queue is empty (any machine that reaches both stores)."""
    from . import grid as grid_mod

    with _outage_exit():
        grid_mod.work(name, storage or queue.default_storage(), experiment=experiment, deadline=deadline)


@app.command()
@guarded
def report(
    experiment: Annotated[list[str] | None, typer.Option(
        "--experiment", help="MLflow experiment to read (repeat for several; default: every one holding experiment "
                             "runs).")] = None,
    out: Annotated[str, typer.Option(help="Folder for report.md, report.html and the CSV tables.")] = "report",
    format_: Annotated[str, typer.Option("--format", help="Comma-separated subset of md,html,csv.")] = "md,html,csv",
    include_studies: Annotated[bool, typer.Option(
        "--include-studies", help="Also read study trials (runs tagged optuna.study_name that are not grid cells); "
                                  "by default the report reads grid and single runs only.")] = False,
    model: Annotated[list[str] | None, typer.Option(
        "--model", help="Only this generator family (repeat for several) and the baselines; default: every run.")
    ] = None,
    include_superseded: Annotated[bool, typer.Option(
        "--include-superseded", help="Also read runs tagged superseded_by (their cell was re-run under a newer "
                                     "config), as cells of their own; left out by default.")] = False,
    skip_missing: Annotated[bool, typer.Option(
        "--skip-missing", help="Leave out named experiments the store does not hold (instead of an error); with "
                               "none left, write nothing and say so (`make docs` on a store measured in part).")
    ] = False,
    plan: Annotated[str | None, typer.Option(
        "--plan", help="A grid file: list the cells it names that the store does not hold yet (and, without "
                       "--experiment, read its experiment).")] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage for --plan's from_study mixes (default: the "
                                                     "project's).")] = None,
) -> None:
    """Compare models from the tracking store: tables, gains over the baselines, plots, claims; logged to MLflow."""
    from . import report as report_mod

    report_mod.report_command(experiments=experiment, out=out, formats=format_, include_studies=include_studies,
                              include_superseded=include_superseded, models=model, skip_missing=skip_missing,
                              plan=plan, storage=storage, say=typer.echo)


@app.command()
@guarded
def supersede(
    run_id: Annotated[list[str], typer.Option("--run-id", help="A run to mark superseded (repeat for several).")],
    by: Annotated[str, typer.Option("--by", help="The FINISHED run that replaces them.")],
    reason: Annotated[str, typer.Option(help="Why, in a few words (e.g. 're-run after the CNN fix').")],
) -> None:
    """Mark runs not made by a grid (single `synthboost run`s) as superseded by a newer run; nothing is deleted."""
    from . import supersede as supersede_mod

    marked = supersede_mod.mark_by_hand(tracking.Tracker(), run_id, by=by, reason=reason)
    typer.echo(f"{len(marked)} run(s) marked superseded by {by} (tag {tracking.TAG_SUPERSEDED_BY}); the report "
               "leaves them out unless --include-superseded")


@app.command()
@guarded
def readme(
    path: Annotated[str, typer.Option("--file", help="The Markdown file whose tables to refill.")] = "docs/results.md",
) -> None:
    """Refill the result tables of docs/results.md from the reports' headline.md (`<!-- synthboost:table … -->`)."""
    from .report.readme import embed_tables

    sources = embed_tables(Path(path))
    typer.echo(f"{path}: {len(sources)} table(s) refilled from " + (", ".join(sources) or "nothing"))


ledger_app = typer.Typer(no_args_is_help=True, help="The ledger: a store's finished runs as files under "
                                                    "tracking/ledger/, committed so measurements outlive the machine.")
app.add_typer(ledger_app, name="ledger")
LedgerDir = Annotated[str | None, typer.Option("--dir", help="The ledger's folder (default: tracking/ledger); "
                                                             "import also takes a .tar.gz of one.")]


@ledger_app.command("export")
@guarded
def ledger_export(
    experiment: Annotated[list[str] | None, typer.Option(help="An experiment to export (repeatable; default: "
                                                              "every experiment).")] = None,
    dir_: LedgerDir = None,
    checkpoints: Annotated[bool, typer.Option(help="Also carry generator checkpoints (megabytes each).")] = False,
    journal: Annotated[bool, typer.Option(help="Also copy the Optuna journal (the default storage, when it is a "
                                               "file).")] = True,
) -> None:
    """Write the store's FINISHED runs (MLFLOW_TRACKING_URI), one gzip JSON-lines file per experiment; only what
    changed is rewritten."""
    dst = Path(dir_) if dir_ else ledger.default_dir()
    with tracking.store_refusals("ledger export"):
        summary = ledger.export(tracking.Tracker(), experiments=experiment, dst=dst, checkpoints=checkpoints,
                                journal=ledger.default_journal() if journal else None)
    typer.echo(f"{dst}: {summary.line('written')}")


@ledger_app.command("import")
@guarded
def ledger_import(
    experiment: Annotated[list[str] | None, typer.Option(help="An experiment to import (repeatable; default: "
                                                              "every experiment).")] = None,
    dir_: LedgerDir = None,
    journal: Annotated[bool, typer.Option(help="Restore the ledger's Optuna journal when there is none yet.")] = True,
) -> None:
    """Put the ledger's runs into the store (MLFLOW_TRACKING_URI): new ones created, known ones' tags updated."""
    src = Path(dir_) if dir_ else ledger.default_dir()
    summary = ledger.import_(tracking.Tracker(), src=src, journal=ledger.default_journal() if journal else None,
                             experiments=experiment)
    typer.echo(f"{tracking.redact(tracking.tracking_uri())}: {summary.line('imported')}")


server_app = typer.Typer(no_args_is_help=True, help="Server mode: a local PostgreSQL + MLflow server for workers "
                                                    "anywhere (tracking/README.md).")
app.add_typer(server_app, name="server")
ServerDir = Annotated[str | None, typer.Option("--dir", help="The server's folder (default: tracking/server).")]


@server_app.command("start")
@guarded
def server_start(
    dir_: ServerDir = None,
    port: Annotated[int | None, typer.Option(help="MLflow server port (default 5000, or the last one used).")] = None,
    pg_port: Annotated[int | None, typer.Option("--pg-port", help="PostgreSQL port (default 5433, or the last "
                                                                    "one used).")] = None,
    host: Annotated[str | None, typer.Option(help="The MLflow server's listening address (default 127.0.0.1, or "
                                                  "the last one used); beyond loopback its login is on.")] = None,
    auth: Annotated[bool | None, typer.Option("--auth/--no-auth", help="MLflow's basic authentication (default: "
                                                                       "on beyond loopback).")] = None,
) -> None:
    """Start PostgreSQL and the MLflow server (idempotent) and print the lines every worker needs."""
    state = server.start(Path(dir_) if dir_ else None, port=port, pg_port=pg_port, host=host, auth=auth,
                         say=typer.echo)
    for line in server.describe(server.status(Path(dir_) if dir_ else None))[1:3]:
        typer.echo(line)
    lines = server.worker_lines(state)
    typer.echo(f"Every worker (any machine that reaches both) needs only these {len(lines)} lines — they hold the "
               "passwords:")
    for line in lines:
        typer.echo(line)


@server_app.command("status")
@guarded
def server_status(dir_: ServerDir = None) -> None:
    """Say what runs where: pids, ports, URIs (password hidden)."""
    for line in server.describe(server.status(Path(dir_) if dir_ else None)):
        typer.echo(line)


@server_app.command("stop")
@guarded
def server_stop(dir_: ServerDir = None) -> None:
    """Stop the MLflow server and PostgreSQL; the data stays in the folder for the next start."""
    server.stop(Path(dir_) if dir_ else None, say=typer.echo)


def main() -> None:  # pragma: no cover - console entry
    app()
