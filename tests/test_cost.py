"""The grid's cost estimates: each family priced from its own runs, else its calibration on this CPU, else unknown."""

import pytest
from typer.testing import CliRunner

from synthboost import cost, work
from synthboost import grid as grid_mod
from synthboost.cli import app

runner = CliRunner()
HERE = {"cpu": "Test CPU 9000", "threads": 1}
ELSEWHERE = {"cpu": "Other CPU 1", "threads": 1}


def record(family, size=1000, *, gen_s=10.0, gen_images=10_000, clf_s=5.0, steps=500, cell=20.0, sample_s=2.0,
           sampled=1000):
    time = {"classifier": clf_s, "cell": cell}
    work = {"classifier": steps}
    if gen_images:
        time |= {"gen": gen_s, "sample": sample_s}
        work |= {"gen_images": gen_images, "sampled": sampled}
    return cost.Record(family=family, profile="quick", classifier="cnn", size=size, time=time, work=work, **HERE)


def cell(family, size=1000, *, group=0, steps=500, gen_images=10_000, sampled=1000, key="k"):
    gen = {} if family == "none" else {"gen_key": f"{family}-{key}-{size}", "gen_images": gen_images,
                                       "sampled": sampled}
    return cost.CellWork(family=family, profile="quick", classifier="cnn", size=size, group=group,
                         classifier_work=steps, **gen)


def test_a_family_without_runs_or_calibration_is_unknown_not_borrowed_from_another_family():
    est = cost.estimate([cell("none"), cell("ddpm", group=1)], records=[record("none", gen_images=0)],
                        calibration=[record("vae")], m=HERE)
    assert est.families["none"].source == "runs" and est.families["none"].seconds > 0
    ddpm = est.families["ddpm"]
    assert ddpm.source == "unknown" and ddpm.unknown == ddpm.parts == 3 and ddpm.seconds == 0
    lines = cost.report_lines(est, workers=1)
    assert any(line.startswith("ddpm") and "unknown" in line and "—" in line for line in lines)
    assert "3 of 4 parts unknown" in "\n".join(lines) and "at least" in "\n".join(lines)


def test_a_draw_shared_by_several_recipes_is_priced_once_and_not_at_all_once_drawn():
    """A generator's recipes (default, -strong, -seedrecipe) train on one kept draw (sample_cache)."""
    from dataclasses import replace

    runs = [record("ddpm", sample_s=100.0, sampled=1000)]
    one = replace(cell("ddpm"), pool_key="p")
    alone = cost.estimate([one], records=runs, calibration=[], m=HERE).seconds
    assert alone == pytest.approx(10 + 100 + 10 + 5)  # training, the draw, the 100-image sample grid, classifier
    shared = cost.estimate([one, replace(one, group=1)], records=runs, calibration=[], m=HERE).seconds
    assert shared == pytest.approx(alone + 5)  # the second recipe pays its classifier, not the draw
    other_mix = replace(one, group=1, pool_key="q")
    assert cost.estimate([one, other_mix], records=runs, calibration=[], m=HERE).seconds == pytest.approx(alone + 105)
    drawn = cost.estimate([one], records=runs, calibration=[], m=HERE, trained_keys={one.gen_key},
                          drawn_keys={"p"}).seconds
    assert drawn == pytest.approx(5)  # trained and drawn already: the classifier alone


def test_a_run_tagged_timings_disturbed_is_not_priced_from(tracker):
    """A cell whose process was paused mid-run (its wall time counts the pause) keeps its result but not its price."""
    from synthboost import tracking

    exp = tracker.client.create_experiment("timings-disturbed")
    ids = []
    for _ in range(2):
        run = tracker.client.create_run(exp, tags={tracking.TAG_KIND: tracking.KIND_EXPERIMENT, "model": "none",
                                                   "profile": "quick", "classifier": "cnn", "size": "1000"})
        tracker.client.log_metric(run.info.run_id, "time/cell", 100.0)
        tracker.client.set_terminated(run.info.run_id)
        ids.append(run.info.run_id)
    assert len(tracker.timings(experiments=["timings-disturbed"])) == 2
    tracker.client.set_tag(ids[0], tracking.TAG_TIMINGS_DISTURBED, "true")
    assert len(tracker.timings(experiments=["timings-disturbed"])) == 1


