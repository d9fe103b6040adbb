"""The scheduler: one thread per running study, inside the API process.

A :class:`StudyRunner` keeps ``max_parallel`` runs in flight. In order of precedence a free
slot goes to: a trial requeued after a restart; a forward-only evaluation of a front trial (or a
baseline) on the held-out test split; the study's next baseline (``spec.baselines``: hand-picked
reference points, never told to the optimiser); a paused PBT member whose turn it is; a new
trial (``optimizer.ask()`` -> row ``queued`` -> ``executor.submit`` -> ``running``). Reports are
stored as they arrive and answered with the optimiser's decision ("stop" ends the trial early; a
PBT ``Exploit`` stops it and continues it from the donor's checkpoint with the new config).
Final values go to ``tell``. New trials stop at ``max_trials``, at the ``max_seconds`` budget,
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

Restart: every ask / report / tell is appended to ``events`` in the same transaction as the
trial change it belongs to. A new runner rebuilds the optimiser by replaying these events in
order (optimisers are a pure function of seed + history) and requeues the trials that were
``queued`` or ``running`` when the previous process died (same number, same config,
``attempts`` + 1, from their checkpoint). Nothing completed is lost: a trial becomes
``complete`` in one transaction.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from autopeft.api.db import Database
from autopeft.api.models import Checkpoint, Event, Study, Trial, TrialReport, utcnow
from autopeft.api.scheduling.lifecycle import Lifecycle, LifecycleManager
from autopeft.api.scheduling.pbt import PBTTurns
from autopeft.api.scheduling.tests import HeldOutTests
from autopeft.api.scheduling.values import (
    decision_name,
    exact,
    finite_or_none,
    planned_epochs,
    trial_budget,
    unexact,
)
from autopeft.api.scheduling.warmstart import WarmStartReuse
from autopeft.api.services.constraints import constraints_of, feasibility
from autopeft.api.services.spec import build_optimizer, build_space, known_objectives, objectives_of
from autopeft.api.services.studies import public_error, trial_dir
from autopeft.api.slots import Holder, SlotAllocator
from autopeft.errors import InvalidConfig
from autopeft.workers.base import Executor, TrialOutcome, TrialSpec

log = logging.getLogger("autopeft.scheduler")

ELAPSED_FLUSH_S = 10.0
CHEAP_REPLAY = ("random", "sobol", "mobo")
PBT = ("pbt", "mopbt")


class StudyRunner(Lifecycle, WarmStartReuse, PBTTurns, HeldOutTests, threading.Thread):
    def __init__(self, manager: SchedulerManager, study_id: int):
        super().__init__(daemon=True, name=f"autopeft-study-{study_id}")
        self.m, self.db, self.executor = manager, manager.db, manager.executor
        self.study_id = study_id
        self._stop_requested = threading.Event()
        self._shutting_down = threading.Event()  # process exit: leave trials as they are
        self._wake = threading.Event()
        self._budget_changed = threading.Event()  # extend: reload the budget from the stored spec
        self._ending = threading.Event()  # the study is marked finished: no restart from here
        self._lock = threading.RLock()  # optimiser + in-flight bookkeeping
        self.opt = None
        self.ids: dict[int, Any] = {}  # trial id -> optimiser suggestion id (search trials)
        self.by_opt_id: dict[str, int] = {}  # str(suggestion id) -> trial id
        self.baselines: set[int] = set()  # trial ids of baseline trials
        self.inflight: set[int] = set()  # trials training now
        self.evaluating: set[int] = set()  # trials whose saved adapter is being tested now
        self.pending_tests: list[int] = []
        self.paused: list[int] = []  # PBT members waiting for their next turn, in order
        self.next_step: dict[int, int] = {}  # PBT member -> the report its next segment ends at
        self.progress: dict[int, float] = {}  # in-flight run -> epochs trained in it so far
        self.planned: dict[int, float] = {}  # in-flight run -> epochs it is planned to train
        self.run_start: dict[int, float] = {}
        self.exploits: dict[int, Any] = {}
        self.requeue: list[int] = []  # trials to run again (restart / resume), in order
        self.cancelling: dict[int, str] = {}  # trial id -> why a user cancelled it
        self.seq = 0
        self.slot: Holder | None = None  # this runner in the manager's fair-share allocator

    # -- control ------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop_requested.set()
        self._wake.set()

    def _has_slot(self) -> bool:
        """A fair-share slot for one more trial (see ``autopeft.api.slots``)."""
        return self.slot is None or self.m.slots.acquire(self.slot)

    def _release_slot(self) -> None:
        if self.slot is not None:
            self.m.slots.release(self.slot)

    # -- thread -------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except Exception as err:
            log.exception("study %s failed", self.study_id)
            with self.db.write(self.study_id) as s:
                study = s.get(Study, self.study_id)
                if study is not None:
                    study.state, study.message, study.finished_at = (
                        "failed",
                        public_error(f"{type(err).__name__}: {err}"),
                        utcnow(),
                    )
        finally:
            if self.slot is not None:
                self.m.slots.forget(self.slot)
            self.m._forget(self.study_id, self)

    def _run(self) -> None:
        with self.db.read() as s:
            study = s.get(Study, self.study_id)
            if study is None or study.state != "running":
                return
            self.spec = dict(study.spec)
            elapsed_before = float(study.elapsed_s or 0.0)
            self.slot = Holder(study.user_id, self.study_id, self._wake)
        space = build_space(self.spec)
        self.objectives = objectives_of(self.spec)
        self.opt = build_optimizer(self.spec, space)
        self.constraints, self.known = constraints_of(self.spec), known_objectives(self.spec)
        self.turns = self._pbt_turns()
        self.requeue = requeue = self._replay()
        started = time.monotonic()
        last_flush = started
        max_parallel = int(self.spec["max_parallel"])
        todo_baselines = self._baselines_to_create()
        with self.db.read() as s:
            created = s.scalar(
                select(func.count()).select_from(Trial).where(Trial.study_id == self.study_id)
            )
        created = self._reuse_warm_start(
            created
        )  # warm start: the source's results, not trained again
        self._queue_tests()
        while True:
            self._reload_if_extended()
            max_trials, max_seconds = int(self.spec["max_trials"]), self.spec.get("max_seconds")
            elapsed = elapsed_before + time.monotonic() - started
            if self._stop_requested.is_set():
                self._pause(elapsed)
                return
            out_of_time = max_seconds is not None and elapsed >= float(max_seconds)
            out_of_compute = not out_of_time and self._compute_spent()
            out_of_budget = out_of_time or out_of_compute
            with self._lock:
                busy = len(self.inflight) + len(self.evaluating)
            while busy < max_parallel and not self._stop_requested.is_set():
                action = self._next_run(
                    requeue, out_of_budget, todo_baselines, created < max_trials
                )
                if action is None:
                    self.m.slots.withdraw(self.slot)
                    break
                if not self._has_slot():  # other users' / studies' turn: woken when a slot frees up
                    break
                if action == "requeue":
                    tid = self._take(requeue)
                    if tid is not None:  # None: cancelled meanwhile
                        self._submit(tid, requeue=True)
                elif action == "test":
                    self._submit_test(self._take(self.pending_tests))
                elif action == "baseline":
                    self._create_baseline(todo_baselines.pop(0), created)
                    created += 1
                elif action == "member":
                    member = self._take(self.paused)
                    if member is not None:
                        self._submit(member, restore_dir=self._own_checkpoint(member))
                else:
                    self._ask_and_submit(created)
                    created += 1
                busy += 1
            if self._stop_requested.is_set():
                self.m.slots.withdraw(self.slot)
            with self._lock:
                idle = not (self.inflight or self.evaluating or self.exploits or self.pending_tests)
                waiting = bool(self.paused)
            more = not out_of_budget and (
                created < max_trials or waiting or (todo_baselines and created < max_trials)
            )
            if idle and not requeue and not more:
                if waiting:
                    self._end_paused("the study's budget ended before this member's last report")
                    continue  # their test evaluations, if any, come next
                if self._finish(
                    elapsed,
                    None
                    if not out_of_budget or created >= max_trials
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
            self._wake.wait(1.0)
            self._wake.clear()

    # -- budgets ------------------------------------------------------------------------------
    def _compute_spent(self) -> bool:
        limit = self.spec.get("max_epochs")
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
        with self._lock:  # a run in flight counts what it is planned to train, not what it has
            used += sum(max(self.planned.get(t, 0.0), p) for t, p in self.progress.items())
        return used >= float(limit)

    def _take(self, queue: list[int]) -> int | None:
        with self._lock:
            return queue.pop(0) if queue else None

    def _next_run(
        self, requeue: list[int], out_of_budget: bool, todo_baselines: list[str], room: bool
    ) -> str | None:
        """What the next free slot goes to (see the module docstring), or None: nothing to run."""
        with self._lock:
            tests, paused, requeue = bool(self.pending_tests), bool(self.paused), bool(requeue)
        if requeue:
            return "requeue"
        if tests:
            return "test"
        if out_of_budget:
            return None
        if todo_baselines and room:
            return "baseline"
        if paused:
            return "member"
        return "ask" if room and self._room_for_member() else None

    # -- history ------------------------------------------------------------------------------
    def _event(self, s, kind: str, payload: dict[str, Any]) -> None:
        self.seq += 1
        s.add(Event(study_id=self.study_id, seq=self.seq, kind=kind, payload=payload))

    def _replay(self) -> list[int]:
        """Rebuild the optimiser from ``events``; return the trial ids to run again."""
        with self.db.read() as s:
            events = s.scalars(
                select(Event).where(Event.study_id == self.study_id).order_by(Event.seq)
            ).all()
            unfinished = s.scalars(
                select(Trial.id)
                .where(Trial.study_id == self.study_id, Trial.state.in_(("queued", "running")))
                .order_by(Trial.number)
            ).all()
            rows = s.execute(
                select(Trial.id, Trial.config, Trial.parent_id, Trial.kind).where(
                    Trial.study_id == self.study_id
                )
            ).all()
        self.baselines = {tid for tid, _, _, kind in rows if kind == "baseline"}
        diverged = 0
        cheap = self._cheap_replay()
        configs = {tid: config for tid, config, _, _ in rows}
        cloned = {
            tid for tid, _, parent, _ in rows if parent is not None
        }  # PBT may have changed them
        from autopeft.optim.base import config_key

        for ev in events:
            p = ev.payload
            tid = p["trial_id"]
            if ev.kind == "ask":
                if cheap and tid in configs:
                    opt_id = self.opt.add_trial(configs[tid], state="running").id
                else:
                    sugg = self.opt.ask(1)[0]
                    opt_id = sugg.id
                    if (
                        tid in configs
                        and tid not in cloned
                        and config_key(sugg.config) != config_key(configs[tid])
                    ):
                        diverged += 1
                if str(opt_id) != p["optimizer_id"]:
                    diverged += 1
                self.ids[tid] = opt_id
                self.by_opt_id[str(opt_id)] = tid
            elif ev.kind == "add":  # a reused warm-start trial (scheduling.warmstart)
                opt_id = self.opt.add_trial(p["config"], unexact(p["values"]), "complete").id
                self.ids[tid] = opt_id
                self.by_opt_id[str(opt_id)] = tid
            elif ev.kind == "report":
                self.opt.report(self.ids[tid], p["step"], unexact(p["values"]))
            elif ev.kind == "tell":
                self.opt.tell(self.ids[tid], unexact(p["values"]), state=p["state"])
            self.seq = ev.seq
        if diverged:
            log.warning(
                "study %s: optimiser replay diverged from the stored trials %d time(s) (other id or "
                "config); the optimiser is not a pure function of seed + history",
                self.study_id,
                diverged,
            )
        if events:
            log.info(
                "study %s: replayed %d events; requeueing %d trial(s)",
                self.study_id,
                len(events),
                len(unfinished),
            )
        if (
            self.turns
        ):  # paused or running PBT members go on with the segment after their last report
            interval = int(self.opt.options["perturbation_interval"])
            with self.db.read() as s:
                for tid in unfinished:
                    if tid not in self.baselines:
                        last = s.scalar(
                            select(func.max(TrialReport.step)).where(TrialReport.trial_id == tid)
                        )
                        self.next_step[tid] = int(last or 0) + interval
        return list(unfinished)

    def _cheap_replay(self) -> bool:
        """Optimisers whose suggestions depend only on trial numbers and told data (``random``,
        ``sobol``, ``mobo``, per ``autopeft.optim``) are rebuilt with ``add_trial`` instead of
        recomputing every past suggestion (a GP fit per trial for ``mobo``). PBT and the Optuna
        samplers replay real asks. A PBT trial's config may change after its ask (Exploit), so only
        these three qualify."""
        return str(self.spec["optimizer"]["name"]) in CHEAP_REPLAY and hasattr(
            self.opt, "add_trial"
        )

    def _pbt_turns(self) -> bool:
        """Members of a PBT study on a peft workload take turns (segments of the perturbation
        interval); python workloads define their own steps, so their members all run at once."""
        return self.spec["optimizer"]["name"] in PBT and self.spec["workload"].get("kind") == "peft"

    # -- trials -------------------------------------------------------------------------------
    def _baselines_to_create(self) -> list[str]:
        with self.db.read() as s:
            done = set(
                s.scalars(
                    select(Trial.label).where(
                        Trial.study_id == self.study_id, Trial.kind == "baseline"
                    )
                )
            )
        return [b for b in self.spec.get("baselines") or [] if b not in done]

    def _create_baseline(self, name: str, number: int) -> None:
        from autopeft.trials.baselines import baseline_trial

        config, _ = baseline_trial(name, self.spec["workload"])
        with self.db.write(self.study_id) as s:
            trial = Trial(
                study_id=self.study_id,
                number=number,
                state="queued",
                config=config,
                optimizer_id="",
                attempts=0,
                kind="baseline",
                label=name,
            )
            s.add(trial)
            s.flush()
            tid = trial.id
        with self._lock:
            self.baselines.add(tid)
        self._submit(tid)

    def _workload_of(self, t: Trial) -> dict[str, Any]:
        if t.kind == "baseline":
            from autopeft.trials.baselines import baseline_trial

            return baseline_trial(t.label, self.spec["workload"])[1]
        return self.spec["workload"]

    def _ask_and_submit(self, number: int) -> None:
        with self._lock:
            sugg = self.opt.ask(1)[0]
        parent = getattr(sugg, "parent_id", None)
        budget = getattr(sugg, "budget", None)
        with self.db.write(self.study_id) as s:
            trial = Trial(
                study_id=self.study_id,
                number=number,
                state="queued",
                config=dict(sugg.config),
                optimizer_id=str(sugg.id),
                attempts=0,
                parent_id=self.by_opt_id.get(str(parent)) if parent is not None else None,
                budget=trial_budget(budget),
            )
            s.add(trial)
            s.flush()
            self._event(s, "ask", {"trial_id": trial.id, "optimizer_id": str(sugg.id)})
            tid = trial.id
        with self._lock:
            self.ids[tid] = sugg.id
            self.by_opt_id[str(sugg.id)] = tid
            if self.turns:
                self.next_step[tid] = int(self.opt.options["perturbation_interval"])
        self._submit(tid)

    def _own_checkpoint(self, trial_id: int) -> str | None:
        with self.db.read() as s:
            number = s.get(Trial, trial_id).number
        ckpt = trial_dir(self.m.artifacts_dir, self.study_id, number) / "checkpoint"
        return str(ckpt) if (ckpt / "meta.json").is_file() else None

    def _submit(self, trial_id: int, requeue: bool = False, restore_dir: str | None = None) -> None:
        with self._lock:  # in flight from here, so a cancel from now on goes through the executor
            reason = self.cancelling.get(trial_id)
            if reason is None:
                self.inflight.add(trial_id)
            else:  # cancelled before this run started (or between two PBT segments)
                self.inflight.discard(trial_id)
                self.progress.pop(trial_id, None)
                self.planned.pop(trial_id, None)
        if reason is not None:
            self._end_cancelled(trial_id, reason)  # a no-op when cancel_trial ended it already
            self._release_slot()
            self._wake.set()
            return
        with self.db.write(self.study_id) as s:
            t = s.get(Trial, trial_id)
            t.state, t.attempts, t.started_at, t.error = "running", t.attempts + 1, utcnow(), None
            budget = t.budget
            if trial_id in self.next_step:
                budget = {**(budget or {}), "step": self.next_step[trial_id]}
            spec = TrialSpec(
                trial_id=t.id,
                study_id=t.study_id,
                number=t.number,
                workload=self._workload_of(t),
                config=dict(t.config),
                attempt=t.attempts,
                budget=budget,
            )
            last_epoch = s.scalar(
                select(TrialReport.values)
                .where(TrialReport.trial_id == trial_id)
                .order_by(TrialReport.id.desc())
                .limit(1)
            )
        root = trial_dir(self.m.artifacts_dir, self.study_id, spec.number)
        spec.checkpoint_dir = str(root / "checkpoint")
        spec.restore_dir = restore_dir
        if (
            restore_dir is None
            and requeue
            and (root / "checkpoint").is_dir()
            and any((root / "checkpoint").iterdir())
        ):
            spec.restore_dir = spec.checkpoint_dir  # continue where the dead attempt got to
        spec.log_path = str(root / "worker.log")
        if self.m.cpus_per_trial:
            spec.resources = {"cpus": self.m.cpus_per_trial, "gpus": 0}
        with self._lock:
            self.inflight.add(trial_id)
            start = float((last_epoch or {}).get("epoch") or 0.0) if spec.restore_dir else 0.0
            self.run_start[trial_id], self.progress[trial_id] = start, 0.0
            self.planned[trial_id] = max(0.0, planned_epochs(spec) - start)
        try:
            spec.workload, spec.data_file = self.m.trial_workload(
                spec.workload
            )  # e.g. an uploaded dataset
            self.executor.submit(
                spec,
                lambda step, values: self._on_report(trial_id, spec.attempt, step, values),
                lambda outcome: self._on_done(trial_id, outcome),
            )
        except Exception as err:
            self._on_done(trial_id, TrialOutcome("failed", error=f"could not submit: {err}"))
            return
        with self._lock:
            cancelled = trial_id in self.cancelling
        if cancelled:  # cancelled while it was being submitted
            self.executor.cancel(trial_id)

    def _on_report(self, trial_id: int, attempt: int, step: int, values: dict[str, float]) -> Any:
        if self._stop_requested.is_set():
            return "stop"
        with self._lock:
            epoch = values.get("epoch")
            if isinstance(epoch, (int, float)) and math.isfinite(epoch):
                self.progress[trial_id] = max(0.0, float(epoch) - self.run_start.get(trial_id, 0.0))
            if trial_id in self.baselines:
                decision = "continue"
            else:
                decision = self.opt.report(self.ids[trial_id], step, values)
            name = decision_name(decision)
            with self.db.write(self.study_id) as s:
                stored = finite_or_none(values)
                s.add(
                    TrialReport(
                        trial_id=trial_id, attempt=attempt, step=step, values=stored, decision=name
                    )
                )
                if trial_id not in self.baselines:
                    self._event(
                        s, "report", {"trial_id": trial_id, "step": step, "values": exact(values)}
                    )
            if name == "exploit":
                self.exploits[trial_id] = decision
        return "continue" if name == "continue" else "stop"

    def _on_done(self, trial_id: int, outcome: TrialOutcome) -> None:
        resubmitted = False
        try:
            resubmitted = self._handle_done(trial_id, outcome)
        finally:
            if (
                not resubmitted
            ):  # an exploiting trial stays in flight (and keeps its slot): submitted again
                with self._lock:
                    known = trial_id in self.inflight
                    self.inflight.discard(trial_id)
                    self.progress.pop(trial_id, None)
                    self.planned.pop(trial_id, None)
                if known:
                    self._release_slot()
            self._wake.set()

    def _handle_done(self, trial_id: int, outcome: TrialOutcome) -> bool:
        """Store the outcome and tell the optimiser; True when the trial was submitted again (PBT)."""
        user_stop = self._stop_requested.is_set() and not self._shutting_down.is_set()
        trained = float((outcome.values or {}).get("epochs_trained") or 0.0)
        with self._lock:
            cancelled_by = self.cancelling.get(trial_id)
        if cancelled_by is not None:  # a user cancelled this trial: failed, whatever it returned
            self._end_cancelled(trial_id, cancelled_by, trained)
            return False
        if outcome.cancelled or (user_stop and (outcome.state == "failed" or outcome.stopped)):
            # ended by the user's stop (cancelled, or told "stop" on its way out): not pruned, not failed
            with self.db.write(self.study_id) as s:  # user stop: back to the queue, rerun on resume
                t = s.get(Trial, trial_id)
                if t is not None:
                    t.state, t.error = "queued", "cancelled when the study was stopped"
                    t.epochs_trained = (t.epochs_trained or 0.0) + trained
            return False
        with self._lock:
            exploit = self.exploits.pop(trial_id, None)
        if exploit is not None and outcome.state == "complete":
            return self._exploit(trial_id, exploit, trained)
        values = outcome.values
        state = outcome.state
        error = outcome.error
        finished = bool((values or {}).get("budget_reached", 1.0))
        if state == "complete" and self.turns and trial_id not in self.baselines and not finished:
            self._pause_member(trial_id, trained)  # end of a PBT segment: the next member's turn
            return False
        if state == "complete":
            missing = [n for n, _ in self.objectives if n not in (values or {})]
            if missing:
                state, error = (
                    "failed",
                    (
                        f"the workload's result lacks objective(s) {missing}; "
                        f"it returned {sorted(values or {})}"
                    ),
                )
            elif outcome.stopped and not finished:
                state = "pruned"  # stopped before its last report; a trial trained to the end is complete
        tell_values = values if state != "failed" else None
        with self._lock:
            if trial_id not in self.baselines:
                try:
                    self.opt.tell(self.ids[trial_id], tell_values, state=state)
                except (
                    InvalidConfig
                ) as err:  # e.g. a constraint's metric is missing from the result
                    state, error, tell_values = (
                        "failed",
                        f"the optimiser refused the result: {err}",
                        None,
                    )
                    self.opt.tell(self.ids[trial_id], None, state="failed")
            if (
                error
            ):  # users see the reason without server paths or tracebacks; the log keeps it whole
                log.info("study %s trial %s %s: %s", self.study_id, trial_id, state, error)
            with self.db.write(self.study_id) as s:
                t = s.get(Trial, trial_id)
                t.state, t.values, t.error, t.finished_at = (
                    state,
                    finite_or_none(values),
                    public_error(error),
                    utcnow(),
                )
                self._judge(t, values if state != "failed" else None)
                t.epochs_trained = (t.epochs_trained or 0.0) + trained
                if outcome.attempt is not None and outcome.attempt > t.attempts:
                    t.attempts = outcome.attempt  # the executor retried a lost worker itself (Ray)
                if outcome.retries:
                    self._event(
                        s, "retries", {"trial_id": trial_id, "retries": list(outcome.retries)}
                    )
                if trial_id not in self.baselines:
                    self._event(
                        s,
                        "tell",
                        {"trial_id": trial_id, "values": exact(tell_values), "state": state},
                    )
                ckpt = trial_dir(self.m.artifacts_dir, self.study_id, t.number) / "checkpoint"
                if ckpt.is_dir() and any(ckpt.iterdir()):
                    s.add(Checkpoint(trial_id=trial_id, path=str(ckpt)))
        if state == "complete":
            self._queue_tests()
        return False

    def _judge(self, t: Trial, values: dict[str, float] | None) -> None:
        """Store whether ``t``'s final values satisfy the study's constraints (and why not)."""
        known = self.known if t.kind != "baseline" else None
        t.feasible, t.infeasible_reason = feasibility(
            self.constraints, values, known, dict(t.config)
        )

    # -- end ----------------------------------------------------------------------------------
    def _pause(self, elapsed: float) -> None:
        if self._shutting_down.is_set():
            with self.db.write(self.study_id) as s:
                s.get(Study, self.study_id).elapsed_s = elapsed
            return
        for tid in list(self.inflight | self.evaluating):
            self.executor.cancel(tid)
        deadline = time.monotonic() + 15
        while (self.inflight or self.evaluating) and time.monotonic() < deadline:
            self._wake.wait(0.2)
            self._wake.clear()
        with self.db.write(self.study_id) as s:
            s.get(Study, self.study_id).elapsed_s = elapsed


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
    ):
        self.db, self.executor = db, executor
        self.artifacts_dir = Path(artifacts_dir)
        self.cpus_per_trial = cpus_per_trial
        self.slots = slots or SlotAllocator()
        # workload as stored -> (workload a worker runs, data file to ship or None); see services.datasets
        self.trial_workload = trial_workload or (lambda workload: (workload, None))
        self._runners: dict[int, StudyRunner] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._deleted: set[int] = set()
        self._study_locks: dict[int, threading.Lock] = {}

    def study_lock(self, study_id: int) -> threading.Lock:
        """Serialises the stop / resume / delete of one study (no runner outlives its study)."""
        with self._lock:
            return self._study_locks.setdefault(study_id, threading.Lock())

    def forget_study(self, study_id: int) -> None:
        """The study is being deleted: its runner is stopped and none starts again."""
        with self._lock:
            self._deleted.add(study_id)
        self.stop(study_id, wait=True)

    def recover(self) -> list[int]:
        """Start a runner for every study left ``running`` (after a restart or crash)."""
        with self.db.read() as s:
            ids = list(
                s.scalars(select(Study.id).where(Study.state == "running").order_by(Study.id))
            )
        for sid in ids:
            self.start(sid)
        return ids

    def start(self, study_id: int) -> None:
        if self.executor is None:
            return
        with self._lock:
            if self._closed or study_id in self._deleted:
                return
            runner = self._runners.get(study_id)
            if (
                runner is not None
                and runner.is_alive()
                and not runner._stop_requested.is_set()
                and not runner._ending.is_set()
            ):
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
        if (
            runner is None
            or not runner.is_alive()
            or runner._stop_requested.is_set()
            or runner._ending.is_set()
        ):
            return None
        return runner

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
            r._shutting_down.set()
            r._stop_requested.set()
        if self.executor is not None:
            self.executor.shutdown(
                wait=True
            )  # no on_done: running trials stay `running` in the store
        for r in runners:
            r._wake.set()
            r.join(timeout=5)
