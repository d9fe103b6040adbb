"""A study's life while it runs (a part of ``StudyRunner``, see ``scheduling.state``): more budget,
and one trial cancelled.

More budget. ``POST /studies/{id}/extend`` adds to ``max_trials``, ``max_seconds`` and / or
``max_epochs`` in the stored spec (``services.studies.extend_study``), then wakes the runner,
which reloads the budget (``reload_budget``). A runner about to finish re-reads the spec in the
transaction that marks the study ``finished`` (row-locked on PostgreSQL; SQLite has one writer):
when the budget grew meanwhile it goes on instead. A finished study is set ``running`` again and a
new runner replays its history, so only the added trials are run.

One trial cancelled. ``POST /trials/{id}/cancel``: a running trial's worker is cancelled through
the executor (the local executor's process gets SIGTERM, then SIGKILL; a Ray task is cancelled)
and its outcome, whatever it is, is stored as ``failed`` with the reason "cancelled by <user>";
a queued one (requeued after a restart or a stop, or a paused PBT member) is ended at once. The
optimiser is told ``failed`` (an event, so a replay agrees); the study goes on with the rest of
its budget (the cancelled trial counts in ``max_trials``, its epochs in ``max_epochs``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import func, select

from autopeft.api.models import FINISHED_TRIAL_STATES, Event, Study, Trial, utcnow
from autopeft.api.scheduling.state import Part

log = logging.getLogger("autopeft.scheduler")

#: the budget fields of a spec (``extend`` adds to them)
BUDGET_KEYS = ("max_trials", "max_seconds", "max_epochs")
#: what the user adds to a spec for the runner (``services.outside``): lists only appended to
OUTSIDE_KEYS = ("enqueued", "attached")


def budget_of(spec: dict[str, Any]) -> tuple:
    """The budget, and how many configs were enqueued and results attached: when it differs from
    a runner's, the runner reloads (``reload_budget``; ``scheduling.reconcile`` on a leader)."""
    return tuple(spec.get(k) for k in BUDGET_KEYS) + tuple(
        len(spec.get(k) or []) for k in OUTSIDE_KEYS
    )


class Lifecycle(Part):
    # -- more budget ----------------------------------------------------------------------------
    def reload_budget(self) -> None:
        """Called by the manager after ``extend``: reload the budget at the next turn of the loop."""
        self.st.budget_changed.set()
        self.st.wake.set()

    def _apply_budget(self, spec: dict[str, Any]) -> bool:
        """Take the stored budget; True when it differs from the one this runner used."""
        changed = budget_of(spec) != budget_of(self.st.spec)
        self.st.spec = {**self.st.spec, **{k: spec.get(k) for k in BUDGET_KEYS + OUTSIDE_KEYS}}
        return changed

    def reload_if_extended(self) -> None:
        if self.st.budget_changed.is_set():
            self.st.budget_changed.clear()
            with self.db.read() as s:
                study = s.get(Study, self.study_id)
                spec = dict(study.spec) if study is not None else self.st.spec
            if self._apply_budget(spec):
                log.info(
                    "study %s: budget now %s",
                    self.study_id,
                    dict(zip(BUDGET_KEYS + OUTSIDE_KEYS, budget_of(self.st.spec))),
                )

    def compute_spent(self) -> bool:
        limit = self.st.spec.get("max_epochs")
        if limit is None:
            return False
        with self.db.read() as s:
            used = float(
                s.scalar(
                    select(func.coalesce(func.sum(Trial.epochs_trained), 0.0)).where(
                        Trial.study_id == self.study_id
                    )
                )
                or 0.0
            )
        with self.st.lock:  # a run in flight counts what it is planned to train, not what it has
            used += sum(max(self.st.planned.get(t, 0.0), p) for t, p in self.st.progress.items())
        return used >= float(limit)

    def finish(self, elapsed: float, message: str | None) -> bool:
        """Mark the study finished; False (and the new budget taken) when it was extended meanwhile.
        The row is locked (PostgreSQL) so an ``extend`` commits wholly before or after this."""
        finished = False
        with self.db.write(self.study_id) as s:
            study = s.get(Study, self.study_id, with_for_update=True)
            study.elapsed_s = elapsed
            if study.state == "running" and budget_of(study.spec) != budget_of(self.st.spec):
                self._apply_budget(dict(study.spec))
                return False
            if study.state == "running":
                self.st.ending.set()
                study.state, study.finished_at, study.message = "finished", utcnow(), message
                finished = True
        if finished and self.st.webhook is not None:  # committed
            self.st.webhook.ended("finished", message)
        return True

    # -- one trial cancelled ------------------------------------------------------------------
    def cancel_trial(self, trial_id: int, reason: str) -> None:
        """End ``trial_id`` (queued or running) as failed with ``reason``: a running one through
        the executor (its ``on_done`` ends it, see ``_handle_done``), any other at once (and
        ``_submit`` will not start it)."""
        with self.st.lock:
            self.st.cancelling[trial_id] = reason
            running = trial_id in self.st.inflight
            for queue in (self.st.paused, self.st.rung_paused, self.st.requeue):
                if trial_id in queue:
                    queue.remove(trial_id)
        if running:
            self.executor.cancel(
                trial_id
            )  # False while it is being submitted: _submit cancels it then
        else:
            self.end_cancelled(trial_id, reason)
            self.st.wake.set()

    def end_cancelled(self, trial_id: int, reason: str, trained: float = 0.0) -> None:
        with self.st.lock:
            self.st.exploits.pop(trial_id, None)
            self.st.next_step.pop(trial_id, None)
            with self.db.write(self.study_id) as s:
                t = s.get(Trial, trial_id)
                if t is None or t.state in FINISHED_TRIAL_STATES:
                    return  # it ended on its own first
                search = trial_id not in self.st.baselines and trial_id in self.st.ids
                if search:
                    self.st.opt.tell(self.st.ids[trial_id], None, state="failed")
                    self.run.history.event(
                        s, "tell", {"trial_id": trial_id, "values": None, "state": "failed"}
                    )
                t.state, t.error, t.finished_at = "failed", reason, utcnow()
                t.feasible, t.infeasible_reason = None, None
                t.epochs_trained = (t.epochs_trained or 0.0) + trained
        log.info("study %s trial %s: %s", self.study_id, trial_id, reason)


