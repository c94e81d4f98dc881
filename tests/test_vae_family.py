"""The autoencoder families (registry kind ``vae``) through the registry, on a small real Fashion-MNIST split."""

from __future__ import annotations

import inspect
import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from synthboost import generators
from synthboost.config import build
from synthboost.data import to_float, unlabeled_pool
from synthboost.errors import UserError
from synthboost.generators.cvae import CVAE
from synthboost.generators.dvae import NOISES, DVAEConfig, DVAENet, corrupt
from synthboost.generators.ssvae import UNLABELED, SSVAEConfig
from synthboost.generators.vae import VAENet
from synthboost.generators.vqvae import EMAQuantizer, VQVAEConfig

FAMILY = generators.of_kind("vae")  # `split` and `trained` (each family fitted once): tests/conftest.py
# z from the prior, decoded with the label: row i depends on label i only
CONDITIONAL = [name for name in FAMILY if issubclass(generators.get(name), CVAE)]
EXEMPLAR = [name for name in FAMILY if generators.get(name).exemplar_sampling]


# ---------------------------------------------------------------- registry and configs
@pytest.mark.parametrize("name", FAMILY)
def test_profiles_train_the_likelihood_loop(name):  # registry, profiles, tunables: tests/test_registry.py
    cls = generators.get(name)
    for profile in cls.Config.profiles:
        cfg = build(cls.Config, profile=profile)
        assert cfg.epochs >= 1 and cfg.batch_size >= 1 and cfg.lr > 0


# ---------------------------------------------------------------- fit, sample, checkpoint
@pytest.mark.parametrize("name", FAMILY)
def test_sample_shape_range_dtype(name, trained):
    gen = trained(name)
    out = gen.sample(torch.arange(10).repeat(3))
    assert out.shape == (30, 1, 28, 28)
    assert out.device.type == gen.device.type
    assert out.dtype in (torch.float32, torch.uint8)
    if out.dtype == torch.float32:
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert gen.sample_batched(torch.arange(10), batch_size=4).shape == (10, 1, 28, 28)


@pytest.mark.parametrize("name", FAMILY)
def test_labels_honoured(name, trained):
    gen = trained(name)
    labels = torch.tensor([0] * 7 + [3] * 2 + [9])
    assert gen.sample(labels).shape[0] == len(labels)
    # same seed, other labels -> other images: the label reaches the sampler
    torch.manual_seed(1)
    a = gen.sample(torch.zeros(10, dtype=torch.long))
    torch.manual_seed(1)
    b = gen.sample(torch.full((10,), 3))
    assert not torch.equal(a, b)


@pytest.mark.parametrize("name", CONDITIONAL)
def test_conditional_rows_follow_their_own_label(name, trained):
    gen = trained(name)
    mixed = torch.tensor([0] * 5 + [3] * 5)
    torch.manual_seed(2)
    out = gen.sample(mixed)
    for k in (0, 3):
        torch.manual_seed(2)
        alone = gen.sample(torch.full((10,), k))
        rows = mixed == k
        torch.testing.assert_close(out[rows], alone[rows])


@pytest.mark.parametrize("name", EXEMPLAR)
def test_exemplar_bank_carries_training_labels(name, trained, split):
    gen = trained(name)
    assert torch.equal(gen.bank_labels.cpu(), split.train_y)
    assert gen.bank_mu.shape == (len(split.train_y), gen.config.latent_dim)


@pytest.mark.parametrize("name", FAMILY)
def test_checkpoint_round_trip(name, trained):
    gen = trained(name)
    buf = io.BytesIO()
    torch.save(gen.state_dict(), buf)
    buf.seek(0)
    again = generators.load(torch.load(buf))
    assert type(again) is type(gen) and again.config == gen.config
    assert again.extra_metrics == gen.extra_metrics
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 4, 4])
    torch.manual_seed(3)
    a = gen.sample(labels)
    torch.manual_seed(3)
    b = again.sample(labels)
    assert torch.equal(a, b)


# ---------------------------------------------------------------- dvae corruptions
def test_dvae_offers_the_six_noises():
    assert set(NOISES) == {"gaussian", "salt_pepper", "rotation", "brightness", "contrast", "blur"}
    for noise in NOISES:
        assert build(DVAEConfig, {"noise": noise}).noise == noise


@pytest.mark.parametrize("noise", NOISES)
def test_corruption_changes_batch_keeps_range_and_is_seeded(noise, split):
    x = to_float(split.train_x[:32])
    before = x.clone()
    torch.manual_seed(0)
    a = corrupt(x, noise=noise, level=0.5)
    torch.manual_seed(0)
    b = corrupt(x, noise=noise, level=0.5)
    assert torch.equal(x, before), "corrupt must not modify its input"
    assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
    assert torch.equal(a, b)
    assert float((a - x).abs().mean()) > 1e-3
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


