"""The classifier's step on a GPU (one CUDA graph, fused AdamW), its validation cadence and the grid's workers on a
GPU host: the CPU trains bitwise as before, the device path's code runs uncaptured on CPU tensors, and the CUDA-only
checks run where a GPU is (docs/architecture.md, *The tests*)."""

import pytest
import torch
from typer.testing import CliRunner

from synthboost import cell, classifiers
from synthboost.classifiers import CNNClassifier, CNNConfig, eval_period
from synthboost.config import DataConfig, build
from synthboost.data import make_split
from synthboost.training import train_likelihood

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def split():
    return make_split(DataConfig(regime="balanced", size=400), 0)


def fit(split, device="cpu", **values):
    """A short fit with validation after every epoch it makes; the epochs' logged values and val probabilities."""
    clf = CNNClassifier(build(CNNConfig, {"epochs": 6, "batch_size": 32, **values}, prefix="clf"), seed=0,
                        device=device)
    rows = []
    out = clf.fit(split.train_x, split.train_y, val=(split.val_x, split.val_y),
                  on_epoch=lambda e, m: rows.append((e, dict(m))))
    return clf, out, rows, clf.predict_proba(split.val_x)


def test_the_device_levers_leave_a_cpu_run_bitwise_as_it_was(split):
    """cuda_step applies on CUDA only: on the CPU every value trains the same weights, with foreach AdamW."""
    runs = {mode: fit(split, cuda_step=mode, augment="shift_flip") for mode in ("graph", "fused", "eager")}
    for mode, (clf, out, _, proba) in runs.items():
        assert (proba == runs["eager"][3]).all(), mode
        assert out["loss"] == runs["eager"][1]["loss"]
        assert clf.execution == {"cuda_graphs": "false", "fused_optimizer": "false"}


def test_auto_eval_cadence_validates_less_and_trains_the_same_weights(split):
    every, auto = fit(split, eval_every=1, epochs=20, batch_size=64), fit(split, epochs=20, batch_size=64)
    assert build(CNNConfig).eval_every == 0  # auto is the default
    assert (every[3] == auto[3]).all()  # validation never touches the weights
    validated = [e for e, m in auto[2] if "val_balanced_accuracy" in m]
    assert validated == [2, 5, 8, 11, 14, 17, 19]  # every ⌈20/8⌉ = 3 epochs, and after the last
    assert len([e for e, m in every[2] if "val_balanced_accuracy" in m]) == 20


def test_auto_eval_cadence_validates_every_epoch_under_early_stopping(split):
    cfg = build(CNNConfig, {"early_stopping": 3})
    assert eval_period(cfg, 80) == 1 and eval_period(build(CNNConfig), 80) == 10
    assert eval_period(build(CNNConfig, {"eval_every": 4, "early_stopping": 3}), 80) == 4
    _, out, rows, _ = fit(split, early_stopping=2, epochs=12)
    assert all("val_balanced_accuracy" in m for _, m in rows)


def test_eval_cadence_is_keyed_only_where_it_changes_the_weights():
    """Cells recorded with eval_every=1 keep their keys (grids resume them); under early stopping it is a cell."""
    def key(**clf):
        return cell.config_key(cell.make_config(model="none", regime="balanced", size=5000, seed=0,
                                                profile="quick", overrides={"clf": clf}))

    assert key() == key(eval_every=1) == key(eval_every=7) == "b58001c7db0d5b81"  # the recorded none cell
    assert key(early_stopping=5) == key(early_stopping=5, eval_every=1) != key(early_stopping=5, eval_every=2)


def test_the_report_pairs_runs_from_before_auto_cadence_with_runs_after_it():
    import pandas as pd

    from synthboost import report as rep

    base = {"run_id": "old", "experiment": "e", "run_name": "n", "start_time": 0, "tags.model": "none",
            "tags.regime": "high", "tags.size": "1000", "tags.classifier": "cnn", "tags.seed": "0",
            "params.mix.ratio": "0.0", "params.clf.recipe": "fair", "params.clf.lr": "0.002",
            "metrics.test/accuracy": 0.8}
    runs = pd.DataFrame([{**base, "params.clf.eval_every": "1"}, {**base, "params.clf.eval_every": "0"},
                         {**base, "params.clf.eval_every": "2", "params.clf.early_stopping": "5"},
                         {**base, "params.clf.eval_every": "0", "params.clf.early_stopping": "5"},
                         {**base, "params.clf.eval_every": "1", "params.clf.early_stopping": "5"}])
    recipes = rep.tidy(runs)["recipe"].tolist()
    assert recipes[0] == recipes[1] and recipes[3] == recipes[4] and len(set(recipes)) == 3


