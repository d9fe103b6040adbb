"""The leader catches up with work asked on other replicas (see ``scheduling.leader``).

A follower serves every request but runs nothing: it writes what was asked to the store and the
leader, every ``lease_interval_s``, makes its runners agree with it (:func:`reconcile`):

* a study ``running`` in the store without a runner here gets one (created, resumed, or a
  finished study extended on a follower);
* a runner whose study is no longer ``running`` (stopped on a follower) stops; one whose study
  was deleted stops and never starts again;
* a runner whose study's stored budget differs from its own reloads it (extended on a follower);
* a trial with ``cancel_requested`` (asked on a follower) is cancelled the way a cancel on the
  leader is (``SchedulerManager.cancel_trial``), once per term; the request stays stored until
  the trial has ended, so a leader that dies in between leaves it to the next one.

Each study is acted on under its ``study_lock``, taken without waiting (a request on this
replica holds it: the study is looked at again next time), and its state is read again inside.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from autopeft.api.models import Study, Trial
from autopeft.api.scheduling.lifecycle import budget_of

log = logging.getLogger("autopeft.leader")


def reconcile(manager: Any, cancels_done: set[int]) -> None:
    """One pass; ``cancels_done``: trial ids whose cancel this term already carried out."""
    with manager.db.read() as s:
        running = dict(
            s.execute(select(Study.id, Study.spec).where(Study.state == "running")).all()
        )
        cancels = s.execute(
            select(Trial.id, Trial.study_id, Trial.cancel_requested).where(
                Trial.cancel_requested.is_not(None), Trial.state.in_(("queued", "running"))
            )
        ).all()
    runners = manager.runner_ids()
    for sid in sorted(set(running) - runners):
        _locked(manager, sid, _start_if_running)
    for sid in sorted(runners):
        runner = manager._live(sid)
        if runner is None:
            continue
        if sid not in running:
            _locked(manager, sid, _stop_unless_running)
        elif runner.st.spec and budget_of(running[sid]) != budget_of(runner.st.spec):
            runner.reload_budget()
    for tid, sid, reason in cancels:
        if tid not in cancels_done and _locked(
            manager, sid, lambda m, i, t=tid, why=reason: m.cancel_trial(i, t, why)
        ):
            cancels_done.add(tid)


def _locked(manager: Any, study_id: int, action) -> bool:
    lock = manager.study_lock(study_id)
    if not lock.acquire(blocking=False):
        return False
    try:
        action(manager, study_id)
        return True
    finally:
        lock.release()


def _state(manager: Any, study_id: int) -> str | None:
    with manager.db.read() as s:
        return s.scalar(select(Study.state).where(Study.id == study_id))


def _start_if_running(manager: Any, study_id: int) -> None:
    if study_id not in manager.runner_ids() and _state(manager, study_id) == "running":
        log.info("study %s: running in the store, started here", study_id)
        manager.start(study_id)


def _stop_unless_running(manager: Any, study_id: int) -> None:
    state = _state(manager, study_id)
    if state == "running":
        return
    if state is None:  # deleted on another replica
        manager.forbid(study_id)
    log.info("study %s: %s in the store, its runner stops", study_id, state or "deleted")
    manager.stop(study_id)