@pytest.mark.parametrize("noise", NOISES)
def test_dvae_loss_reconstructs_the_clean_image(noise, split, monkeypatch):
    net = DVAENet(build(DVAEConfig, {"noise": noise}, profile="smoke"))
    x, y = to_float(split.train_x[:8]), split.train_y[:8]
    seen = {}
    original = VAENet.neg_elbo

    def spy(self, inp, cond=None, *, target=None):
        seen["input"], seen["target"] = inp, target
        return original(self, inp, cond, target=target)

    monkeypatch.setattr(VAENet, "neg_elbo", spy)
    loss, parts = net.loss(x, y)
    assert torch.isfinite(loss)
    assert torch.equal(seen["target"], x) and not torch.equal(seen["input"], x)


# ---------------------------------------------------------------- ssvae: the unlabeled pool stays unlabeled
def test_ssvae_api_takes_images_only_for_the_pool(split):
    cls = generators.get("ssvae")
    gen = cls(build(SSVAEConfig, profile="smoke"))
    inputs = gen.fit_inputs(split, seed=0, models=None)
    assert set(inputs.kwargs) == {"unlabeled", "val"} and not inputs.tags
    pool = unlabeled_pool(split, gen.config.unlabeled_size, 0)
    assert torch.equal(inputs.kwargs["unlabeled"], pool)  # images only: the pool's labels never leave data.py
    params = inspect.signature(cls.fit).parameters
    assert set(params) == {"self", "images", "labels", "unlabeled", "val", "progress", "on_epoch", "snapshots"}
    assert all(params[k].kind is inspect.Parameter.KEYWORD_ONLY for k in ("unlabeled", "val", "progress", "on_epoch"))


def test_ssvae_rejects_a_labeled_or_mismatched_pool(split):
    cls = generators.get("ssvae")
    gen = cls(build(SSVAEConfig, {"unlabeled_size": 20}, profile="smoke"))
    pool = unlabeled_pool(split, 20, 0)
    with pytest.raises(TypeError, match="images only"):
        gen.fit(split.train_x, split.train_y, unlabeled=(pool, torch.zeros(20, dtype=torch.long)))
    with pytest.raises(TypeError, match="images only"):
        gen.fit(split.train_x, split.train_y, unlabeled=torch.zeros(20, dtype=torch.long))
    with pytest.raises(ValueError, match="unlabeled_size"):
        gen.fit(split.train_x, split.train_y, unlabeled=pool[:10])
    with pytest.raises(ValueError, match="unlabeled="):
        gen.fit(split.train_x, split.train_y)


def test_ssvae_never_sees_a_label_of_its_unlabeled_pool(split):
    cls = generators.get("ssvae")
    gen = cls(build(SSVAEConfig, {"unlabeled_size": 60}, profile="smoke"))
    pool = unlabeled_pool(split, 60, 0)

    def key(img) -> bytes:
        return (img.reshape(28, 28).float() * (255 if img.is_floating_point() else 1)).round().byte().numpy().tobytes()

    pool_keys = {key(img) for img in pool}
    true_label = {key(img): int(k) for img, k in zip(split.train_x, split.train_y)}
    assert not pool_keys & set(true_label)

    seen = []
    loss = gen.net.loss

    def spy(x, y):
        seen.extend(zip(x.detach().cpu(), y.cpu().tolist()))
        return loss(x, y)

    gen.net.loss = spy  # the shared loop calls net.loss(x, y) for every batch
    gen.fit(split.train_x, split.train_y, unlabeled=pool, val=(split.val_x, split.val_y))
    from_pool = [y for img, y in seen if key(img) in pool_keys]
    labeled = [(key(img), y) for img, y in seen if y != UNLABELED]
    assert from_pool and all(y == UNLABELED for y in from_pool)
    assert labeled and all(true_label[k] == y for k, y in labeled)
    assert 0.0 <= gen.extra_metrics["ssvae_head_accuracy"] <= 1.0


# ---------------------------------------------------------------- vqvae internals
def test_vqvae_logs_codebook_perplexity(trained):
    gen = trained("vqvae")
    perplexity = gen.extra_metrics["codebook_perplexity"]
    assert perplexity >= 1.0 and perplexity <= gen.config.codebook_size


