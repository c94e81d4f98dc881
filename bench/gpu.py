"""How close each trainer runs to a GPU's compute bound, how busy it keeps the GPU, and the two fair grids' wall time.

    python bench/gpu.py [--device cuda] [--parts bound,trainers,busy,grids] [--limit 120] [--grid-limit 100]
        [--size 5000]
        [--cnn-steps 400] [--epochs 1] [--families ddpm,cgan,...] [--grids studies/fair-high.yaml,...]
        [--workers N] [--out docs/gpu-bench.md]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/generators.py, bench/bound.py
from bound import count_flops, untrained_clip_state  # noqa: E402
from generators import capped_config  # noqa: E402

from synthboost import generators  # noqa: E402
from synthboost.classifiers import CNNClassifier, CNNConfig  # noqa: E402
from synthboost.config import DataConfig, build  # noqa: E402
from synthboost.data import make_split  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("bound", "trainers", "busy", "grids")
#: the vgg CNN's convolutions (input side, channels in, channels out); 1→32 is left out: its one input channel
#: bounds nothing the other layers do not
CONVS = {"conv 28² 32→32": (28, 32, 32), "conv 14² 32→64": (14, 32, 64), "conv 14² 64→64": (14, 64, 64)}
#: the two fair grids unchanged on one H100 (issue 34; 12 and 14 workers): what the grids part compares against
BEFORE = {"fair-high.yaml": 174.0, "fair-balanced.yaml": 277.0}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def wall(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


class Budget:
    """A part's time limit: ``left()`` says whether another item may start."""

    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds

    def left(self) -> float:
        return self.deadline - time.perf_counter()


# ---------------------------------------------------------------- 1. the bound
def conv_rate(side: int, cin: int, cout: int, *, batch: int, dtype: torch.dtype, device: torch.device,
              seconds: float) -> float:
    """TFLOP/s of a 3×3 same-padded conv's forward and backward (input and weight gradients) at ``batch``."""
    x = torch.randn(batch, cin, side, side, device=device, dtype=dtype).to(memory_format=torch.channels_last)
    w = torch.randn(cout, cin, 3, 3, device=device, dtype=dtype, requires_grad=True)
    x.requires_grad_(True)

    def step():
        F.conv2d(x, w, padding=1).sum().backward()

    for _ in range(3):
        step()
    reps, spent = 0, 0.0
    while spent < seconds:
        spent += wall(step, device)
        reps += 1
    return 3 * 2 * batch * side * side * cin * cout * 9 * reps / spent / 1e12  # forward + two backward convs


def bound(device: torch.device, *, batch: int, seconds: float, budget: Budget) -> tuple[list[str], dict[str, float]]:
    precisions = {"fp32 (TF32)": torch.float32, "bf16": torch.bfloat16}
    lines = ["| conv shape (batch " + f"{batch})" + " | " + " | ".join(f"TFLOP/s {p}" for p in precisions) + " |",
             "|---|" + "---:|" * len(precisions)]
    best = dict.fromkeys(precisions, 0.0)
    with tf32(device, True):
        for label, (side, cin, cout) in CONVS.items():
            if budget.left() <= 0:
                lines.append(f"| {label} | time limit | |")
                continue
            rates = {p: conv_rate(side, cin, cout, batch=batch, dtype=d, device=device, seconds=seconds)
                     for p, d in precisions.items()}
            best = {p: max(best[p], r) for p, r in rates.items()}
            lines.append(f"| {label} | " + " | ".join(f"{r:.3g}" for r in rates.values()) + " |")
    lines.append("")
    lines.append("bound (best rate): " + ", ".join(f"{p} {r:.3g} TFLOP/s" for p, r in best.items()))
    return lines, {"fp32": best["fp32 (TF32)"], "bf16": best["bf16"]}


@contextlib.contextmanager
def tf32(device: torch.device, allow: bool):
    """cuDNN convolutions in TF32 (torch's default for them) while measuring; nothing on a CPU."""
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = old


# ---------------------------------------------------------------- 2. the trainers
def cnn_fit(split, device: torch.device, values: dict):
    """A closure that runs one ``CNNClassifier.fit`` of ``values`` (a fresh classifier each call)."""
    cfg = build(CNNConfig, values, prefix="clf")

    def run():
        clf = CNNClassifier(cfg, seed=0, device=device)
        clf.fit(split.train_x, split.train_y)
        run.execution = clf.execution

    return run


def cnn_rows(split, device: torch.device, *, steps: int, budget: Budget) -> list[dict]:
    flops = count_flops(cnn_fit(split, torch.device("cpu"), {"steps": 2, "cuda_step": "eager"})) / (2 * 64)
    rows = []
    for amp in ("off", "bf16"):
        for mode in ("graph", "fused", "eager"):
            name = f"classifier CNN, {mode}, {'bf16' if amp == 'bf16' else 'fp32'}"
            if budget.left() <= 0:
                rows.append({"name": name, "note": "time limit"})
                continue
            values = {"steps": steps, "cuda_step": mode, "amp": amp}
            run = cnn_fit(split, device, values)
            cnn_fit(split, device, {**values, "steps": 10})()  # warm: cuDNN's choices, allocations
            seconds = wall(run, device)
            rows.append({"name": name, "img_s": steps * 64 / seconds, "flops_img": flops,
                         "precision": "bf16" if amp == "bf16" else "fp32",
                         "note": ", ".join(f"{k}={v}" for k, v in run.execution.items())})
    return rows


