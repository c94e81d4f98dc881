"""How far a study's choice can be trusted: the rank agreement between its validation objective and test accuracy.

If the two rank the finished trials differently, the "best" trial is partly luck; reading test accuracy here is
reporting, not selection: nothing feeds back.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from . import queue
from .errors import UserError

TEST_METRIC = "test/accuracy"  # the official test set is balanced, so this is its balanced accuracy too
BOOTSTRAP_RESAMPLES = 2000


@dataclass
class Agreement:
    study: str
    selection: str  # holdout | k-fold
    objective: str
    n: int  # complete trials with a test score
    rho: float
    ci_low: float
    ci_high: float
    p_value: float
    chosen_trial: int
    chosen_test: float  # test accuracy of the trial the validation objective picked
    best_test: float  # the best test accuracy among the trials
    chosen_test_rank: int  # 1 = the chosen trial is also the best on test

    def text(self) -> str:
        return (f"study {self.study} ({self.selection}): Spearman ρ(val {self.objective}, {TEST_METRIC}) = "
                f"{self.rho:+.2f}, 95% bootstrap CI [{self.ci_low:+.2f}, {self.ci_high:+.2f}], p = {self.p_value:.2g}, "
                f"n = {self.n} complete trials; the chosen trial {self.chosen_trial} is #{self.chosen_test_rank} "
                f"on test ({100 * self.chosen_test:.1f}% vs best {100 * self.best_test:.1f}%)")

    def metrics(self) -> dict[str, float]:
        return {f"selection/{k}": float(v) for k, v in asdict(self).items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "chosen_trial"}


def spearman(values, tests, *, seed: int = 0) -> tuple[float, float, float, float]:
    """(ρ, CI low, CI high, p): Spearman's ρ with a 95% percentile interval from a paired bootstrap over trials
    (resamples whose ranks are all tied are dropped — ρ is undefined there)."""
    from scipy import stats

    x, y = np.asarray(values, dtype=float), np.asarray(tests, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)  # all ties: ρ is NaN, and says so
        res = stats.spearmanr(x, y)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(BOOTSTRAP_RESAMPLES, len(x)))
    rx, ry = stats.rankdata(x[idx], axis=1), stats.rankdata(y[idx], axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (rx * ry).sum(axis=1) / np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    lo, hi = np.nanpercentile(boot, [2.5, 97.5]) if np.isfinite(boot).any() else (math.nan, math.nan)
    return float(res.statistic), float(lo), float(hi), float(res.pvalue)


def trial_scores(study, tracker) -> list[tuple[int, float, float]]:
    """(trial number, objective, mean test accuracy over the trial's runs) of every COMPLETE trial whose runs
    are all FINISHED with a test score."""
    from optuna.trial import TrialState

    runs = tracker.search(f"tags.`optuna.study_name` = '{study.study_name}' and attributes.status = 'FINISHED'",
                          max_results=50000)
    tests: dict[int, list[float]] = {}
    for r in runs:
        number, value = r.data.tags.get("optuna.trial_number"), r.data.metrics.get(TEST_METRIC)
        if number is not None and value is not None and "grid" not in r.data.tags:
            tests.setdefault(int(number), []).append(value)
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        expected = sum(1 for k in t.user_attrs if k.startswith("mlflow_run_id"))
        scores = tests.get(t.number, [])
        if scores and len(scores) >= expected:
            out.append((t.number, float(t.value), float(np.mean(scores))))
    return out


def study_agreement(study, spec, *, tracker, log: bool = True, first: int | None = None) -> Agreement:
    """The val↔test agreement of an Optuna ``study`` run from ``spec`` (``study.agreement`` loads both); logged
    into its MLflow parent run (``selection/*``) when ``log``.

    ``first`` keeps the first N trials, which two studies with the same seeded sampler share, to compare them."""
    name = study.study_name
    scores = [s for s in trial_scores(study, tracker) if first is None or s[0] < first]
    if len(scores) < 3:
        raise UserError(f"study {name!r} has {len(scores)} complete trial(s) with a test score; rank agreement needs "
                        f"3 or more — run more trials (`synthboost study --name {name} --n-trials N`)")
    numbers, values, tests = (np.array(c) for c in zip(*scores))
    rho, lo, hi, p = spearman(values, tests)
    chosen = int(np.argmax(values))
    result = Agreement(study=name, selection=spec.selection.label(spec.regime), objective=spec.objective,
                       n=len(scores), rho=rho, ci_low=lo, ci_high=hi,
                       p_value=p, chosen_trial=int(numbers[chosen]), chosen_test=float(tests[chosen]),
                       best_test=float(tests.max()), chosen_test_rank=int((tests > tests[chosen]).sum()) + 1)
    if log and first is None and queue.PARENT_RUN_ATTR in study.user_attrs:
        run = tracker.attach(queue.parent_run_id(study))
        run.log_metrics(result.metrics())
        run.set_tags({"selection.agreement": result.text()[:5000]})
    return result
