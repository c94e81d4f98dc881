"""CLIP-guided diffusion: a diffusers ``UNet2DConditionModel`` conditioned on a frozen CLIP's text embedding.

The class becomes a caption ("a photo of a {class name}." or another template); the UNet cross-attends to its
token states and adds its pooled embedding to the time embedding; all zeros is the null condition.  The rest is
the ddpm family's.  By default the project CLIP trains on the run's own images, so a ``clip`` run sees no more
labelled data than its cell.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import pydantic
import torch
from diffusers import UNet2DConditionModel
from torch import Tensor, nn

from ..clip_model import (CAPTION_TOKENS, TEMPLATES, FrozenCLIP, caption_features, clip_config, load_clip,
                          pretrained_dims, pretrained_state, text_embeddings, train_clip)
from ..config import Choice, FloatRange, Profile, Tunable, config
from ..data import NUM_CLASSES, Split
from ..errors import UserError
from ..snapshots import Snapshots
from ..training import EpochCallback
from .base import AuxModels, FitInputs
from .ddpm import NULL_LABEL, DDPMConfig, DiffusionGenerator, DiffusionNet


@config
class CLIPDiffusionConfig(DDPMConfig):
    clip_profile: Profile = "quick"  # the project CLIP (synthboost clip train --profile)
    clip_pretrained: str | None = None  # "<open_clip model>/<tag>", e.g. ViT-B-32/openai; local cache only
    # what the project CLIP trains on: the run's own training images, or the official train set (external data)
    clip_data: Literal["own", "full"] = "own"
    guidance: Literal["cfg", "clip_grad", "both"] = "cfg"  # sampling only: cfg, the CLIP gradient on x̂0, or both
    clip_guidance_scale: float = pydantic.Field(default=20.0, ge=0.0, le=1000.0)  # x̂0 step per unit gradient

    profiles: ClassVar[dict] = {
        "smoke": {**DDPMConfig.profiles["smoke"], "clip_profile": "smoke"},
        "quick": {**DDPMConfig.profiles["quick"], "clip_profile": "quick"},
        "paper": {**DDPMConfig.profiles["paper"], "clip_profile": "paper"},
    }
    sampling_fields: ClassVar[tuple[str, ...]] = (*DDPMConfig.sampling_fields, "guidance", "clip_guidance_scale")
    tunables: ClassVar[dict[str, Tunable]] = {**DDPMConfig.tunables,
                                              "guidance": Choice(("cfg", "clip_grad", "both")),
                                              "clip_guidance_scale": FloatRange(2.0, 100.0, log=True)}

    @pydantic.field_validator("clip_pretrained")
    @classmethod
    def _model_slash_tag(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        model, sep, tag = value.partition("/")
        if not (model and sep and tag):
            raise ValueError("expected <model>/<tag>, e.g. ViT-B-32/openai")
        return value

    @pydantic.model_validator(mode="after")
    def _coherent_clip_options(self):
        if self.clip_pretrained and self.clip_data == "full":
            raise ValueError("clip_data=full trains the project CLIP on the official train set, but clip_pretrained "
                             "replaces it: drop one of them")
        if self.guidance != "cfg" and self.clip_guidance_scale == 0:
            raise ValueError(f"guidance={self.guidance} steers by the CLIP gradient: give clip_guidance_scale > 0 "
                             "(or use guidance=cfg)")
        return self


class TextUNet(DiffusionNet):
    """``UNet2DConditionModel`` fed the frozen CLIP's features of a caption of the class (zeros for null)."""

    def __init__(self, cfg: CLIPDiffusionConfig, *, embed_dim: int, text_width: int):
        self.embed_dim, self.text_width = embed_dim, text_width
        super().__init__(cfg)
        t = len(TEMPLATES)
        self.register_buffer("caption_states", torch.zeros(NUM_CLASSES, t, CAPTION_TOKENS, text_width))
        self.register_buffer("caption_pooled", torch.zeros(NUM_CLASSES, t, embed_dim))

    def make_unet(self) -> nn.Module:
        w, lpb = self.cfg.width, self.cfg.layers_per_block
        return UNet2DConditionModel(
            sample_size=28, in_channels=1, out_channels=1, block_out_channels=(w, 2 * w, 2 * w),
            layers_per_block=lpb, norm_num_groups=8, attention_head_dim=8,
            down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
            cross_attention_dim=self.text_width,
            class_embed_type="projection", projection_class_embeddings_input_dim=self.embed_dim,
        )

    def set_captions(self, states: Tensor, pooled: Tensor) -> None:
        self.caption_states.copy_(states)
        self.caption_pooled.copy_(pooled)

    def condition(self, labels: Tensor) -> dict[str, Tensor]:
        keep = (labels != NULL_LABEL).to(self.caption_pooled.dtype)
        cls = labels.clamp(max=NUM_CLASSES - 1)
        k = torch.randint(len(TEMPLATES), (len(labels),), device=labels.device)  # one caption template per image
        return {"encoder_hidden_states": self.caption_states[cls, k] * keep[:, None, None],
                "class_labels": self.caption_pooled[cls, k] * keep[:, None]}


