"""Server mode on one machine: a private PostgreSQL and an MLflow tracking server on it, for workers anywhere.

The MLflow server proxies artifacts, so workers need no shared file system; the database password travels in the
server's environment, never on a command line that ``ps`` shows.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import UserError
from .queue import pid_alive
from .tracking import file_lock, redact, tracking_dir

HOST = "127.0.0.1"
DEFAULT_PORT, DEFAULT_PG_PORT = 5000, 5433
PG_USER = "synthboost"
DATABASES = ("mlflow", "optuna")
MLFLOW_USER = "synthboost"  # the MLflow server's admin user when its basic authentication is on
MLFLOW_WORKERS = 2  # request-handling processes of the MLflow server
START_TIMEOUT = 120.0  # the first start migrates a new database: ~15 s here


def default_dir() -> Path:
    return tracking_dir() / "server"


@dataclass
class State:
    """What ``server.json`` keeps between commands."""

    port: int
    pg_port: int
    password: str
    mlflow_pid: int | None = None
    user: str = PG_USER
    host: str = HOST  # the MLflow server's listening address
    auth: bool = False  # MLflow's basic authentication (always, beyond loopback)
    mlflow_user: str = MLFLOW_USER
    mlflow_password: str = ""
    flask_secret: str = ""  # signs the auth app's CSRF tokens; the same across its workers and restarts

    def db_url(self, database: str, *, hide: bool = False) -> str:
        url = f"postgresql://{self.user}:{self.password}@{HOST}:{self.pg_port}/{database}"
        return redact(url) if hide else url

    @property
    def tracking_uri(self) -> str:
        """The URI workers use: this machine's name when the server listens on every address."""
        host = socket.getfqdn() if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def local_uri(self) -> str:
        """The URI this machine checks the server on."""
        return f"http://{HOST if self.host in ('0.0.0.0', '::') else self.host}:{self.port}"


@dataclass
class Status:
    dir: Path
    state: State | None
    pg_pid: int | None
    mlflow_pid: int | None
    mlflow_healthy: bool
    #: processes of the MLflow server's group left by a crash of its main process (its uvicorn workers, which
    #: may still hold the port), and whatever else listens on its port
    mlflow_leftovers: list[int] = field(default_factory=list)
    port_holders: list[int] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return bool(self.pg_pid and self.mlflow_pid and self.mlflow_healthy)


# ---------------------------------------------------------------- the commands
def wants_auth(host: str, auth: bool | None) -> bool:
    """Basic authentication: as asked, on by default beyond loopback, and never off there."""
    beyond = not _loopback(host)
    if beyond and auth is False:
        raise UserError(f"--host {host} listens beyond loopback: the MLflow server then needs its login "
                        "(drop --no-auth)")
    return beyond if auth is None else auth


def start(folder: Path | None = None, *, port: int | None = None, pg_port: int | None = None,
          host: str | None = None, auth: bool | None = None, say=print) -> State:
    """Start whatever is not running yet (PostgreSQL, then MLflow) and return the state; idempotent."""
    if host is not None:
        wants_auth(host, auth)  # a refused combination: before anything is touched
    folder = _prepare_dir(folder or default_dir())
    with file_lock(folder / ".server-lock"):  # two starts at once: the second finds the first's servers
        return _start(folder, port, pg_port, host, auth, say)


