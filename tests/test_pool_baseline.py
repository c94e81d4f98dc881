"""Runs that learn from an unlabelled pool (issue 35, item 9): ``ssvae`` trains on unlabelled official-train images
beyond its cell, so it is tagged, reported apart and paired with the ``pseudo-label`` baseline — the same images,
labelled by the strong recipe — never with ``none``."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from synthboost import cell, generators, pipeline, pseudo_label
from synthboost.config import DataConfig
from synthboost.data import load_fashion_mnist, make_split, unlabeled_indices
from synthboost.errors import UserError
from synthboost.tracking import TAG_UNLABELED_DIGEST, TAG_UNLABELED_POOL, Tracker

PLAIN_CLF = {"clf.epochs": "20", "clf.net": "vgg", "clf.augment": "none", "clf.class_weight": "none",
             "clf.recipe": "fair"}
BASE = [0.70, 0.712, 0.693]  # `none` per seed
GAIN = {"none": 0.0, "vae": 0.01, "ssvae": 0.05, "pseudo-label": 0.04}
NOISE = {"none": [0, 0, 0], "vae": [0.002, -0.001, 0.0], "ssvae": [0.004, -0.003, 0.002],
         "pseudo-label": [-0.002, 0.001, 0.003]}


def _acc(model: str, seed: int) -> float:
    return BASE[seed] + GAIN[model] + NOISE[model][seed]


def _log(tracker, exp_id: str, model: str, seed: int, *, params=None, tags=None, acc=None) -> None:
    from mlflow.entities import Metric, Param

    gen = model in generators.FAMILIES
    run = tracker.client.create_run(exp_id, run_name=f"{model} {seed}", tags={
        "synthboost.kind": "experiment", "model": model, "variant": model, "regime": "high", "size": "1000",
        "seed": str(seed), "profile": "quick", "classifier": "cnn", "data_digest": f"d{seed}", **(tags or {})})
    params = {"model": model, "mix.ratio": "1.0" if gen else "0.0", "mix.strategy": "uniform",
              "data.regime": "high", "data.size": "1000", **PLAIN_CLF, **(params or {})}
    acc = _acc(model, seed) if acc is None else acc
    tracker.client.log_batch(run.info.run_id, metrics=[Metric("test/accuracy", acc, int(time.time() * 1000), 0)],
                             params=[Param(k, v) for k, v in params.items()])
    tracker.client.set_terminated(run.info.run_id, "FINISHED")


def test_ssvae_is_paired_with_the_pseudo_label_baseline_on_its_pool_never_with_none(tmp_path):
    """ssvae runs (tagged, or from before the tag: their gen.unlabeled_size) leave the main table and its claims;
    their own section pairs them with pseudo-label on the same pool, seed for seed; a pool of another size is
    not paired but listed as missing its baseline."""
    from synthboost.report import build_report

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = tracker.experiment_id("pool")
    pool = {TAG_UNLABELED_POOL: "2000"}
    for seed in range(3):
        _log(tracker, exp, "none", seed)
        _log(tracker, exp, "vae", seed)
        _log(tracker, exp, "pseudo-label", seed, params={"pseudo.unlabeled_size": "2000"}, tags=pool)
        # seeds 0-1 from before the tag (only the gen param says it used the pool), seed 2 tagged
        _log(tracker, exp, "ssvae", seed, params={"gen.unlabeled_size": "2000"}, tags=pool if seed == 2 else {})
    _log(tracker, exp, "ssvae", 0, params={"gen.unlabeled_size": "5000", "gen.alpha": "9"}, acc=0.99)  # other pool
    result = build_report(experiments=["pool"], out_dir=tmp_path / "r", formats={"md", "html", "csv"},
                          tracker=tracker, log_to_mlflow=False)
    a = result.analysis
    assert set(a.runs["model"]) == {"none", "vae"}
    assert set(a.gains["model"]) == {"vae"} and "ssvae" not in set(a.missing.get("model", []))
    assert all("ssvae" not in c.detail and "pseudo-label" not in c.detail for c in result.claims)

    u = a.unlabeled
    acc = u.gains[(u.gains["metric"] == "accuracy") & (u.gains["model"] == "ssvae")]
    assert acc["baseline"].tolist() == ["pseudo-label"] and acc["n"].tolist() == [3]
    want = np.mean([_acc("ssvae", s) - _acc("pseudo-label", s) for s in range(3)])
    assert acc["mean"].iloc[0] == pytest.approx(want)
    lone = u.missing[u.missing["model"] == "ssvae"]  # the 5,000-image pool has no baseline on its images
    assert lone["baseline"].tolist() == ["pseudo-label"] and lone["missing_seeds"].tolist() == ["0"]
    assert set(u.missing["baseline"]) == {"pseudo-label"}  # never listed as lacking `none`

    md = (tmp_path / "r" / "report.md").read_text()
    main, apart = md.split("## Runs that learned from an unlabelled pool")
    assert "ssvae" not in main.split("## Results")[1] and "ssvae" in apart and "pseudo-label" in apart
    assert "7 runs that learned from an unlabelled pool" in md  # 3 pseudo-label, 4 ssvae
    assert "unlabelled pool" in (tmp_path / "r" / "report.html").read_text()
    assert (tmp_path / "r" / "unlabeled_gains.csv").is_file()


def test_the_pool_baseline_config_follows_ssvae_profile_by_profile_and_is_refused_elsewhere():
    for profile in ("smoke", "quick", "paper"):
        ss = cell.make_config(model="ssvae", regime="high", size=1000, profile=profile)
        pl = cell.make_config(model="pseudo-label", regime="high", size=1000, profile=profile)
        assert cell.unlabeled_count(pl) == cell.unlabeled_count(ss) == ss.gen.unlabeled_size > 0
        assert pl.clf == cell.make_config(model="none", regime="high", size=1000, profile=profile).clf
    assert cell.unlabeled_count(cell.make_config(model="cvae", regime="high", size=1000)) == 0
    pl = cell.make_config(model="pseudo-label", overrides={"pseudo": {"threshold": 0.5, "unlabeled_size": 300}})
    assert (pl.pseudo.threshold, pl.pseudo.unlabeled_size) == (0.5, 300) and "pseudo.threshold" in pl.params()
    assert "+300 unlabeled" in cell.run_name(pl)
    with pytest.raises(UserError, match="apply only to model pseudo-label"):
        cell.make_config(model="none", overrides={"pseudo": {"threshold": 0.5}})
    with pytest.raises(UserError, match="pseudo.threshold"):
        cell.make_config(model="pseudo-label", overrides={"pseudo": {"threshold": 1.5}})
    # a run with no pool keeps the config (and key) it had: no pseudo section in it
    assert "pseudo" not in cell.make_config(model="none").to_dict()


@pytest.mark.slow
def test_pseudo_label_runs_on_the_images_ssvae_sees_at_the_steps_of_none(tmp_path):
    """Smoke profile, real data: ssvae and pseudo-label are tagged with the same pool (size and digest), the
    pseudo-labels are drawn from exactly ssvae's pool images, and pseudo-label trains as many steps as none."""
    from synthboost.generators.ssvae import SSVAE

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    out = {}
    for model in ("none", "ssvae", "pseudo-label"):
        # smoke's 2-epoch teacher is rarely 90% sure: a lower threshold, so that pseudo-labels join the real images
        low = {"pseudo": {"threshold": 0.2}} if model == "pseudo-label" else {}
        cfg = cell.make_config(model=model, regime="high", size=600, seed=1, profile="smoke", overrides=low)
        res = pipeline.run_experiment(cfg, tracker=tracker, experiment="pool-smoke", use_env_run=False,
                                      progress=False, use_cache=False)
        out[model] = (cfg, tracker.run_info(res.run_id))
    tags = {m: info["tags"] for m, (_, info) in out.items()}
    assert TAG_UNLABELED_POOL not in tags["none"]
    assert tags["ssvae"][TAG_UNLABELED_POOL] == tags["pseudo-label"][TAG_UNLABELED_POOL] == "200"
    assert tags["ssvae"][TAG_UNLABELED_DIGEST] == tags["pseudo-label"][TAG_UNLABELED_DIGEST]
    metrics = {m: info["metrics"] for m, (_, info) in out.items()}
    assert metrics["pseudo-label"]["train/clf_steps"] == metrics["none"]["train/clf_steps"] > 0
    assert metrics["pseudo-label"]["pseudo/pool"] == 200
    assert 0 < metrics["pseudo-label"]["pseudo/kept_total"] <= 200

    # the same images: ssvae's fit input, and what pseudo-label labels (threshold 0 keeps all, in draw order)
    cfg = out["ssvae"][0]
    split = make_split(cfg.data, cfg.seed)
    ssvae_pool = SSVAE(cfg.gen, device="cpu").fit_inputs(split, seed=cfg.seed, models=None).kwargs["unlabeled"]
    idx = unlabeled_indices(split, 200, cfg.seed)
    assert torch.equal(ssvae_pool, load_fashion_mnist().train_x[idx])
    assert not set(idx.tolist()) & set(torch.cat([split.train_index, split.val_index]).tolist())
    teacher, _ = pseudo_label.train_teacher(split, profile="smoke", seed=cfg.seed)
    every = pseudo_label.PseudoLabelConfig(unlabeled_size=200, threshold=0.0)
    x, y, m = pseudo_label.pseudo_labeled(split, every, seed=cfg.seed, teacher=teacher)
    assert torch.equal(x[:, 0], ssvae_pool) and len(y) == 200 and m["pseudo/kept_total"] == 200