class CLIPDiffusion(DiffusionGenerator):
    """Diffusion conditioned through cross-attention on a frozen CLIP's caption embedding, with guidance and EMA."""

    name = "clip"
    Config = CLIPDiffusionConfig
    #: 2: the CLIP trains on the run's own training images by default (gen.clip_data=own), not the official 60k
    code_version = 2
    external_data_until = 1  # version 1 trained its CLIP on the official 60k labelled images

    def build(self) -> nn.Module:
        self.clip_state: dict | None = None
        self.guide: tuple[FrozenCLIP, Tensor] | None = None  # CLIP guidance's encoder and prompts, built lazily
        cfg = self.config
        if cfg.clip_pretrained:
            embed_dim, width = pretrained_dims(cfg.clip_pretrained)
        else:
            ccfg = clip_config(cfg.clip_profile)
            embed_dim, width = ccfg.embed_dim, ccfg.text_width
        return TextUNet(cfg, embed_dim=embed_dim, text_width=width)

    @classmethod
    def external_data(cls, config: CLIPDiffusionConfig) -> str | None:
        if config.clip_pretrained:
            return f"pretrained CLIP {config.clip_pretrained}"
        if config.clip_data == "full":
            n = clip_config(config.clip_profile).train_size
            return f"CLIP ({config.clip_profile}) trained on {n} labelled Fashion-MNIST train images"
        return None

    def fit_inputs(self, split: Split, *, seed: int, models: AuxModels | None) -> FitInputs:
        """The cached project CLIP (tag ``gen.clip_run_id``); nothing for a pretrained CLIP or without a cache."""
        if self.config.clip_pretrained or models is None:
            return FitInputs()
        own = self.config.clip_data == "own"
        state, run_id = models.clip(self.config.clip_profile, split=split if own else None)
        return FitInputs(kwargs={"clip_state": state}, tags={"gen.clip_run_id": run_id})

    def resolve_clip_state(self, clip_state: dict | None = None, *, images: Tensor | None = None,
                           labels: Tensor | None = None) -> dict:
        """The CLIP to condition on: pretrained by name, else the injected cached one, else trained here."""
        cfg = self.config
        if cfg.clip_pretrained:
            return pretrained_state(cfg.clip_pretrained)
        if clip_state is not None:
            return clip_state
        if cfg.clip_data == "own":
            if images is None or labels is None:
                raise ValueError("clip_data=own: the CLIP trains on the run's images; pass them")
            return train_clip(profile=cfg.clip_profile, images=images, labels=labels, device=self.device)[0]
        return train_clip(profile=cfg.clip_profile, device=self.device)[0]

    def fit(self, images: Tensor, labels: Tensor, *, progress: bool = False,
            on_epoch: EpochCallback | None = None, clip_state: dict | None = None,
            snapshots: Snapshots | None = None) -> dict[str, float]:
        state = self.resolve_clip_state(clip_state, images=images, labels=labels)
        clip = load_clip(state, device=self.device)
        net: TextUNet = self.net
        if (clip.embed_dim, clip.text_width) != (net.embed_dim, net.text_width):
            raise UserError(f"the CLIP {clip.name} has embedding/text width {clip.embed_dim}/{clip.text_width}, "
                            f"but gen.clip_profile={self.config.clip_profile} builds "
                            f"{net.embed_dim}/{net.text_width}: pass the CLIP of that profile")
        net.set_captions(*caption_features(clip))
        self.clip_state, self.guide = state, None
        zero_shot = state.get("metrics", {}).get("test/zero_shot_accuracy")
        if zero_shot is not None:
            self.extra_metrics["clip_zero_shot_accuracy"] = float(zero_shot)
        del clip  # only its caption features are needed for training
        return super().fit(images, labels, progress=progress, on_epoch=on_epoch, snapshots=snapshots)

    # -- CLIP-gradient guidance (sampling only) --------------------------------------------------------------
    def cfg_scale(self, scale: float) -> float:
        # the seed study's CLIP-guided diffusion: the unconditional model, steered by the CLIP alone
        return 0.0 if self.config.guidance == "clip_grad" else scale

    def steer(self, x_t: Tensor, t: Tensor, out: Tensor, labels: Tensor) -> Tensor:
        """Move x̂0 along ∇ cos(CLIP(x̂0), caption of the label), re-expressed as the prediction at ``x_t``.

        So the scheduler steps (and thresholds) the steered x̂0."""
        cfg = self.config
        if cfg.guidance == "cfg":
            return out
        alpha = self.net.scheduler.alphas_cumprod.to(x_t.device)[int(t)].float()
        a, s = alpha.sqrt(), (1 - alpha).sqrt()
        eps_pred = cfg.prediction_type == "epsilon"
        x0 = (x_t - s * out) / a if eps_pred else a * x_t - s * out
        x0 = x0 + cfg.clip_guidance_scale * self.clip_similarity_grad(x0, labels)
        return (x_t - a * x0) / s if eps_pred else (a * x_t - x0) / s

    def clip_similarity_grad(self, x0: Tensor, labels: Tensor) -> Tensor:
        """∇ over x̂0 ∈ [-1, 1] of each image's cosine similarity to the zero-shot caption embedding of its label."""
        if self.guide is None:  # the frozen CLIP and its per-class caption embeddings, built once
            clip = self.clip()
            self.guide = clip, text_embeddings(clip, torch.arange(NUM_CLASSES))
        clip, prompts = self.guide
        with torch.enable_grad():
            x = x0.detach().float().requires_grad_(True)
            sim = (clip.image_features((x + 1) / 2) * prompts[labels.to(prompts.device)]).sum()
            (grad,) = torch.autograd.grad(sim, x)
        return grad

    def clip(self) -> FrozenCLIP:
        """The frozen CLIP this generator was trained with (rebuilt from the checkpoint)."""
        if self.clip_state is None:
            raise RuntimeError("clip: no CLIP yet (call fit first)")
        return load_clip(self.clip_state, device=self.device)

    def extra_state(self) -> dict:
        return {"clip": self.clip_state}

    def load_extra_state(self, extra: dict) -> None:
        self.clip_state, self.guide = extra.get("clip"), None
