"""What every registered family promises, checked once for all of them (family files test their specifics)."""

from pathlib import Path

import pytest

from synthboost import generators
from synthboost.config import build
from synthboost.generators.base import TorchGenerator


@pytest.mark.parametrize("name", list(generators.FAMILIES))
def test_registered_with_profiles_and_tunables(name):
    cls = generators.get(name)
    assert cls.name == name and issubclass(cls, TorchGenerator)
    kind = generators.FAMILIES[name].kind  # its kind's test file tests it too
    assert kind in generators.KINDS and (Path(__file__).parent / f"test_{kind}_family.py").is_file()
    assert set(cls.Config.profiles) == {"smoke", "quick", "paper"}
    for profile in cls.Config.profiles:  # a control trains nothing, so it has no epochs
        assert kind == "control" or build(cls.Config, profile=profile).epochs >= 1
    assert set(cls.Config.tunables) <= set(cls.Config.__dataclass_fields__)
    for key, rng in cls.Config.tunables.items():  # every declared search range lies inside what the config accepts
        ends = rng.values if hasattr(rng, "values") else (rng.low, rng.high)
        for value in ends:
            assert getattr(build(cls.Config, {key: value}), key) == value