def test_runs_win_over_calibration_and_each_unit_says_where_it_came_from():
    runs = [record("vae", gen_s=100.0)]
    cal = [record("vae", gen_s=1.0)]
    est = cost.estimate([cell("vae")], records=runs, calibration=cal, m=HERE)
    assert est.families["vae"].source == "runs" and est.families["vae"].seconds > 100
    est = cost.estimate([cell("vae")], records=[], calibration=cal, m=HERE)
    assert est.families["vae"].source == "calibration" and est.families["vae"].seconds < 100


def test_a_bf16_classifier_is_priced_only_from_runs_that_trained_in_bf16(tmp_path):
    """clf.amp=auto trains in bf16 on a CPU that has it: 1.6x the fp32 step rate here, so fp32 runs would
    overprice such a grid; its classifier unit is priced from bf16 runs, else unknown."""
    from dataclasses import replace

    fp32, bf16 = record("none", gen_images=0, clf_s=10.0), replace(record("none", gen_images=0, clf_s=6.0, cell=16.0),
                                                                   precision="bf16")
    plain, fast = cell("none"), replace(cell("none"), precision="bf16")
    assert cost.estimate([fast], records=[fp32], calibration=[], m=HERE).families["none"].source == "unknown"
    both = [fp32, bf16]
    slow_s = cost.estimate([plain], records=both, calibration=[], m=HERE).seconds
    fast_s = cost.estimate([fast], records=both, calibration=[], m=HERE).seconds
    assert slow_s - fast_s == pytest.approx(10.0 - 6.0)  # the same steps at each precision's own rate
    path = tmp_path / "g.yaml"
    path.write_text("experiment: p\nprofile: quick\nmodels: [none]\nregimes: [high]\nsizes: [1000]\nseeds: [0]\n"
                    "fixed: {clf.amp: bf16}\n")
    (unit,) = grid_mod.plan(grid_mod.load_grid(path), str(tmp_path / "q.journal"))
    assert cost.cell_work(unit, unit.cells[0], group=0).precision == "bf16"


def test_a_seed_recipe_classifier_is_priced_from_seed_recipe_runs_and_its_generator_from_any():
    """clf.recipe=seed trains the seed study's small CNN (0.075 s a step against the fair CNN's 0.097 on high/1,000
    here): its classifier unit is priced from runs of that recipe, else unknown; its generator from the family's."""
    from dataclasses import replace

    fair = record("ddpm", clf_s=10.0, cell=120.0)
    seed = replace(record("ddpm", clf_s=1.0, cell=111.0), recipe="seed")
    seed_cell = replace(cell("ddpm"), recipe="seed")
    only_fair = cost.estimate([seed_cell], records=[fair], calibration=[], m=HERE).families["ddpm"]
    assert only_fair.unknown == 1 and only_fair.parts == 3  # the classifier; training and drawing are priced
    both = [fair, seed]
    seed_s = cost.estimate([seed_cell], records=both, calibration=[], m=HERE).seconds
    fair_s = cost.estimate([cell("ddpm")], records=both, calibration=[], m=HERE).seconds
    assert fair_s - seed_s == pytest.approx(10.0 - 1.0)  # the same generator, draw and overhead; 9 s of classifier


def test_the_estimate_scales_with_steps_images_and_picks_the_nearest_size():
    runs = [record("vae", 1000, gen_s=10.0), record("vae", 5000, gen_s=1000.0)]  # a much slower rate at 5,000
    one = cost.estimate([cell("vae", 1000)], records=runs, calibration=[], m=HERE).seconds
    twice = cost.estimate([cell("vae", 1000, steps=1000, gen_images=20_000, sampled=2000)], records=runs,
                          calibration=[], m=HERE).seconds
    fixed = (20.0 - 10.0 - 5.0 - 2.0) + 2.0 / 1000 * cost.GRID_SAMPLES  # per cell, and per generator's sample grid
    assert abs((twice - fixed) - 2 * (one - fixed)) < 1e-6
    near_5000 = cost.estimate([cell("vae", 4000)], records=runs, calibration=[], m=HERE).seconds
    assert near_5000 > 20 * one  # 4,000 is priced from the 5,000 run's rate, not the 1,000 one's


def test_a_generator_shared_by_cells_is_counted_once():
    shared = [cell("vae", group=0, key="same"), cell("vae", group=0, key="same")]
    apart = [cell("vae", group=0, key="a"), cell("vae", group=1, key="b")]
    runs = [record("vae")]
    est_shared = cost.estimate(shared, records=runs, calibration=[], m=HERE)
    est_apart = cost.estimate(apart, records=runs, calibration=[], m=HERE)
    assert est_apart.seconds - est_shared.seconds > 9.9  # one more generator training (10 s) and its sample grid
    assert est_apart.wall_seconds(2) < est_apart.wall_seconds(1)


