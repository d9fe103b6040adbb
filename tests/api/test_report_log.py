"""Reports written behind the scheduler's answer and outcomes committed in groups
(``api.scheduling.reportlog``), and the refill of several free slots in one transaction: on a real SQLite store, through the real scheduler (the
executor is the fake of ``test_scheduler``)."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import event, func, select

from autopeft.api.models import Event, Study, Trial, TrialReport, User, utcnow
from autopeft.api.scheduling.reportlog import Outcome, ReportLog
from autopeft.workers.base import TrialOutcome
from tests.api.scheduler_harness import values_of


def _trial(db) -> int:
    with db.write() as s:
        user = s.scalar(select(User))
        study = Study(user_id=user.id, name="r", state="running", spec={})
        s.add(study)
        s.flush()
        t = Trial(study_id=study.id, number=0, state="running", config={}, optimizer_id="0")
        s.add(t)
        s.flush()
        return t.id


def _report(trial_id: int, step: int) -> dict:
    return dict(
        trial_id=trial_id,
        attempt=1,
        step=step,
        values={"loss": 1.0 / (step + 1)},
        decision="continue",
        created_at=utcnow(),
    )


def _steps(db, trial_id: int) -> list[int]:
    with db.read() as s:
        return list(
            s.scalars(
                select(TrialReport.step)
                .where(TrialReport.trial_id == trial_id)
                .order_by(TrialReport.id)
            )
        )


def _hold(log: ReportLog) -> threading.Event:
    """Make ``log``'s writer wait at a gate before each batch; set the gate to let it go."""
    gate = threading.Event()
    real_insert = log._insert

    def held(batch):
        gate.wait(10)
        real_insert(batch)

    log._insert = held
    return gate


def test_flush_returns_once_every_appended_row_is_committed(store):
    tid = _trial(store)
    log = ReportLog(store)
    for step in range(50):
        log.append(_report(tid, step), None)
    assert log.flush()
    assert _steps(store, tid) == list(range(50)) and log.pending == 0
    log.close()


def test_a_refused_row_is_dropped_and_the_rest_of_its_batch_is_written(store, caplog):
    tid = _trial(store)
    log = ReportLog(store)
    gate = _hold(log)  # so the three rows go in one batch
    log.append(_report(tid, 0), None)  # taken by the writer alone, held at the gate
    time.sleep(0.05)
    log.append(_report(tid, 1), None)
    log.append(_report(10**9, 2), None)  # no such trial: the foreign key refuses it
    log.append(_report(tid, 3), None)
    gate.set()
    assert log.flush()
    assert _steps(store, tid) == [0, 1, 3]
    assert "report of trial 1000000000 not stored" in caplog.text
    log.close()


def test_close_writes_what_is_pending_and_later_rows_are_written_at_once(store):
    tid = _trial(store)
    log = ReportLog(store)
    for step in range(5):
        log.append(_report(tid, step), None)
    log.close()
    assert _steps(store, tid) == list(range(5))
    log.append(_report(tid, 5), None)  # after close: in the caller's thread
    assert _steps(store, tid) == list(range(6))


def test_an_outcome_is_stored_only_after_the_reports_that_led_to_it(harness, monkeypatch):
    """The writer is slowed down: a trial that completes right after its reports must still
    have them (and their history entries) in the store when it shows as complete."""
    real = ReportLog._insert

    def slow(self, batch):
        time.sleep(0.3)
        real(self, batch)

    monkeypatch.setattr(ReportLog, "_insert", slow)
    sid = harness.create(max_trials=1, max_parallel=1)
    (tid,) = harness.in_flight(1)
    for step in range(4):
        assert harness.executor.report(tid, step, {"accuracy": 0.1 * step}) == "continue"
    harness.complete(tid)  # on_done runs in this thread: returns once the outcome is stored
    assert harness.trials(sid)[tid].state == "complete"
    assert _steps(harness.db, tid) == [0, 1, 2, 3]
    with harness.db.read() as s:
        kinds = list(s.scalars(select(Event.kind).where(Event.study_id == sid).order_by(Event.seq)))
    assert kinds == ["ask", "report", "report", "report", "report", "tell"]


