"""The scheduler: one thread per running study, inside the API process.

A :class:`StudyRunner` keeps ``max_parallel`` runs in flight. In order of precedence a free
slot goes to: a trial requeued after a restart; a forward-only evaluation of a front trial (or a
baseline) on the held-out test split; the study's next baseline (``spec.baselines``: hand-picked
reference points, never told to the optimiser); a config the user enqueued (``spec.enqueued``,
``scheduling.outside``); a paused PBT member whose turn it is; a new trial (``optimizer.ask()`` -> row ``running`` -> ``executor.submit``; the free slots of a study
are refilled together, in one transaction). Reports are answered at once with the optimiser's
decision ("stop" ends the trial early; a PBT ``Exploit`` stops it and continues it from the
donor's checkpoint with the new config) and their rows are written behind the answer, in
batches (``scheduling.reportlog``); a trial's outcome goes through the same writer behind its
reports, and the runner waits for its commit (outcomes that end together share one).
Final values go to ``tell``. Results the user attached (measured elsewhere) become complete
trials at the next turn of the loop, told with ``add_trial``, outside ``max_trials``. New trials
stop at ``max_trials``, at the ``max_seconds`` budget,
at the ``max_epochs`` compute budget (training epochs summed over trials) or on a user's stop
(running trials are cancelled and put back to ``queued``; ``resume`` reruns them from their
checkpoints).

Multi-fidelity. A peft trial whose run reached its last report (``budget_reached``) is
``complete`` even when the early stopper answered "stop" at that report: a fully trained trial
is never pruned. PBT on a peft workload takes turns: ``population_size`` members (independent
of ``max_parallel``) train in segments of ``perturbation_interval`` reports; between segments a
member is paused (``queued``, its checkpoint kept) and the next one runs. An exploit copies the
donor's checkpoint into the member's own folder at once (the donor may train on) and appends
to the trial's ``lineage``.

Restart: every ask / tell is appended to ``events`` in the same transaction as the trial change
it belongs to, every report in the batch of its ``trial_reports`` row, each at the position
(``seq``) the optimiser saw it. A new runner rebuilds the optimiser by replaying these events in
order (``scheduling.replay``; optimisers are a pure function of seed + history) and requeues the
trials that were ``queued`` or ``running`` when the previous process died (same number, same
config, ``attempts`` + 1, from their checkpoint). Nothing completed is lost: a trial becomes
``complete`` in one transaction, with its ``tell`` entry.

What the runner needs of its optimiser beyond ask / tell / report it reads from the optimiser's
declared capabilities (``autopeft.optim.base``: ``REBUILDS_BY_ADD``, ``population``), never
from its name. The parts of the runner live in ``autopeft.api.scheduling``, one idea a module: the
runner owns one of each and a ``RunState`` (``scheduling.state``), the only state they share.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from autopeft.api.artifacts import public_error
from autopeft.api.db import Database
from autopeft.api.models import Study, Trial, utcnow
from autopeft.api.scheduling.baselines import Baselines
from autopeft.api.scheduling.lifecycle import Lifecycle, LifecycleManager, active_runner
from autopeft.api.scheduling.outside import OutsideTrials
from autopeft.api.scheduling.pbt import PBTTurns
from autopeft.api.scheduling.promotions import Promotions
from autopeft.api.scheduling.replay import HistoryReplay
from autopeft.api.scheduling.replicates import Replicates
from autopeft.api.scheduling.reportlog import ReportLog
from autopeft.api.scheduling.runs import TrialRuns
from autopeft.api.scheduling.state import RunState
from autopeft.api.scheduling.tests import HeldOutTests
from autopeft.api.scheduling.warmstart import WarmStartReuse
from autopeft.api.slots import Holder, SlotAllocator, gang_size
from autopeft.api.study import StudySpec
from autopeft.api.tracking.hub import TrackingHub
from autopeft.api.tracking.rules import TrackingRules
from autopeft.api.webhooks.rules import WebhookRules
from autopeft.api.webhooks.sender import WebhookSender
from autopeft.workers.base import Executor

log = logging.getLogger("autopeft.scheduler")

ELAPSED_FLUSH_S = 10.0


class StudyRunner(threading.Thread):
    """One study's loop; its parts (``scheduling.*``) share the state in ``self.st``."""

    def __init__(self, manager: SchedulerManager, study_id: int):
        super().__init__(daemon=True, name=f"autopeft-study-{study_id}")
        self.m, self.db, self.executor = manager, manager.db, manager.executor
        self.study_id = study_id
        self.st = RunState(study_id)  # every field the parts share (scheduling.state)
        self.history = HistoryReplay(self)
        self.runs = TrialRuns(self)
        self.baseline_runs = Baselines(self)
        self.lifecycle = Lifecycle(self)
        self.warm_start = WarmStartReuse(self)
        self.outside = OutsideTrials(self)
        self.pbt = PBTTurns(self)
        self.promotions = Promotions(self)
        self.replicates = Replicates(self)
        self.tests = HeldOutTests(self)

    @property
    def opt(self):
        """The study's optimiser (None until the runner has rebuilt it)."""
        return self.st.opt

    @property
    def ids(self) -> dict[int, Any]:
        """Trial id -> the optimiser's id of it (search trials)."""
        return self.st.ids

    def reload_budget(self) -> None:
        """Called by the manager after ``extend`` (``Lifecycle.reload_budget``)."""
        self.lifecycle.reload_budget()

    def cancel_trial(self, trial_id: int, reason: str) -> None:
        """End one queued or running trial as failed (``Lifecycle.cancel_trial``)."""
        self.lifecycle.cancel_trial(trial_id, reason)

    # -- control ------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self.st.stop_requested.set()
        self.st.wake.set()

    def _has_slot(self) -> bool:
        """A fair-share slot for one more trial (see ``autopeft.api.slots``)."""
        return self.st.slot is None or self.m.slots.acquire(self.st.slot)

    def release_slot(self) -> None:
        """A run of this study ended: its slot is free, and this study is in line for it again
        (the runner loop withdraws when it wants no more)."""
        if self.st.slot is not None:
            self.m.slots.release(self.st.slot, rejoin=True)

    # -- thread -------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except Exception as err:
            log.exception("study %s failed", self.study_id)
            reason = public_error(f"{type(err).__name__}: {err}")
            for tid in list(self.st.inflight | self.st.evaluating):  # nothing of it goes on running
                self.executor.cancel(tid)
            with self.db.write(self.study_id) as s:
                study = s.get(Study, self.study_id)
                if study is not None:
                    study.state, study.message, study.finished_at = "failed", reason, utcnow()
                    # its unfinished trials end with it (a failed study never shows one running)
                    for t in s.scalars(
                        select(Trial).where(
                            Trial.study_id == self.study_id, Trial.state.in_(("queued", "running"))
                        )
                    ):
                        t.state, t.finished_at = "failed", utcnow()
                        t.error = f"the study failed: {reason}"
            if self.st.webhook is not None:
                self.st.webhook.ended("failed", reason)
        finally:
            if self.st.tracker is not None:
                self.st.tracker.close()
            if self.st.slot is not None:
                self.m.slots.forget(self.st.slot)
            self.m._forget(self.study_id, self)

    def _run(self) -> None:
        with self.db.read() as s:
            study = s.get(Study, self.study_id)
            if study is None or study.state != "running":
                return
            self.st.spec = dict(study.spec)
            elapsed_before = float(study.elapsed_s or 0.0)
            self.st.slot = Holder(
                study.user_id, self.study_id, self.st.wake, size=gang_size(self.st.spec)
            )
            name = study.name
        self.st.tracker = self.m.tracking and self.m.tracking.tracker(
            self.study_id, name, self.st.spec
        )
        with self.st.lock:  # a webhook added meanwhile (SchedulerManager.webhook_added) is kept
            if self.st.webhook is None and self.m.webhooks:
                self.st.webhook = self.m.webhooks.hook(self.study_id, self.st.spec)
        typed = StudySpec(self.st.spec)  # validated when it was stored (services.spec)
        self.st.objectives, self.st.constraints = typed.objectives, typed.constraints
        self.st.opt, self.st.known = typed.optimizer(typed.space()), typed.known()
        self.st.turns = self.pbt.takes_turns()
        self.st.requeue = requeue = self.history.replay()
        started = time.monotonic()
        last_flush = started
        max_parallel = typed.max_parallel
        todo_baselines = self.baseline_runs.baselines_to_create()
        with self.db.read() as s:
            created = s.scalar(
                select(func.count()).select_from(Trial).where(Trial.study_id == self.study_id)
            )
            self.st.attached_n = s.scalar(
                select(func.count())
                .select_from(Trial)
                .where(Trial.study_id == self.study_id, Trial.kind == "attached")
            )
        created = self.warm_start.reuse_warm_start(
            created
        )  # the source's results, not trained again
        created = self.outside.attach_waiting(
            created
        )  # results measured elsewhere (scheduling.outside)
        if self.st.webhook is not None:
            self.st.webhook.completed()  # reused results may be new points of the front
        self.tests.queue_tests()
        while True:
            self.lifecycle.reload_if_extended()
            created = self.outside.attach_waiting(created)
            max_trials, max_seconds = (
                int(self.st.spec["max_trials"]),
                self.st.spec.get("max_seconds"),
            )
            elapsed = elapsed_before + time.monotonic() - started
            if self.st.stop_requested.is_set():
                self._pause(elapsed)
                return
            out_of_time = max_seconds is not None and elapsed >= float(max_seconds)
            out_of_compute = not out_of_time and self.lifecycle.compute_spent()
            out_of_budget = out_of_time or out_of_compute
            with self.st.lock:
                busy = len(self.st.inflight) + len(self.st.evaluating)
            while busy < max_parallel and not self.st.stop_requested.is_set():
                action = self._next_run(
                    requeue,
                    out_of_budget,
                    todo_baselines,
                    self.outside.counted(created) < max_trials,
                )
                if action is None:
                    self.m.slots.withdraw(self.st.slot)
                    break
                if not self._has_slot():  # other users' / studies' turn: woken when a slot frees up
                    break
                if action == "requeue":
                    tid = self._take(requeue)
                    if tid is not None:  # None: cancelled meanwhile
                        self.runs.submit(tid, requeue=True)
                elif action == "test":
                    self.tests.submit_test(self._take(self.st.pending_tests))
                elif action == "baseline":
                    self.baseline_runs.create_baseline(todo_baselines.pop(0), created)
                    created += 1
                elif action == "enqueued":
                    self.outside.start_enqueued(created)
                    created += 1
                elif action == "member":
                    member = self._take(self.st.paused)
                    if member is not None:
                        self.runs.submit(member, restore_dir=self.runs.own_checkpoint(member))
                elif action == "replicate":
                    planned = self._take(self.st.replicate_todo)
                    if planned is not None:
                        self.replicates.create_replicate(*planned, created)
                        created += 1
                elif action == "promote":
                    promoted = self.promotions.promotable()
                    if promoted is not None:
                        self.promotions.promote(promoted)
                else:  # every free slot this study may fill now, asked and started at once
                    n = 1
                    while (
                        not self.st.turns
                        and busy + n < max_parallel
                        and self.outside.counted(created) + n < max_trials
                        and self._has_slot()
                    ):
                        n += 1
                    self.runs.ask_and_submit(created, n)
                    created += n
                    busy += n - 1
                busy += 1
            if self.st.stop_requested.is_set() or busy >= max_parallel:  # no slot wanted now
                self.m.slots.withdraw(self.st.slot)
            with self.st.lock:
                idle = not (
                    self.st.inflight
                    or self.st.evaluating
                    or self.st.exploits
                    or self.st.pending_tests
                )
                waiting = bool(self.st.paused)
                at_rungs = bool(self.st.rung_paused)
                replicating = bool(self.st.replicate_todo)
            promotable = at_rungs and self.promotions.promotable() is not None
            more = replicating or (
                not out_of_budget
                and (
                    self.outside.counted(created) < max_trials
                    or self.outside.enqueued_waiting()
                    or waiting
                    or promotable
                    or (todo_baselines and self.outside.counted(created) < max_trials)
                )
            )
            if idle and not requeue and not more:
                if waiting:
                    self.pbt.end_paused("the study's budget ended before this member's last report")
                    continue  # their test evaluations, if any, come next
                if at_rungs:
                    self.promotions.end_rung_paused(
                        "the study ended before this trial was promoted"
                    )
                    continue
                todo = self.replicates.replicates_todo()
                if todo:  # the front's points get their other seeds before the study ends
                    with self.st.lock:
                        self.st.replicate_todo.extend(todo)
                    continue
                if self.lifecycle.finish(
                    elapsed,
                    None
                    if not out_of_budget or self.outside.counted(created) >= max_trials
                    else "time budget reached"
                    if out_of_time
                    else "compute budget (max_epochs) reached",
                ):
                    return
                continue  # extended meanwhile: go on with the new budget
            if time.monotonic() - last_flush > ELAPSED_FLUSH_S:
                last_flush = time.monotonic()
                with self.db.write(self.study_id) as s:
                    s.get(Study, self.study_id).elapsed_s = elapsed
            self.st.wake.wait(1.0)
            self.st.wake.clear()

    # -- budgets ------------------------------------------------------------------------------
    def _take(self, queue: list[int]) -> int | None:
        with self.st.lock:
            return queue.pop(0) if queue else None

    def _next_run(
        self, requeue: list[int], out_of_budget: bool, todo_baselines: list[str], room: bool
    ) -> str | None:
        """What the next free slot goes to (see the module docstring), or None: nothing to run."""
        with self.st.lock:
            tests, paused, requeue = (
                bool(self.st.pending_tests),
                bool(self.st.paused),
                bool(requeue),
            )
        if requeue:
            return "requeue"
        if tests:
            return "test"
        with self.st.lock:
            if self.st.replicate_todo:  # run beyond the search's budget
                return "replicate"
        if out_of_budget:
            return None
        if todo_baselines and room:
            return "baseline"
        if self.outside.enqueued_waiting() and self.pbt.room_for_member():
            return "enqueued"  # the user's configs before the optimiser's (accepted: always run)
        if paused:
            return "member"
        if self.promotions.promotable() is not None:
            return "promote"
        return "ask" if room and self.pbt.room_for_member() else None

    # -- end ----------------------------------------------------------------------------------
    def _pause(self, elapsed: float) -> None:
        self.m.reports.flush()
        if self.st.shutting_down.is_set():
            with self.db.write(self.study_id) as s:
                s.get(Study, self.study_id).elapsed_s = elapsed
            return
        for tid in list(self.st.inflight | self.st.evaluating):
            self.executor.cancel(tid)
        deadline = time.monotonic() + 15
        while (self.st.inflight or self.st.evaluating) and time.monotonic() < deadline:
            self.st.wake.wait(0.2)
            self.st.wake.clear()
        with self.db.write(self.study_id) as s:
            study = s.get(Study, self.study_id)
            if study is not None:  # None: deleted on another replica
                study.elapsed_s = elapsed


