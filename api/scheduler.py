"""The scheduler: one thread per running study, inside the API process.

A :class:`StudyRunner` keeps ``max_parallel`` trials in flight: ``optimizer.ask()`` -> trial
row ``queued`` -> ``executor.submit`` -> ``running``. Reports are stored as they arrive and
answered with the optimiser's ``report`` decision ("stop" ends the trial early; a PBT
``Exploit`` stops it and restarts the same trial from the donor's checkpoint with the new
config). Final values go to ``tell``. The runner ends the study at ``max_trials`` trials, at
the ``max_seconds`` budget (no new trial starts after it; running ones finish) or on a
user's stop (running trials are cancelled and put back to ``queued``; ``resume`` reruns them).

Restart: every ask / report / tell is appended to ``events`` in the same transaction as the
trial change it belongs to. A new runner rebuilds the optimiser by replaying these events in
order (optimisers are a pure function of seed + history) and requeues the trials that were
``queued`` or ``running`` when the previous process died (same number, same config,
``attempts`` + 1). Nothing completed is lost: a trial becomes ``complete`` in one transaction.
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
from autopeft.errors import InvalidConfig
from autopeft.api.models import Checkpoint, Event, Study, Trial, TrialReport, utcnow
from autopeft.api.services.spec import build_optimizer, build_space, objectives_of
from autopeft.api.services.studies import public_error, trial_dir
from autopeft.api.slots import Holder, SlotAllocator
from autopeft.workers.base import Executor, TrialOutcome, TrialSpec

log = logging.getLogger("autopeft.scheduler")

ELAPSED_FLUSH_S = 10.0
CHEAP_REPLAY = ("random", "sobol", "mobo")


def _finite_or_none(values: dict[str, float] | None) -> dict[str, float | None] | None:
    """What is stored (JSON has no NaN / inf): non-finite metrics become null."""
    if values is None:
        return None
    return {k: (v if isinstance(v, (int, float)) and math.isfinite(v) else None) for k, v in values.items()}


def _exact(values: dict[str, float] | None) -> dict[str, Any] | None:
    """For the event log, which must replay exactly: non-finite floats as the strings nan / inf / -inf."""
    if values is None:
        return None
    return {k: (repr(float(v)) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}


def _unexact(values: dict[str, Any] | None) -> dict[str, float] | None:
    if values is None:
        return None
    return {k: (float(v) if isinstance(v, str) else v) for k, v in values.items()}


def _trial_budget(budget: Any) -> dict[str, float] | None:
    """An optimiser's ``Suggestion.budget`` as a ``TrialContext.budget``: a number is a budget in
    epochs (steps of ``trial.report``), a mapping is passed as is."""
    if budget is None:
        return None
    if isinstance(budget, dict):
        return dict(budget)
    return {"epochs": max(1, int(round(float(budget))))}


def _decision_name(decision: Any) -> str:
    if decision is None or decision is True or decision == "continue":
        return "continue"
    if decision is False or decision == "stop":
        return "stop"
    return "exploit"


class StudyRunner(threading.Thread):
    def __init__(self, manager: "SchedulerManager", study_id: int):
        super().__init__(daemon=True, name=f"autopeft-study-{study_id}")
        self.m, self.db, self.executor = manager, manager.db, manager.executor
        self.study_id = study_id
        self._stop_requested = threading.Event()
        self._shutting_down = threading.Event()   # process exit: leave trials as they are
        self._wake = threading.Event()
        self._lock = threading.RLock()       # optimiser + in-flight bookkeeping
        self.opt = None
        self.ids: dict[int, Any] = {}        # trial id -> optimiser suggestion id
        self.by_opt_id: dict[str, int] = {}  # str(suggestion id) -> trial id
        self.inflight: set[int] = set()
        self.exploits: dict[int, Any] = {}
        self.seq = 0
        self.slot: Holder | None = None      # this runner in the manager's fair-share allocator

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
        except Exception as err:  # noqa: BLE001 - a broken study is marked failed, with the reason
            log.exception("study %s failed", self.study_id)
            with self.db.write(self.study_id) as s:
                study = s.get(Study, self.study_id)
                if study is not None:
                    study.state, study.message, study.finished_at = "failed", public_error(f"{type(err).__name__}: {err}"), utcnow()
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
        requeue = self._replay()
        started = time.monotonic()
        last_flush = started
        max_trials = int(self.spec["max_trials"])
        max_parallel = int(self.spec["max_parallel"])
        max_seconds = self.spec.get("max_seconds")
        with self.db.read() as s:
            created = s.scalar(select(func.count()).select_from(Trial).where(Trial.study_id == self.study_id))
        while True:
            elapsed = elapsed_before + time.monotonic() - started
            if self._stop_requested.is_set():
                self._pause(elapsed)
                return
            out_of_time = max_seconds is not None and elapsed >= float(max_seconds)
            with self._lock:
                inflight = len(self.inflight)
            while inflight < max_parallel and not out_of_time and not self._stop_requested.is_set():
                if not requeue and created >= max_trials:
                    self.m.slots.withdraw(self.slot)
                    break
                if not self._has_slot():   # other users' / studies' turn: woken when a slot frees up
                    break
                if requeue:
                    self._submit(requeue.pop(0), requeue=True)
                else:
                    self._ask_and_submit(created)
                    created += 1
                inflight += 1
            if out_of_time or self._stop_requested.is_set():
                self.m.slots.withdraw(self.slot)
            with self._lock:
                idle = not self.inflight and not self.exploits
            if idle and (out_of_time or (created >= max_trials and not requeue)):
                self._finish(elapsed, "time budget reached" if out_of_time and created < max_trials else None)
                return
            if time.monotonic() - last_flush > ELAPSED_FLUSH_S:
                last_flush = time.monotonic()
                with self.db.write(self.study_id) as s:
                    s.get(Study, self.study_id).elapsed_s = elapsed
            self._wake.wait(1.0)
            self._wake.clear()

    # -- history ------------------------------------------------------------------------------
    def _event(self, s, kind: str, payload: dict[str, Any]) -> None:
        self.seq += 1
        s.add(Event(study_id=self.study_id, seq=self.seq, kind=kind, payload=payload))

    def _replay(self) -> list[int]:
        """Rebuild the optimiser from ``events``; return the trial ids to run again."""
        with self.db.read() as s:
            events = s.scalars(select(Event).where(Event.study_id == self.study_id).order_by(Event.seq)).all()
            unfinished = s.scalars(select(Trial.id).where(Trial.study_id == self.study_id,
                                                          Trial.state.in_(("queued", "running")))
                                   .order_by(Trial.number)).all()
        diverged = 0
        cheap = self._cheap_replay()
        configs: dict[int, dict] = {}
        cloned: set[int] = set()
        if events:
            with self.db.read() as s:
                rows = s.execute(select(Trial.id, Trial.config, Trial.parent_id)
                                 .where(Trial.study_id == self.study_id)).all()
            configs = {tid: config for tid, config, _ in rows}
            cloned = {tid for tid, _, parent in rows if parent is not None}  # PBT may have changed them
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
                    if tid in configs and tid not in cloned and config_key(sugg.config) != config_key(configs[tid]):
                        diverged += 1
                if str(opt_id) != p["optimizer_id"]:
                    diverged += 1
                self.ids[tid] = opt_id
                self.by_opt_id[str(opt_id)] = tid
            elif ev.kind == "report":
                self.opt.report(self.ids[tid], p["step"], _unexact(p["values"]))
            elif ev.kind == "tell":
                self.opt.tell(self.ids[tid], _unexact(p["values"]), state=p["state"])
            self.seq = ev.seq
        if diverged:
            log.warning("study %s: optimiser replay diverged from the stored trials %d time(s) (other id or "
                        "config); the optimiser is not a pure function of seed + history", self.study_id, diverged)
        if events:
            log.info("study %s: replayed %d events; requeueing %d trial(s)", self.study_id, len(events),
                     len(unfinished))
        return list(unfinished)

    def _cheap_replay(self) -> bool:
        """Optimisers whose suggestions depend only on trial numbers and told data (``random``,
        ``sobol``, ``mobo``, per ``autopeft.optim``) are rebuilt with ``add_trial`` instead of
        recomputing every past suggestion (a GP fit per trial for ``mobo``). PBT and the Optuna
        samplers replay real asks. A PBT trial's config may change after its ask (Exploit), so only
        these three qualify."""
        name = str(self.spec["optimizer"]["name"]).rpartition("+")[2]
        return name in CHEAP_REPLAY and hasattr(self.opt, "add_trial")

    # -- trials -------------------------------------------------------------------------------
    def _ask_and_submit(self, number: int) -> None:
        with self._lock:
            sugg = self.opt.ask(1)[0]
        parent = getattr(sugg, "parent_id", None)
        budget = getattr(sugg, "budget", None)
        with self.db.write(self.study_id) as s:
            trial = Trial(study_id=self.study_id, number=number, state="queued", config=dict(sugg.config),
                          optimizer_id=str(sugg.id), attempts=0,
                          parent_id=self.by_opt_id.get(str(parent)) if parent is not None else None,
                          budget=_trial_budget(budget))
            s.add(trial)
            s.flush()
            self._event(s, "ask", {"trial_id": trial.id, "optimizer_id": str(sugg.id)})
            tid = trial.id
        with self._lock:
            self.ids[tid] = sugg.id
            self.by_opt_id[str(sugg.id)] = tid
        self._submit(tid)

    def _submit(self, trial_id: int, requeue: bool = False, restore_dir: str | None = None) -> None:
        with self.db.write(self.study_id) as s:
            t = s.get(Trial, trial_id)
            t.state, t.attempts, t.started_at, t.error = "running", t.attempts + 1, utcnow(), None
            spec = TrialSpec(trial_id=t.id, study_id=t.study_id, number=t.number, workload=self.spec["workload"],
                             config=dict(t.config), attempt=t.attempts, budget=t.budget)
        root = trial_dir(self.m.artifacts_dir, self.study_id, spec.number)
        spec.checkpoint_dir = str(root / "checkpoint")
        spec.restore_dir = restore_dir
        if restore_dir is None and requeue and (root / "checkpoint").is_dir() and any((root / "checkpoint").iterdir()):
            spec.restore_dir = spec.checkpoint_dir   # continue where the dead attempt got to
        spec.log_path = str(root / "worker.log")
        if self.m.cpus_per_trial:
            spec.resources = {"cpus": self.m.cpus_per_trial, "gpus": 0}
        with self._lock:
            self.inflight.add(trial_id)
        try:
            spec.workload, spec.data_file = self.m.trial_workload(spec.workload)   # e.g. an uploaded dataset
            self.executor.submit(spec, lambda step, values: self._on_report(trial_id, spec.attempt, step, values),
                                 lambda outcome: self._on_done(trial_id, outcome))
        except Exception as err:  # noqa: BLE001
            self._on_done(trial_id, TrialOutcome("failed", error=f"could not submit: {err}"))

    def _on_report(self, trial_id: int, attempt: int, step: int, values: dict[str, float]) -> Any:
        if self._stop_requested.is_set():
            return "stop"
        with self._lock:
            decision = self.opt.report(self.ids[trial_id], step, values)
            name = _decision_name(decision)
            with self.db.write(self.study_id) as s:
                stored = _finite_or_none(values)
                s.add(TrialReport(trial_id=trial_id, attempt=attempt, step=step, values=stored, decision=name))
                self._event(s, "report", {"trial_id": trial_id, "step": step, "values": _exact(values)})
            if name == "exploit":
                self.exploits[trial_id] = decision
        return "continue" if name == "continue" else "stop"

    def _on_done(self, trial_id: int, outcome: TrialOutcome) -> None:
        resubmitted = False
        try:
            resubmitted = self._handle_done(trial_id, outcome)
        finally:
            if not resubmitted:   # an exploiting trial stays in flight (and keeps its slot): submitted again
                with self._lock:
                    known = trial_id in self.inflight
                    self.inflight.discard(trial_id)
                if known:
                    self._release_slot()
            self._wake.set()

    def _handle_done(self, trial_id: int, outcome: TrialOutcome) -> bool:
        """Store the outcome and tell the optimiser; True when the trial was submitted again (PBT)."""
        user_stop = self._stop_requested.is_set() and not self._shutting_down.is_set()
        if outcome.cancelled or (user_stop and (outcome.state == "failed" or outcome.stopped)):
            # ended by the user's stop (cancelled, or told "stop" on its way out): not pruned, not failed
            with self.db.write(self.study_id) as s:   # user stop: back to the queue, rerun on resume
                t = s.get(Trial, trial_id)
                if t is not None:
                    t.state, t.error = "queued", "cancelled when the study was stopped"
            return False
        with self._lock:
            exploit = self.exploits.pop(trial_id, None)
        if exploit is not None and outcome.state == "complete":
            self._exploit(trial_id, exploit)
            return True
        values = outcome.values
        state = outcome.state
        error = outcome.error
        if state == "complete":
            missing = [n for n, _ in self.objectives if n not in (values or {})]
            if missing:
                state, error = "failed", (f"the workload's result lacks objective(s) {missing}; "
                                          f"it returned {sorted(values or {})}")
            elif outcome.stopped:
                state = "pruned"
        tell_values = values if state != "failed" else None
        with self._lock:
            try:
                self.opt.tell(self.ids[trial_id], tell_values, state=state)
            except InvalidConfig as err:   # e.g. a constraint's metric is missing from the result
                state, error, tell_values = "failed", f"the optimiser refused the result: {err}", None
                self.opt.tell(self.ids[trial_id], None, state="failed")
            if error:   # users see the reason without server paths or tracebacks; the log keeps it whole
                log.info("study %s trial %s %s: %s", self.study_id, trial_id, state, error)
            with self.db.write(self.study_id) as s:
                t = s.get(Trial, trial_id)
                t.state, t.values, t.error, t.finished_at = state, _finite_or_none(values), public_error(error), utcnow()
                if outcome.attempt is not None and outcome.attempt > t.attempts:
                    t.attempts = outcome.attempt   # the executor retried a lost worker itself (Ray)
                if outcome.retries:
                    self._event(s, "retries", {"trial_id": trial_id, "retries": list(outcome.retries)})
                self._event(s, "tell", {"trial_id": trial_id, "values": _exact(tell_values), "state": state})
                ckpt = trial_dir(self.m.artifacts_dir, self.study_id, t.number) / "checkpoint"
                if ckpt.is_dir() and any(ckpt.iterdir()):
                    s.add(Checkpoint(trial_id=trial_id, path=str(ckpt)))
        return False

    def _exploit(self, trial_id: int, exploit: Any) -> None:
        """PBT: continue this trial from the donor's checkpoint with the perturbed config."""
        config = getattr(exploit, "config", None)
        donor = next((getattr(exploit, a) for a in ("source_id", "donor_id", "parent_id", "from_id")
                      if getattr(exploit, a, None) is not None), None)
        donor_tid = self.by_opt_id.get(str(donor)) if donor is not None else None
        with self.db.write(self.study_id) as s:
            t = s.get(Trial, trial_id)
            if config is not None:
                t.config = dict(config)
            if donor_tid is not None:
                t.parent_id = donor_tid
                donor_number = s.get(Trial, donor_tid).number
            number = t.number
        restore = None
        if donor_tid is not None:
            restore = str(trial_dir(self.m.artifacts_dir, self.study_id, donor_number) / "checkpoint")
            if not Path(restore).is_dir():
                restore = None
        log.info("study %s: trial %s exploits trial %s", self.study_id, number, donor_tid)
        self._submit(trial_id, restore_dir=restore)

    def _pause(self, elapsed: float) -> None:
        if self._shutting_down.is_set():
            with self.db.write(self.study_id) as s:
                s.get(Study, self.study_id).elapsed_s = elapsed
            return
        for tid in list(self.inflight):
            self.executor.cancel(tid)
        deadline = time.monotonic() + 15
        while self.inflight and time.monotonic() < deadline:
            self._wake.wait(0.2)
            self._wake.clear()
        with self.db.write(self.study_id) as s:
            s.get(Study, self.study_id).elapsed_s = elapsed

    def _finish(self, elapsed: float, message: str | None) -> None:
        with self.db.write(self.study_id) as s:
            study = s.get(Study, self.study_id)
            if study.state == "running":
                study.state, study.finished_at, study.message = "finished", utcnow(), message
            study.elapsed_s = elapsed


class SchedulerManager:
    """Owns the executor and one :class:`StudyRunner` per running study."""

    def __init__(self, db: Database, executor: Executor | None, artifacts_dir: str | Path, cpus_per_trial: int = 1,
                 slots: SlotAllocator | None = None, trial_workload=None):
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
            ids = list(s.scalars(select(Study.id).where(Study.state == "running").order_by(Study.id)))
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
            if runner is not None and runner.is_alive() and not runner._stop_requested.is_set():
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
            self.executor.shutdown(wait=True)   # no on_done: running trials stay `running` in the store
        for r in runners:
            r._wake.set()
            r.join(timeout=5)
