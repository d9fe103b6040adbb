"""Reports written behind the scheduler's answer (issue 18: the controller's capacity).

A report is the controller's most frequent event (a trial sends one every N steps; a cluster of
1,000 running trials, thousands a second). Its answer ("continue" / "stop" / an exploit) is the
optimiser's, decided in memory under the study's lock; its rows (a ``trial_reports`` row and,
for search trials, the ``report`` entry of the optimiser history) need not delay that answer.
:class:`ReportLog` takes them in order and one writer thread inserts whatever has accumulated
in one transaction (SQLAlchemy ``executemany``), so a burst of reports costs one commit, not one
each, and no report waits for the database.

What this keeps of the store's guarantees:

* **Order.** History entries carry their ``seq``, assigned under the study's lock when the
  optimiser decided; replay orders by it, so the commit order does not matter.
* **Nothing completed is lost.** Before a trial's outcome is stored the runner waits for that
  trial's last report to be committed (:meth:`ReportLog.flush` with the position
  :meth:`ReportLog.append` returned; rows are written in order, so its earlier reports are
  too); before anything that reads other trials' reports or the whole history (a replay, a
  requeue, a PBT pause) it waits for every row appended so far. A trial is therefore never
  ``complete`` without its reports.
* **A crash** loses at most the reports appended in the last moments (one batch) of trials that
  were still running; they are requeued from their checkpoints and report again.

A batch that fails (a study deleted meanwhile, or a row the database refuses) is retried row by
row and only the refused rows are dropped, each logged.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import insert

from autopeft.api.db import Database
from autopeft.api.models import Event, TrialReport

log = logging.getLogger("autopeft.scheduler")

_INSERT_REPORTS = insert(TrialReport.__table__)
_INSERT_EVENTS = insert(Event.__table__)
Row = tuple[dict[str, Any], dict[str, Any] | None]  # (trial_reports row, events row or None)


class ReportLog:
    def __init__(self, db: Database):
        self.db = db
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the writer waits here for rows
        self._done = threading.Condition(self._lock)  # flushes wait here for their rows written
        self._pending: list[Row] = []
        self._appended = 0  # rows appended so far
        self._written = 0  # rows whose batch has ended (committed, or dropped and logged)
        self._thread: threading.Thread | None = None
        self._closed = False

    def append(self, report: dict[str, Any], event: dict[str, Any] | None) -> int:
        """Queue one report's rows; they are inserted by the writer thread. Returns the rows'
        position, for :meth:`flush` (``upto``)."""
        with self._lock:
            closed = self._closed
            position = self._appended + 1
            if not closed:
                self._pending.append((report, event))
                self._appended = position
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="autopeft-report-log", daemon=True
                    )
                    self._thread.start()
                self._work.notify()  # the writer only (flushes wait on _done)
        if closed:  # after shutdown: written at once, in the caller's thread
            self._write([(report, event)])
        return position

    def flush(self, upto: int | None = None, timeout: float = 60.0) -> bool:
        """Block until every row appended before this call (or up to position ``upto``, as
        :meth:`append` returned it) is written; False on timeout."""
        with self._lock:
            target = self._appended if upto is None else min(upto, self._appended)
            return self._done.wait_for(lambda: self._written >= target, timeout)

    def close(self) -> None:
        """Write what is pending and stop the writer thread (later appends write at once)."""
        self.flush()
        with self._lock:
            self._closed = True
            self._work.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=10)

    @property
    def pending(self) -> int:
        with self._lock:
            return self._appended - self._written

    def _run(self) -> None:
        while True:
            with self._lock:
                self._work.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return  # closed and drained
                batch, self._pending = self._pending, []
            try:
                self._write(batch)
            finally:
                with self._lock:
                    self._written += len(batch)
                    self._done.notify_all()

    def _write(self, batch: list[Row]) -> None:
        try:
            self._insert(batch)
        except Exception as err:  # e.g. a study deleted meanwhile: row by row, drop the refused
            if len(batch) == 1:
                log.warning("report of trial %s not stored: %s", batch[0][0]["trial_id"], err)
                return
            for row in batch:
                self._write([row])

    def _insert(self, batch: list[Row]) -> None:
        reports = [report for report, _ in batch]
        events = [event for _, event in batch if event is not None]
        with self.db.write() as s:  # Core statements (executemany): no ORM bulk machinery
            s.execute(_INSERT_REPORTS, reports)
            if events:
                s.execute(_INSERT_EVENTS, events)