class SchedulerManager(LifecycleManager):
    """Owns the executor and one :class:`StudyRunner` per running study."""

    def __init__(
        self,
        db: Database,
        executor: Executor | None,
        artifacts_dir: str | Path,
        cpus_per_trial: int = 1,
        slots: SlotAllocator | None = None,
        trial_workload=None,
        replica_id: str | None = None,
        follower: bool = False,
        study_locks: dict[int, threading.Lock] | None = None,
        tracking: TrackingRules | None = None,
        webhooks: WebhookRules | None = None,
    ):
        self.db, self.executor = db, executor
        # another replica schedules (scheduling.leader): requests are left in the store for it
        self.replica_id, self.follower = replica_id, follower
        self.artifacts_dir = Path(artifacts_dir)
        self.cpus_per_trial = cpus_per_trial
        self.slots = slots or SlotAllocator()
        # workload as stored -> (workload a worker runs, data file to ship or None); see services.datasets
        self.trial_workload = trial_workload or (lambda workload: (workload, None))
        self._runners: dict[int, StudyRunner] = {}
        # spec.tracking: one thread, started by the first study that tracks anything
        self.tracking = tracking and TrackingHub(
            db, tracking, self.artifacts_dir, lambda workload: self.trial_workload(workload)[0]
        )
        # spec.webhook: the events and delivery threads, started by the first study with a webhook
        self.webhooks = webhooks and WebhookSender(db, webhooks)
        self._lock = threading.Lock()
        self._closed = False
        self._deleted: set[int] = set()
        self._study_locks = study_locks if study_locks is not None else {}  # shared by terms
        self.reports = ReportLog(db)  # reports written behind the answers; outcomes' group commits

    def study_lock(self, study_id: int) -> threading.Lock:
        """Serialises the stop / resume / delete of one study (no runner outlives its study)."""
        with self._lock:
            return self._study_locks.setdefault(study_id, threading.Lock())

    def forget_study(self, study_id: int) -> None:
        """The study is being deleted: its runner is stopped and none starts again."""
        if self.follower:
            self.await_remote_stop(study_id)
            return
        self.forbid(study_id)
        self.stop(study_id, wait=True)

    def webhook_added(self, study_id: int, spec: dict[str, Any]) -> None:
        """The study got a webhook (``PUT``): its runner here, if any, posts from now on (a runner
        with a hook reads the stored webhook at each event, so changes need nothing)."""
        runner = self._live(study_id)
        if runner is not None and self.webhooks:
            with runner.st.lock:
                if runner.st.webhook is None:
                    runner.st.webhook = self.webhooks.hook(study_id, spec)

    def recover(self) -> list[int]:
        """Start a runner for every study left ``running`` (after a restart or crash)."""
        with self.db.read() as s:
            ids = list(
                s.scalars(select(Study.id).where(Study.state == "running").order_by(Study.id))
            )
        if self.webhooks and self.executor is not None and not self.follower:
            resumed = self.webhooks.resume_pending()  # left pending by the previous process
            if resumed:
                log.info("resumed %d pending webhook deliveries", resumed)
        for sid in ids:
            with self.study_lock(sid):  # requests and scheduling.reconcile start studies too
                self.start(sid)
        return ids

    def start(self, study_id: int) -> None:
        if self.executor is None:
            return
        with self._lock:
            if self._closed or study_id in self._deleted:
                return
            runner = self._runners.get(study_id)
            if active_runner(runner):
                return
            old = runner
        if old is not None:
            old.join(timeout=30)
        with self._lock:
            runner = StudyRunner(self, study_id)
            self._runners[study_id] = runner
            runner.start()

    def stop(self, study_id: int, wait: bool = False) -> None:
        with self._lock:
            runner = self._runners.get(study_id)
        if runner is not None:
            runner.request_stop()
            if wait:
                runner.join(timeout=120)
                if runner.is_alive():
                    log.warning("study %s: its runner did not stop within 120 s", study_id)

    def _live(self, study_id: int) -> StudyRunner | None:
        with self._lock:
            runner = self._runners.get(study_id)
        return runner if active_runner(runner) else None

    def _forget(self, study_id: int, runner: StudyRunner) -> None:
        with self._lock:
            if self._runners.get(study_id) is runner:
                del self._runners[study_id]

    def shutdown(self) -> None:
        """Stop every runner without touching trial states (they are requeued on the next start)."""
        with self._lock:
            self._closed = True
            runners = list(self._runners.values())
        for r in runners:
            r.st.shutting_down.set()
            r.st.stop_requested.set()
        if self.executor is not None:  # no on_done: running trials stay `running` in the store
            self.executor.shutdown(wait=True)
        for r in runners:
            r.st.wake.set()
            r.join(timeout=5)
        self.reports.close()
        if self.tracking:
            self.tracking.close()
        if self.webhooks:
            self.webhooks.close()
