"""The scheduler in-process: a real ``SchedulerManager`` / ``StudyRunner`` against a SQLite store in
a temp dir, with a fake executor (a subclass of the real ``workers.base.Executor``) that runs
nothing: the test decides when each submitted trial reports and how it ends
(``tests/api/scheduler_harness.py``; fixtures ``store`` and ``harness`` in conftest.py)."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from autopeft.api.models import Event
from autopeft.workers.base import TrialOutcome
from tests.api.scheduler_harness import values_of
from tests.waiting import wait_for


def test_dispatches_up_to_max_parallel_and_stops_at_max_trials(harness):
    sid = harness.create(max_trials=5, max_parallel=2)
    for done in range(5):
        first, *_ = harness.in_flight(min(2, 5 - done))
        harness.complete(first)
    wait_for(lambda: harness.study(sid).state == "finished", 30, "the study to finish")
    trials = harness.trials(sid)
    assert sorted(t.number for t in trials.values()) == [0, 1, 2, 3, 4]
    assert all(t.state == "complete" and t.attempts == 1 for t in trials.values())
    assert len(harness.executor.submitted) == 5 and harness.executor.peak == 2
    assert harness.executor.running() == []


def test_outcomes_are_stored_and_told_to_the_optimiser(harness):
    sid = harness.create(max_trials=3, max_parallel=3)
    a, b, c = harness.in_flight(3)
    assert harness.executor.report(a, 0, {"accuracy": 0.5}) == "continue"
    harness.complete(a)
    harness.executor.finish(b, TrialOutcome("failed", error="ValueError: boom"))
    harness.executor.finish(c, TrialOutcome("complete", values={"cost": 1.0}))  # no accuracy
    wait_for(lambda: harness.study(sid).state == "finished", 30, "the study to finish")
    trials = harness.trials(sid)
    assert [trials[t].state for t in (a, b, c)] == ["complete", "failed", "failed"]
    assert trials[b].error == "ValueError: boom" and "lacks objective" in trials[c].error
    with harness.db.read() as s:  # the runner is gone; its history is in the store
        events = s.scalars(select(Event).where(Event.study_id == sid).order_by(Event.seq)).all()
    told = {e.payload["trial_id"]: e.payload["state"] for e in events if e.kind == "tell"}
    assert told == {a: "complete", b: "failed", c: "failed"}
    assert [e.kind for e in events].count("report") == 1


def test_optimiser_state_follows_the_outcomes(harness):
    sid = harness.create(max_trials=4, max_parallel=2)
    a, b = harness.in_flight(2)
    runner = harness.manager._live(sid)
    harness.complete(a)
    harness.executor.finish(b, TrialOutcome("failed", error="lost"))
    harness.in_flight(2)
    states = {t.id: t.state for t in runner.opt.trials}
    assert states[runner.ids[a]] == "complete" and states[runner.ids[b]] == "failed"
    assert runner.opt.trials[runner.ids[a]].values["cost"] == pytest.approx(
        values_of(harness.executor.submitted[0])["cost"]
    )


def test_stop_cancels_running_trials_and_puts_them_back_in_the_queue(harness):
    sid = harness.create(max_trials=6, max_parallel=2)
    a, b = harness.in_flight(2)
    harness.complete(a)
    c, d = harness.in_flight(2)
    harness.manager.stop(sid, wait=True)
    assert sorted(harness.executor.cancelled) == sorted([c, d])
    trials = harness.trials(sid)
    assert trials[a].state == "complete"
    assert {trials[t].state for t in (c, d)} == {"queued"}
    assert len(trials) == 3 and harness.manager._live(sid) is None


@pytest.mark.parametrize("optimizer", ["random", "tpe"])  # rebuilt by add_trial / by real asks
def test_a_new_scheduler_on_the_same_store_resumes_the_study(harness, optimizer, caplog):
    caplog.set_level(logging.INFO, logger="autopeft.scheduler")
    sid = harness.create(max_trials=5, max_parallel=2, optimizer={"name": optimizer})
    a, b = harness.in_flight(2)
    harness.executor.report(b, 0, {"accuracy": 0.25})
    harness.complete(a)
    (c,) = set(harness.in_flight(2)) - {b}
    before = harness.managers[-1]._live(sid).opt.trials
    harness.restart()  # the old executor is shut down: b and c stay `running` in the store
    assert {harness.trials(sid)[t].state for t in (b, c)} == {"running"}
    harness.manager.recover()
    requeued = harness.in_flight(2)
    assert sorted(requeued) == sorted([b, c])
    assert all(spec.attempt == 2 for spec in harness.executor.submitted)
    runner = harness.manager._live(sid)
    after = runner.opt.trials
    assert after[: len(before)] == before  # the optimiser replayed its history exactly
    harness.complete_all(sid)
    trials = harness.trials(sid)
    assert sorted(t.number for t in trials.values()) == [0, 1, 2, 3, 4]
    assert all(t.state == "complete" for t in trials.values())
    assert trials[a].attempts == 1 and trials[b].attempts == trials[c].attempts == 2
    assert "replayed" in caplog.text and "diverged" not in caplog.text