def test_vqvae_dead_code_restarts_at_an_encoder_output():
    q = EMAQuantizer(size=2, dim=2, decay=0.99, dead_threshold=1.0)
    q.codebook.copy_(torch.tensor([[0.0, 0.0], [100.0, 100.0]]))
    q.code_sum.copy_(q.codebook)
    q.usage.fill_(1.0)
    z = torch.randn(4, 2, 3, 3) * 0.1  # every vector lands on code 0
    q.train()
    _, commit = q(z)
    assert float(q.codebook[1].norm()) < 1.0  # code 1 got nothing, fell below the threshold, restarted
    flat = z.permute(0, 2, 3, 1).reshape(-1, 2)
    assert bool((flat == q.codebook[1]).all(1).any())
    assert torch.isfinite(commit)


def test_vqvae_cached_sampling_matches_a_full_pass(trained):
    prior = trained("vqvae").net.prior.eval()
    y = torch.arange(10)
    torch.manual_seed(4)
    codes = prior.generate(y, temperature=1.0).flatten(1)
    full = prior.logits(codes[:, :-1], y).log_softmax(-1)
    caches = [[] for _ in prior.blocks]
    h, steps = prior.class_emb(y)[:, None] + prior.pos[:, :1], []
    with torch.no_grad():
        for i in range(prior.length):
            for block, cache in zip(prior.blocks, caches):
                h = block(h, cache)
            steps.append(prior.head(h[:, -1]).log_softmax(-1))
            h = prior.code_emb(codes[:, i:i + 1]) + prior.pos[:, i + 1:i + 2]
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- bad input -> UserError
@pytest.mark.parametrize("cls, values, key", [
    (DVAEConfig, {"noise": "speckle"}, "gen.noise"),
    (DVAEConfig, {"noise_level": 0.0}, "gen.noise_level"),
    (DVAEConfig, {"noise_level": 1.5}, "gen.noise_level"),
    (DVAEConfig, {"noise_level": -0.1}, "gen.noise_level"),
    (VQVAEConfig, {"codebook_size": 1}, "gen.codebook_size"),
    (SSVAEConfig, {"unlabeled_size": -1}, "gen.unlabeled_size"),
    (SSVAEConfig, {"unlabeled_size": 60000}, "gen.unlabeled_size"),
])
def test_bad_config_is_a_user_error(cls, values, key):
    with pytest.raises(UserError, match=key):
        build(cls, values, prefix="gen")


def test_unknown_noise_in_corrupt_is_rejected():
    with pytest.raises(ValueError, match="speckle"):
        corrupt(torch.zeros(1, 1, 28, 28), noise="speckle", level=0.1)


def test_unlabeled_size_beyond_the_pool_is_a_user_error(split):
    left = 60000 - len(split.train_index) - len(split.val_index)
    assert len(unlabeled_pool(split, 10, 0)) == 10
    with pytest.raises(UserError, match="unlabeled_size"):
        unlabeled_pool(split, left + 1, 0)


# ---------------------------------------------------------------- the benchmark runs
def test_bench_epoch_cap_is_not_undone_by_step_floors():
    from benches import load_bench

    bench = load_bench("generators")
    ddpm = bench.capped_config(generators.get("ddpm"), "quick", 2)
    assert (ddpm.epochs, ddpm.min_steps) == (2, 0)  # quick's 790-step floor would train 12 epochs instead
    cgan = bench.capped_config(generators.get("cgan"), "quick", 2)
    assert (cgan.epochs, cgan.min_g_steps) == (2, 0)
    assert bench.capped_config(generators.get("ddpm"), "quick", None).min_steps == 790


@pytest.mark.slow
def test_bench_generators_prints_one_row_per_family():
    bench = Path(__file__).resolve().parents[1] / "bench" / "generators.py"
    out = subprocess.run([sys.executable, str(bench), "--profile", "smoke", "--families", "cvae,vqvae,ddpm",
                          "--size", "300", "--samples", "20", "--steps", "2,4", "--step-samples", "10"],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    rows = {line.split("|")[1].strip(): line for line in out.stdout.splitlines()
            if line.startswith(("| cvae", "| vqvae", "| ddpm"))}
    assert set(rows) == {"cvae", "vqvae", "ddpm"} and "failed" not in out.stdout
    # diffusion gets a throughput per step count and fp32 vs auto precision with their ratio; the VAE doesn't
    ddpm_cells = [c.strip() for c in rows["ddpm"].split("|")[7:-2]]
    assert len(ddpm_cells) == 5 and all(float(c) > 0 for c in ddpm_cells)
    assert float(ddpm_cells[-1]) == pytest.approx(float(ddpm_cells[-2]) / float(ddpm_cells[-3]), rel=0.02)
    assert [c.strip() for c in rows["cvae"].split("|")[7:-2]] == [""] * 5
