"""Small study files shared by the tests that run a real study on the smoke profile (seconds per trial)."""

from __future__ import annotations


def smoke_study(*, n_trials: int, search: dict[str, str] | None = None, fixed: str = "clf.epochs: 2",
                regime: str = "balanced", model: str | None = None, extra: str = "") -> str:
    """A study file: random sampler, no pruning, size 300; ``search`` maps a key to its range (``null``: the
    declared one), ``fixed`` is the inside of the ``fixed:`` mapping, ``extra`` more top-level YAML."""
    search = search if search is not None else {"mix.ratio": "{low: 0.2, high: 1.0}", "mix.strategy": "null"}
    lines = [f"model: {model}"] if model else []
    lines += [f"regime: {regime}", "size: 300", "classifier: cnn", "profile: smoke", "seeds: [0]",
              f"n_trials: {n_trials}", "sampler: {name: random, seed: 0}", "pruner: {name: none}", "search_space:"]
    lines += [f"  {key}: {space}" for key, space in search.items()]
    lines += [f"fixed: {{{fixed}}}", extra]
    return "\n".join(lines) + "\n"


def smoke_grid(*, experiment: str, mixes: str, fixed: str, seeds: str = "[0, 1]") -> str:
    """A grid file: none and vae on balanced/300, ``seeds`` (0-1), the CNN; ``mixes``, ``fixed`` and ``seeds`` as
    YAML flow text."""
    return (f"experiment: {experiment}\nprofile: smoke\nmodels: [none, vae]\nregimes: [balanced]\nsizes: [300]\n"
            f"seeds: {seeds}\nclassifiers: [cnn]\nmixes: {mixes}\nfixed: {{{fixed}}}\n")
