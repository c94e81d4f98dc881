"""How close each trainer runs to this CPU's compute bound, and what the speed levers buy — all in one run.

    python bench/bound.py [--threads 1] [--size 1000] [--epochs 2] [--cnn-steps 200] [--families vae,ddpm,...]
        [--skip-families] [--skip-levers]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as bench/generators.py: idle OpenMP threads must sleep

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from generators import capped_config  # noqa: E402  (bench/generators.py, beside this file)
from synthboost import generators  # noqa: E402
from synthboost.classifiers import CNNClassifier, CNNConfig  # noqa: E402
from synthboost.config import DataConfig, build  # noqa: E402
from synthboost.data import make_split  # noqa: E402

# (M, K, N) of the vgg CNN's GEMMs at batch 64 — im2col of each 3×3 conv, then the feature layer — and a square one
SHAPES = {"conv 28² 32→32": (64 * 784, 288, 32), "conv 14² 32→64": (64 * 196, 288, 64),
          "conv 14² 64→64": (64 * 196, 576, 64), "fc 3136→128": (64, 3136, 128), "square 1024": (1024, 1024, 1024)}


def sgemm_gflops(m: int, k: int, n: int, *, seconds: float = 0.4) -> float:
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    reps, start = 0, time.process_time()
    while time.process_time() - start < seconds * torch.get_num_threads():
        a @ b
        reps += 1
    # per core-second (see ``timed``), times the threads: the rate the process gets when it has its cores
    return 2 * m * k * n * reps / (time.process_time() - start) * torch.get_num_threads() / 1e9


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def timed(fn) -> float:
    """CPU seconds of this process while ``fn`` runs: on a shared machine wall time also counts the time other
    jobs held the cores (here it was up to 3× the CPU time), so rates are per core-second of our own threads."""
    start = time.process_time()
    fn()
    return time.process_time() - start


# ---------------------------------------------------------------- the classifier CNN and its levers
def cnn_config(values: dict) -> CNNConfig | None:
    try:
        return build(CNNConfig, values, prefix="clf")
    except Exception:  # an older checkout without this lever's field
        return None


def cnn_rate(split, values: dict, *, steps: int, warm_steps: int = 10) -> dict | None:
    """images/s of ``CNNClassifier.fit`` over ``steps`` steps (after a ``warm_steps`` fit on the same instance,
    which also pays a compile), and its FLOPs per image."""
    cfg = cnn_config({**values, "steps": warm_steps})
    if cfg is None:
        return None
    clf = CNNClassifier(cfg, seed=0)
    first_s = timed(lambda: clf.fit(split.train_x, split.train_y))
    clf.config = cnn_config({**values, "steps": steps})
    fit_s = timed(lambda: clf.fit(split.train_x, split.train_y))
    return {"img_s": steps * clf.config.batch_size / fit_s, "step_s": fit_s / steps, "first_s": first_s,
            "warm_steps": warm_steps}


def cnn_flops_per_image(split, *, steps: int = 4) -> float:
    cfg = cnn_config({"steps": steps})
    clf = CNNClassifier(cfg, seed=0)
    return count_flops(lambda: clf.fit(split.train_x, split.train_y)) / (steps * cfg.batch_size)


def cnn_levers(split, *, steps: int, threads: int, native: bool) -> list[tuple[str, dict | None, str]]:
    other = 2 if threads == 1 else 1
    lr = build(CNNConfig).lr
    levers = [  # the first row is the config's default (foreach AdamW, channels_last): every ratio is to it
        ("today's default (channels_last, foreach AdamW)", {}, ""),
        ("channels_last off", {"channels_last": False}, ""),
        ("per-parameter AdamW (loop)", {"optimizer_impl": "loop"}, "bitwise the same as foreach"),
        ("fused AdamW", {"optimizer_impl": "fused"}, "rounds differently"),
        ("batch 128, lr ×√2", {"batch_size": 128, "lr": lr * math.sqrt(2)},
         "half the steps per epoch: changes results"),
        ("augment shift_flip (on the fly)", {"augment": "shift_flip"}, "cost of augmentation"),
        ("torch.compile", {"compile": True}, ""),
        # measured on every CPU: where bf16 is emulated this row is why clf.amp=auto stays in fp32 there
        ("bf16 autocast", {"amp": "bf16"}, "native bf16 on this CPU" if native else
         "emulated on this CPU: clf.amp=auto keeps fp32 here"),
    ]
    if native:
        levers += [("bf16 + compile", {"compile": True, "amp": "bf16"}, "")]
    rows = []
    for name, values, note in levers:
        rows.append((name, cnn_rate(split, values, steps=steps), note))
        print(f"  lever done: {name}", file=sys.stderr, flush=True)
    torch.set_num_threads(other)
    rows.append((f"{other} thread(s) instead of {threads}", cnn_rate(split, {"optimizer_impl": "loop"}, steps=steps),
                 "per process"))
    torch.set_num_threads(threads)
    return rows


# ---------------------------------------------------------------- generator families
def untrained_clip_state(profile: str) -> dict:
    """A CLIP state of ``profile``'s shape with random weights: the clip family's UNet costs the same whatever
    the CLIP knows, and training one (``synthboost clip train``) would dominate the timing."""
    from synthboost import clip_model as cm
    from synthboost.config import as_dict

    cfg = cm.clip_config(profile)
    vocab = cm.caption_vocab()
    model = cm.new_clip(cfg, cm.CompactTokenizer(vocab, context_length=cfg.context_length).vocab_size)
    return {"format": cm.CLIP_FORMAT, "kind": "clip", "profile": profile, "config": as_dict(cfg), "vocab": vocab,
            "weights": model.state_dict()}


def family_rate(name: str, split, *, profile: str, epochs: int) -> dict:
    cls = generators.get(name)

    def fit(n_epochs: int):
        torch.manual_seed(0)
        gen = cls(capped_config(cls, profile, n_epochs))
        kwargs = dict(gen.fit_inputs(split, seed=0, models=None).kwargs)
        if name == "clip":
            kwargs["clip_state"] = untrained_clip_state(gen.config.clip_profile)
        return gen, lambda: gen.fit(split.train_x, split.train_y, **kwargs), kwargs

    gen, run, kwargs = fit(1)
    flops_epoch = count_flops(run)  # also the warm-up (allocations, kernel choice)
    bs = gen.config.batch_size
    n = len(split.train_y) + len(kwargs.get("unlabeled", ()))  # ssvae also trains on its unlabelled pool
    per_epoch = (n // min(bs, n)) * min(bs, n)
    _, run, _ = fit(epochs)
    fit_s = timed(run)
    return {"img_s": epochs * per_epoch / fit_s, "flops_img": flops_epoch / per_epoch,
            "gflops": epochs * flops_epoch / fit_s / 1e9}


def ema_cost(split) -> str:
    """Per-step cost of the ddpm family's EMA update beside its training step (the likelihood loop's own EMA)."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    cls = generators.get("ddpm")
    gen = cls(capped_config(cls, "quick", 1))
    net = gen.net
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(0.999), use_buffers=True)
    x = split.train_x[:64].float().div(255).unsqueeze(1) if split.train_x.dim() == 3 else split.train_x[:64].float() / 255
    y = split.train_y[:64]
    opt = torch.optim.Adam(net.parameters())

    def step():
        loss, _ = net.loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    step_s = min(timed(step) for _ in range(3))
    ema.update_parameters(net)
    ema_s = min(timed(lambda: ema.update_parameters(net)) for _ in range(5))
    return f"ddpm EMA update {1e3 * ema_s:.2f} ms per step beside a {1e3 * step_s:.0f} ms step ({ema_s / step_s:.1%})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (the grid runs 1 per job)")
    ap.add_argument("--size", type=int, default=1000, help="balanced regime size (train + val)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of each family's timed fit")
    ap.add_argument("--cnn-steps", type=int, default=200, help="optimizer steps of each timed CNN fit")
    ap.add_argument("--families", default="", help="comma-separated subset of the registry (default: all)")
    ap.add_argument("--skip-families", action="store_true")
    ap.add_argument("--skip-levers", action="store_true")
    args = ap.parse_args(argv)
    names = [] if args.skip_families else ([n.strip() for n in args.families.split(",") if n.strip()]
                                           or [n for n in generators.FAMILIES if not generators.is_control(n)])
    unknown = [n for n in names if n not in generators.FAMILIES]
    if unknown:
        ap.error(f"unknown families {', '.join(unknown)} (registered: {', '.join(generators.FAMILIES)})")

    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    native = any(getattr(torch.cpu, p, lambda: False)() for p in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    print(f"torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{os.cpu_count()} CPUs, avx512_bf16={'avx512_bf16' in flags} amx_bf16={'amx_bf16' in flags} "
          f"(torch: native bf16 {native}); trainers at {args.threads} thread(s)\n")

    all_threads = os.cpu_count() or 1
    print("| sgemm shape (M×K×N) | " + " | ".join(f"GFLOP/s, {t} thr" for t in (1, all_threads)) + " |")
    print("|---|" + "---:|" * 2)
    rates = {1: [], all_threads: []}
    for label, (m, k, n) in SHAPES.items():
        row = []
        for t in (1, all_threads):
            torch.set_num_threads(t)
            row.append(sgemm_gflops(m, k, n))
            rates[t].append(row[-1])
        print(f"| {label} ({m}×{k}×{n}) | " + " | ".join(f"{r:.1f}" for r in row) + " |")
    bound = {t: max(r) for t, r in rates.items()}
    torch.set_num_threads(args.threads)
    peak = bound.get(args.threads) or max(bound.values()) * args.threads / all_threads
    print(f"\nbound (best sgemm rate): {bound[1]:.1f} GFLOP/s at 1 thread, {bound[all_threads]:.1f} at "
          f"{all_threads}; trainers judged against {peak:.1f}\n", flush=True)

    split = make_split(DataConfig(regime="balanced", size=args.size), 0)
    cnn_fpi = cnn_flops_per_image(split)
    rows = []
    default = cnn_rate(split, {}, steps=args.cnn_steps)
    rows.append(("classifier CNN (vgg, fair)", default["img_s"], cnn_fpi))
    for name in names:
        try:
            r = family_rate(name, split, profile="quick", epochs=args.epochs)
            rows.append((name, r["img_s"], r["flops_img"]))
        except Exception as err:  # one broken family must not hide the others' numbers
            rows.append((name, None, f"failed: {type(err).__name__}: {err}"))
        print(f"  family done: {name}", file=sys.stderr, flush=True)

    print(f"| trainer | train MFLOP/image | images/s | GFLOP/s | fraction of bound ({peak:.0f} GFLOP/s) |")
    print("|---|---:|---:|---:|---:|")
    for name, img_s, fpi in rows:
        if img_s is None:
            print(f"| {name} | | | | {fpi} |")
            continue
        gflops = img_s * fpi / 1e9
        print(f"| {name} | {fpi / 1e6:.1f} | {img_s:.0f} | {gflops:.1f} | {gflops / peak:.0%} |")
    print(flush=True)

    if not args.skip_levers:
        levers = cnn_levers(split, steps=args.cnn_steps, threads=args.threads, native=native)
        base = levers[0][1]
        print(f"| CNN lever ({args.cnn_steps} steps, {args.threads} thread(s)) | images/s | ratio to today "
              f"| fraction of bound | note |")
        print("|---|---:|---:|---:|---|")
        for name, r, note in levers:
            if r is None:
                print(f"| {name} | n/a | | | not in this version |")
                continue
            gflops = r["img_s"] * cnn_fpi / 1e9
            extra = note
            if r["first_s"] > 3 * r["warm_steps"] * r["step_s"]:  # a compile: its one-time cost and payback
                compile_s = r["first_s"] - r["warm_steps"] * r["step_s"]
                saved = base["step_s"] - r["step_s"]
                payback = f"pays back after {compile_s / saved:.0f} steps" if saved > 0 else "never pays back"
                extra = f"{note} compile {compile_s:.1f} s, {payback}".strip()
            print(f"| {name} | {r['img_s']:.0f} | {r['img_s'] / base['img_s']:.2f} | {gflops / peak:.0%} | {extra} |")
        print("(a quick CNN run takes 40 epochs × ⌊n_real/64⌋ steps: 2,640 at balanced 5,000, 520 at 1,000)")
        if "ddpm" in generators.FAMILIES:
            print(ema_cost(split))
    return 0


if __name__ == "__main__":
    sys.exit(main())
