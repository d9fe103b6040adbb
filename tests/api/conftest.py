"""Fixtures of the controller tests: a real server process (uvicorn on 127.0.0.1, a free port),
a SQLite file or a throw-away PostgreSQL 15 server, and API tokens.

The server runs ``python -m autopeft.api.server`` with settings from the environment; its
trial processes get the repository root on PYTHONPATH so ``tests.api.workloads`` imports.
Every process started here is stopped by a finalizer.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from autopeft.local_server import free_port, start_on_a_free_port
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")


class Server:
    """One controller process; ``start`` / ``stop`` / ``kill9`` / ``restart``."""

    def __init__(self, db_url: str, workdir: Path, env: dict[str, str] | None = None):
        self.db_url, self.workdir = db_url, workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "server.log"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "AUTOPEFT_DB_URL": self.db_url,
                "AUTOPEFT_PORT": str(self.port),
                "AUTOPEFT_HOST": "127.0.0.1",
                "AUTOPEFT_ARTIFACTS_DIR": str(self.workdir / "artifacts"),
                "AUTOPEFT_WORKER_PYTHONPATH": str(REPO),
                "AUTOPEFT_LOG_LEVEL": "warning",
                # the tests' python workloads run code on the server: opted in here (off by default)
                "AUTOPEFT_PYTHON_WORKLOADS": "all",
                "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60, tries: int = 3) -> Server:
        """Start and wait for ``/healthz``. The port came from :func:`free_port`, which another
        process (a Ray of an earlier test, still stopping) can take before the server binds it: a
        server that exits saying so is started again on a new port, up to ``tries`` times."""
        return start_on_a_free_port(
            self, lambda: self._start(timeout), self.log_path, AssertionError, tries
        )

    def _start(self, timeout: float) -> Server:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "autopeft.api.server"],
            env=self.env(),
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

        def healthy():
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return (
                    httpx.get(self.url + "/healthz", timeout=2, trust_env=False).status_code == 200
                )
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout, "the server to answer /healthz", 0.2)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._reap_group()

    def kill9(self) -> None:
        """SIGKILL the controller process only (its trial processes notice and exit)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=20)

    def _reap_group(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


# -- PostgreSQL ----------------------------------------------------------------------------------
class Postgres:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="autopeft-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.user = "nobody" if os.geteuid() == 0 else None
        self._n = 0

    def _run(self, *cmd: str) -> None:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        subprocess.run(prefix + list(cmd), check=True, capture_output=True, timeout=120)

    def start(self) -> Postgres:
        if self.user:
            shutil.chown(self.dir, user=self.user)
            os.chmod(self.dir, 0o700)
        self._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "pg.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off -c max_connections=200",
            "start",
        )
        return self

    def new_database(self) -> str:
        import psycopg

        self._n += 1
        name = f"autopeft_{self._n}"
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL 15 binaries under {PG_BIN}")
    pg = Postgres()
    try:
        pg.start()
    except subprocess.CalledProcessError as err:
        pg.stop()
        raise RuntimeError(
            f"could not start PostgreSQL: {err.stderr.decode(errors='replace')}"
        ) from None
    yield pg
    pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'autopeft.db'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'autopeft.db'}"


def make_token(
    db_url: str, user: str, secret: str | None = None, role: str | None = None, **kw
) -> str:
    """A token made the admin's way (``autopeft token create``); ``secret``: the server's
    ``AUTOPEFT_SECRET`` when the test sets one."""
    from autopeft.api.admin import create_token

    return create_token(db_url, user, secret, role, **kw)


@pytest.fixture
def server_factory(workdir: Path):
    servers: list[Server] = []

    def make(db_url: str, env: dict[str, str] | None = None, start: bool = True) -> Server:
        server = Server(db_url, workdir, env)
        servers.append(server)
        return server.start() if start else server

    yield make
    for server in servers:
        server.stop()


def client_for(server: Server, token: str):
    from autopeft.client import Client

    return Client(server.url, token)


def python_study(entrypoint: str = "tests.api.workloads:quick", **fields) -> dict:
    from tests.api.workloads import OBJECTIVES, SPACE

    spec = {
        "name": fields.pop("name", "test"),
        "space": SPACE,
        "objectives": OBJECTIVES,
        "optimizer": {"name": "random", "options": {}},
        "workload": {"kind": "python", "entrypoint": entrypoint},
        "max_trials": 4,
        "max_parallel": 2,
        "seed": 0,
    }
    spec.update(fields)
    return spec


def post_study(server, token, spec) -> httpx.Response:
    """``POST /api/v1/studies`` as ``token`` on a running ``server``, whatever it answers."""
    return httpx.post(
        f"{server.url}/api/v1/studies",
        json=spec,
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
        trust_env=False,
    )


# -- the in-process scheduler (tests/api/scheduler_harness.py) -----------------------------------
@pytest.fixture
def store(tmp_path):
    """A migrated SQLite store in a temp dir with one user, ``alice``."""
    from autopeft.api.db import Database
    from autopeft.api.migrate import upgrade
    from autopeft.api.models import User

    url = f"sqlite:///{tmp_path / 'autopeft.db'}"
    upgrade(url)
    db = Database(url)
    with db.write() as s:
        s.add(User(name="alice"))
    yield db
    db.dispose()


@pytest.fixture
def harness(store, tmp_path):
    from tests.api.scheduler_harness import Harness

    h = Harness(store, tmp_path / "artifacts")
    yield h
    h.close()
