"""bench/gpu.py at smoke size on the CPU: every part runs and the table names the device (the GPU figures come
from the same script in one short sitting on a GPU host; docs/measurements.md)."""

from __future__ import annotations

import pytest
from benches import load_bench

GRID = """experiment: gpu-bench-smoke
profile: smoke
models: [none]
regimes: [balanced]
sizes: [300]
seeds: [0]
classifiers: [cnn]
fixed: {clf.epochs: 1}
"""


@pytest.mark.slow
def test_gpu_bench_runs_every_part_on_the_cpu_and_writes_its_table(tmp_path, capsys):
    bench = load_bench("gpu")
    grid = tmp_path / "tiny.yaml"
    grid.write_text(GRID)
    out = tmp_path / "gpu.md"
    assert bench.main(["--device", "cpu", "--size", "300", "--cnn-steps", "4", "--conv-batch", "8",
                       "--conv-seconds", "0.05", "--families", "vae", "--grids", str(grid), "--workers", "1",
                       "--limit", "900", "--grid-limit", "900", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# GPU bench: CPU (")
    for heading in ("## The bound", "## Trainers", "## GPU busy fraction", "## The fair grids"):
        assert heading in text
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    for mode in ("graph", "fused", "eager"):
        for precision in ("fp32", "bf16"):
            assert "cuda_graphs=false" in rows[f"classifier CNN, {mode}, {precision}"]  # a CPU: no graph
    assert "%" in rows["vae"] and "failed" not in rows["vae"]
    assert "| 1 of 1 |" in rows["tiny.yaml"]  # the grid ran its one cell to the end
    assert "time limit" not in text


def test_gpu_bench_rejects_unknown_parts_and_a_missing_cuda_device(capsys):
    bench = load_bench("gpu")
    with pytest.raises(SystemExit) as err:
        bench.main(["--device", "cpu", "--parts", "bound,speed"])
    assert err.value.code == 2 and "speed" in capsys.readouterr().err
