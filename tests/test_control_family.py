"""The control "generators" (registry kind ``control``): held-out real images (upper bound) and noise (lower bound)."""

from __future__ import annotations

import pytest
import torch

from synthboost import generators
from synthboost.data import load_fashion_mnist

FAMILY = generators.of_kind("control")  # `split` and `trained`: tests/conftest.py


def test_the_controls_are_registered_and_never_a_family_in_claims_or_grids():
    assert set(FAMILY) == {"heldout", "noise"} == set(generators.CONTROLS)
    from synthboost.grid import GridSpec, variants

    names = {v.name for v in variants(GridSpec(models=["all"]))}
    assert not names & generators.CONTROLS and "vae" in names  # a grid's `all` leaves them out …
    assert {v.name for v in variants(GridSpec(models=["heldout", "noise"]))} == {"heldout", "noise"}  # … by name: in


@pytest.mark.parametrize("name", FAMILY)
def test_sample_shape_range_and_checkpoint_round_trip(name, trained):
    gen = trained(name)
    labels = torch.arange(10).repeat(3)
    torch.manual_seed(5)
    out = gen.sample_batched(labels, batch_size=7)
    assert out.shape == (30, 1, 28, 28) and out.dtype == torch.uint8
    again = generators.load(gen.state_dict(), device="cpu")  # the checkpoint alone is enough to sample
    torch.manual_seed(5)
    assert torch.equal(again.sample_batched(labels, batch_size=7), out)
    assert gen.state_dict()["family"] == name


def test_heldout_returns_real_images_of_the_class_from_outside_the_runs_subset(trained, split):
    gen = trained("heldout")
    assert trained.losses("heldout")["pool"] == 60000 - 300  # every official train image but the run's own
    data = load_fashion_mnist()
    where: dict[bytes, set[int]] = {}
    for i, img in enumerate(data.train_x.flatten(1).numpy()):
        where.setdefault(img.tobytes(), set()).add(i)
    own = set(torch.cat([split.train_index, split.val_index]).tolist())
    labels = torch.tensor([0] * 400 + [3] * 50 + [9] * 5)  # more than one sample_batched chunk
    torch.manual_seed(0)
    out = gen.sample_batched(labels, batch_size=100)
    found = [where[img.tobytes()] for img in out.flatten(1).numpy()]
    assert all(idx - own for idx in found)  # never one of the run's own training or validation images
    assert all(any(int(data.train_y[i]) == int(k) for i in idx) for idx, k in zip(found, labels))  # its class
    assert len({img.tobytes() for img in out.flatten(1).numpy()}) == len(labels)  # no image twice in one draw


def test_heldout_refuses_to_sample_before_fit():
    with pytest.raises(RuntimeError, match="fitted"):
        generators.get("heldout")(device="cpu").sample(torch.zeros(2, dtype=torch.long))


def test_noise_is_uniform_and_ignores_nothing_but_the_count(trained):
    torch.manual_seed(0)
    out = trained("noise").sample_batched(torch.zeros(2000, dtype=torch.long)).float() / 255
    assert abs(out.mean().item() - 0.5) < 0.01 and abs(out.std().item() - (1 / 12) ** 0.5) < 0.01