def test_outcomes_of_trials_ending_together_share_one_commit(harness):
    """Three trials end while the writer is busy: their outcomes (rows and ``tell`` entries) go
    in one transaction, and each ``on_done`` returns only once its outcome is committed."""
    log = harness.manager.reports
    finished: list[int] = []  # per committed transaction: the outcomes it stored

    @event.listens_for(harness.db.engine, "before_cursor_execute")
    def _seen(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE TRIALS") and "finished_at" in statement:
            n = len(parameters) if executemany else 1
            conn.info["finished"] = conn.info.get("finished", 0) + n

    @event.listens_for(harness.db.engine, "commit")
    def _committed(conn):
        if n := conn.info.pop("finished", 0):
            finished.append(n)

    sid = harness.create(max_trials=3, max_parallel=3)
    trials = harness.in_flight(3)
    gate = _hold(log)
    harness.executor.report(trials[0], 0, {"accuracy": 0.1})  # the writer takes it, held
    states: dict[int, str] = {}

    def end(tid: int) -> None:
        harness.complete(tid)
        states[tid] = harness.trials(sid)[tid].state  # as stored when on_done returned

    threads = [threading.Thread(target=end, args=(t,)) for t in trials]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while log.pending < 4 and time.monotonic() < deadline:  # the report and three outcomes
        time.sleep(0.01)
    assert log.pending == 4 and not states  # nobody returned before the commit
    gate.set()
    for t in threads:
        t.join(10)
    assert states == {t: "complete" for t in trials}
    assert finished == [3]  # one transaction stored the three outcomes
    with harness.db.read() as s:
        tells = s.scalar(select(func.count()).where(Event.study_id == sid, Event.kind == "tell"))
    assert tells == 3
    harness.complete_all(sid)


def test_a_refused_outcome_raises_where_it_is_stored_and_its_batch_is_kept(store):
    tid = _trial(store)
    other = _trial(store)
    log = ReportLog(store)
    gate = _hold(log)
    log.append(_report(tid, 0), None)  # held at the gate
    time.sleep(0.05)
    log.append(_report(tid, 1), None)

    def outcome(trial_id: int, study_id: int) -> Outcome:
        finish = {
            "o_id": trial_id,
            "o_state": "complete",
            "o_values": {"accuracy": 0.5},
            "o_error": None,
            "o_finished_at": utcnow(),
            "o_feasible": None,
            "o_infeasible_reason": None,
            "o_trained": 1.0,
            "o_attempt": 0,
        }
        row = dict(study_id=study_id, seq=1, kind="tell", payload={}, created_at=utcnow())
        return Outcome(study_id, finish, [row], [])

    with store.read() as s:
        good_study = s.get(Trial, other).study_id
    errors: list[BaseException] = []

    def store_it(o: Outcome) -> None:
        try:
            log.store_outcome(o)
        except Exception as err:
            errors.append(err)

    bad = threading.Thread(target=store_it, args=(outcome(tid, 10**9),))  # no such study
    good = threading.Thread(target=store_it, args=(outcome(other, good_study),))
    bad.start(), good.start()
    time.sleep(0.1)
    gate.set()
    bad.join(10), good.join(10)
    assert len(errors) == 1 and "FOREIGN KEY" in str(errors[0]).upper()
    with store.read() as s:
        trials = {t: s.get(Trial, t) for t in (tid, other)}
    assert trials[tid].state == "running" and trials[other].state == "complete"
    assert trials[other].epochs_trained == 1.0
    assert _steps(store, tid) == [0, 1]
    log.close()


def test_free_slots_are_refilled_in_one_transaction(harness):
    """Starting the study fills its 4 slots with one write transaction (rows, history, start),
    and never asks past ``max_trials``."""
    made: list[bool] = []  # one entry per committed transaction that created trials

    @event.listens_for(harness.db.engine, "before_cursor_execute")
    def _seen(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO TRIALS"):
            conn.info["made_trials"] = True

    @event.listens_for(harness.db.engine, "commit")
    def _committed(conn):
        if conn.info.pop("made_trials", False):
            made.append(True)

    sid = harness.create(max_trials=3, max_parallel=4)
    running = harness.in_flight(3)
    trials = harness.trials(sid)
    assert sorted(t.number for t in trials.values()) == [0, 1, 2]
    assert all(trials[t].state == "running" and trials[t].attempts == 1 for t in running)
    assert len(made) == 1  # one transaction made all three
    for spec in harness.executor.submitted:  # each run is its own row's (ids returned in order)
        row = trials[spec.trial_id]
        assert (row.number, row.config) == (spec.number, spec.config)
    with harness.db.read() as s:
        asked = dict(
            s.execute(
                select(
                    Event.payload["trial_id"].as_integer(),
                    Event.payload["optimizer_id"].as_string(),
                ).where(Event.study_id == sid, Event.kind == "ask")
            ).all()
        )
    assert {t: trials[t].optimizer_id for t in running} == {t: asked[t] for t in running}
    with harness.db.read() as s:
        asks = s.scalar(
            select(func.count())
            .select_from(Event)
            .where(Event.study_id == sid, Event.kind == "ask")
        )
    assert asks == 3
    harness.complete_all(sid)
    trials = harness.trials(sid)
    assert len(trials) == 3 and {t.state for t in trials.values()} == {"complete"}
    assert {values_of(spec)["cost"] for spec in harness.executor.submitted} == {
        trials[t.id].values["cost"] for t in trials.values()
    }


@pytest.mark.parametrize("optimizer", ["random", "tpe"])
def test_a_restart_replays_the_history_written_behind(harness, optimizer):
    """Reports go through the log; a new scheduler on the same store rebuilds the same optimiser."""
    sid = harness.create(max_trials=4, max_parallel=2, optimizer={"name": optimizer})
    a, b = harness.in_flight(2)
    for step in range(3):
        harness.executor.report(a, step, {"accuracy": 0.2 * step})
        harness.executor.report(b, step, {"accuracy": 0.1 * step})
    harness.complete(a)
    harness.in_flight(2)
    before = harness.manager._live(sid).opt.trials
    harness.restart()  # the old manager's shutdown writes what is pending
    harness.manager.recover()
    harness.in_flight(2)
    assert harness.manager._live(sid).opt.trials[: len(before)] == before
    harness.executor.finish(b, TrialOutcome("complete", values={"accuracy": 0.5, "cost": 1.0}))
    harness.complete_all(sid)
    assert _steps(harness.db, b) == [0, 1, 2]
