"""CLIP-guided diffusion: a diffusers ``UNet2DConditionModel`` conditioned on a frozen CLIP's text embedding.

The requested class becomes a caption, "a photo of a {class name}." or one of the other templates (one drawn
per image, in training and at sampling), and the frozen CLIP encodes it.  The UNet sees it twice:
cross-attention over the caption's final token states (the Stable Diffusion way; at 7×7 and in the middle
block), and the unit-norm pooled CLIP embedding projected into the time embedding (``class_embed_type=
"projection"``).  The null condition of classifier-free guidance is all zeros for both — the empty prompt.
Everything else — native 28×28, the noise schedule, label dropout, EMA weights, guidance, the samplers — is
the ddpm family's (``ddpm.DiffusionNet`` / ``DiffusionGenerator``).

The CLIP: the project's own small one (``synthboost.clip_model``, profile ``gen.clip_profile``), or a
pretrained open_clip model named by ``gen.clip_pretrained`` (``ViT-B-32/openai``), taken from the local cache
only.  ``fit`` gets it, in this order, from ``clip_pretrained``, the ``clip_state=`` keyword (``fit_inputs``
asks its ``models`` for the project CLIP, which the pipeline caches as an MLflow run, ``synthboost clip train``),
or trains one in-process.  The caption embeddings are buffers of the network, so sampling needs neither the CLIP
nor training data; the CLIP state itself also travels in the checkpoint (``extra.clip``; a pretrained one by
name) so ``clip()`` re-creates the exact text encoder.
"""

from __future__ import annotations

from typing import ClassVar

import pydantic
import torch
from diffusers import UNet2DConditionModel
from torch import Tensor, nn

from ..clip_model import (CAPTION_TOKENS, TEMPLATES, FrozenCLIP, caption_features, clip_config, load_clip,
                          pretrained_dims, pretrained_state, train_clip)
from ..config import Profile, Tunable, config
from ..data import NUM_CLASSES, Split
from ..errors import UserError
from ..training import EpochCallback
from .base import AuxModels, FitInputs
from .ddpm import NULL_LABEL, DDPMConfig, DiffusionGenerator, DiffusionNet


@config
class CLIPDiffusionConfig(DDPMConfig):
    clip_profile: Profile = "quick"  # the project CLIP (synthboost clip train --profile)
    clip_pretrained: str | None = None  # "<open_clip model>/<tag>", e.g. ViT-B-32/openai; local cache only

    profiles: ClassVar[dict] = {
        "smoke": {**DDPMConfig.profiles["smoke"], "clip_profile": "smoke"},
        "quick": {**DDPMConfig.profiles["quick"], "clip_profile": "quick"},
        "paper": {**DDPMConfig.profiles["paper"], "clip_profile": "paper"},
    }
    tunables: ClassVar[dict[str, Tunable]] = dict(DDPMConfig.tunables)

    @pydantic.field_validator("clip_pretrained")
    @classmethod
    def _model_slash_tag(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        model, sep, tag = value.partition("/")
        if not (model and sep and tag):
            raise ValueError("expected <model>/<tag>, e.g. ViT-B-32/openai")
        return value


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

    def build(self) -> nn.Module:
        self.clip_state: dict | None = None
        cfg = self.config
        if cfg.clip_pretrained:
            embed_dim, width = pretrained_dims(cfg.clip_pretrained)
        else:
            ccfg = clip_config(cfg.clip_profile)
            embed_dim, width = ccfg.embed_dim, ccfg.text_width
        return TextUNet(cfg, embed_dim=embed_dim, text_width=width)

    def fit_inputs(self, split: Split, *, seed: int, models: AuxModels | None) -> FitInputs:
        """The project CLIP of ``gen.clip_profile`` from ``models`` (its run id as tag ``gen.clip_run_id``); nothing
        when a pretrained CLIP is configured or there is no cache (``fit`` then trains one)."""
        if self.config.clip_pretrained or models is None:
            return FitInputs()
        state, run_id = models.clip(self.config.clip_profile)
        return FitInputs(kwargs={"clip_state": state}, tags={"gen.clip_run_id": run_id})

    def resolve_clip_state(self, clip_state: dict | None = None) -> dict:
        """The CLIP to condition on: pretrained by name (wins over an injected one), injected (the pipeline passes
        the cached project CLIP of ``synthboost clip train``), or trained here."""
        cfg = self.config
        if cfg.clip_pretrained:
            return pretrained_state(cfg.clip_pretrained)
        if clip_state is not None:
            return clip_state
        return train_clip(profile=cfg.clip_profile, device=self.device)[0]

    def fit(self, images: Tensor, labels: Tensor, *, progress: bool = False,
            on_epoch: EpochCallback | None = None, clip_state: dict | None = None) -> dict[str, float]:
        state = self.resolve_clip_state(clip_state)
        clip = load_clip(state, device=self.device)
        net: TextUNet = self.net
        if (clip.embed_dim, clip.text_width) != (net.embed_dim, net.text_width):
            raise UserError(f"the CLIP {clip.name} has embedding/text width {clip.embed_dim}/{clip.text_width}, "
                            f"but gen.clip_profile={self.config.clip_profile} builds "
                            f"{net.embed_dim}/{net.text_width}: pass the CLIP of that profile")
        net.set_captions(*caption_features(clip))
        self.clip_state = state
        zero_shot = state.get("metrics", {}).get("test/zero_shot_accuracy")
        if zero_shot is not None:
            self.extra_metrics["clip_zero_shot_accuracy"] = float(zero_shot)
        del clip  # only its caption features are needed from here on
        return super().fit(images, labels, progress=progress, on_epoch=on_epoch)

    def clip(self) -> FrozenCLIP:
        """The frozen CLIP this generator was trained with (rebuilt from the checkpoint)."""
        if self.clip_state is None:
            raise RuntimeError("clip: no CLIP yet (call fit first)")
        return load_clip(self.clip_state, device=self.device)

    def extra_state(self) -> dict:
        return {"clip": self.clip_state}

    def load_extra_state(self, extra: dict) -> None:
        self.clip_state = extra.get("clip")