def test_a_calibration_from_another_cpu_is_not_used(tmp_path):
    path = tmp_path / "calibration.json"
    cost.save_calibration([record("vae")], path=path, m=ELSEWHERE)
    mine, elsewhere = cost.calibration_records(cost.load_calibration(path), HERE)
    assert mine == [] and elsewhere == [work.machine_key(ELSEWHERE)]
    cost.save_calibration([record("none", gen_images=0)], path=path, m=HERE, cpu_share=0.25)
    data = cost.load_calibration(path)
    mine, elsewhere = cost.calibration_records(data, HERE)
    assert {r.family for r in mine} == {"none"} and elsewhere == [work.machine_key(ELSEWHERE)]
    assert cost.calibration_share(data, HERE) == 0.25  # a busy machine's calibration says so


def test_cell_work_follows_the_planned_config(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("experiment: cw\nprofile: quick\nmodels: [none, ddpm]\nregimes: [balanced]\nsizes: [1000, 5000]\n"
                    "seeds: [0]\nmixes: [{ratio: 1.0, strategy: balance}]\n")
    units = grid_mod.plan(grid_mod.load_grid(path), str(tmp_path / "q.journal"))
    work = {(u.model, u.size): cost.cell_work(u, u.cells[0], group=0) for u in units}
    # the CNN's budget is epochs × ⌊real training images / batch⌋; a mix draws as many images as the real ones
    assert work[("none", 5000)].classifier_work == 40 * (4250 // 64)
    assert work[("ddpm", 1000)].sampled == 850 and work[("ddpm", 1000)].gen_key != work[("ddpm", 5000)].gen_key
    # ddpm's step floor (quick: 790 steps) holds the small regime's training near the large one's
    assert work[("ddpm", 1000)].gen_images >= 790 * 64 * 0.99
    assert work[("none", 1000)].gen_key is None
    # a recipe variant draws the very same images (one kept draw); another mix does not
    path.write_text("experiment: cw\nprofile: quick\nregimes: [balanced]\nsizes: [1000]\nseeds: [0]\n"
                    "models: [ddpm, {model: ddpm, name: ddpm-seedrecipe, clf: {recipe: seed}}]\n"
                    "mixes: [{ratio: 1.0, strategy: uniform}, {ratio: 2.0, strategy: uniform}]\n")
    units = grid_mod.plan(grid_mod.load_grid(path), str(tmp_path / "q.journal"))
    default, seedrecipe = ([cost.cell_work(u, c, group=0) for c in u.cells] for u in units)
    assert default[0].pool_key == seedrecipe[0].pool_key != default[1].pool_key
    assert default[0].gen_key == default[1].gen_key == seedrecipe[1].gen_key


def test_dry_run_on_an_empty_store_says_unknown_and_how_to_calibrate(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("experiment: dry\nprofile: smoke\nmodels: [none, vae]\nregimes: [balanced]\nsizes: [300]\n"
                    "seeds: [0]\n")
    # an empty store of its own (the suite's shared store holds other tests' smoke runs, which would price them)
    out = runner.invoke(app, ["grid", "--config", str(path), "--storage", str(tmp_path / "q.journal"), "--dry-run"],
                        env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'empty.db'}"})
    assert out.exit_code == 0, out.output
    assert "2 cells in 2 units; 0 done, 2 to run" in out.stdout
    assert "4 of 4 parts unknown" in out.stdout and "synthboost grid --calibrate" in out.stdout
    assert [line.split()[0] for line in out.stdout.splitlines() if "unknown" in line.split()[-1:]] == ["none", "vae"]


def test_an_estimate_replayed_as_of_a_past_time_prices_from_the_runs_ended_by_then(tmp_path, monkeypatch, capsys):
    """``bench/grid_cost.py --replay``: the dry-run a user would have seen then, to hold against the cells since."""
    from synthboost import tracking

    # a store of its own: the suite's shared one holds other tests' smoke runs of `none`, which would price it too
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'replayed.db'}")
    tracker = tracking.Tracker()

    path = tmp_path / "g.yaml"
    path.write_text("experiment: replayed\nprofile: smoke\nmodels: [none]\nregimes: [balanced]\nsizes: [300]\n"
                    "seeds: [0, 1, 2]\n")
    spec = grid_mod.load_grid(path)
    units = grid_mod.plan(spec, str(tmp_path / "q.journal"))
    keys = [c.key for u in units for c in u.cells]
    steps = cost.cell_work(units[0], units[0].cells[0], group=0).classifier_work
    exp = tracker.experiment_id("replayed")
    # seed 0 ended at t=1,000 s, classifier 1 s a step; seed 1 at t=5,000 s, 3 s a step; seed 2 never ran
    for key, end, per_step in ((keys[0], 1_000_000, 1.0), (keys[1], 5_000_000, 3.0)):
        run = tracker.client.create_run(exp, start_time=end - int((per_step * steps + 20) * 1000), tags={
            tracking.TAG_KIND: tracking.KIND_EXPERIMENT, tracking.TAG_CONFIG_KEY: key, "model": "none",
            "profile": "smoke", "classifier": "cnn", "size": "300", **work.machine_tags()})
        for name, value in (("time/classifier", per_step * steps), ("work/classifier", steps),
                            ("time/cell", per_step * steps + 20)):
            tracker.client.log_metric(run.info.run_id, name, value)
        tracker.client.set_terminated(run.info.run_id, end_time=end)
    assert len(tracker.timings(experiments=["replayed"], before=3_000_000)) == 1

    now = cost.estimate_grid(units, tracker, experiment=spec.experiment, calibration=tmp_path / "none.json")
    assert list(now.cell_seconds) == [keys[2]]  # seeds 0 and 1 are done
    assert now.cell_seconds[keys[2]] == pytest.approx(2.0 * steps + 20)  # the mean of both runs' rates
    then = cost.estimate_grid(units, tracker, experiment=spec.experiment, calibration=tmp_path / "none.json", as_of=3_000_000)
    # seed 1 was still to run, in the order the cells then ran (seed 1 first), priced from seed 0's run alone
    assert list(then.cell_seconds) == [keys[1], keys[2]]
    assert then.cell_seconds[keys[1]] == pytest.approx(1.0 * steps + 20)
    assert then.seconds == pytest.approx(sum(then.cell_seconds.values()))
    before_any = cost.estimate_grid(units, tracker, experiment=spec.experiment, calibration=tmp_path / "none.json", as_of=500_000)
    assert before_any.unknown and set(before_any.cell_seconds.values()) == {None}
    # a calibration made since did not exist then: the replay does not use it
    cal = cost.save_calibration([record("none", size=300, gen_images=0)], path=tmp_path / "cal.json")
    replayed = cost.estimate_grid(units, tracker, experiment=spec.experiment, calibration=cal, as_of=500_000)
    assert replayed.unknown and any("newer than the replayed moment" in n for n in replayed.notes)
    # the bench holds the estimate as of then against the cell measured since (seed 1: 3 s a step, 1 s priced)
    from benches import load_bench

    load_bench("grid_cost").replay(str(path), as_of="1970-01-01T00:50", workers=1, cells=True)
    out = capsys.readouterr().out
    assert "left out: 0 with disturbed timings, 0 priced unknown, 1 not finished yet" in out
    row = next(line.split() for line in out.splitlines() if line.split()[:1] == ["total"])
    assert row[1] == "1" and float(row[4]) == pytest.approx((steps + 20) / (3 * steps + 20), abs=0.01)


def test_two_cpus_of_one_model_name_but_different_vector_units_are_different_machines(monkeypatch):
    """Cloud CPUs report one model name ("AMD EPYC") for an AVX2 part and an AVX512-BF16 one, whose speeds differ:
    timings of one must not price cells on the other."""
    import torch

    from synthboost import training

    monkeypatch.setattr(work, "cpu_model", lambda: "AMD EPYC")
    seen = []
    for isa, bf16 in (("AVX2", False), ("AVX512", True), ("AVX512", False)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda isa=isa: isa)
        monkeypatch.setattr(training, "native_bf16", lambda device, bf16=bf16: bf16)
        work.cpu_kind.cache_clear()
        seen.append(work.machine()["cpu"])
    work.cpu_kind.cache_clear()
    assert seen == ["AMD EPYC [AVX2]", "AMD EPYC [AVX512+BF16]", "AMD EPYC [AVX512]"]
    assert len({work.machine_key({"cpu": c, "threads": 1}) for c in seen}) == 3
