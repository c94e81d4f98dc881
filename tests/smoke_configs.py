"""Small study files shared by the tests that run a real study on the smoke profile (seconds per trial)."""

#: a mix-only study: random sampler, no pruning, two mix knobs, 2 classifier epochs
SMOKE_STUDY = """
regime: balanced
size: 300
classifier: cnn
profile: smoke
seeds: [0]
n_trials: {n_trials}
sampler: {{name: random, seed: 0}}
pruner: {{name: none}}
search_space:
  mix.ratio: {{low: 0.2, high: 1.0}}
  mix.strategy: null
fixed: {{clf.epochs: 2}}
"""