def _start(folder: Path, port: int | None, pg_port: int | None, host: str | None, auth: bool | None,
           say) -> State:
    st = status(folder)
    state = st.state
    if st.running:
        asked = [f"--{n} {v}" for n, v, have in (("port", port, state.port), ("pg-port", pg_port, state.pg_port),
                                                 ("host", host, state.host)) if v is not None and v != have]
        if auth is not None and auth != state.auth:
            asked.append("--auth" if auth else "--no-auth")
        say(f"already running in {folder}" + (f" (ignored {', '.join(asked)}: `synthboost server stop` first to "
                                                "change them)" if asked else ""))
        return state
    if state is None:
        state = State(port=port or DEFAULT_PORT, pg_port=pg_port or DEFAULT_PG_PORT,
                      password=secrets.token_urlsafe(18))
    elif not st.pg_pid and not st.mlflow_pid:  # stopped: a new start may move the ports
        state.port, state.pg_port = port or state.port, pg_port or state.pg_port
    if not st.mlflow_pid:  # the MLflow server starts anew: it may move, and its login follows its address
        state.host = host or state.host
        state.auth = wants_auth(state.host, auth if auth is not None else (state.auth or None))  # on stays on
    if state.auth and not state.mlflow_password:
        state.mlflow_password, state.flask_secret = secrets.token_urlsafe(18), secrets.token_urlsafe(32)
    # every port first, before anything starts: a start that cannot finish starts nothing
    if st.mlflow_leftovers:  # a crashed server's workers still hold its port: end them (they are ours)
        _stop_group(state.mlflow_pid)
        say(f"ended {len(st.mlflow_leftovers)} leftover process(es) of a crashed MLflow server "
            f"({', '.join(map(str, st.mlflow_leftovers))})")
    if not st.mlflow_pid:
        _check_port_free(state.port, "--port", state.host)
    if not st.pg_pid:
        _check_port_free(state.pg_port, "--pg-port")
    _save(folder, state)  # the password first: initdb sets it
    if not st.pg_pid:
        _start_postgres(folder, state, say)
    _create_databases(state)
    if not (st.mlflow_pid and st.mlflow_healthy):
        if st.mlflow_pid:  # alive but not answering: replace it
            _stop_group(st.mlflow_pid)
            _check_port_free(state.port, "--port", state.host)
        state.mlflow_pid = _start_mlflow(folder, state, say)
    _save(folder, state)
    return state


def status(folder: Path | None = None) -> Status:
    folder = Path(folder or default_dir()).resolve()
    state = _load(folder)
    pg_pid = _postmaster_pid(folder)
    mlflow_pid = state.mlflow_pid if state and state.mlflow_pid and _is_mlflow(state.mlflow_pid) else None
    healthy = bool(mlflow_pid and state and _healthy(state.local_uri))
    # the main process gone (killed, crashed): its group's workers may still serve the port
    leftovers = ([pid for pid in _group_members(state.mlflow_pid) if "mlflow" in _cmdline(pid) or
                  "multiprocessing" in _cmdline(pid)] if state and state.mlflow_pid and not mlflow_pid else [])
    holders = _listeners(state.port) if state else []
    return Status(dir=folder, state=state, pg_pid=pg_pid, mlflow_pid=mlflow_pid, mlflow_healthy=healthy,
                  mlflow_leftovers=leftovers, port_holders=holders)


#: seconds a stopped PostgreSQL's process may take to exit after pg_ctl says "server stopped"
PG_EXIT_GRACE = 15.0


def stop(folder: Path | None = None, *, say=print) -> None:
    """Stop the MLflow server (its whole process group), then PostgreSQL; check that nothing is left."""
    folder = Path(folder or default_dir()).resolve()
    if not folder.is_dir():
        say(f"nothing running in {folder}")
        return
    with file_lock(folder / ".server-lock"):
        _stop(folder, say)


def _stop(folder: Path, say) -> None:
    st = status(folder)
    if st.mlflow_pid:
        _stop_group(st.mlflow_pid)
        say(f"MLflow server (pid {st.mlflow_pid}) stopped")
    elif st.mlflow_leftovers:
        _stop_group(st.state.mlflow_pid)
        say(f"leftover processes of a crashed MLflow server ({', '.join(map(str, st.mlflow_leftovers))}) stopped")
    if st.pg_pid:
        out = _pg_run("pg_ctl", "stop", "-D", str(_data_dir(folder)), "-m", "fast", "-w", "-t", "60")
        # pg_ctl returns once the postmaster has removed its pid file, a moment before the process is gone (on a
        # busy machine, a noticeable one): give it that moment before calling it stuck
        if out.returncode != 0 or not _gone(lambda: pid_alive(st.pg_pid), within=PG_EXIT_GRACE):
            raise RuntimeError(f"PostgreSQL (pid {st.pg_pid}) did not stop: {out.stdout.strip()}")
        say(f"PostgreSQL (pid {st.pg_pid}) stopped")
    if not (st.mlflow_pid or st.mlflow_leftovers or st.pg_pid):
        say(f"nothing running in {folder}")
    if st.state is not None:
        st.state.mlflow_pid = None
        _save(folder, st.state)
        held = _listeners(st.state.port)
        if held:  # not ours (ours were ended above): say so rather than let the port pass for free
            say(f"note: port {st.state.port} is held by another program: "
                + "; ".join(f"pid {pid} ({_cmdline(pid)[:80].strip()})" for pid in held))