def family_row(name: str, split, device: torch.device, *, epochs: int) -> dict:
    cls = generators.get(name)

    def fit(n_epochs: int):
        torch.manual_seed(0)
        gen = cls(capped_config(cls, "quick", n_epochs), device=device)
        kwargs = dict(gen.fit_inputs(split, seed=0, models=None).kwargs)
        if name == "clip":
            kwargs["clip_state"] = untrained_clip_state(gen.config.clip_profile)
        return gen, (lambda: gen.fit(split.train_x, split.train_y, **kwargs)), kwargs

    gen, run, kwargs = fit(1)
    flops_epoch = count_flops(run)  # also the warm-up
    bs = gen.config.batch_size
    n = len(split.train_y) + len(kwargs.get("unlabeled", ()))
    per_epoch = (n // min(bs, n)) * min(bs, n)
    gen, run, _ = fit(epochs)
    seconds = wall(run, device)
    precision = gen.precisions()["training"]
    return {"name": name, "img_s": epochs * per_epoch / seconds, "flops_img": flops_epoch / per_epoch,
            "precision": "bf16" if precision in ("bf16", "fp16") else "fp32", "note": f"{precision}, {epochs} epoch(s)"}


def trainer_table(rows: list[dict], peak: dict[str, float]) -> list[str]:
    lines = ["| trainer | train MFLOP/image | images/s | TFLOP/s | fraction of its precision's bound | note |",
             "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        if "img_s" not in r:
            lines.append(f"| {r['name']} | | | | | {r['note']} |")
            continue
        tflops = r["img_s"] * r["flops_img"] / 1e12
        frac = f"{tflops / peak[r['precision']]:.1%}" if peak.get(r["precision"]) else "n/a (bound not measured)"
        lines.append(f"| {r['name']} | {r['flops_img'] / 1e6:.1f} | {r['img_s']:,.0f} | {tflops:.3g} | {frac} | "
                     f"{r['note']} |")
    return lines


# ---------------------------------------------------------------- 3. busy fraction
def busy_fraction(fn, device: torch.device) -> tuple[float, float, int]:
    """(the time ``torch.profiler`` saw kernels run, wall time, kernels seen) over one call of ``fn`` — the kernel
    events summed as the profiler's own table totals them; on a CPU the aten ops' own time stands in."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync(device)
    with profile(activities=activities) as prof:
        seconds = wall(fn, device)
    if device.type == "cuda":
        kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA and not e.is_user_annotation]
        busy_us = sum(e.self_device_time_total for e in kernels)
    else:
        kernels = [e for e in prof.events() if e.name.startswith("aten::")]
        busy_us = sum(e.self_cpu_time_total for e in kernels)
    return busy_us / 1e6, seconds, len(kernels)


def busy_rows(split, device: torch.device, *, steps: int, budget: Budget) -> list[str]:
    lines = ["| trainer (one process) | kernel time s | wall s | busy fraction | kernels seen |",
             "|---|---:|---:|---:|---:|"]
    for mode in ("graph", "eager"):
        if budget.left() <= 0:
            lines.append(f"| classifier CNN, {mode} | | | time limit |")
            continue
        run = cnn_fit(split, device, {"steps": steps, "cuda_step": mode})
        cnn_fit(split, device, {"steps": 10, "cuda_step": mode})()
        busy, seconds, kernels = busy_fraction(run, device)
        lines.append(f"| classifier CNN, {mode} ({steps} steps) | {busy:.2f} | {seconds:.2f} | {busy / seconds:.0%} "
                     f"| {kernels:,} |")
    return lines


# ---------------------------------------------------------------- 4. the grids
def grid_row(path: Path, *, workers: int, limit: float, device: torch.device, profile: str | None) -> str:
    """Run the grid of ``path`` into a fresh temporary store; its wall time and finished cells."""
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
                            "SYNTHBOOST_OPTUNA_STORAGE": f"{tmp}/optuna.journal",
                            "SYNTHBOOST_SAMPLES": f"{tmp}/samples", "SYNTHBOOST_SNAPSHOTS": f"{tmp}/snapshots",
                            "OMP_NUM_THREADS": "1"}
        if device.type == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""  # the cells train where the bench does
        cmd = [sys.executable, "-m", "synthboost", "grid", "--config", str(path), "--workers", str(workers)]
        cmd += ["--profile", profile] if profile else []
        start = time.perf_counter()
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=max(limit, 1))
            seconds, cut = time.perf_counter() - start, False
        except subprocess.TimeoutExpired:
            seconds, cut, done = time.perf_counter() - start, True, None
        dry = subprocess.run([*cmd, "--dry-run"], env=env, capture_output=True, text=True, timeout=300)
        m = re.search(r"(\d+) cells in \d+ units; (\d+) done", dry.stdout)
        cells = f"{m.group(2)} of {m.group(1)}" if m else "?"
        before = BEFORE.get(path.name)
        ratio = f"{before / seconds:.1f}×" if before and not cut and device.type == "cuda" else ""
        if done is not None and done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
            return f"| {path.name} | {workers} | failed ({done.returncode}): {tail[0][:120]} | {cells} | |"
        return f"| {path.name} | {workers} | {'cut at ' if cut else ''}{seconds:.0f} s | {cells} | {ratio} |"


# ---------------------------------------------------------------- main
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"CPU ({os.cpu_count()} cores), torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    ap.add_argument("--limit", type=float, default=120.0, help="seconds each part may start new items for")
    ap.add_argument("--grid-limit", type=float, default=100.0, help="seconds each grid may run (then it is cut)")
    ap.add_argument("--size", type=int, default=5000, help="balanced regime size (train + val) of the trainers")
    ap.add_argument("--cnn-steps", type=int, default=400, help="optimizer steps of each timed CNN fit")
    ap.add_argument("--conv-batch", type=int, default=1024, help="batch of the bound's convolutions")
    ap.add_argument("--conv-seconds", type=float, default=1.0, help="seconds each bound shape is timed")
    ap.add_argument("--epochs", type=int, default=1, help="epochs of each family's timed fit")
    ap.add_argument("--families", default="", help="comma-separated subset of the registry (default: all)")
    ap.add_argument("--grids", default="studies/fair-high.yaml,studies/fair-balanced.yaml")
    ap.add_argument("--grid-profile", default=None, help="override the grids' profile (e.g. smoke)")
    ap.add_argument("--workers", type=int, default=None, help="grid workers (default: the grid's own default)")
    ap.add_argument("--out", default="docs/gpu-bench.md", help="where the markdown goes ('' = stdout only)")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    names = [n.strip() for n in args.families.split(",") if n.strip()] or [
        n for n in generators.FAMILIES if not generators.is_control(n)]
    bad += [n for n in names if n not in generators.FAMILIES]
    grids = [ROOT / g.strip() if not Path(g.strip()).is_absolute() else Path(g.strip())
             for g in args.grids.split(",") if g.strip()]
    bad += [str(g) for g in grids if "grids" in parts and not g.is_file()]
    if bad:
        ap.error(f"unknown parts, families or grid files: {', '.join(bad)}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device here (use --device cpu)")

    out = [f"# GPU bench: {device_name(device)}", "",
           f"`python bench/gpu.py {' '.join(argv if argv is not None else sys.argv[1:])}`, "
           f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC", ""]

    def emit(lines: list[str]) -> None:
        out.extend(lines)
        print("\n".join(lines), flush=True)

    print("\n".join(out), flush=True)
    peak: dict[str, float] = {}
    split = make_split(DataConfig(regime="balanced", size=args.size), 0) if {"trainers", "busy"} & set(parts) else None
    if "bound" in parts:
        lines, peak = bound(device, batch=args.conv_batch, seconds=args.conv_seconds, budget=Budget(args.limit))
        emit(["## The bound: the CNN's convolutions", "", *lines, ""])
    if "trainers" in parts:
        budget = Budget(args.limit)
        rows = cnn_rows(split, device, steps=args.cnn_steps, budget=budget)
        for name in names:
            if budget.left() <= 0:
                rows.append({"name": name, "note": "time limit"})
                continue
            try:
                rows.append(family_row(name, split, device, epochs=args.epochs))
            except Exception as err:  # noqa: BLE001 - one broken family must not hide the others' numbers
                rows.append({"name": name, "note": f"failed: {type(err).__name__}: {err}"})
            print(f"  family done: {name}", file=sys.stderr, flush=True)
        emit([f"## Trainers (balanced {args.size}, CNN {args.cnn_steps} steps of 64, families {args.epochs} "
              "epoch(s) at quick)", "", *trainer_table(rows, peak), ""])
    if "busy" in parts:
        emit(["## GPU busy fraction (kernel time / wall time, torch.profiler)", "",
              *busy_rows(split, device, steps=args.cnn_steps, budget=Budget(args.limit)), ""])
    if "grids" in parts:
        from synthboost.grid import default_workers

        workers = args.workers or default_workers()
        lines = ["| grid | workers | wall time | cells finished | speed-up on the unchanged project's "
                 f"{'/'.join(f'{v:.0f} s' for v in BEFORE.values())} |", "|---|---:|---:|---|---:|"]
        for g in grids:
            lines.append(grid_row(g, workers=workers, limit=args.grid_limit, device=device,
                                  profile=args.grid_profile))
            print(f"  grid done: {g.name}", file=sys.stderr, flush=True)
        emit(["## The fair grids (fresh temporary store)", "", *lines, ""])
    if args.out:
        path = Path(args.out)
        path = path if path.is_absolute() else ROOT / path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(out) + "\n")
        print(f"written: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
