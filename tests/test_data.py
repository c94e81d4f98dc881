import gzip
import subprocess
import sys

import pytest
import torch

from synthboost.config import DataConfig
from synthboost.data import load_fashion_mnist, make_split, regime_counts, unlabeled_pool
from synthboost.errors import DataError


def test_balanced_counts_are_exact():
    assert regime_counts("balanced", 1000, 0) == [100] * 10
    assert sum(regime_counts("balanced", 1234, 0)) == 1234


def test_semi_has_two_minority_classes_at_one_sixth():
    counts = regime_counts("semi", 5000, 0, minority_classes=(2, 6))
    assert counts[2] == counts[6] == 100
    assert all(counts[k] == 600 for k in range(10) if k not in (2, 6))


@pytest.mark.parametrize("size", [1000, 3000, 5000])
def test_high_is_long_tailed_seeded_and_sums_to_size(size):
    a, b, c = (regime_counts("high", size, s) for s in (0, 0, 1))
    assert a == b and a != c
    assert sum(a) == size
    assert max(a) / min(a) > 3  # a real tail, not a near-balanced draw


def test_size_beyond_pool_is_refused_with_a_hint():
    with pytest.raises(DataError, match="use --size"):
        regime_counts("semi", 55000, 0)


def test_split_is_stratified_disjoint_and_from_train_pool():
    cfg = DataConfig(regime="high", size=2000)
    split = make_split(cfg, 3)
    counts = regime_counts("high", 2000, 3)
    train_c = torch.bincount(split.train_y, minlength=10)
    val_c = torch.bincount(split.val_y, minlength=10)
    assert (train_c + val_c).tolist() == counts
    for k in range(10):  # every class is in val in (rounded) proportion
        assert val_c[k] >= 1
        assert abs(val_c[k].item() - counts[k] * cfg.val_fraction) <= 1
    assert not set(split.train_index.tolist()) & set(split.val_index.tolist())
    data = load_fashion_mnist()
    assert torch.equal(split.train_x, data.train_x[split.train_index])
    assert split.test_x.shape == (10000, 28, 28)  # the official test set, untouched


def test_unlabeled_pool_is_outside_the_regime_subset():
    split = make_split(DataConfig(regime="balanced", size=500), 0)
    pool = unlabeled_pool(split, 1000, 0)
    assert pool.shape == (1000, 28, 28) and pool.dtype == torch.uint8
    with pytest.raises(DataError, match="unlabeled_size"):
        unlabeled_pool(split, 59600, 0)


DIGEST_SNIPPET = ("from synthboost.config import DataConfig; from synthboost.data import make_split; "
                  "print(make_split(DataConfig(regime='semi', size=1200), 5).digest)")


def test_digest_is_stable_across_processes_and_depends_on_the_data():
    out = [subprocess.run([sys.executable, "-c", DIGEST_SNIPPET], capture_output=True, text=True, check=True)
           .stdout.strip() for _ in range(2)]
    assert out[0] == out[1] == make_split(DataConfig(regime="semi", size=1200), 5).digest
    assert make_split(DataConfig(regime="semi", size=1200), 6).digest != out[0]


def test_missing_and_corrupt_data_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHBOOST_DATA", str(tmp_path))
    load_fashion_mnist.cache_clear()
    try:
        with pytest.raises(DataError, match="dataset-fashion-mnist"):
            load_fashion_mnist()
        for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                     "t10k-labels-idx1-ubyte"):
            with gzip.open(tmp_path / f"{stem}.gz", "wb") as fh:
                fh.write(b"\x00\x00\x08\x03" + (60000).to_bytes(4, "big") + b"\x1c" * 100)  # truncated
        with pytest.raises(DataError, match="truncated"):
            load_fashion_mnist()
    finally:
        load_fashion_mnist.cache_clear()
