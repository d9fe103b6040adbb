"""Engine and sessions, with one writer path.

SQLite (the default) runs in WAL mode with a busy timeout, and every write of this process goes
through :meth:`Database.write`, which holds a process-wide lock and opens the transaction with
``BEGIN IMMEDIATE``: writers queue on the lock instead of racing for SQLite's file lock, so
concurrent reporting trials never see "database is locked" (readers are never blocked in WAL).
Another process that writes (``autopeft token create``) waits up to the busy timeout.

PostgreSQL (``postgresql+psycopg://...``; ``postgresql://`` is mapped to psycopg 3) needs no
lock; writes still use the same path so the code is identical. There a write that names a study
also sends ``NOTIFY autopeft_study, '<id>'`` in its transaction, so other replicas' caches hear of
it (``api.services.changes``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Collection, Iterator
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

BUSY_TIMEOUT_MS = 30_000
_NOTIFY = text("SELECT pg_notify('autopeft_study', :study)")


def normalise_url(url: str) -> str:
    """Map ``postgres://`` / ``postgresql://`` to the psycopg 3 driver; create SQLite folders."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return url


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
            pool_size=10,
            max_overflow=20,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            # Let SQLAlchemy, not pysqlite, decide when transactions begin (BEGIN IMMEDIATE below).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover - trivial
            mode = conn.info.pop("begin_mode", "BEGIN")
            conn.exec_driver_sql(mode)

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


class Database:
    """The engine plus the two ways to use it: :meth:`read` and :meth:`write` sessions."""

    def __init__(self, url: str):
        self.url = normalise_url(url)
        self.engine = make_engine(self.url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.RLock()
        # study id -> change counter, bumped after every committed write that names the study
        # (in this process, or in another one as heard by api.services.changes); read caches key
        # on it.
        self._versions: dict[int, int] = {}
        self._versions_lock = threading.Lock()

    def version(self, study_id: int) -> int:
        return self._versions.get(study_id, 0)

    def touch(self, study_id: int) -> None:
        with self._versions_lock:
            self._versions[study_id] = self._versions.get(study_id, 0) + 1

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with self._factory() as session:
            yield session

    @contextlib.contextmanager
    def write(
        self, study_id: int | None = None, *, studies: Collection[int] = ()
    ) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error (single writer).

        ``study_id`` (or several, ``studies``): the study whose data this write changes; its
        version is bumped after the commit (and also when the write fails, to be safe); on
        PostgreSQL other processes are notified when it commits."""
        changed = sorted({*studies, *(() if study_id is None else (study_id,))})
        try:
            if not self.is_sqlite:
                with self._factory() as session, session.begin():
                    yield session
                    for sid in changed:
                        session.execute(_NOTIFY, {"study": str(sid)})
                return
            with self._write_lock, self.engine.connect() as conn:
                conn.info["begin_mode"] = "BEGIN IMMEDIATE"
                with Session(bind=conn, expire_on_commit=False) as session:
                    try:
                        yield session
                        session.commit()
                    except BaseException:
                        session.rollback()
                        raise
        finally:
            for sid in changed:
                self.touch(sid)

    def dispose(self) -> None:
        self.engine.dispose()
