"""The project's small CLIP: open_clip's ``CLIP`` built small and trained on Fashion-MNIST image/caption pairs.

It is the frozen text encoder of the ``clip`` family.  Same-class captions count as positives in its contrastive
loss (UniCL, Yang et al. 2022): with ten classes a batch repeats every caption, which CLIP's loss would push apart.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import time
from pathlib import Path
from typing import ClassVar, Literal

import pydantic
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import as_dict, build, config, flatten
from .data import CLASS_NAMES, NUM_CLASSES, dataset_digest, load_fashion_mnist, to_float
from .errors import UserError
from .training import pick_device, train_likelihood

CLIP_FORMAT = 1
TEMPLATES = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a grayscale photo of a {}.",
    "a low resolution photo of a {}.",
    "a centered photo of a {}.",
    "a product photo of a {}.",
)
CAPTION_TOKENS = 16  # token states handed to the generator (every caption ends well inside)
FMNIST_MEAN, FMNIST_STD = 0.286, 0.353


def class_caption_names() -> list[str]:
    return [name.lower().replace("/", " or ") for name in CLASS_NAMES]


def captions() -> list[list[str]]:
    """captions()[class][template]."""
    return [[t.format(name) for t in TEMPLATES] for name in class_caption_names()]


@config
class CLIPConfig:
    embed_dim: int = pydantic.Field(default=64, ge=8, le=1024)
    image_width: int = pydantic.Field(default=128, ge=16, le=1024, multiple_of=16)
    image_layers: int = pydantic.Field(default=4, ge=1, le=24)
    patch_size: Literal[4, 7, 14] = 7  # divides 28: 49, 16 or 4 patches
    text_width: int = pydantic.Field(default=64, ge=16, le=1024, multiple_of=16)
    text_layers: int = pydantic.Field(default=2, ge=1, le=24)
    context_length: int = pydantic.Field(default=CAPTION_TOKENS, ge=CAPTION_TOKENS, le=77)
    train_size: int = pydantic.Field(default=60000, ge=100, le=60000)  # the full CLIP's images (official train set)
    epochs: int = pydantic.Field(default=1, ge=1, le=1000)
    # at least this many optimizer steps: a run's own 850 images make 3 batches an epoch, the full set 234
    min_steps: int = pydantic.Field(default=230, ge=0, le=1_000_000)
    batch_size: int = pydantic.Field(default=256, ge=8, le=8192)
    lr: float = pydantic.Field(default=1e-3, gt=0.0, le=1.0)

    profiles: ClassVar[dict] = {
        "smoke": {"embed_dim": 32, "image_width": 64, "image_layers": 2, "patch_size": 7, "text_width": 32,
                  "text_layers": 1, "train_size": 3000, "epochs": 1, "batch_size": 128, "min_steps": 20},
        "quick": {},
        "paper": {"embed_dim": 128, "image_width": 256, "image_layers": 6, "patch_size": 4, "text_width": 128,
                  "text_layers": 4, "epochs": 10, "lr": 5e-4, "min_steps": 2300},
    }


# ---------------------------------------------------------------- tokenizer
@functools.lru_cache(maxsize=4)
def _bpe(context_length: int):
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


def caption_vocab() -> Tensor:
    """The sorted BPE ids used by the captions (start/end-of-text included)."""
    ids = _bpe(77)([c for per_class in captions() for c in per_class])
    return ids[ids > 0].unique()


class CompactTokenizer:
    """open_clip's BPE tokenizer with ids renumbered onto ``vocab``: 0 pad, 1 unknown, then ``vocab`` in order.

    Keeping the order keeps end-of-text the largest id, which is where open_clip pools the text (argmax)."""

    def __init__(self, vocab: Tensor, *, context_length: int):
        self.bpe = _bpe(context_length)
        self.lut = torch.ones(self.bpe.vocab_size, dtype=torch.long)
        self.lut[0] = 0
        self.lut[vocab.cpu()] = torch.arange(2, 2 + len(vocab))
        self.vocab_size = 2 + len(vocab)

    def __call__(self, texts: list[str]) -> Tensor:
        return self.lut[self.bpe(texts)]


# ---------------------------------------------------------------- the frozen model
def _prep_images(x: Tensor, *, size: int, mean, std) -> Tensor:
    """[0,1] N×1×28×28 -> the CLIP's normalized 3-channel input."""
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    x = x.expand(-1, 3, -1, -1)
    mean = torch.as_tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.as_tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