class LifecycleManager:
    """The ``SchedulerManager`` side: find a study's live runner, or act in the store. On a
    follower (another replica schedules, see ``scheduling.leader``) requests are written to the
    store for the leader (``scheduling.reconcile``)."""

    def runner_ids(self) -> set[int]:
        """Studies with a runner object here (live, stopping or ending)."""
        with self._lock:
            return set(self._runners)

    def forbid(self, study_id: int) -> None:
        """No runner starts for ``study_id`` again (it is being deleted)."""
        with self._lock:
            self._deleted.add(study_id)

    def await_remote_stop(self, study_id: int, timeout: float = 60.0) -> None:
        """A follower deleting a study: mark it stopped, then wait until the leader's runner has put
        its trials back (none ``running``) before the rows go."""
        with self.db.write(study_id) as s:
            study = s.get(Study, study_id, with_for_update=True)
            if study is None or study.state != "running":
                return
            study.state = "stopped"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.db.read() as s:
                running = s.scalar(
                    select(func.count())
                    .select_from(Trial)
                    .where(Trial.study_id == study_id, Trial.state == "running")
                )
            if not running:
                return
            time.sleep(0.2)
        log.warning("study %s: the leader did not stop it within %.0f s", study_id, timeout)

    def extended(self, study_id: int) -> None:
        """The study's stored budget grew: its runner (if any) goes on with it; a finished or
        stopped-and-resumed study gets a runner through :meth:`start`."""
        runner = self._live(study_id)
        if runner is not None:
            runner.reload_budget()

    def settle(self, study_id: int) -> None:
        """Wait for a runner of ``study_id`` on its way out (a stop) to end, so the store is the
        study's whole history (callers hold :meth:`study_lock`)."""
        with self._lock:
            runner = self._runners.get(study_id)
        if runner is not None and not active_runner(runner):
            runner.join(timeout=60)

    def cancel_trial(self, study_id: int, trial_id: int, reason: str) -> None:
        """End one queued or running trial as failed with ``reason`` (callers hold
        :meth:`study_lock`). Through the study's runner when it has one, else in the store; on a
        follower, asked of the leader through the store (``trials.cancel_requested``)."""
        if self.follower:
            with self.db.write(study_id) as s:
                t = s.get(Trial, trial_id)
                if t is not None and t.state in ("queued", "running"):
                    t.cancel_requested = reason
            return
        runner = self._live(study_id)
        if runner is not None:
            runner.cancel_trial(trial_id, reason)
            return
        with self._lock:
            stopping = self._runners.get(study_id)
        if (
            stopping is not None
        ):  # a runner on its way out (a stop): let it put its trials back first
            stopping.join(timeout=60)
        cancel_in_store(self.db, study_id, trial_id, reason)


def active_runner(runner) -> bool:
    """A runner (or None) that is running its study and was not asked to stop, nor ending."""
    return (
        runner is not None
        and runner.is_alive()
        and not runner.st.stop_requested.is_set()
        and not runner.st.ending.is_set()
    )


def cancel_in_store(db, study_id: int, trial_id: int, reason: str) -> None:
    """End a queued trial of a study that has no runner (stopped): failed, with the optimiser's
    ``tell`` appended to the history so a later replay agrees."""
    with db.write(study_id) as s:
        t = s.get(Trial, trial_id)
        if t is None or t.state not in ("queued", "running"):
            return
        t.state, t.error, t.finished_at = "failed", reason, utcnow()
        if t.kind != "baseline" and t.optimizer_id:
            seq = s.scalar(
                select(func.coalesce(func.max(Event.seq), 0)).where(Event.study_id == study_id)
            )
            s.add(
                Event(
                    study_id=study_id,
                    seq=int(seq) + 1,
                    kind="tell",
                    payload={"trial_id": trial_id, "values": None, "state": "failed"},
                )
            )
