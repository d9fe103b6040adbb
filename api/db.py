"""Engine and sessions, with one writer path.

SQLite (the default) runs in WAL mode with a busy timeout, and every write of this process goes
through :meth:`Database.write`, which holds a process-wide lock and opens the transaction with
``BEGIN IMMEDIATE``: writers queue on the lock instead of racing for SQLite's file lock, so
concurrent reporting trials never see "database is locked" (readers are never blocked in WAL).
Another process that writes (``autopeft token create``) waits up to the busy timeout. A writer
takes its connection *before* the lock, so the holder of the lock never waits for the pool (a
thread holding a pooled connection while it queues for the lock cannot starve it).

Pools are sized by the caller: the controller gives request handling its own engine
(:meth:`Database.sibling`, sharing the writer lock and the change counters) whose pool holds two
connections (a read and a write) per admitted request, so a handler never waits for a connection
(``api.admission``); waiting longer than ``pool_timeout`` is a ``sqlalchemy.exc.TimeoutError``,
answered 503.

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


#: (pool_size, max_overflow) of an engine whose caller names none
DEFAULT_POOL = (10, 20)
#: seconds a checkout waits for a free connection before ``sqlalchemy.exc.TimeoutError``
POOL_TIMEOUT_S = 10.0


def make_engine(
    url: str, pool: tuple[int, int] = DEFAULT_POOL, pool_timeout: float = POOL_TIMEOUT_S
) -> Engine:
    url = normalise_url(url)
    sizes = {"pool_size": pool[0], "max_overflow": pool[1], "pool_timeout": pool_timeout}
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
            **sizes,
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
    return create_engine(url, pool_pre_ping=True, **sizes)


class Database:
    """The engine plus the two ways to use it: :meth:`read` and :meth:`write` sessions."""

    def __init__(
        self, url: str, pool: tuple[int, int] = DEFAULT_POOL, pool_timeout: float = POOL_TIMEOUT_S
    ):
        self.url = normalise_url(url)
        self.engine = make_engine(self.url, pool, pool_timeout)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.RLock()
        # study id -> change counter, bumped after every committed write that names the study
        # (in this process, or in another one as heard by api.services.changes); read caches key
        # on it.
        self._versions: dict[int, int] = {}
        self._versions_lock = threading.Lock()
        self._all = [0]  # bumped by every write (and every study change heard)
        # what a cached list of one user's studies keys on: the user's counter, bumped when one of
        # their known studies changes or they make one, and the count of changes to studies of
        # unknown owner (made by another replica, not yet listed here)
        self._owners: dict[int, int] = {}
        self._user_versions: dict[int, int] = {}
        self._unknown = [0]

    def sibling(self, pool: tuple[int, int], pool_timeout: float = POOL_TIMEOUT_S) -> Database:
        """The same database through an engine of its own (``pool`` sized), sharing this one's
        writer lock and change counters: request handling gets one, so the scheduler's threads
        and the handlers never wait for each other's connections."""
        other = Database.__new__(Database)
        other.url, other.is_sqlite = self.url, self.is_sqlite
        other.engine = make_engine(self.url, pool, pool_timeout)
        other._factory = sessionmaker(other.engine, expire_on_commit=False)
        other._write_lock = self._write_lock
        other._versions, other._versions_lock = self._versions, self._versions_lock
        other._all = self._all
        other._owners, other._user_versions = self._owners, self._user_versions
        other._unknown = self._unknown
        return other

    def version(self, study_id: int) -> int:
        return self._versions.get(study_id, 0)

    def version_of_all(self) -> int:
        """A counter bumped by every committed write of this process and every study change heard
        from others (what a cached list of studies keys on)."""
        return self._all[0]

    def version_of_user(self, user_id: int) -> tuple[int, int]:
        """What a cached list of ``user_id``'s studies keys on (see :meth:`own`)."""
        return self._user_versions.get(user_id, 0), self._unknown[0]

    def own(self, user_id: int, study_ids, new: bool = False) -> None:
        """Record the owner of ``study_ids`` (a list of studies was just read, or, ``new``, one was
        created and committed: the user's list changed)."""
        with self._versions_lock:
            for sid in study_ids:
                self._owners[int(sid)] = user_id
            if new:
                self._user_versions[user_id] = self._user_versions.get(user_id, 0) + 1

    def touch(self, study_id: int | None = None) -> None:
        with self._versions_lock:
            if study_id is not None:
                self._versions[study_id] = self._versions.get(study_id, 0) + 1
                owner = self._owners.get(study_id)
                if owner is None:
                    self._unknown[0] += 1
                else:
                    self._user_versions[owner] = self._user_versions.get(owner, 0) + 1
            self._all[0] += 1

    def announce(self, session: Session, study_id: int) -> None:
        """Inside a write: tell other replicas of a study this write creates (on PostgreSQL;
        a write that names an existing study does it by itself)."""
        if not self.is_sqlite:
            session.execute(_NOTIFY, {"study": str(study_id)})

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
            # the connection first: the lock's holder then never waits for the pool
            with self.engine.connect() as conn, self._write_lock:
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
            self.touch()

    def dispose(self) -> None:
        self.engine.dispose()
