"""What the tests that need a real server share: free ports, the CLI as a subprocess, ``ps`` look-ups, and a
local PostgreSQL + MLflow server (``synthboost server``) in a folder under /tmp (PostgreSQL runs as the ``postgres``
user when the tests run as root, and pytest's own tmp folders are closed to other users).  The ``server`` fixture
itself is in conftest.py."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

HAVE_POSTGRES = bool(shutil.which("initdb") or list(Path("/usr/lib/postgresql").glob("*/bin/initdb")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, env: dict | None = None, cwd: str | Path | None = None, timeout: float = 300):
    return subprocess.run([sys.executable, "-m", "synthboost", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def our_processes(*needles: str) -> list[str]:
    """Lines of `ps` naming one of ``needles`` (the server folder, the ports)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in out if any(n in line for n in needles) and "ps -eo" not in line]


class Server:
    def __init__(self, folder: Path, port: int, pg_port: int):
        self.dir, self.port, self.pg_port = folder, port, pg_port
        self.env: dict[str, str] = {}
        self.out = ""

    def start(self, *more: str):
        r = cli("server", "start", "--dir", str(self.dir), "--port", str(self.port), "--pg-port", str(self.pg_port),
                *more)
        assert r.returncode == 0, r.stdout + r.stderr
        self.env = dict(line.split("=", 1) for line in r.stdout.splitlines() if line.split("=")[0] in
                        ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                         "SYNTHBOOST_OPTUNA_STORAGE"))
        self.out = r.stdout
        return r

    def stop(self):
        return cli("server", "stop", "--dir", str(self.dir))

    @property
    def tracking_uri(self) -> str:
        return self.env["MLFLOW_TRACKING_URI"]

    @property
    def storage(self) -> str:
        return self.env["SYNTHBOOST_OPTUNA_STORAGE"]

    def leftovers(self) -> list[str]:
        return our_processes(str(self.dir), f"--port {self.port}", f"-p {self.pg_port}")


def worker_env(server: Server, home: Path) -> dict[str, str]:
    """A worker's whole configuration: the two URIs, and its own home; nothing inherited that points elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SYNTHBOOST_"))}
    return env | server.env | {"SYNTHBOOST_HOME": str(home), "OMP_NUM_THREADS": "1",
                               "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
