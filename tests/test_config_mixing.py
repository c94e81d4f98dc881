import pytest

from synthboost.config import MixConfig, build, load_yaml, parse_overrides
from synthboost.errors import UserError
from synthboost.mixing import labels_for, mix, synthetic_counts

REAL = [500, 400, 300, 200, 100, 50, 50, 50, 25, 25]  # 1,700 images, lopsided


def counts(ratio, strategy):
    return synthetic_counts(REAL, MixConfig(ratio=ratio, strategy=strategy))


def test_ratio_zero_adds_nothing():
    for strategy in ("uniform", "balance", "minority"):
        assert counts(0, strategy) == [0] * 10


def test_uniform_keeps_the_real_label_distribution():
    c = counts(1.0, "uniform")
    assert c == REAL and sum(counts(0.5, "uniform")) == 850


def test_balance_fills_the_smallest_classes_first_up_to_the_largest():
    small = counts(0.1, "balance")  # 170 images: all to the smallest classes
    assert sum(small) == 170 and small[0] == small[1] == 0 and small[8] > 0
    big = counts(5000 / 1700 - 1 + 1e-9, "balance")  # exactly enough to level every class at 500
    assert [r + s for r, s in zip(REAL, big)] == [500] * 10


def test_minority_only_touches_classes_below_the_median():
    c = counts(0.5, "minority")
    median = sorted(REAL)[4:6]
    assert sum(c) == 850
    assert all(c[k] == 0 for k, r in enumerate(REAL) if r >= sum(median) / 2)
    assert synthetic_counts([100] * 10, MixConfig(ratio=1, strategy="minority")) == [0] * 10  # nothing below median


def test_mix_weights_synthetic_samples():
    import torch

    rx, ry = torch.zeros(4, 28, 28, dtype=torch.uint8), torch.tensor([0, 1, 2, 3])
    sy = labels_for([1, 0, 2])
    sx = torch.ones(3, 1, 28, 28, dtype=torch.uint8)
    x, y, w, is_synth = mix(rx, ry, sx, sy, synthetic_weight=0.25)
    assert x.shape == (7, 1, 28, 28) and y.tolist() == [0, 1, 2, 3, 0, 2, 2]
    assert w.tolist() == [1, 1, 1, 1, 0.25, 0.25, 0.25] and is_synth.sum() == 3


def test_config_rejects_unknown_keys_and_bad_values_naming_the_key():
    with pytest.raises(UserError, match=r"mix\.ratioo"):
        build(MixConfig, {"ratioo": 1}, prefix="mix")
    with pytest.raises(UserError, match=r"mix\.ratio:"):
        build(MixConfig, {"ratio": -0.5}, prefix="mix")
    with pytest.raises(UserError, match=r"mix\.strategy"):
        build(MixConfig, {"strategy": "everything"}, prefix="mix")


def test_overrides_parse_types_and_reject_bad_forms():
    assert parse_overrides(["gen.beta=2.5", "clf.epochs=3", "mix.strategy=balance"]) == {
        "gen": {"beta": 2.5}, "clf": {"epochs": 3}, "mix": {"strategy": "balance"}}
    for bad in ("beta=2", "gen.beta", "foo.bar=1"):
        with pytest.raises(UserError):
            parse_overrides([bad])


def test_malformed_yaml_names_the_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("a: [1, 2\nb: 3\n")
    with pytest.raises(UserError, match="bad.yaml: malformed YAML"):
        load_yaml(p)
    with pytest.raises(UserError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")
