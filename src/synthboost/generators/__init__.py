"""The explicit registry of generator families and no-generator baselines.

Families are listed by module and class so that choosing ``vae`` does not import diffusers; ``get`` imports on
demand.  Adding a family: docs/architecture.md.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..errors import UserError


#: how a family trains (likelihood loop, adversarial loop, diffusion, or nothing: ``control``);
#: tests/test_<kind>_family.py tests every family of its kind
KINDS = ("vae", "gan", "diffusion", "control")


@dataclass(frozen=True)
class Entry:
    module: str
    cls: str
    kind: str  # one of KINDS
    summary: str


FAMILIES: dict[str, Entry] = {
    "vae": Entry("vae", "VAE", "vae",
                 "convolutional VAE; samples perturb latents of real exemplars of the class"),
    "cvae": Entry("cvae", "CVAE", "vae",
                  "conditional VAE; samples decode prior draws with the label"),
    "ssvae": Entry("ssvae", "SSVAE", "vae",
                   "semi-supervised VAE (M2) on labeled + unlabeled images; samples as cvae"),
    "dvae": Entry("dvae", "DVAE", "vae",
                  "denoising VAE (six corruptions); samples perturb latents of real exemplars"),
    "vqvae": Entry("vqvae", "VQVAE", "vae",
                   "VQ-VAE with EMA codebook + class-conditional transformer prior over codes"),
    "cgan": Entry("cgan", "CGAN", "gan",
                  "DCGAN-style conditional GAN (label concat in G, projection D), non-saturating loss"),
    "biggan": Entry("biggan", "BigGAN", "gan",
                    "BigGAN at 28×28: conditional BN, self-attention, SN, projection D, hinge, EMA"),
    "ddpm": Entry("ddpm", "DDPM", "diffusion",
                  "class-conditional UNet DDPM at 28×28, classifier-free guidance, EMA, DPM-Solver++"),
    "clip": Entry("clip", "CLIPDiffusion", "diffusion",
                  "diffusion conditioned by cross-attention on a frozen CLIP's caption embedding"),
    "heldout": Entry("controls", "HeldOut", "control",
                     "control (upper bound): real train images of the class outside the run's subset; trains nothing"),
    "noise": Entry("controls", "Noise", "control",
                   "control (lower bound): uniform noise images; trains nothing"),
}
#: the controls: registered like families (cached, mixed, reported), but no generator — never in a claim about
#: families, nor in a grid's ``all``
CONTROLS = frozenset(name for name, entry in FAMILIES.items() if entry.kind == "control")

#: models that train no generator (the real-only controls); the pipeline handles them
BASELINES: dict[str, str] = {
    "none": "real images only, plain classifier (the seed study's baseline)",
    "none-strong": "real images only, strong recipe (CNN: ±2 px shifts, class-keeping flips, balanced loss; same steps)",
    "oversample": "real images only, each class oversampled (copies) to the `balance` mix's counts",
    "pseudo-label": "real images + confident pseudo-labels (from the strong recipe) on the unlabelled pool images "
                    "that ssvae sees (same images); same steps — the baseline of runs that use that pool",
}
#: baselines whose classifier starts from its config's ``strong`` defaults (the user's clf.* still win)
STRONG_RECIPE = frozenset({"none-strong"})
#: baselines that add random copies of real training images, sized by mix.ratio with strategy ``balance``
OVERSAMPLING = frozenset({"oversample"})
#: baselines that learn from an unlabelled pool (``pseudo_label.py``): the pairs of generators that do (``ssvae``)
POOL_BASELINES = frozenset({"pseudo-label"})


def model_names() -> list[str]:
    return [*BASELINES, *FAMILIES]


def is_baseline(model: str) -> bool:
    return model in BASELINES


def is_control(model: str) -> bool:
    return model in CONTROLS


def of_kind(kind: str) -> list[str]:
    """The families of one kind (``KINDS``), in registry order."""
    return [name for name, entry in FAMILIES.items() if entry.kind == kind]


def get(name: str) -> type:
    """The generator class registered as ``name``."""
    if name not in FAMILIES:
        raise UserError(f"unknown generator family {name!r} (choose from: {', '.join(FAMILIES)})")
    entry = FAMILIES[name]
    module = importlib.import_module(f"{__name__}.{entry.module}")
    return getattr(module, entry.cls)


def load(state: dict, *, device=None):
    """Rebuild a generator from a checkpoint dict (its family is named inside it)."""
    return get(state["family"]).from_state_dict(state, device=device)
