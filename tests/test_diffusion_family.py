"""The diffusion families (registry kind ``diffusion``) and the project's CLIP, smoke configs on a small real split."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from synthboost import generators
from synthboost.clip_model import CLIPConfig, caption_vocab, clip_key, load_clip, pretrained_state, text_embeddings
from synthboost.config import build, replace
from synthboost.data import NUM_CLASSES
from synthboost.errors import UserError
from synthboost.generators import base
from synthboost.generators.base import pick_amp, pick_sampling_amp
from synthboost.generators.ddpm import NULL_LABEL, cfg_combine
from synthboost.training import train_likelihood

FAMILY = generators.of_kind("diffusion")  # `split`, `smoke_clip` and `trained` (fitted once): tests/conftest.py


# ---------------------------------------------------------------- registry and configs
@pytest.mark.parametrize("name", FAMILY)
def test_diffusion_profiles_and_sampler_settings(name):  # registry, profiles, tunables: test_registry.py
    cls = generators.get(name)
    quick = build(cls.Config, profile="quick")
    assert (quick.sampler, quick.sampling_steps) == ("dpm", 20)
    assert build(cls.Config, profile="paper").num_train_timesteps == 1000
    with pytest.raises(UserError, match="gen.sampling_step"):
        build(cls.Config, {"sampling_step": 10}, prefix="gen")
    with pytest.raises(UserError, match="exceeds num_train_timesteps"):
        build(cls.Config, {"sampling_steps": 2000}, prefix="gen")


def test_pick_amp():
    assert pick_amp(torch.device("cpu")) is None  # auto: fp32 on the CPU
    assert pick_amp(torch.device("cpu"), "bf16") is torch.bfloat16
    assert pick_amp(torch.device("cuda"), "off") is None


def test_sampling_precision_auto_follows_the_hardware(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(base, "cpu_has_bf16", lambda: True)
    assert pick_sampling_amp(cpu) is torch.bfloat16
    assert pick_sampling_amp(cpu, "off") is None
    monkeypatch.setattr(base, "cpu_has_bf16", lambda: False)  # emulated bf16 is slower than fp32
    assert pick_sampling_amp(cpu) is None
    assert pick_sampling_amp(cuda, train_mode="fp16") is torch.float16  # auto on CUDA: as training
    assert pick_sampling_amp(cuda, train_mode="off") is None


@pytest.mark.parametrize("name", FAMILY)
def test_bf16_sampling_draws_the_fp32_images(name, trained):
    gen = trained(name)
    labels = torch.arange(NUM_CLASSES).repeat(2)
    draws = {}
    for amp in ("off", "bf16"):
        gen.config = replace(gen.config, {"sampling_amp": amp})
        torch.manual_seed(5)
        draws[amp] = gen.sample(labels)
    gen.config = replace(gen.config, {"sampling_amp": "auto"})
    diff = (draws["off"] - draws["bf16"]).abs()
    assert not torch.equal(draws["off"], draws["bf16"])  # bf16 did run
    assert float(diff.mean()) < 0.02, float(diff.mean())


def test_likelihood_loop_runs_under_bf16_autocast():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(784, 1)

        def loss(self, x, y):
            out = self.lin(x.flatten(1))
            assert out.dtype == torch.bfloat16  # the loop put the loss under autocast
            return (out.float() - y.float()[:, None]).pow(2).mean(), {}

    x = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    losses = train_likelihood(Tiny(), x, torch.randint(0, 10, (64,)), epochs=1, batch_size=32, lr=1e-3,
                              amp=torch.bfloat16)
    assert torch.isfinite(torch.tensor(losses["loss"]))


# ---------------------------------------------------------------- fit and sample
@pytest.mark.parametrize("name", FAMILY)
def test_sample_shape_range_and_labels(name, trained):
    gen = trained(name)
    labels = torch.tensor([0, 9, 3, 3, 7, 1])
    torch.manual_seed(1)
    a = gen.sample(labels)
    assert a.shape == (6, 1, 28, 28) and a.dtype == torch.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    # row i depends on label i only: change one label, only that row changes
    other = labels.clone()
    other[2] = 5
    torch.manual_seed(1)
    b = gen.sample(other)
    rows = torch.ones(6, dtype=torch.bool)
    rows[2] = False
    assert torch.allclose(a[rows], b[rows], atol=1e-5)
    assert not torch.allclose(a[2], b[2], atol=1e-3)
    assert gen.sample_batched(labels, batch_size=4).shape == (6, 1, 28, 28)
    assert gen.sample(torch.zeros(0, dtype=torch.long)).shape == (0, 1, 28, 28)


@pytest.mark.parametrize("name", FAMILY)
def test_checkpoint_round_trip_samples_identically(name, trained):
    gen = trained(name)
    buf = io.BytesIO()
    torch.save(gen.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)  # as the tracking layer loads it
    loaded = generators.load(state, device="cpu")
    labels = torch.arange(NUM_CLASSES)
    torch.manual_seed(3)
    a = gen.sample(labels)
    torch.manual_seed(3)
    b = loaded.sample(labels)
    assert torch.equal(a, b)


@pytest.mark.parametrize("sampler,steps", [("ddpm", 6), ("ddim", 4)])
def test_other_samplers(trained, sampler, steps):
    x = trained("ddpm").generate(torch.arange(4), sampler=sampler, steps=steps)
    assert x.shape == (4, 1, 28, 28) and 0.0 <= float(x.min()) <= float(x.max()) <= 1.0


# ---------------------------------------------------------------- classifier-free guidance
@pytest.mark.parametrize("name", FAMILY)
def test_guidance_combine_at_one_and_zero(name, trained):
    net = trained(name).net
    torch.manual_seed(0)
    x_t = torch.randn(4, 1, 28, 28)
    labels = torch.tensor([1, 4, 7, 9])
    with torch.no_grad():
        cond, null = net.condition(labels), net.condition(torch.full_like(labels, NULL_LABEL))
        c, u = net.predict(x_t, 500, cond), net.predict(x_t, 500, null)
        both = net.predict(torch.cat([x_t, x_t]), 500, {k: torch.cat([cond[k], null[k]]) for k in cond})
        assert torch.allclose(both, torch.cat([c, u]), atol=1e-5)  # the batched pass is the two passes
        assert torch.equal(cfg_combine(c, u, 1.0), c)  # scale 1 = the conditional prediction
        assert torch.equal(cfg_combine(c, u, 0.0), u)  # scale 0 = the unconditional one
        assert torch.equal(net.guided(x_t, 500, cond, null, scale=1.0), c)
        assert torch.equal(net.guided(x_t, 500, cond, null, scale=0.0), u)
        assert torch.allclose(net.guided(x_t, 500, cond, null, scale=3.0), u + 3.0 * (c - u), atol=1e-5)


@pytest.mark.parametrize("name", FAMILY)
@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_guidance_zero_and_one_reproduce_unguided_sampling(name, scale, trained, monkeypatch):
    """Sampling at s = 1 (one conditional pass) equals the full two-pass CFG formula at s = 1; likewise s = 0."""
    gen = trained(name)
    labels = torch.tensor([2, 5, 8])
    torch.manual_seed(4)
    fast = gen.generate(labels, guidance_scale=scale)

    def two_pass(x_t, t, cond, null, *, scale):
        return cfg_combine(gen.net.predict(x_t, t, cond), gen.net.predict(x_t, t, null), scale)

    monkeypatch.setattr(gen.net, "guided", two_pass)
    torch.manual_seed(4)
    full = gen.generate(labels, guidance_scale=scale)
    assert torch.allclose(fast, full, atol=1e-5)


def test_guidance_zero_ignores_labels(trained):
    gen = trained("ddpm")
    torch.manual_seed(5)
    a = gen.generate(torch.tensor([0, 1, 2]), guidance_scale=0.0)
    torch.manual_seed(5)
    b = gen.generate(torch.tensor([9, 8, 7]), guidance_scale=0.0)
    assert torch.equal(a, b)


# ---------------------------------------------------------------- the project CLIP
def test_smoke_clip_zero_shot_above_chance(smoke_clip):
    state, metrics, params = smoke_clip
    assert metrics["test/zero_shot_accuracy"] > 0.1 + 0.05  # chance is 10% on the balanced test set
    assert params["clip.profile"] == "smoke" and params["clip.train_size"] == 3000
    clip = load_clip(state)
    assert clip.model.token_embedding.num_embeddings == len(caption_vocab()) + 2  # the compact vocabulary
    emb = text_embeddings(clip, torch.tensor([0, 0, 5]))
    assert emb.shape == (3, build(CLIPConfig, profile="smoke").embed_dim)
    assert torch.allclose(emb[0], emb[1]) and torch.allclose(emb.norm(dim=-1), torch.ones(3))


def test_clip_key_depends_on_profile():
    assert clip_key("smoke") == clip_key("smoke") != clip_key("quick")


def test_clip_generator_carries_its_clip(trained, own_smoke_clip):
    gen = trained("clip")
    loaded = generators.load(gen.state_dict(), device="cpu")
    ref = text_embeddings(load_clip(own_smoke_clip[0]), torch.arange(3))
    assert torch.allclose(text_embeddings(loaded.clip(), torch.arange(3)), ref)
    assert gen.extra_metrics["clip_zero_shot_accuracy"] == own_smoke_clip[1]["test/zero_shot_accuracy"]


# ---------------------------------------------------------------- pretrained CLIPs: local cache only
@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    for var in ("HOME", "XDG_CACHE_HOME", "HF_HOME", "HF_HUB_CACHE"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))


def test_missing_pretrained_clip_is_a_user_error(split, empty_caches):
    cls = generators.get("clip")
    gen = cls(build(cls.Config, {"clip_pretrained": "ViT-B-32/openai"}, profile="smoke"), device="cpu")
    with pytest.raises(UserError, match="not in the local cache"):
        gen.fit(split.train_x[:64], split.train_y[:64])
    with pytest.raises(UserError, match="not in the local cache"):
        load_clip(pretrained_state("ViT-B-32/openai"))


def test_malformed_or_unknown_pretrained_names(empty_caches):
    cls = generators.get("clip")
    with pytest.raises(UserError, match="gen.clip_pretrained"):
        build(cls.Config, {"clip_pretrained": "ViT-B-32"}, prefix="gen")
    with pytest.raises(UserError, match="unknown pretrained tag"):
        load_clip(pretrained_state("ViT-B-32/no-such-tag"))
    with pytest.raises(UserError, match="unknown open_clip model"):
        load_clip(pretrained_state("No-Such-Net/openai"))


def test_clip_train_command_logs_the_clip_once_and_the_clip_family_reuses_it(tracker):
    """`synthboost clip train --profile smoke`: a run of its own with the zero-shot accuracy (above chance);
    a second call and a `clip` run reuse that run instead of training again."""
    from typer.testing import CliRunner

    from synthboost import cell, pipeline
    from synthboost.cli import app

    runner = CliRunner()
    first = runner.invoke(app, ["clip", "train", "--profile", "smoke"])
    assert first.exit_code == 0, first.output
    run_id = first.stdout.split(" in run ")[1].split()[0]
    info = tracker.run_info(run_id)
    assert info["status"] == "FINISHED" and info["tags"]["aux_kind"] == "clip"
    assert info["metrics"]["test/zero_shot_accuracy"] > 0.2  # chance is 0.1
    again = runner.invoke(app, ["clip", "train", "--profile", "smoke"])
    assert again.exit_code == 0 and run_id in again.stdout

    cfg = cell.make_config(model="clip", regime="balanced", size=300, profile="smoke",
                           overrides={"gen": {"clip_data": "full"}})  # the full CLIP is opt-in
    result = pipeline.run_experiment(cfg, tracker=tracker, experiment="clip-reuse", progress=False, use_cache=False)
    tags = tracker.run_info(result.run_id)["tags"]
    assert tags["gen.clip_run_id"] == run_id
    assert tags["uses_external_data"] == "true" and "3000 labelled" in tags["external_data"]

    bad = runner.invoke(app, ["clip", "train", "--profile", "huge"])
    assert bad.exit_code == 2 and "unknown profile 'huge'" in bad.stderr


@pytest.mark.parametrize("name", FAMILY)
def test_quick_gives_small_data_as_many_steps_as_balanced_5000(name):
    from synthboost.generators import ddpm

    cfg = build(generators.get(name).Config, profile="quick")
    steps = {n: ddpm.epochs_for(cfg, n) * (n // cfg.batch_size) for n in (850, 4250)}
    assert ddpm.epochs_for(cfg, 4250) == cfg.epochs  # the size quick was sized on: unchanged
    assert steps[850] >= cfg.min_steps and steps[850] >= 0.99 * steps[4250]
