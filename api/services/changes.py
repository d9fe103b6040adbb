"""Writes of other processes, heard through PostgreSQL ``LISTEN`` / ``NOTIFY``: what keeps the
listing cache valid with several replicas on one database.

Every write that names a study (``Database.write(study_id)``) sends ``NOTIFY autopeft_study,
'<id>'`` inside its transaction, so the notification is delivered when, and only if, the write
commits. :class:`ChangeFeed` listens on a connection of its own and bumps the study's version in
this process (``Database.touch``) for each one, as this process's own writes do: a cached page
keyed on the version is then never served after a change another replica committed, once the
notification arrived (PostgreSQL delivers it to an idle listening session right after the
commit; milliseconds on loopback).

``fresh()`` says whether the feed can be trusted now: it is connected and listening, and it heard
from the server (a heartbeat query every ``heartbeat_s``) within ``stale_after_s``. A feed that
lost its connection (the server restarted, a network cut, ``pg_terminate_backend``) is not
fresh, so the cache is bypassed until it listens again; on (re)connecting it calls ``on_reset``
first (notifications sent while it was deaf are lost: the caller drops every cached page).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from autopeft.api import pgconn

log = logging.getLogger("autopeft.changes")

CHANNEL = "autopeft_study"


class ChangeFeed:
    def __init__(
        self,
        db,
        on_reset: Callable[[], None] = lambda: None,
        heartbeat_s: float = 0.5,
        stale_after_s: float = 2.0,
        retry_s: float = 1.0,
    ):
        self.db, self.on_reset = db, on_reset
        self.heartbeat_s, self.stale_after_s, self.retry_s = heartbeat_s, stale_after_s, retry_s
        self.conninfo = pgconn.conninfo(db.url)
        self.heard = 0  # notifications applied (for tests and diagnostics)
        self._listening = False
        self._last_ok = 0.0  # monotonic time of the last answer from the server
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn = None

    def fresh(self) -> bool:
        return self._listening and time.monotonic() - self._last_ok < self.stale_after_s

    def start(self) -> ChangeFeed:
        self._thread = threading.Thread(target=self._run, daemon=True, name="autopeft-changes")
        self._thread.start()
        return self

    def wait_fresh(self, timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while not self.fresh() and time.monotonic() < end:
            time.sleep(0.02)
        return self.fresh()

    def stop(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None:
            try:
                conn.cancel_safe(timeout=1.0)
            except Exception:  # pragma: no cover - the connection is already gone
                pass
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._listening = False

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._conn = pgconn.connect(self.conninfo, "autopeft-changes")
                self._conn.execute(f"LISTEN {CHANNEL}")
                self.on_reset()  # whatever was sent while not listening is lost
                self._last_ok = time.monotonic()
                self._listening = True
                self._listen(self._conn)
            except Exception as err:
                if not self._stop.is_set():
                    log.warning("change feed: %s; listening again in %.1f s", err, self.retry_s)
            finally:
                self._listening = False
                conn, self._conn = self._conn, None
                pgconn.close_quietly(conn)
            self._stop.wait(self.retry_s)

    def _listen(self, conn) -> None:
        while not self._stop.is_set():
            for note in conn.notifies(timeout=self.heartbeat_s):
                try:
                    self.db.touch(int(note.payload))
                    self.heard += 1
                except ValueError:  # not ours: ignore
                    continue
            conn.execute("SELECT 1")  # raises when the server or the network is gone
            self._last_ok = time.monotonic()
