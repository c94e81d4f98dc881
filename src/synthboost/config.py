"""Dataclass configs, profiles and YAML loading: the shared machinery plus the data, mix and run configs.

Every config forbids extra keys, so a typo or an out-of-range value is rejected with a message naming the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from pathlib import Path
from typing import Any, ClassVar, Literal

import pydantic
import yaml
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as _pdataclass

from .errors import UserError

PROFILES = ("smoke", "quick", "paper")
Profile = Literal["smoke", "quick", "paper"]  # the same names, as a type for configs (pydantic checks them)
REGIMES = ("balanced", "semi", "high")
Regime = Literal["balanced", "semi", "high"]

_STRICT = ConfigDict(extra="forbid", validate_assignment=True)


def config(cls):
    """Decorator: a keyword-only pydantic dataclass that rejects unknown keys."""
    return _pdataclass(config=_STRICT, kw_only=True)(cls)


# ---------------------------------------------------------------- tunables (search-space declarations)
@dataclasses.dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False

    def describe(self) -> str:
        return f"float in [{self.low}, {self.high}]" + (" (log)" if self.log else "")


@dataclasses.dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    step: int = 1
    log: bool = False

    def describe(self) -> str:
        return f"int in [{self.low}, {self.high}]"


@dataclasses.dataclass(frozen=True)
class Choice:
    values: tuple

    def describe(self) -> str:
        return "one of " + ", ".join(map(str, self.values))


Tunable = FloatRange | IntRange | Choice


# ---------------------------------------------------------------- building and validating
def _format_validation_error(prefix: str, err: pydantic.ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if p != "__root__")
        key = f"{prefix}.{loc}" if prefix and loc else (loc or prefix)
        msg = e["msg"]
        if e["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            msg = "unknown key"
        parts.append(f"{key}: {msg}")
    return "; ".join(parts)


def build(cls, values: dict[str, Any] | None = None, *, profile: str | None = None, prefix: str = ""):
    """Build ``cls`` from its profile defaults overlaid with ``values``; errors become ``UserError``."""
    merged = dict(getattr(cls, "profiles", {}).get(profile, {})) if profile else {}
    merged.update(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(merged) - known)
    if unknown:
        names = ", ".join(f"{prefix}.{k}" if prefix else k for k in unknown)
        raise UserError(f"unknown key {names} (known: {', '.join(sorted(known))})")
    try:
        return cls(**merged)
    except pydantic.ValidationError as err:
        raise UserError(_format_validation_error(prefix, err)) from None


def as_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def key_dict(cfg) -> dict[str, Any]:
    """``cfg``'s values as cache and grid keys see them: a field at its ``key_neutral`` value is left out.

    So adding a knob neither re-keys the cells recorded before it nor splits them from new runs in the report."""
    neutral = getattr(type(cfg), "key_neutral", {})
    return {k: v for k, v in as_dict(cfg).items() if not (k in neutral and v == neutral[k])}


def replace(cfg, values: dict[str, Any], *, prefix: str = ""):
    """A validated copy of ``cfg`` with ``values`` changed (unknown keys and bad values are ``UserError``)."""
    return build(type(cfg), as_dict(cfg) | values, prefix=prefix)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"gen": {"beta": 1}}`` -> ``{"gen.beta": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def unflatten(flat: dict[str, Any], *, sections: tuple[str, ...] | None = None,
              what: str = "key") -> dict[str, dict[str, Any]]:
    """``{"gen.beta": 1}`` -> ``{"gen": {"beta": 1}}``; with ``sections``, any other section is a ``UserError``
    (``what`` names the keys in that message, e.g. "fixed key")."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        section, dot, name = str(key).partition(".")
        if not dot or not name or (sections is not None and section not in sections):
            known = f" with section {', '.join(sections)}" if sections else ""
            raise UserError(f"{what} {key!r}: expected section.key{known}")
        out.setdefault(section, {})[name] = value
    return out


