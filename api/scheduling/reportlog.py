"""Reports written behind the scheduler's answer, outcomes committed in groups (issue 18: the
controller's capacity).

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
* **Nothing completed is lost.** Rows are written in the order they were queued, and a trial's
  outcome is queued behind its reports (below); a trial ended another way (a cancel, a user's
  stop, an exploit, a PBT pause) first waits for its last report to be committed
  (:meth:`ReportLog.flush` with the position :meth:`ReportLog.append` returned); anything that
  reads other trials' reports or the whole history (a replay, a requeue) waits for every row
  appended so far. A trial is therefore never ``complete`` without its reports.
* **A crash** loses at most the reports appended in the last moments (one batch) of trials that
  were still running; they are requeued from their checkpoints and report again.

**Outcomes** (a trial's final row, its ``tell`` / ``retries`` history entries, its checkpoint)
go through the same writer: :meth:`ReportLog.store_outcome` queues them and waits until they are
committed (a group commit: the outcomes of trials that end together share one transaction).
Queued after the trial's reports, they are never committed before them; the caller goes on only
once the outcome is durable, as with a transaction of its own.

A batch that fails (a study deleted meanwhile, or a row the database refuses) is retried one
report or outcome at a time: a refused report is dropped (logged), a refused outcome raises
its error in the thread that stores it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import Float, Integer, bindparam, case, func, insert, update

from autopeft.api.db import Database
from autopeft.api.models import Checkpoint, Event, Trial, TrialReport

log = logging.getLogger("autopeft.scheduler")

_INSERT_REPORTS = insert(TrialReport.__table__)
INSERT_EVENTS = insert(Event.__table__)
# new trials' rows, their ids returned in the order of the rows (scheduling.runs: refills)
INSERT_TRIALS = insert(Trial.__table__).returning(
    Trial.__table__.c.id, sort_by_parameter_order=True
)
_INSERT_CHECKPOINTS = insert(Checkpoint.__table__)
_T = Trial.__table__.c
# a trial's outcome, for executemany: its epochs add to those of earlier runs; ``attempt``, the
# attempt the executor reached when it retried a lost worker itself (0: none), only raises
_ATTEMPT = bindparam("o_attempt", type_=Integer)
_FINISH = (
    update(Trial.__table__)
    .where(_T.id == bindparam("o_id", type_=Integer))
    .values(
        state=bindparam("o_state", type_=_T.state.type),
        values=bindparam("o_values", type_=_T["values"].type),
        error=bindparam("o_error", type_=_T.error.type),
        finished_at=bindparam("o_finished_at", type_=_T.finished_at.type),
        feasible=bindparam("o_feasible", type_=_T.feasible.type),
        infeasible_reason=bindparam("o_infeasible_reason", type_=_T.infeasible_reason.type),
        epochs_trained=func.coalesce(_T.epochs_trained, 0.0) + bindparam("o_trained", type_=Float),
        attempts=case((_T.attempts < _ATTEMPT, _ATTEMPT), else_=_T.attempts),
    )
)
Row = tuple[dict[str, Any], dict[str, Any] | None]  # (trial_reports row, events row or None)


class Outcome:
    """A trial's outcome as rows: ``finish`` (the ``o_*`` parameters of its UPDATE), history
    entries and checkpoint rows; ``error``: why the database refused it, once written."""

    __slots__ = ("study_id", "finish", "events", "checkpoints", "error")

    def __init__(self, study_id: int, finish: dict[str, Any], events: list, checkpoints: list):
        self.study_id, self.finish = study_id, finish
        self.events, self.checkpoints = events, checkpoints
        self.error: Exception | None = None


class ReportLog:
    def __init__(self, db: Database):
        self.db = db
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the writer waits here for rows
        self._done = threading.Condition(self._lock)  # flushes wait here for their rows written
        self._pending: list[Row | Outcome] = []
        self._appended = 0  # rows appended so far
        self._written = 0  # rows whose batch has ended (committed, or dropped and logged)
        self._thread: threading.Thread | None = None
        self._closed = False

    def append(self, report: dict[str, Any], event: dict[str, Any] | None) -> int:
        """Queue one report's rows; they are inserted by the writer thread. Returns the rows'
        position, for :meth:`flush` (``upto``)."""
        return self._queue((report, event))

    def store_outcome(self, outcome: Outcome) -> None:
        """Queue a trial's outcome behind everything appended so far and return once it is
        committed; raises what the database raised if it was refused."""
        position = self._queue(outcome)
        while not self.flush(position):
            log.warning("trial outcome still waiting for the database after 60 s")
        if outcome.error is not None:
            raise outcome.error

    def _queue(self, item: Row | Outcome) -> int:
        with self._lock:
            closed = self._closed
            position = self._appended + 1
            if not closed:
                self._pending.append(item)
                self._appended = position
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="autopeft-report-log", daemon=True
                    )
                    self._thread.start()
                self._work.notify()  # the writer only (flushes wait on _done)
        if closed:  # after shutdown: written at once, in the caller's thread
            self._write([item])
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

    def _write(self, batch: list[Row | Outcome]) -> None:
        try:
            self._insert(batch)
        except Exception as err:  # e.g. a study deleted meanwhile: one by one, drop the refused
            if len(batch) > 1:
                for item in batch:
                    self._write([item])
            elif isinstance(batch[0], Outcome):
                batch[0].error = err  # raised in the thread storing it
            else:
                log.warning("report of trial %s not stored: %s", batch[0][0]["trial_id"], err)

    def _insert(self, batch: list[Row | Outcome]) -> None:
        reports, events, finishes, checkpoints, studies = [], [], [], [], set()
        for item in batch:
            if isinstance(item, Outcome):
                finishes.append(item.finish)
                events.extend(item.events)
                checkpoints.extend(item.checkpoints)
                studies.add(item.study_id)
            else:
                reports.append(item[0])
                if item[1] is not None:
                    events.append(item[1])
        # Core statements (executemany): no ORM bulk machinery; a report names no study (the
        # trials listing does not show it), an outcome does (listing caches, other replicas)
        with self.db.write(studies=studies) as s:
            if reports:
                s.execute(_INSERT_REPORTS, reports)
            if finishes:
                s.execute(_FINISH, finishes)
            if events:
                s.execute(INSERT_EVENTS, events)
            if checkpoints:
                s.execute(_INSERT_CHECKPOINTS, checkpoints)
