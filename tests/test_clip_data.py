"""The `clip` family sees no hidden labelled data, and its CLIP-gradient guidance is a sampling-only knob.

By default its CLIP trains on the run's own training images (cached per data digest); the full CLIP is opt-in
(gen.clip_data=full) and tags the run as using external data; gen.guidance=clip_grad|both steer sampling by the
CLIP's image–caption similarity without touching the generator key.  (The report side: tests/test_report.py.)
"""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from synthboost import cell, clip_model, pipeline, tracking
from synthboost.cli import app
from synthboost.config import DataConfig, replace
from synthboost.data import make_split


def _rows(x: torch.Tensor) -> set[bytes]:
    return {bytes(r) for r in x.reshape(len(x), -1).numpy()}


def test_own_clip_is_keyed_by_the_data_digest_and_sees_only_the_train_split(tracker, monkeypatch):
    split = make_split(DataConfig(regime="high", size=300), seed=1)
    seen: list[torch.Tensor] = []
    real_train = clip_model.train_likelihood

    def spy(net, images, labels, **kw):
        seen.append(images)
        return real_train(net, images, labels, **kw)

    monkeypatch.setattr(clip_model, "train_likelihood", spy)
    state, run_id = pipeline.ProjectModels(tracker).clip("smoke", split=split)
    (images,) = seen
    assert _rows(images) == _rows(split.train_x) and len(images) == len(split.train_y)  # no val, test or others
    assert not _rows(images) & _rows(split.val_x)
    info = tracker.run_info(run_id)
    assert info["tags"]["aux_key"] == clip_model.clip_key("smoke", data_digest=split.digest)
    params = tracker.client.get_run(run_id).data.params
    assert params["clip.data"] == "own" and params["clip.train_images"] == str(len(split.train_y))
    assert state["data"] == "own" and state["train_images"] == len(split.train_y)

    # the same data: loaded from that run, not trained again; other data (another seed): a CLIP of its own
    _, again = pipeline.ProjectModels(tracker).clip("smoke", split=split)
    assert again == run_id and len(seen) == 1
    other = make_split(DataConfig(regime="high", size=300), seed=2)
    keys = {clip_model.clip_key("smoke", data_digest=s.digest) for s in (split, other)} | {clip_model.clip_key("smoke")}
    assert len(keys) == 3  # per data digest, and apart from the full CLIP


def test_only_the_full_or_a_pretrained_clip_is_external_data():
    own = cell.make_config(model="clip", regime="high", size=300, profile="smoke")
    full = cell.make_config(model="clip", regime="high", size=300, profile="smoke",
                            overrides={"gen": {"clip_data": "full"}})
    pre = cell.make_config(model="clip", regime="high", size=300, profile="smoke",
                           overrides={"gen": {"clip_pretrained": "ViT-B-32/openai"}})
    assert cell.external_tags(own) == {} and "+external data" not in cell.run_name(own)
    n = clip_model.clip_config("smoke").train_size
    assert cell.external_tags(full) == {tracking.TAG_EXTERNAL_DATA: "true", tracking.TAG_EXTERNAL_SOURCE:
                                        f"CLIP (smoke) trained on {n} labelled Fashion-MNIST train images"}
    assert cell.external_tags(pre)[tracking.TAG_EXTERNAL_DATA] == "true"
    assert "+external data" in cell.run_name(full)
    # a different training setup, so a different generator and cell
    assert cell.generator_key(own, "d") != cell.generator_key(full, "d")
    assert cell.config_key(own) != cell.config_key(full)


def test_clip_grad_guidance_changes_the_samples_but_not_the_generator_key(trained):
    gen = trained("clip")
    labels = torch.arange(10)
    draws = {}
    for mode in ("cfg", "clip_grad", "both"):
        gen.config = replace(gen.config, {"guidance": mode, "clip_guidance_scale": 20.0})
        torch.manual_seed(3)
        draws[mode] = gen.sample(labels)
    gen.config = replace(gen.config, {"guidance": "cfg"})
    torch.manual_seed(3)
    assert torch.equal(gen.sample(labels), draws["cfg"])  # cfg is unchanged by the new knob
    assert not torch.allclose(draws["cfg"], draws["clip_grad"]) and not torch.allclose(draws["cfg"], draws["both"])
    assert all(d.shape == (10, 1, 28, 28) and 0 <= d.min() and d.max() <= 1 for d in draws.values())

    base = cell.make_config(model="clip", regime="high", size=300, profile="smoke")
    steered = cell.make_config(model="clip", regime="high", size=300, profile="smoke",
                               overrides={"gen": {"guidance": "clip_grad", "clip_guidance_scale": 7.0}})
    assert cell.generator_key(base, "d") == cell.generator_key(steered, "d")  # one trained model
    assert cell.config_key(base) != cell.config_key(steered)  # but a cell of its own


def test_the_clip_gradient_raises_the_caption_similarity(trained):
    gen = trained("clip")
    gen.config = replace(gen.config, {"guidance": "clip_grad"})
    torch.manual_seed(0)
    x0 = torch.rand(10, 1, 28, 28) * 2 - 1
    labels = torch.arange(10)
    gen.clip_similarity_grad(x0, labels)  # builds the guide
    clip, prompts = gen.guide

    def sim(x):
        return (clip.encode_image((x + 1) / 2) * prompts[labels]).sum(1)

    stepped = x0 + 20.0 * gen.clip_similarity_grad(x0, labels)
    assert (sim(stepped) > sim(x0)).all()


BAD = [
    (["--set", "gen.guidance=clip"], "gen.guidance"),
    (["--set", "gen.clip_data=all"], "gen.clip_data"),
    (["--set", "gen.clip_guidance_scale=-1"], "gen.clip_guidance_scale"),
    (["--set", "gen.guidance=clip_grad", "--set", "gen.clip_guidance_scale=0"], "give clip_guidance_scale > 0"),
    (["--set", "gen.clip_data=full", "--set", "gen.clip_pretrained=ViT-B-32/openai"], "drop one of them"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_clip_options_exit_2_with_one_line(args, message):
    result = CliRunner().invoke(app, ["run", "--model", "clip", "--profile", "smoke", *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