def worker_lines(state: State) -> list[str]:
    """The environment lines every worker needs (passwords included): two, four with the MLflow login."""
    login = ([f"MLFLOW_TRACKING_USERNAME={state.mlflow_user}", f"MLFLOW_TRACKING_PASSWORD={state.mlflow_password}"]
             if state.auth else [])
    return [f"MLFLOW_TRACKING_URI={state.tracking_uri}", *login, f"SYNTHBOOST_OPTUNA_STORAGE={state.db_url('optuna')}"]


def describe(st: Status) -> list[str]:
    """What runs where, password hidden (``synthboost server status``)."""
    if st.state is None:
        return [f"no server in {st.dir} (start one with `synthboost server start --dir {st.dir}`)"]
    s = st.state
    pg = (f"running, pid {st.pg_pid}" if st.pg_pid else "stopped")
    if st.mlflow_pid:
        ml = "running" + ("" if st.mlflow_healthy else " but not answering") + f", pid {st.mlflow_pid}"
    elif st.mlflow_leftovers:
        ml = (f"crashed: its main process {s.mlflow_pid} is gone, its process(es) "
              f"{', '.join(map(str, st.mlflow_leftovers))} are left (`synthboost server stop` ends them)")
    else:
        ml = "stopped"
    if st.port_holders and not st.mlflow_pid and not st.mlflow_leftovers:
        ml += f"; port {s.port} is held by another program (pid {', '.join(map(str, st.port_holders))})"
    login = f", login as {s.mlflow_user} (basic auth)" if s.auth else ", no login (loopback only)"
    return [f"server folder   {st.dir}",
            f"PostgreSQL      {pg}; {HOST}:{s.pg_port}, data {_data_dir(st.dir)}, "
            f"log {_pg_dir(st.dir) / 'postgres.log'}",
            f"MLflow server   {ml}; {s.tracking_uri}{login}, artifacts {st.dir / 'artifacts'}, "
            f"log {st.dir / 'mlflow.log'}",
            f"MLflow store    {s.db_url('mlflow', hide=True)}",
            f"Optuna storage  {s.db_url('optuna', hide=True)}",
            "(`synthboost server start` prints the workers' lines with the passwords)"]


# ---------------------------------------------------------------- PostgreSQL
def _pg_bin(name: str) -> str:
    """A PostgreSQL program: on PATH, else the newest under Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                      key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0, reverse=True)
    if not versions:
        raise UserError(f"PostgreSQL's {name} is not installed; install it (Debian: apt-get install postgresql) "
                        "or point the workers at a PostgreSQL you already run (tracking/README.md)")
    return str(versions[0])


def _pg_owner() -> str | None:
    """The user PostgreSQL runs as: ``postgres`` when we are root (it refuses root), else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise UserError("running as root, and PostgreSQL refuses to run as root: create the system user "
                        "'postgres' (Debian's postgresql package does) or run as another user") from None
    return "postgres"


