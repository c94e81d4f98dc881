"""The ``synthboost`` command line: parse, validate, delegate.  No logic of its own.

Exit codes: 0 done, 2 the user's input is wrong (one line on stderr says what to fix), 1 anything else.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Annotated

import typer

from .errors import TrainingError, UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Does synthetic data from a generative model help a classifier? Tracked in MLflow.")


def _models() -> list[str]:
    from . import generators

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
    from . import config, pipeline, tracking

    cfg = pipeline.make_config(model=model, classifier=classifier, regime=regime, size=size, seed=seed,
                               profile=profile, mix_ratio=mix_ratio, mix_strategy=mix_strategy,
                               overrides=config.parse_overrides(set_), gen_metrics=gen_metrics)
    tracker = tracking.Tracker()
    result = pipeline.run_experiment(cfg, tracker=tracker, experiment=experiment, progress=sys.stderr.isatty())
    m = result.metrics
    typer.echo(f"run {result.run_id}: test accuracy {m['test/accuracy']:.4f}, balanced accuracy "
               f"{m['test/balanced_accuracy']:.4f}, macro-F1 {m['test/macro_f1']:.4f}"
               + (f" (generator {'reused from' if result.generator_reused else 'trained in'} run "
                  f"{result.generator_run_id})" if result.generator_run_id else ""))
    typer.echo(f"store: {tracker.uri}  (open it with `synthboost ui`)")


@app.command()
def models() -> None:
    """List the generator families and baselines."""
    from . import generators

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
    from . import tracking

    uri = tracking.tracking_uri()
    tracking.check_reachable(uri)
    if uri.startswith(("http://", "https://")):
        typer.echo(f"the store is a server already: open {uri}")
        return
    typer.echo(f"MLflow UI for {uri} at http://{host}:{port}  (runs table: the 'Model training' toggle, "
               "or /#/experiments/<id>/runs?workflowType=machine_learning)")
    os.execvp(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                               "--host", host, "--port", str(port)])


def main() -> None:  # pragma: no cover - console entry
    app()