def test_the_graph_step_runs_uncaptured_on_the_cpu_as_the_eager_fused_step(split, monkeypatch):
    """The work a CUDA graph captures (static batch indices, gradients written not added, the loss summed in
    place) trains bitwise as the eager step with fused AdamW does."""
    monkeypatch.setattr(CNNClassifier, "step_levers_on", ("cuda", "cpu"))
    values = {"augment": "shift_flip_erase", "class_weight": "balanced"}
    g_clf, g_out, g_rows, g_proba = fit(split, cuda_step="graph", **values)
    f_clf, f_out, f_rows, f_proba = fit(split, cuda_step="fused", **values)
    assert g_clf.execution == {"cuda_graphs": "false", "fused_optimizer": "true"}  # uncaptured: not a graph
    assert f_clf.execution == {"cuda_graphs": "false", "fused_optimizer": "true"}
    assert (g_proba == f_proba).all()
    assert [m["loss"] for _, m in g_rows] == [m["loss"] for _, m in f_rows]
    assert g_out["steps"] == f_out["steps"] == 6 * (len(split.train_y) // 32)


def test_likelihood_loop_means_are_the_float_sums_of_each_steps_losses():
    """Losses are summed on the device (no sync a step) in float64, as Python summed them: the same means."""
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
            self.steps: list[tuple[float, float]] = []

        def loss(self, x, y):
            logits = self.body(x)
            loss = torch.nn.functional.cross_entropy(logits, y)
            part = logits.pow(2).mean()
            self.steps.append((float(loss.detach()), float(part.detach())))
            return loss, {"sq": part.detach()}

    torch.manual_seed(0)
    net = Tiny()
    epochs = []
    train_likelihood(net, torch.randint(0, 256, (96, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (96,)),
                     epochs=2, batch_size=32, lr=1e-3, on_epoch=lambda e, m: epochs.append(m))
    for e, m in enumerate(epochs):
        steps = net.steps[3 * e:3 * e + 3]
        assert m["loss"] == sum(s[0] for s in steps) / 3 and m["sq"] == sum(s[1] for s in steps) / 3


def test_grid_workers_default_to_the_hosts_cores_on_a_cuda_host(tmp_path, monkeypatch):
    from synthboost.cli import app

    path = tmp_path / "g.yaml"
    path.write_text("experiment: workers\nprofile: smoke\nmodels: [none]\nregimes: [balanced]\nsizes: [300]\n"
                    "seeds: [0]\nclassifiers: [cnn]\n")
    args = ["grid", "--config", str(path), "--storage", str(tmp_path / "q.journal"), "--dry-run"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "with 1 worker(s)" in CliRunner().invoke(app, args).stdout
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(6)))
    assert "with 6 worker(s)" in CliRunner().invoke(app, args).stdout
    assert "with 2 worker(s)" in CliRunner().invoke(app, [*args, "--workers", "2"]).stdout


# ---------------------------------------------------------------- on a GPU (skipped elsewhere)
@cuda
@pytest.mark.parametrize("values", [{}, {"augment": "shift_flip", "class_weight": "balanced"},
                                    {"recipe": "seed", **classifiers.CNNConfig.recipes["seed"]},
                                    {"amp": "bf16"}, {"sampler": "class_balanced", "schedule": "cosine"}])
def test_on_cuda_the_step_is_one_captured_graph_and_trains_as_the_eager_step(split, values):
    g_clf, g_out, _, g_proba = fit(split, "cuda", epochs=20, **values)
    e_clf, e_out, _, e_proba = fit(split, "cuda", epochs=20, cuda_step="eager", **values)
    assert g_clf.execution["cuda_graphs"] == "true"
    assert e_clf.execution == {"cuda_graphs": "false", "fused_optimizer": "false"}
    assert g_out["steps"] == e_out["steps"]
    # the same training up to rounding: the same predictions for nearly every validation image
    assert (g_proba.argmax(1) == e_proba.argmax(1)).mean() > 0.9
    assert g_out["loss"] == pytest.approx(e_out["loss"], rel=0.1)


@cuda
def test_on_cuda_fused_is_the_eager_step_with_fused_adamw(split):
    clf, out, _, _ = fit(split, "cuda", cuda_step="fused")
    assert clf.execution == {"cuda_graphs": "false", "fused_optimizer": "true"}


@cuda
def test_on_cuda_the_generator_loops_still_stop_on_a_nan_loss_once_an_epoch(monkeypatch):
    """No sync a step there: a non-finite loss is caught at the end of its epoch, with the same message."""
    from synthboost.errors import GeneratorDiverged
    from synthboost.generators import adversarial

    images = torch.randint(0, 256, (128, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(128) % 10

    class Nan(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(784, 1)

        def loss(self, x, y):
            return self.lin(x.flatten(1)).mean() * float("nan"), {}

    with pytest.raises(GeneratorDiverged, match="loss became nan at epoch 0"):
        train_likelihood(Nan().cuda(), images, labels, epochs=2, batch_size=32, lr=1e-3)
    gen = build_gan()
    _, g_loss = adversarial.LOSSES[gen.adversarial_loss]
    monkeypatch.setitem(adversarial.LOSSES, gen.adversarial_loss,
                        (lambda real, fake: (real * float("nan")).mean(), g_loss))
    with pytest.raises(GeneratorDiverged, match="D loss became nan at epoch 0"):
        gen.fit(images, labels)


def build_gan():
    from synthboost import generators

    cls = generators.get("cgan")
    return cls(build(cls.Config, profile="smoke"), device="cuda")
