"""A controller on this machine for the demo and the benchmarks: SQLite in a work folder, the
local executor, bound to 127.0.0.1, a token of its own.

>>> with LocalServer(Path("~/.autopeft/demo").expanduser()) as server:
...     client = server.client()
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from autopeft.processes import stop_process

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_size(log_path: Path) -> int:
    """Bytes in a server's log so far: where :func:`port_was_taken` reads from after a start."""
    return log_path.stat().st_size if log_path.exists() else 0


def port_was_taken(log_path: Path, offset: int) -> bool:
    """Whether the server whose log is ``log_path`` exited, past byte ``offset``, because its port
    was in use (``autopeft.api.server.listen``'s error names the errno). A port from
    :func:`free_port` can be taken by another process before the server binds it."""
    tail = log_path.read_bytes()[offset:].decode(errors="replace")
    return f"(errno {errno.EADDRINUSE})" in tail


def start_on_a_free_port(
    server: Any,
    start: Callable[[], T],
    log_path: Path,
    failure: type[BaseException] | tuple[type[BaseException], ...],
    tries: int = 3,
) -> T:
    """``start()`` a server that logs to ``log_path``; when it fails with ``failure`` because its
    port was taken (:func:`port_was_taken`), move ``server`` (its ``port`` and ``url``) to a
    :func:`free_port` and start again, up to ``tries`` times in all. Any other failure, and the
    last one, is raised."""
    for attempt in range(tries):
        offset = log_size(log_path)
        try:
            return start()
        except failure:
            if attempt == tries - 1 or not port_was_taken(log_path, offset):
                raise
            server.port = free_port()
            server.url = f"http://127.0.0.1:{server.port}"
    raise AssertionError("unreachable")


class LocalServer:
    """``python -m autopeft.api.server`` as a child process; ``fresh`` removes an earlier database
    and artifacts in ``workdir`` first. Its log goes to ``workdir/server.log``."""

    def __init__(
        self,
        workdir: Path,
        port: int = 0,
        fresh: bool = True,
        env: dict[str, str] | None = None,
        user: str = "local",
        executor: str = "local",
    ):
        self.workdir = Path(workdir).resolve()
        self.auto_port = not port
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_url = f"sqlite:///{self.workdir / 'autopeft.db'}"
        self.fresh, self.user, self.executor = fresh, user, executor
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.token: str | None = None

    def env(self) -> dict[str, str]:
        return dict(
            os.environ,
            AUTOPEFT_DB_URL=self.db_url,
            AUTOPEFT_HOST="127.0.0.1",
            AUTOPEFT_PORT=str(self.port),
            AUTOPEFT_ARTIFACTS_DIR=str(self.workdir / "artifacts"),
            AUTOPEFT_EXECUTOR=self.executor,
            AUTOPEFT_LOG_LEVEL="warning",
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            **self.extra_env,
        )

    def start(self, timeout: float = 90) -> LocalServer:
        import shutil

        from autopeft.api.admin import create_token

        if self.fresh:
            for name in ("autopeft.db", "autopeft.db-wal", "autopeft.db-shm"):
                (self.workdir / name).unlink(missing_ok=True)
            shutil.rmtree(self.workdir / "artifacts", ignore_errors=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.token = create_token(self.db_url, self.user)
        log_path = self.workdir / "server.log"
        return start_on_a_free_port(
            self,
            lambda: self._wait(log_path, timeout),
            log_path,
            RuntimeError,
            tries=3 if self.auto_port else 1,  # a port the caller chose is not changed
        )

    def _wait(self, log_path: Path, timeout: float) -> LocalServer:
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "autopeft.api.server"],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        from autopeft.client import Client

        # short probes: the port may be held by another process that accepts and never answers
        deadline = time.monotonic() + timeout
        with Client(self.url, self.token, timeout=2.0) as probe:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"the server exited ({self.proc.returncode}); see {log_path}"
                    )
                try:
                    probe.health()
                    return self
                except Exception:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(
                            f"the server did not answer within {timeout:g} s"
                        ) from None
                    time.sleep(0.3)

    def client(self):
        from autopeft.client import Client

        return Client(self.url, self.token)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
