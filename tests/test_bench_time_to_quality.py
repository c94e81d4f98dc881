"""bench/time_to_quality.py end to end on the smoke profile: both settings run, the table compares them, and the
same command again resumes from its store."""

from __future__ import annotations

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
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in out.splitlines() if line.startswith("| vae ") or line.startswith("| cgan ")}
    assert rows["vae"][1] == "epochs=1" and rows["cgan"][1] == "truncation=0.5"
    assert float(rows["cgan"][3]) > 0 and float(rows["cgan"][4]) > 0  # a GAN trains for seconds even on smoke
    for cells in rows.values():
        assert float(cells[3]) >= 0 and float(cells[4]) >= 0 and cells[5].endswith("×")
        assert cells[8] in {"yes", "no"} and "→" in cells[6] and "→" in cells[7]


def test_bad_fast_settings_are_refused_with_the_fix(capsys):
    bench = load_bench("time_to_quality")
    with pytest.raises(SystemExit) as exc:
        bench.main(["--fast", "ddpm-sampling_steps=10"])
    assert exc.value.code == 2 and "expected FAMILY:key=value" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--families", "noise"])
    assert "untrainable" in capsys.readouterr().err
