"""bench/time_to_quality.py end to end on the smoke profile: both settings run, the table compares them, and the
same command again resumes from its store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from benches import load_bench


@pytest.mark.slow
def test_a_sampling_only_change_is_charged_todays_training_and_the_table_says_whether_quality_holds(tmp_path, capsys):
    bench = load_bench("time_to_quality")
    # cgan's truncation is sampling-only: the fast run reuses today's weights (and is charged their training)
    argv = ["--profile", "smoke", "--families", "vae,cgan", "--seeds", "0", "--size", "500",
            "--fast", "vae:epochs=1", "--fast", "cgan:truncation=0.5", "--store", str(tmp_path)]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "read back" not in out
    # the bench takes hours at quick: the same command again resumes, reading back every finished run
    assert bench.main(argv) == 0
    again = capsys.readouterr().out
    assert again.count("finished earlier in this store; read back") == 4
    table = [line for line in out.splitlines() if line.startswith("| vae ") or line.startswith("| cgan ")]
    assert table and table == [line for line in again.splitlines() if line.startswith(("| vae ", "| cgan "))]
    # --report prints the same table and runs nothing: a family without its runs is named, not tabled
    families = argv.index("--families") + 1
    report = argv[:families] + ["vae,cgan,cvae"] + argv[families + 1:] + ["--report"]
    assert bench.main(report) == 0
    reported = capsys.readouterr().out
    assert [line for line in reported.splitlines() if line.startswith(("| vae ", "| cgan "))] == table
    assert "not in the table: cvae (0 of 2 runs)" in reported and "| cvae " not in reported
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in out.splitlines() if line.startswith("| vae ") or line.startswith("| cgan ")}
    assert rows["vae"][1] == "epochs=1" and rows["cgan"][1] == "truncation=0.5"
    assert float(rows["cgan"][3]) > 0 and float(rows["cgan"][4]) > 0  # a GAN trains for seconds even on smoke
    for cells in rows.values():
        assert float(cells[3]) >= 0 and float(cells[4]) >= 0 and cells[5].endswith("×")
        assert cells[11] in {"yes", "no"} and "→" in cells[9] and "→" in cells[10]
    # CPU seconds: measured for vae (both settings trained), none for cgan's fast run (it reused today's weights)
    assert float(rows["vae"][6]) > 0 and float(rows["vae"][7]) > 0 and rows["vae"][8].endswith("×")
    assert rows["cgan"][8] == "—"


def test_bad_fast_settings_are_refused_with_the_fix(capsys):
    bench = load_bench("time_to_quality")
    with pytest.raises(SystemExit) as exc:
        bench.main(["--fast", "ddpm-sampling_steps=10"])
    assert exc.value.code == 2 and "expected FAMILY:key=value" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--families", "noise"])
    assert "untrainable" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--report"])
    assert "--report reads a store: give --store DIR" in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_cut_off_in_training_goes_on_from_its_snapshot_when_the_bench_is_run_again(tmp_path, resumable_env):
    """The bench spans sessions: the process killed in a generator's training (a session's end) loses no training;
    the same command again resumes it, and says so."""
    bench = Path(__file__).parents[1] / "bench" / "time_to_quality.py"
    args = [sys.executable, str(bench), "--profile", "smoke", "--families", "vqvae", "--seeds", "0", "--size", "300",
            "--fast", "vqvae:hidden=16", "--store", str(tmp_path / "store")]
    killed = subprocess.run(args, env=resumable_env | {"SYNTHBOOST_FAULT": "generator-training:SIGKILL"},
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert list((tmp_path / "snap").glob("*.pt")), "the killed training left no snapshot"
    again = subprocess.run(args, env=resumable_env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    today = next(line for line in again.stdout.splitlines() if line.startswith("vqvae seed 0: today"))
    assert "'resumed': 'autoencoder epoch 1" in today, today
    assert "'resumed': ''" in today.split("fast", 1)[1]  # the fast setting trained on its own, from the start
    assert not list((tmp_path / "snap").glob("*.pt"))  # cleared once each generator was in the store


def test_a_row_whose_runs_ran_on_two_machines_compares_quality_but_prints_no_speed_up():
    """A store resumed on another machine from the ledger holds wall times of two CPUs: their ratio means nothing."""
    bench = load_bench("time_to_quality")

    def run(machine, wall, lc=0.7, fid=80.0):
        return {"gen": wall, "sample": 0.0, "reused": False, "resumed": "", "lc": lc, "fid": fid, "machine": machine,
                "cpu": wall / 2}

    one = bench.summarise("vae", [run("A [AVX2]", 300)] * 3, [run("A [AVX2]", 100)] * 3, {"epochs": 20})
    assert one["speedup"] == pytest.approx(3.0) and one["cpu_speedup"] == pytest.approx(3.0)
    mixed = bench.summarise("vae", [run("A [AVX512+BF16]", 200), run("A [AVX2]", 300), run("A [AVX2]", 300)],
                            [run("A [AVX2]", 100)] * 3, {"epochs": 20})
    assert mixed["speedup"] is None and mixed["cpu_speedup"] is None and mixed["holds"]
    line = bench.table([one, mixed]).splitlines()[-1]
    assert "— (runs of 2 machines" in line and "A [AVX2]; A [AVX512+BF16]" in line and "3.00×" not in line
    assert "3.00×" in bench.table([one])
