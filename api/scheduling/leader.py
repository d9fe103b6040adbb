"""Several API replicas on one database: exactly one schedules (the leader), the others serve
requests only (followers).

The lease. On PostgreSQL the leader holds a session-level advisory lock
(``pg_try_advisory_lock``) on a connection of its own (:class:`AdvisoryLease`). The server
releases the lock the moment that connection ends, so a leader that dies (SIGKILL included) hands
over at once; a leader whose host vanishes is dropped by the TCP keepalives the connection asks
for (about 10 s). Every ``lease_interval_s`` a follower tries to take the lock and the leader
checks, on the same connection, that it still holds it; when it does not (the connection or the
server went away) it stops scheduling at once -- its runners stop and its executor kills its
trial processes, trial states untouched -- and goes back to following (fencing). A follower that
takes the lock waits two intervals before it schedules, time for a leader cut off from the
database to notice and stop. SQLite is one process: it is always the leader, without a lease.

Taking over is a restart: the new leader's :class:`SchedulerManager` resumes every study left
``running`` from the store (``SchedulerManager.recover``: the optimiser replayed from the event
log, trials that were ``queued`` / ``running`` submitted again with the same number). Work asked
on a follower reaches the leader through the store (``scheduling.reconcile``, polled every
interval): new or resumed studies, stops, deletes, extensions and trial cancels.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from autopeft.api import pgconn

log = logging.getLogger("autopeft.leader")

#: advisory locks (two int4 keys): "autp", then which: the scheduler lease, migrations
LOCK_SPACE, SCHEDULER_LOCK, MIGRATE_LOCK = 0x61757470, 1, 2
_HOLDER = text(
    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :space AND l.objid = :key "
    "AND l.objsubid = 2"
)
_APP = "autopeft-leader:"


def default_replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:64]


class AdvisoryLease:
    """The scheduler lease: a PostgreSQL advisory lock held on a dedicated connection."""

    def __init__(self, url: str, replica_id: str, timeout_s: float = 5.0):
        self.conninfo = pgconn.conninfo(url)
        self.replica_id, self.timeout_s = replica_id, timeout_s
        self._conn = None

    def _connect(self):
        # the server drops a vanished leader's session (and its lock) within ~10 s; this client
        # notices a vanished server as fast; no statement hangs past the timeout
        return pgconn.connect(self.conninfo, _APP + self.replica_id, self.timeout_s)

    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it (never blocks longer than the timeout)."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            row = self._conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (LOCK_SPACE, SCHEDULER_LOCK)
            ).fetchone()
            return bool(row and row[0])
        except Exception as err:  # the database is away: try again next time
            log.warning("scheduler lease: %s", err)
            self.release()
            return False

    def held(self) -> bool:
        """The lock connection answers and still holds the lock."""
        try:
            row = self._conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND pid = pg_backend_pid() AND classid = %s AND objid = %s AND objsubid = 2",
                (LOCK_SPACE, SCHEDULER_LOCK),
            ).fetchone()
            return bool(row and row[0])
        except Exception as err:
            log.error("scheduler lease: the lock connection failed: %s", err)
            return False

    def release(self) -> None:
        """Close the lock connection (the server releases the lock with it)."""
        conn, self._conn = self._conn, None
        pgconn.close_quietly(conn)


class Replica:
    """This process's part in scheduling: ``leader``, ``follower`` or ``off`` (a read-only API).

    ``build(executor, follower)`` makes a :class:`SchedulerManager`; ``make_executor()`` an
    executor (called on each promotion: a demoted leader's executor is shut down with its
    manager). ``on_change(manager)`` is called when the active manager is replaced."""

    def __init__(
        self,
        settings: Any,
        db: Any,
        build: Callable[[Any, bool], Any],
        make_executor: Callable[[], Any],
    ):
        self.replica_id = settings.replica_id or default_replica_id()
        self.interval = float(settings.lease_interval_s)
        self.db, self._build, self._make_executor = db, build, make_executor
        self.lease = (
            AdvisoryLease(db.url, self.replica_id)
            if settings.run_scheduler and not db.is_sqlite
            else None
        )
        self.role = "off"
        self.manager: Any = None
        self.on_change: Callable[[Any], None] = lambda manager: None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._cancels: set[int] = set()  # cancel requests carried out in this term
        self.took_over_at: float | None = None

    @property
    def leader(self) -> bool:
        return self.role == "leader"

    def begin(self) -> list[int]:
        """Set up this process: the leader (SQLite, or the lease is free) resumes the studies
        left running, as after a restart. Returns their ids."""
        if self.lease is None:
            executor = self._make_executor()
            self.role = "leader" if executor is not None else "off"
            self.manager = self._build(executor, False)
            return self.manager.recover()
        self.role, self.manager = "follower", self._build(None, True)
        if self.lease.try_acquire():
            return self._promote(grace=False)
        log.info("replica %s: following (another replica schedules)", self.replica_id)
        return []

    def watch(self) -> None:
        """Start the lease thread (PostgreSQL only)."""
        if self.lease is not None:
            self._threads = [
                threading.Thread(target=self._loop, daemon=True, name="autopeft-lease"),
                threading.Thread(target=self._catch_up, daemon=True, name="autopeft-reconcile"),
            ]
            for thread in self._threads:
                thread.start()

    def _loop(self) -> None:
        """The lease: take it (a follower) or check it is still held (the leader). Alone in its
        thread, so nothing else a leader does can delay the fencing."""
        while not self._stop.wait(self.interval):
            try:
                if self.leader:
                    if not self.lease.held():
                        self._demote()
                elif self.lease.try_acquire():
                    self._promote(grace=True)
            except Exception:
                log.exception("replica %s: lease loop", self.replica_id)

    def _catch_up(self) -> None:
        """The leader picks up work asked on other replicas (``scheduling.reconcile``)."""
        from autopeft.api.scheduling.reconcile import reconcile

        while not self._stop.wait(self.interval):
            manager, cancels = self.manager, self._cancels
            if self.leader and not manager.follower:
                try:
                    reconcile(manager, cancels)
                except Exception:
                    log.exception("replica %s: reconcile", self.replica_id)

    def _promote(self, grace: bool) -> list[int]:
        # a leader cut off from the database has two intervals to notice and stop
        if grace and (self._stop.wait(2 * self.interval) or not self.lease.held()):
            self.lease.release()
            return []
        started = time.monotonic()
        manager = self._build(self._make_executor(), False)
        self._cancels = set()
        self.manager = manager
        self.on_change(manager)
        recovered = manager.recover()
        self.role = "leader"  # from here scheduling.reconcile runs too
        self.took_over_at = time.time()
        log.warning(
            "replica %s: took the scheduler lease; resumed studies %s (%.1f s)",
            self.replica_id,
            recovered,
            time.monotonic() - started,
        )
        return recovered

    def _demote(self) -> None:
        """Fencing: the lease is lost, so stop scheduling now (trial states are left as they are;
        the next leader requeues them)."""
        log.error("replica %s: lost the scheduler lease; stopping the scheduler", self.replica_id)
        old = self.manager
        self.role = "follower"
        old.shutdown()  # runners stop, the executor kills its trial processes
        self.manager = self._build(None, True)
        self.on_change(self.manager)
        self.lease.release()

    def current_leader(self) -> str | None:
        """The replica id of the leader (None: nobody holds the lease now)."""
        if self.lease is None:
            return self.replica_id if self.leader else None
        if self.leader:
            return self.replica_id
        try:
            with self.db.read() as s:
                name = s.execute(_HOLDER, {"space": LOCK_SPACE, "key": SCHEDULER_LOCK}).scalar()
        except Exception:  # pragma: no cover - the database is away
            return None
        return name[len(_APP) :] if name and name.startswith(_APP) else name

    def describe(self) -> dict[str, Any]:
        return {
            "scheduler": self.role,
            "replica_id": self.replica_id,
            "leader": self.current_leader(),
        }

    def shutdown(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        if self.manager is not None:
            self.manager.shutdown()
        if self.lease is not None:
            self.lease.release()
