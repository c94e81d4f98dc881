"""Speed levers (bench/bound.py measures them): the ones on by default leave results bitwise unchanged; the ones
that change numbers are explicit config values, so a run records them and nothing changes unless asked."""

import pytest
import torch
from torch import nn

from synthboost.classifiers import CNNClassifier, CNNConfig
from synthboost.config import DataConfig, build, flatten
from synthboost.data import make_split
from synthboost.errors import UserError
from synthboost.training import native_bf16, optimizer_options, resolve_amp, train_likelihood


@pytest.fixture(scope="module")
def split():
    return make_split(DataConfig(regime="balanced", size=400), 0)


def fit_predict(split, **values):
    clf = CNNClassifier(build(CNNConfig, {"steps": 6, "batch_size": 32, **values}, prefix="clf"), seed=0)
    out = clf.fit(split.train_x, split.train_y)
    return out, clf.predict_proba(split.val_x)


def test_foreach_default_gives_bitwise_the_per_parameter_loops_classifier(split):
    """The new default optimizer implementation changes speed only: same losses, same predicted probabilities."""
    assert build(CNNConfig).optimizer_impl == "foreach"
    out_f, proba_f = fit_predict(split, optimizer_impl="foreach")
    out_l, proba_l = fit_predict(split, optimizer_impl="loop")
    assert (proba_f == proba_l).all()
    assert out_f["loss"] == pytest.approx(out_l["loss"], rel=1e-6)


def test_fused_optimizer_is_a_recorded_choice_that_may_round_differently(split):
    _, proba_fused = fit_predict(split, optimizer_impl="fused")
    _, proba_loop = fit_predict(split, optimizer_impl="loop")
    assert abs(proba_fused - proba_loop).max() < 0.05  # the same training, rounded differently


def test_likelihood_loop_updates_are_bitwise_those_of_the_per_parameter_loop():
    """train_likelihood now uses foreach Adam: a generator trained before and after the change is the same."""

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 784, 10))

        def loss(self, x, y):
            loss = nn.functional.cross_entropy(self.body(x), y)
            return loss, {}

    images = torch.randint(0, 256, (96, 1, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (96,))
    torch.manual_seed(0)
    net = Tiny()
    train_likelihood(net, images, labels, epochs=2, batch_size=32, lr=1e-3)
    # the same training with torch's per-parameter loop, by hand
    torch.manual_seed(0)
    ref = Tiny()
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3, **optimizer_options("loop"))
    from synthboost.data import to_float
    from synthboost.training import batches

    for _ in range(2):
        ref.train()
        for idx in batches(96, 32, device=torch.device("cpu")):
            loss, _ = ref.loss(to_float(images[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), ref.parameters()))


def test_speed_levers_are_config_values_logged_as_params():
    clf = build(CNNConfig, profile="quick", prefix="clf")
    assert (clf.channels_last, clf.compile, clf.amp, clf.optimizer_impl) == (True, False, "off", "foreach")
    flat = flatten({"clf": vars(clf)})
    assert {"clf.channels_last", "clf.compile", "clf.amp", "clf.optimizer_impl"} <= set(flat)


@pytest.mark.parametrize("values", [{"amp": "fp16"}, {"optimizer_impl": "apex"}, {"compile": "maybe"}])
def test_bad_lever_values_are_refused(values):
    with pytest.raises(UserError):
        build(CNNConfig, values, prefix="clf")


def test_amp_auto_picks_bf16_only_where_the_cpu_has_it():
    cpu = torch.device("cpu")
    assert resolve_amp("off", cpu) is None
    assert resolve_amp("bf16", cpu) is torch.bfloat16
    assert resolve_amp("auto", cpu) is (torch.bfloat16 if native_bf16(cpu) else None)


def test_bf16_classifier_trains_and_predicts(split):
    out, proba = fit_predict(split, amp="bf16")
    assert out["steps"] == 6 and torch.isfinite(torch.tensor(out["loss"]))
    assert proba.shape == (len(split.val_y), 10)


def test_channels_last_is_a_switch(split):
    on = CNNClassifier(build(CNNConfig, {"channels_last": True}, prefix="clf"))
    off = CNNClassifier(build(CNNConfig, {"channels_last": False}, prefix="clf"))
    # body[3] is the second conv (w -> w channels); a 1-channel conv's weight looks the same in both layouts
    assert on.net.body[3].weight.is_contiguous(memory_format=torch.channels_last)
    assert not off.net.body[3].weight.is_contiguous(memory_format=torch.channels_last)


def test_a_run_records_the_precision_its_amp_setting_resolved_to(tracker):
    """`auto` means bf16 on a CPU with native bf16 and fp32 elsewhere: the run says which (clf.precision, part of
    its recipe), and a diffusion run tags what its sampling (and, when it trains, its training) computed in."""
    from synthboost import cell, pipeline

    cpu = torch.device("cpu")
    want = "bf16" if native_bf16(cpu) else "fp32"
    cfg = cell.make_config(model="ddpm", regime="balanced", size=300, seed=0, profile="smoke",
                           overrides={"clf": {"amp": "auto", "steps": 4}, "gen": {"sampling_amp": "auto"}})
    result = pipeline.run_experiment(cfg, tracker=tracker, experiment="test-precision", progress=False,
                                     use_cache=False)
    run = tracker.client.get_run(result.run_id).data
    assert run.params["clf.amp"] == "auto" and run.params["clf.precision"] == want
    assert run.tags["gen.sampling_precision"] == want  # auto sampling: bf16 where the CPU computes it
    assert run.tags["gen.training_precision"] == "fp32"  # auto training: autocast on CUDA only
    plain = cell.make_config(model="none", regime="balanced", size=300, seed=0, profile="smoke",
                             overrides={"clf": {"amp": "bf16", "steps": 4}})
    run = tracker.client.get_run(pipeline.run_experiment(plain, tracker=tracker, experiment="test-precision",
                                                         progress=False).run_id).data
    assert run.params["clf.precision"] == "bf16" and "gen.sampling_precision" not in run.tags