class FrozenCLIP(nn.Module):
    """An open_clip ``CLIP`` in eval mode with gradients off, its tokenizer and its image preprocessing."""

    def __init__(self, model: nn.Module, tokenizer, *, name: str, mean, std):
        super().__init__()
        import open_clip

        if not isinstance(model, open_clip.CLIP):
            raise UserError(f"{name}: only open_clip models of the CLIP class are supported "
                            f"(got {type(model).__name__})")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.mean, self.std = mean, std
        size = model.visual.image_size
        self.image_size = size[0] if isinstance(size, tuple) else size

    @property
    def embed_dim(self) -> int:
        return self.model.text_projection.shape[1]

    @property
    def text_width(self) -> int:
        return self.model.ln_final.normalized_shape[0]

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    @torch.no_grad()
    def encode_image(self, x: Tensor) -> Tensor:
        """Unit-norm image embeddings of [0,1] (or uint8) N×1×28×28 images."""
        return self.image_features(to_float(x))

    def image_features(self, x: Tensor) -> Tensor:
        """``encode_image`` of float [0,1] images, differentiable in ``x`` (CLIP guidance steers by its gradient)."""
        x = _prep_images(x.to(self.device), size=self.image_size, mean=self.mean, std=self.std)
        return self.model.encode_image(x, normalize=True)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """(unit-norm pooled embeddings N×D, final token states N×L×W after the final LayerNorm)."""
        tokens = self.tokenizer(texts).to(self.device)
        out = self.model.forward_intermediates(text=tokens, text_indices=1, normalize_intermediates=True,
                                               normalize=True)
        return out["text_features"], out["text_intermediates"][-1]


def text_embeddings(clip: FrozenCLIP, labels: Tensor) -> Tensor:
    """Per label, the unit-norm mean of its captions' embeddings over the templates (the zero-shot prompt)."""
    pooled, _ = clip.encode_text([c for per_class in captions() for c in per_class])
    per_class = F.normalize(pooled.view(NUM_CLASSES, len(TEMPLATES), -1).mean(1), dim=-1)
    return per_class[labels.to(per_class.device)]


def caption_features(clip: FrozenCLIP) -> tuple[Tensor, Tensor]:
    """Every (class, template) caption: token states 10×T×CAPTION_TOKENS×W and pooled embeddings 10×T×D."""
    texts = [c for per_class in captions() for c in per_class]
    eot = clip.tokenizer(texts).argmax(-1)
    if int(eot.max()) >= CAPTION_TOKENS:
        raise ValueError(f"a caption is longer than {CAPTION_TOKENS} tokens")
    pooled, states = clip.encode_text(texts)
    t = len(TEMPLATES)
    return (states[:, :CAPTION_TOKENS].reshape(NUM_CLASSES, t, CAPTION_TOKENS, -1),
            pooled.reshape(NUM_CLASSES, t, -1))


@torch.no_grad()
def zero_shot_accuracy(clip: FrozenCLIP, images: Tensor, labels: Tensor, *, batch_size: int = 1000) -> float:
    prompts = text_embeddings(clip, torch.arange(NUM_CLASSES))
    correct = 0
    for i in range(0, len(images), batch_size):
        pred = (clip.encode_image(images[i:i + batch_size]) @ prompts.T).argmax(1).cpu()
        correct += int((pred == labels[i:i + batch_size]).sum())
    return correct / max(len(images), 1)


