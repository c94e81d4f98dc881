"""The GAN families (registry kind ``gan``) and their shared adversarial loop, on a small real Fashion-MNIST split."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from synthboost import generators
from synthboost.config import build
from synthboost.errors import GeneratorDiverged, UserError
from synthboost.generators import adversarial
from synthboost.generators.adversarial import AdversarialGenerator
from synthboost.generators.cgan import CGANGenerator

FAMILY = generators.of_kind("gan")  # `split` and `trained` (each family fitted once): tests/conftest.py
TRAINED = {"epochs": 2}  # what `trained` fits: two epochs, so that the EMA has moved


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Smoke-sized convs gain nothing from a second thread, and on a shared 2-core box its spin-waits made this
    file ~10× slower (95 s against 8 s measured); restored for the other modules."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def smoke(name: str, **values) -> AdversarialGenerator:
    cls = generators.get(name)
    torch.manual_seed(0)
    return cls(build(cls.Config, values, profile="smoke", prefix="gen"))


# ---------------------------------------------------------------- registry and configs
@pytest.mark.parametrize("name", FAMILY)
def test_profiles_train_the_adversarial_loop(name):  # registry, profiles, tunables: tests/test_registry.py
    cls = generators.get(name)
    assert issubclass(cls, AdversarialGenerator)
    for profile in cls.Config.profiles:
        cfg = build(cls.Config, profile=profile)
        assert cfg.epochs >= 1 and cfg.n_critic >= 1 and cfg.lr_g > 0 and cfg.lr_d > 0


@pytest.mark.parametrize("name", FAMILY)
def test_quick_gives_small_data_as_many_g_steps_as_balanced_5000(name):
    cfg = build(generators.get(name).Config, profile="quick")
    g_steps = {n: adversarial.epochs_for(cfg, n) * (n // cfg.batch_size) // cfg.n_critic for n in (850, 4250)}
    assert adversarial.epochs_for(cfg, 4250) == cfg.epochs  # the size quick was sized on: unchanged
    assert g_steps[850] >= cfg.min_g_steps and g_steps[850] >= 0.95 * g_steps[4250]


@pytest.mark.parametrize("name", FAMILY)
@pytest.mark.parametrize("values", [
    {"lr_g": -1e-4}, {"lr_d": 0.0}, {"n_critic": 0}, {"truncation": 0.0}, {"truncation": -0.5},
    {"ema_decay": 1.0}, {"batch_size": 0}, {"n_critics": 2},
])
def test_bad_values_are_user_errors(name, values):
    with pytest.raises(UserError, match=f"gen.{next(iter(values))}"):
        build(generators.get(name).Config, values, prefix="gen")


# ---------------------------------------------------------------- fit, sample, checkpoint
@pytest.mark.parametrize("name", FAMILY)
def test_fit_returns_the_last_epochs_losses_and_diversity(name, trained):
    assert set(trained.losses(name, **TRAINED)) == {"d_loss", "g_loss", "d_real", "d_fake", "diversity"}


@pytest.mark.parametrize("name", FAMILY)
def test_sample_shape_range_and_labels(name, trained):
    gen = trained(name, **TRAINED)
    out = gen.sample(torch.arange(10).repeat(3))
    assert out.shape == (30, 1, 28, 28) and out.dtype == torch.float32
    assert out.device.type == gen.device.type
    assert 0.0 <= out.min() and out.max() <= 1.0
    z, y = gen.noise(20), torch.arange(10).repeat(2)
    full = gen.generate(z, y)
    # each image depends on its own (z, label) only, not on the rest of the batch
    torch.testing.assert_close(gen.generate(z[:7], y[:7]), full[:7])
    torch.testing.assert_close(gen.generate(z.flip(0), y.flip(0)), full.flip(0))
    # ... and the label is used
    assert (gen.generate(z, (y + 1) % 10) - full).abs().max() > 1e-3


@pytest.mark.parametrize("name", FAMILY)
def test_checkpoint_round_trip(name, trained):
    gen = trained(name, **TRAINED)
    buf = io.BytesIO()
    torch.save(gen.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=False)
    assert state["family"] == name and state["config"]["epochs"] == 2
    prefixes = {k.split(".")[0] for k in state["weights"]}
    assert prefixes == {"g", "ema"}  # G and its EMA; no discriminator
    loaded = generators.load(state)  # no discriminator, no training data
    labels = torch.arange(10).repeat(4)
    torch.manual_seed(7)
    a = gen.sample(labels)
    torch.manual_seed(7)
    b = loaded.sample(labels)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", FAMILY)
def test_ema_differs_from_raw_and_is_what_samples(name, trained):
    gen = trained(name, **TRAINED)
    raw = dict(gen.net.g.named_parameters())
    ema = dict(gen.net.ema.module.named_parameters())
    assert raw.keys() == ema.keys()
    moved = [k for k in raw if not torch.allclose(raw[k], ema[k])]
    assert len(moved) > len(raw) // 2
    z, y = gen.noise(16), torch.arange(16) % 10
    out = gen.generate(z, y)
    with torch.no_grad():
        from_ema = (gen.net.ema.module.eval()(z, y).clamp(-1, 1) + 1) / 2
        from_raw = (gen.net.g.eval()(z, y).clamp(-1, 1) + 1) / 2
    torch.testing.assert_close(out, from_ema)
    assert (out - from_raw).abs().max() > 1e-4


def test_truncation_bounds_the_noise():
    gen = smoke("biggan", truncation=0.5)
    z = gen.noise(2000)
    assert z.abs().max() <= 0.5 and z.std() > 0.2
    assert gen.sample(torch.arange(10)).shape == (10, 1, 28, 28)


def test_n_critic_d_steps_per_g_step(split):
    gen = smoke("cgan", n_critic=2, epochs=2)
    gen.fit(split.train_x, split.train_y)
    d_steps = 2 * (len(split.train_y) // gen.config.batch_size)
    assert int(gen.net.ema.n_averaged) == d_steps // 2  # one EMA update per G step


# ---------------------------------------------------------------- BigGAN's architecture
def test_biggan_spectral_norm_on_every_conv_and_linear():
    gen = smoke("biggan")
    for net, label in ((gen.build_discriminator(), "D"), (gen.net.g, "G")):
        layers = [(n, m) for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert len(layers) > 10
        for n, m in layers:
            assert parametrize.is_parametrized(m, "weight"), f"{label}.{n} has no spectral norm"
            assert type(m.parametrizations.weight[0]).__name__ == "_SpectralNorm", f"{label}.{n}"
    embeds = [m for m in gen.build_discriminator().modules() if isinstance(m, nn.Embedding)]
    assert embeds and all(parametrize.is_parametrized(m, "weight") for m in embeds)  # the projection embedding


def test_biggan_attention_at_the_middle_resolution():
    from synthboost.generators.biggan import SelfAttention

    gen = smoke("biggan")
    D = gen.build_discriminator()
    seen = []
    for name, net in (("G", gen.net.g), ("D", D)):
        for m in net.modules():
            if isinstance(m, SelfAttention):
                m.register_forward_hook(lambda m, i, o, name=name: seen.append((name, tuple(o.shape[-2:]))))
    y = torch.arange(4)
    D(gen.net.g(torch.randn(4, gen.config.z_dim), y), y)
    assert seen == [("G", (14, 14)), ("D", (14, 14))]  # one block in each network, at 14×14


# ---------------------------------------------------------------- divergence and collapse
@pytest.mark.parametrize("name", FAMILY)
def test_nan_loss_raises_generator_diverged(name, split, monkeypatch):
    gen = smoke(name)
    _, g_loss = adversarial.LOSSES[gen.adversarial_loss]
    monkeypatch.setitem(adversarial.LOSSES, gen.adversarial_loss,
                        (lambda real, fake: (real * float("nan")).mean(), g_loss))
    with pytest.raises(GeneratorDiverged, match="D loss became nan"):
        gen.fit(split.train_x, split.train_y)


def test_collapse_raises_generator_diverged(split, monkeypatch):
    forward = CGANGenerator.forward  # a G that ignores its noise: every sample of a class is the same image
    monkeypatch.setattr(CGANGenerator, "forward", lambda self, z, y: forward(self, torch.zeros_like(z), y))
    gen = smoke("cgan")
    logged = []
    with pytest.raises(GeneratorDiverged, match="mode collapse"):
        adversarial.train_adversarial(
            gen.net.g, gen.build_discriminator(), split.train_x, split.train_y, epochs=5, batch_size=64,
            lr_g=2e-4, lr_d=2e-4, z_dim=gen.config.z_dim, collapse_patience=2, collapse_warmup=0,
            on_epoch=lambda e, m: logged.append(m))
    assert len(logged) == 2 and all(m["diversity"] < 1e-3 for m in logged)  # the failing curve was logged
