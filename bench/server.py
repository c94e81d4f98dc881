"""Embedded default vs server mode: a smoke study of 16 trials with 1, 2 and 4 worker processes.

    python bench/server.py [--trials 16] [--workers 1,2,4] [--model vae]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = """
regime: balanced
size: 300
classifier: cnn
profile: smoke
seeds: [0]
n_trials: {trials}
sampler: {{name: random, seed: 0}}
pruner: {{name: none}}
search_space: {{mix.ratio: {{low: 0.2, high: 1.0}}, mix.strategy: null}}
fixed: {{clf.epochs: 1}}
"""


# ---------------------------------------------------------------- inside one worker process
def worker(name: str, storage: str, index: int, out: str) -> None:
    """Pull trials like `synthboost study-worker`, with every MLflow client call timed."""
    import mlflow.artifacts

    from synthboost import study as study_mod
    from synthboost import tracking

    spent = [0.0]

    def timed(fn):
        def call(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[0] += time.perf_counter() - t0
        return call

    class TimedClient:
        def __init__(self, client):
            self._client = client

        def __getattr__(self, attr):
            value = getattr(self._client, attr)
            return timed(value) if callable(value) else value

    real_open = tracking.runs.open_client  # patched where Tracker looks it up
    tracking.runs.open_client = lambda uri: TimedClient(timed(real_open)(uri))
    mlflow.artifacts.download_artifacts = timed(mlflow.artifacts.download_artifacts)
    t0 = time.perf_counter()
    ran = study_mod.work(name, storage, worker_index=index)
    Path(out).write_text(json.dumps({"mlflow": spent[0], "loop": time.perf_counter() - t0, "trials": ran}))


# ---------------------------------------------------------------- the driver
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def study_once(spec_path: Path, name: str, n: int, env: dict, storage: str, tmp: Path) -> dict:
    """Create the study, start ``n`` workers at once, wait; trials/min and MLflow's share."""
    prep = subprocess.run([sys.executable, __file__, "_prepare", "--name", name, "--storage", storage,
                           "--spec", str(spec_path)], env=env, capture_output=True, text=True)
    if prep.returncode:
        raise SystemExit(prep.stderr)
    outs = [tmp / f"{name}-{i}.json" for i in range(n)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, "_worker", "--name", name, "--storage", storage,
                               "--index", str(i), "--out", str(outs[i])], env=env) for i in range(n)]
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - t0
    if any(codes):
        raise SystemExit(f"{name}: worker exit codes {codes}")
    stats = [json.loads(o.read_text()) for o in outs]
    trials = sum(s["trials"] for s in stats)
    return {"trials": trials, "wall": wall, "per_min": 60 * trials / wall,
            "share": sum(s["mlflow"] for s in stats) / sum(s["loop"] for s in stats)}


def prepare(name: str, storage: str, spec_path: str) -> None:
    from synthboost import study as study_mod
    from synthboost.tracking import Tracker

    spec = study_mod.load_spec(model="vae", path=spec_path)
    study_mod.prepare(spec, name=name, storage_url=storage, experiment="bench-server", tracker=Tracker())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--workers", default="1,2,4")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]

    from synthboost import server

    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SYNTHBOOST_"))}
    base |= {"OMP_NUM_THREADS": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    tmp = Path(tempfile.mkdtemp(prefix="synthboost-bench-server-"))
    tmp.chmod(0o711)  # PostgreSQL's own user (when we are root) must pass through to server/postgres
    results: dict[tuple[str, int], dict] = {}
    srv_dir = tmp / "server"
    try:
        state = server.start(srv_dir, port=free_port(), pg_port=free_port(), say=lambda *_: None)
        modes = {
            "embedded": (base | {"SYNTHBOOST_HOME": str(tmp / "embedded")}, str(tmp / "embedded" / "tracking" /
                                                                                 "optuna.journal")),
            "server": (base | {"SYNTHBOOST_HOME": str(tmp / "worker"), "MLFLOW_TRACKING_URI": state.tracking_uri},
                       state.db_url("optuna")),
        }
        warm = tmp / "warm.yaml"
        warm.write_text(SPEC.format(trials=1))
        spec = tmp / "spec.yaml"
        spec.write_text(SPEC.format(trials=args.trials))
        for mode, (env, storage) in modes.items():
            study_once(warm, f"warm-up-{mode}", 1, env, storage, tmp)  # trains the generator every study reuses
        for n in counts:  # modes interleaved per worker count: a drift in this CPU's speed hits both alike
            for mode, (env, storage) in modes.items():
                results[mode, n] = study_once(spec, f"{mode}-{n}", n, env, storage, tmp)
                r = results[mode, n]
                print(f"  {mode:<8} {n} worker(s): {r['trials']} trials in {r['wall']:.1f} s", file=sys.stderr)
    finally:
        server.stop(srv_dir, say=lambda *_: None)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)

    print(f"smoke study, {args.trials} trials (vae balanced/300, mix-only, generator trained beforehand), "
          f"{os.cpu_count()} CPU(s)")
    print(f"{'workers':>7} | {'embedded (SQLite + journal)':^27} | {'server (PostgreSQL + MLflow server)':^35} | "
          "server / embedded")
    print(f"{'':>7} | {'trials/min':>12} {'MLflow share':>14} | {'trials/min':>16} {'MLflow share':>18} | "
          f"{'trials/min':>10}")
    for n in counts:
        e, s = results["embedded", n], results["server", n]
        print(f"{n:>7} | {e['per_min']:>12.1f} {100 * e['share']:>13.1f}% | {s['per_min']:>16.1f} "
              f"{100 * s['share']:>17.1f}% | {s['per_min'] / e['per_min']:>9.2f}x")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("_worker", "_prepare"):
        ap = argparse.ArgumentParser()
        ap.add_argument("cmd")
        ap.add_argument("--name")
        ap.add_argument("--storage")
        ap.add_argument("--index", type=int, default=0)
        ap.add_argument("--out")
        ap.add_argument("--spec")
        a = ap.parse_args()
        if a.cmd == "_worker":
            worker(a.name, a.storage, a.index, a.out)
        else:
            prepare(a.name, a.storage, a.spec)
    else:
        main()