def _pg_run(program: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [_pg_bin(program), *args]
    owner = _pg_owner()
    if owner:
        cmd = ["runuser", "-u", owner, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, cwd="/", timeout=180, stdin=subprocess.DEVNULL)


def _pg_dir(folder: Path) -> Path:
    return folder / "postgres"


def _data_dir(folder: Path) -> Path:
    return _pg_dir(folder) / "data"


def _start_postgres(folder: Path, state: State, say) -> None:
    data = _data_dir(folder)
    if not (data / "PG_VERSION").is_file():
        _initdb(folder, state)
        say(f"created a PostgreSQL cluster in {data}")
    log = _pg_dir(folder) / "postgres.log"
    out = _pg_run("pg_ctl", "start", "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", f"-p {state.pg_port}")
    if out.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.is_file() else []
        raise UserError(f"PostgreSQL did not start (see {log}): {' / '.join(tail) or out.stderr.strip()}")


def _initdb(folder: Path, state: State) -> None:
    pg = _pg_dir(folder)
    pg.mkdir(exist_ok=True)
    owner = _pg_owner()
    if owner:
        shutil.chown(pg, owner, owner)
        probe = subprocess.run(["runuser", "-u", owner, "--", "test", "-w", str(pg)], capture_output=True)
        if probe.returncode != 0:
            raise UserError(f"the '{owner}' user PostgreSQL runs as cannot reach {pg}: a parent folder is closed "
                            "to other users (e.g. mode 0700); choose a --dir elsewhere")
    os.chmod(pg, 0o700)
    pwfile = pg / "pwfile"
    _write_private(pwfile, state.password + "\n")
    if owner:
        shutil.chown(pwfile, owner, owner)
    try:
        out = _pg_run("initdb", "-D", str(_data_dir(folder)), "-U", state.user, f"--pwfile={pwfile}",
                      "--auth=scram-sha-256", "-E", "UTF8", "--no-locale")
    finally:
        pwfile.unlink(missing_ok=True)
    if out.returncode != 0:
        raise UserError(f"initdb failed: {(out.stderr or out.stdout).strip().splitlines()[-1]}")
    # loopback only, TCP only (no socket file whose path length or folder rights could get in the way), and
    # room for many workers (each holds a few connections)
    with open(_data_dir(folder) / "postgresql.conf", "a") as fh:
        fh.write(f"\n# synthboost server\nlisten_addresses = '{HOST}'\nunix_socket_directories = ''\n"
                 "max_connections = 200\n")


def _postmaster_pid(folder: Path) -> int | None:
    pidfile = _data_dir(folder) / "postmaster.pid"
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int(pidfile.read_text().splitlines()[0])
        if pid_alive(pid) and "postgres" in _cmdline(pid):
            return pid
    return None


def _create_databases(state: State) -> None:
    """The ``mlflow`` and ``optuna`` databases, and Optuna's tables (so that workers starting at once need not
    race to create them)."""
    import psycopg

    with psycopg.connect(host=HOST, port=state.pg_port, user=state.user, password=state.password,
                         dbname="postgres", connect_timeout=10, autocommit=True) as conn:
        have = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        for db in DATABASES:
            if db not in have:
                conn.execute(f'CREATE DATABASE "{db}"')
    from .queue import open_storage

    open_storage(state.db_url("optuna"))


# ---------------------------------------------------------------- the MLflow server
def _start_mlflow(folder: Path, state: State, say) -> int:
    artifacts = folder / "artifacts"
    artifacts.mkdir(mode=0o700, exist_ok=True)
    os.chmod(artifacts, 0o700)  # a folder made by an older version: every experiment's files are in it
    log_path = folder / "mlflow.log"
    env = os.environ.copy()
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_TRACKING_USERNAME",
              "MLFLOW_TRACKING_PASSWORD"):
        env.pop(k, None)
    env["MLFLOW_BACKEND_STORE_URI"] = state.db_url("mlflow")  # the password stays off the command line
    # MLflow's job runner (GenAI scorers, prompt optimisation) would add 8 polling processes of ~280 MB each
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    cmd = [sys.executable, "-m", "mlflow", "server", "--artifacts-destination", str(artifacts), "--host", state.host,
           "--port", str(state.port), "--workers", str(MLFLOW_WORKERS)]
    if state.auth:
        cmd += ["--app-name", "basic-auth"]
        env |= _auth_env(folder, state)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.fchmod(log, 0o600)  # a log made by an older version
        # its own session (it outlives this command; `stop` ends the whole group), and what it writes is ours alone
        proc = subprocess.Popen(cmd, env=env, cwd=folder, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, umask=0o077)
    finally:
        os.close(log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise UserError(f"the MLflow server exited at start (see {log_path}): {' / '.join(tail)}")
        if _healthy(state.local_uri):
            return proc.pid
        time.sleep(0.5)
    _stop_group(proc.pid)
    raise UserError(f"the MLflow server did not answer within {START_TIMEOUT:.0f} s (see {log_path})")


def _auth_env(folder: Path, state: State) -> dict[str, str]:
    """MLflow's basic-auth app: its users in ``basic_auth.db`` here, the admin (the workers' login) created at the
    first start from ``MLFLOW_AUTH_ADMIN_*``; nobody else may do anything."""
    ini = folder / "basic_auth.ini"
    _write_private(ini, "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
                        f"database_uri = sqlite:///{folder / 'basic_auth.db'}\n"
                        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    return {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_USERNAME": state.mlflow_user,
            "MLFLOW_AUTH_ADMIN_PASSWORD": state.mlflow_password, "MLFLOW_FLASK_SERVER_SECRET_KEY": state.flask_secret}


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(uri + "/health", timeout=3) as resp:
            return resp.status == 200
    except OSError:
        return False


def _is_mlflow(pid: int) -> bool:
    return pid_alive(pid) and "mlflow" in _cmdline(pid) and "server" in _cmdline(pid)


def _stop_group(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the process group ``pid`` leads (the server, its uvicorn workers, its job runner), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        if _gone(lambda: _group_alive(pid), within=wait):
            return
    raise RuntimeError(f"process group {pid} did not stop")


def _gone(alive, *, within: float) -> bool:
    """Whether ``alive()`` turns false within ``within`` seconds (polled)."""
    deadline = time.monotonic() + within
    while alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def _group_alive(pgid: int) -> bool:
    return bool(_group_members(pgid))


def _group_members(pgid: int) -> list[int]:
    """The live processes of process group ``pgid``."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    found.append(int(proc.name))
    return sorted(found)


def _listeners(port: int) -> list[int]:
    """The processes listening on TCP ``port`` (any address), from /proc: those of other users only as root."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(f[9])
    if not inodes:
        return []
    pids = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                for fd in (proc / "fd").iterdir():
                    with contextlib.suppress(OSError):
                        link = os.readlink(fd)
                        if link.startswith("socket:[") and link[8:-1] in inodes:
                            pids.add(int(proc.name))
    return sorted(pids)


# ---------------------------------------------------------------- small helpers
def _prepare_dir(folder: Path) -> Path:
    folder = Path(folder).resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if _pg_owner():  # the postgres user must be able to pass through (not list) the folder
            os.chmod(folder, folder.stat().st_mode | 0o001)
    except OSError as err:
        raise UserError(f"cannot use {folder} for the server ({err.strerror}); choose another --dir") from None
    return folder


def _check_port_free(port: int, option: str, host: str = HOST) -> None:
    held = _listeners(port)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no obstacle
        try:
            s.bind((host, port))
        except OSError:
            who = f" (by pid {', '.join(map(str, held))}: {_cmdline(held[0])[:80].strip()})" if held else ""
            raise UserError(f"port {port} on {host} is in use{who}; choose another with {option}") from None


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _load(folder: Path) -> State | None:
    path = folder / "server.json"
    if not path.is_file():
        return None
    try:
        return State(**json.loads(path.read_text()))
    except (ValueError, TypeError) as err:
        raise UserError(f"{path} is unreadable ({err}); stop what runs and remove it") from None


def _save(folder: Path, state: State) -> None:
    path = folder / "server.json"
    tmp = path.with_suffix(".tmp")
    _write_private(tmp, json.dumps(asdict(state), indent=1))
    tmp.replace(path)


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` readable by its owner alone from its first byte (not chmodded after: a reader could open it
    in between)."""
    path.unlink(missing_ok=True)  # O_CREAT keeps an existing file's mode
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