# ---------------------------------------------------------------- the project-trained CLIP
def new_clip(cfg: CLIPConfig, vocab_size: int) -> nn.Module:
    import open_clip

    return open_clip.CLIP(
        embed_dim=cfg.embed_dim,
        vision_cfg={"image_size": 28, "patch_size": cfg.patch_size, "width": cfg.image_width,
                    "layers": cfg.image_layers, "head_width": 32},
        text_cfg={"context_length": cfg.context_length, "vocab_size": vocab_size, "width": cfg.text_width,
                  "heads": max(1, cfg.text_width // 32), "layers": cfg.text_layers},
    )


class ContrastiveCLIP(nn.Module):
    """A CLIP plus the caption table; ``loss(x, y)`` is the batch's image–caption contrastive loss."""

    def __init__(self, model: nn.Module, caption_tokens: Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("caption_tokens", caption_tokens)  # 10×T×context

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        k = torch.randint(self.caption_tokens.shape[1], (len(y),), device=y.device)  # one template per image
        img = self.model.encode_image(_prep_images(x, size=28, mean=FMNIST_MEAN, std=FMNIST_STD), normalize=True)
        txt = self.model.encode_text(self.caption_tokens[y, k], normalize=True)
        # CLIP caps the temperature at 100
        logits = self.model.logit_scale.exp().clamp(max=100.0) * img.float() @ txt.float().T
        same = (y[:, None] == y[None, :]).float()
        target = same / same.sum(1, keepdim=True)  # symmetric, so it serves both directions
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        return loss, {}


def clip_config(profile: str) -> CLIPConfig:
    return build(CLIPConfig, profile=profile, prefix="clip")


def _train_subset(cfg: CLIPConfig) -> tuple[Tensor, Tensor]:
    data = load_fashion_mnist()
    idx = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(0))[:cfg.train_size]
    return data.train_x[idx], data.train_y[idx]


def clip_key(profile: str, *, data_digest: str | None = None) -> str:
    """What the CLIP's training depends on: its config, the captions, the data and the format.

    ``data_digest``: the run's, for a CLIP on its own training images; None for the full CLIP."""
    cfg = clip_config(profile)
    if data_digest is None:
        data = load_fashion_mnist()
        source, prefix = dataset_digest(data.train_x, data.train_y), f"clip-{profile}-"
    else:
        source, prefix = {"own": data_digest}, f"clip-own-{profile}-"
    what = json.dumps({"format": CLIP_FORMAT, "config": as_dict(cfg), "templates": TEMPLATES,
                       "names": class_caption_names(), "data": source}, sort_keys=True)
    return prefix + hashlib.sha256(what.encode()).hexdigest()[:16]


def train_clip(*, profile: str = "quick", images: Tensor | None = None, labels: Tensor | None = None,
               device: torch.device | str | None = None, progress: bool = False,
               seed: int = 0) -> tuple[dict, dict[str, float], dict]:
    """Train the CLIP on ``images``/``labels`` (None: the official train set); returns (state, metrics, params)."""
    cfg = clip_config(profile)
    device = torch.device(device) if device is not None else pick_device()
    if (images is None) != (labels is None):
        raise ValueError("train_clip: pass both images and labels, or neither")
    own = images is not None
    x, y = (images, labels) if own else _train_subset(cfg)
    per_epoch = max(1, len(y) // max(1, min(cfg.batch_size, len(y))))
    epochs = max(cfg.epochs, -(-cfg.min_steps // per_epoch))
    vocab = caption_vocab()
    tokenizer = CompactTokenizer(vocab, context_length=cfg.context_length)
    table = tokenizer([c for per_class in captions() for c in per_class]).view(NUM_CLASSES, len(TEMPLATES), -1)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        net = ContrastiveCLIP(new_clip(cfg, tokenizer.vocab_size), table).to(device)
        losses = train_likelihood(net, x, y, epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                                  progress=progress, desc="clip")
    seconds = time.perf_counter() - start
    state = {"format": CLIP_FORMAT, "kind": "clip", "profile": profile, "config": as_dict(cfg), "vocab": vocab,
             "data": "own" if own else "full", "train_images": len(y),
             "weights": {k: v.detach().cpu() for k, v in net.model.state_dict().items()}}
    data = load_fashion_mnist()
    acc = zero_shot_accuracy(load_clip(state, device=device), data.test_x, data.test_y)
    state["metrics"] = {"test/zero_shot_accuracy": acc}
    metrics = {"test/zero_shot_accuracy": acc, "train/loss": losses.get("loss", float("nan")),
               "train/seconds": seconds}
    params = {**flatten({"clip": as_dict(cfg)}), "clip.profile": profile,
              "clip.params": sum(p.numel() for p in net.model.parameters()), "clip.data": state["data"],
              "clip.train_images": len(y), "clip.epochs_run": epochs}
    return state, metrics, params


# ---------------------------------------------------------------- pretrained open_clip models (local cache only)
def pretrained_state(name: str) -> dict:
    """A CLIP state naming a pretrained open_clip model, ``"<model>/<tag>"`` (e.g. ``ViT-B-32/openai``)."""
    model, tag = _split_pretrained(name)
    return {"format": CLIP_FORMAT, "kind": "clip", "pretrained": f"{model}/{tag}"}


def _split_pretrained(name: str) -> tuple[str, str]:
    model, sep, tag = name.partition("/")
    if not sep or not model or not tag:
        raise UserError(f"gen.clip_pretrained={name!r}: expected <model>/<tag>, e.g. ViT-B-32/openai")
    return model, tag


def _hf_cache_dir() -> Path:
    # read at call time (huggingface_hub fixes its own default at import)
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home) / "hub"


def _cached_weights(model: str, tag: str) -> tuple[str | None, list[str]]:
    """The local weight file of ``model``/``tag`` if cached (or ``tag`` is a file), and where it was looked for."""
    import open_clip

    if os.path.isfile(tag):
        return tag, [tag]
    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise UserError(f"gen.clip_pretrained={model}/{tag}: unknown pretrained tag for {model} "
                        f"(known: {', '.join(tags) or 'none'})")
    looked: list[str] = []
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_pytorch_model.bin"]
        candidates = [n.replace("pytorch_model.bin", "model.safetensors") for n in names] + names
        for fn in candidates:
            found = try_to_load_from_cache(repo, fn, cache_dir=str(_hf_cache_dir()))
            if isinstance(found, str):
                return found, looked
        looked.append(f"{_hf_cache_dir()} (hub repo {repo})")
    if cfg.get("url"):
        path = Path.home() / ".cache" / "clip" / os.path.basename(cfg["url"])
        if path.is_file():
            return str(path), looked
        looked.append(str(path))
    return None, looked


@contextlib.contextmanager
def _offline():
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({k: "1" for k in saved})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load_pretrained(name: str) -> FrozenCLIP:
    """A pretrained open_clip model from the local cache; ``UserError`` when its weights are not there."""
    import open_clip

    model_name, tag = _split_pretrained(name)
    if model_name not in open_clip.list_models():
        raise UserError(f"gen.clip_pretrained={name}: unknown open_clip model {model_name!r}")
    path, looked = _cached_weights(model_name, tag)
    if path is None:
        raise UserError(
            f"gen.clip_pretrained={name}: its weights are not in the local cache (looked in {'; '.join(looked)}) "
            "and nothing is downloaded; cache them first (open_clip.create_model_and_transforms"
            f"('{model_name}', pretrained='{tag}') on a machine with internet, then copy the cache) or drop "
            "gen.clip_pretrained to use the project's own CLIP (synthboost clip train)")
    quick_gelu = (open_clip.get_pretrained_cfg(model_name, tag) or {}).get("quick_gelu", False)
    try:
        with _offline():
            model, _, _ = open_clip.create_model_and_transforms(model_name, pretrained=path,
                                                                force_quick_gelu=quick_gelu)
            tokenizer = open_clip.get_tokenizer(model_name)
    except Exception as err:  # a corrupt or mismatched file surfaces in several exception types
        raise UserError(f"gen.clip_pretrained={name}: could not load {path} ({type(err).__name__}: {err})") from None
    pre = open_clip.get_model_preprocess_cfg(model)
    return FrozenCLIP(model, tokenizer, name=name, mean=pre["mean"], std=pre["std"])


def pretrained_dims(name: str) -> tuple[int, int]:
    """(embed_dim, text width) of a pretrained model from its config alone (no weights needed)."""
    import open_clip

    model_name, _ = _split_pretrained(name)
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise UserError(f"gen.clip_pretrained={name}: unknown open_clip model {model_name!r}")
    return cfg["embed_dim"], cfg["text_cfg"]["width"]


# ---------------------------------------------------------------- loading
def load_clip(state: dict, *, device: torch.device | str | None = None) -> FrozenCLIP:
    """The frozen CLIP described by ``state`` (from ``train_clip`` or ``pretrained_state``)."""
    if state.get("kind") != "clip" or state.get("format") != CLIP_FORMAT:
        raise ValueError("not a synthboost CLIP state")
    if "pretrained" in state:
        clip = load_pretrained(state["pretrained"])
    else:
        cfg = build(CLIPConfig, state["config"], prefix="clip")
        tokenizer = CompactTokenizer(state["vocab"], context_length=cfg.context_length)
        model = new_clip(cfg, tokenizer.vocab_size)
        model.load_state_dict(state["weights"])
        clip = FrozenCLIP(model, tokenizer, name=f"synthboost/{state.get('profile', 'custom')}",
                          mean=FMNIST_MEAN, std=FMNIST_STD)
    return clip.to(device) if device is not None else clip