def parse_overrides(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``["gen.beta=2", "clf.epochs=3"]`` -> ``{"gen": {"beta": 2}, "clf": {"epochs": 3}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise UserError(f"--set {item!r}: expected section.key=value, e.g. gen.latent_dim=32")
        if section not in SECTIONS:
            raise UserError(f"--set {item!r}: unknown section {section!r} (known: {', '.join(SECTIONS)})")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out.setdefault(section, {})[name] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise UserError(f"{path}: malformed YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


# ---------------------------------------------------------------- the shared configs


@config
class DataConfig:
    """Which real images a run sees."""

    regime: Regime = "balanced"
    size: int = pydantic.Field(default=1000, ge=100, le=60000)
    val_fraction: float = pydantic.Field(default=0.15, gt=0.0, lt=0.5)
    # semi: the two classes that get 1/6 of a majority class's count (default: Pullover, Shirt)
    minority_classes: tuple[int, int] = (2, 6)
    # k-fold selection (a study's ``selection: {kfold: k}``): the regime subset is cut into ``kfold`` stratified
    # folds and fold ``fold`` validates, instead of the ``val_fraction`` holdout; None = the holdout
    kfold: int | None = pydantic.Field(default=None, ge=2)
    fold: int = pydantic.Field(default=0, ge=0)

    #: fields added after runs were recorded: left out of a holdout run's config (and so of its key), so every
    #: holdout run keeps the config key — and the grid its finished cells — it had before
    later_defaults: ClassVar[tuple[str, ...]] = ("kfold", "fold")


@config
class MixConfig:
    """How synthetic samples join the real ones (see mixing.py)."""

    ratio: float = pydantic.Field(default=1.0, ge=0.0, le=20.0)
    strategy: Literal["uniform", "balance", "minority"] = "uniform"
    synthetic_weight: float = pydantic.Field(default=1.0, gt=0.0, le=1.0)
    # confidence: keep a synthetic sample only when a CNN trained on the real training images gives its
    # requested label a probability >= filter_threshold; draw at most filter_max_factor × the requested count
    filter: Literal["none", "confidence"] = "none"
    filter_threshold: float = pydantic.Field(default=0.5, ge=0.0, le=1.0)
    filter_max_factor: int = pydantic.Field(default=4, ge=1, le=50)

    tunables: ClassVar[dict[str, Tunable]] = {
        "ratio": FloatRange(0.0, 4.0),
        "strategy": Choice(("uniform", "balance", "minority")),
        "synthetic_weight": FloatRange(0.1, 1.0),
        "filter": Choice(("none", "confidence")),
        "filter_threshold": FloatRange(0.0, 0.95),
    }


SECTIONS = ("data", "mix", "clf", "gen", "pseudo", "run")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One experiment cell. ``gen`` is the family's config (None for baselines), ``clf`` the classifier's."""

    model: str
    classifier: str
    profile: str
    seed: int
    data: Any
    mix: Any
    clf: Any
    gen: Any = None
    gen_metrics: bool = False
    pseudo: Any = None  # the ``pseudo-label`` baseline's config (pseudo_label.py); None for every other model
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "classifier": self.classifier,
            "profile": self.profile,
            "seed": self.seed,
            "gen_metrics": self.gen_metrics,
            "data": {k: v for k, v in as_dict(self.data).items()  # a holdout run: without the k-fold fields
                     if self.data.kfold is not None or k not in DataConfig.later_defaults},
            "mix": as_dict(self.mix),
            "clf": as_dict(self.clf),
            "gen": as_dict(self.gen) if self.gen is not None else {},
            # only where set: every other run keeps the config (and key) it had before the section existed
            **({"pseudo": as_dict(self.pseudo)} if self.pseudo is not None else {}),
        }

    def params(self) -> dict[str, Any]:
        """Every config value, flattened, for MLflow params."""
        return flatten(self.to_dict())


def check_choice(kind: str, value: str, choices) -> str:
    if value not in choices:
        raise UserError(f"unknown {kind} {value!r} (choose from: {', '.join(choices)})")
    return value
