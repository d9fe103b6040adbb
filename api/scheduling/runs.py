"""Training runs of trials (a part of ``StudyRunner``, see ``scheduling.state``): submission to the
executor, reports answered with the optimiser's decision, and outcomes stored and told (see the
scheduler's module docstring for the states a trial ends in)."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from sqlalchemy import select

from autopeft.api.artifacts import public_error, trial_dir
from autopeft.api.models import Trial, TrialReport, utcnow
from autopeft.api.scheduling.reportlog import INSERT_EVENTS, INSERT_TRIALS, Outcome
from autopeft.api.scheduling.state import Part
from autopeft.api.scheduling.values import (
    decision_name,
    exact,
    finite_or_none,
    planned_epochs,
    trial_budget,
)
from autopeft.api.study import feasibility
from autopeft.errors import InvalidConfig
from autopeft.workers.base import OnDone, OnReport, TrialOutcome, TrialSpec

log = logging.getLogger("autopeft.scheduler")

ASK_BATCH_S = 0.05  # asks gathered into one refill transaction for at most this long


class TrialRuns(Part):
    def ask_and_submit(self, number: int, n: int = 1) -> None:
        """Ask for ``n`` new trials (numbers ``number`` ...) and start them. Cheap asks are
        gathered and started together (rows, history and start in one transaction: a refill of
        several free slots costs one commit); once asking has taken ``ASK_BATCH_S``, what was
        asked is started before the next ask (a slow model-based ask keeps no worker waiting)."""
        done = 0
        while done < n:
            suggs, began = [], time.monotonic()
            while done + len(suggs) < n and (not suggs or time.monotonic() - began < ASK_BATCH_S):
                with self.st.lock:
                    suggs.append(self.st.opt.ask(1)[0])
            self._start_new(number + done, suggs)
            done += len(suggs)

    def _start_new(self, number: int, suggs: list) -> None:
        """The rows of new trials, made ``running`` (attempt 1), with their ``ask`` history, in
        one transaction (Core statements, executemany: no ORM flush); then each is handed to the
        executor."""
        now = utcnow()
        rows = [
            dict(
                study_id=self.study_id,
                number=number + i,
                state="running",
                config=dict(sugg.config),
                optimizer_id=str(sugg.id),
                attempts=1,
                started_at=now,
                scheduled_by=self.m.replica_id,
                parent_id=None
                if sugg.parent_id is None
                else self.st.by_opt_id.get(str(sugg.parent_id)),
                budget=trial_budget(sugg.budget),
                created_at=now,
            )
            for i, sugg in enumerate(suggs)
        ]
        with self.db.write(self.study_id) as s:
            ids = s.execute(INSERT_TRIALS, rows).scalars().all()
            asks = [
                self.run.history.event_row(
                    "ask", {"trial_id": tid, "optimizer_id": str(sugg.id)}, now
                )
                for tid, sugg in zip(ids, suggs, strict=True)
            ]
            s.execute(INSERT_EVENTS, asks)
        first_step = self.st.opt.population.interval if self.st.turns else None
        specs = [
            self.spec_of(Trial(id=tid, **row), first_step)
            for tid, row in zip(ids, rows, strict=True)
        ]
        # not under self.st.lock inside the transaction: on SQLite the write lock is taken after it
        with self.st.lock:  # a cancel from now on goes through the executor (see _launch)
            for spec, sugg in zip(specs, suggs, strict=True):
                self.run.history.know(spec.trial_id, sugg.id)
                if first_step is not None:
                    self.st.next_step[spec.trial_id] = first_step
        for spec in specs:
            self.launch(spec, None)

    def own_checkpoint(self, trial_id: int) -> str | None:
        with self.db.read() as s:
            number = s.get(Trial, trial_id).number
        ckpt = trial_dir(self.m.artifacts_dir, self.study_id, number) / "checkpoint"
        return str(ckpt) if (ckpt / "meta.json").is_file() else None

    def dispatch(self, spec: TrialSpec, on_report: OnReport, on_done: OnDone) -> bool:
        """Hand ``spec`` to the executor with this server's per-trial resources and the workload
        a worker runs (e.g. an uploaded dataset's file); a refusal is an ``on_done`` of a failed
        run ("could not submit: ..."). True when submitted."""
        if self.m.cpus_per_trial:
            spec.resources = {"cpus": self.m.cpus_per_trial, "gpus": 0}
        try:
            spec.workload, spec.data_file = self.m.trial_workload(spec.workload)
            self.executor.submit(spec, on_report, on_done)
        except Exception as err:
            on_done(TrialOutcome("failed", error=f"could not submit: {err}"))
            return False
        return True

    def submit(self, trial_id: int, requeue: bool = False, restore_dir: str | None = None) -> None:
        with self.st.lock:  # in flight from here, so a cancel from now on goes through the executor
            reason = self.st.cancelling.get(trial_id)
            if reason is None:
                self.st.inflight.add(trial_id)
            else:  # cancelled before this run started (or between two PBT segments)
                self.st.inflight.discard(trial_id)
                self.st.progress.pop(trial_id, None)
                self.st.planned.pop(trial_id, None)
        if reason is not None:
            self.run.lifecycle.end_cancelled(
                trial_id, reason
            )  # a no-op when cancel_trial ended it already
            self.run.release_slot()
            self.st.wake.set()
            return
        restoring = requeue or restore_dir is not None
        if restoring:
            self.m.reports.flush()  # its last report (where it got to) is read below
        with self.db.write(self.study_id) as s:
            t = s.get(Trial, trial_id)
            t.state, t.attempts, t.started_at, t.error = "running", t.attempts + 1, utcnow(), None
            t.scheduled_by = self.m.replica_id
            spec = self.spec_of(t)
            last_epoch = None
            if restoring:
                last_epoch = s.scalar(
                    select(TrialReport.values)
                    .where(TrialReport.trial_id == trial_id)
                    .order_by(TrialReport.id.desc())
                    .limit(1)
                )
        self.launch(spec, last_epoch, requeue, restore_dir)

    def spec_of(self, t: Trial, step: int | None = None) -> TrialSpec:
        """What the executor runs for ``t``; ``step``: the report its run ends at (a PBT member's
        segment; by default the one recorded in ``next_step``)."""
        budget = t.budget
        step = self.st.next_step.get(t.id) if step is None else step
        if step is not None:
            budget = {**(budget or {}), "step": step}
        return TrialSpec(
            trial_id=t.id,
            study_id=t.study_id,
            number=t.number,
            workload=self.run.baseline_runs.workload_of(t),
            config=dict(t.config),
            attempt=t.attempts,
            budget=budget,
        )

    def launch(
        self,
        spec: TrialSpec,
        last_epoch: dict | None,
        requeue: bool = False,
        restore_dir: str | None = None,
    ) -> None:
        """Hand a run marked running in the store to the executor."""
        trial_id = spec.trial_id
        root = trial_dir(self.m.artifacts_dir, self.study_id, spec.number)
        spec.checkpoint_dir = str(root / "checkpoint")
        spec.restore_dir = restore_dir
        ckpt = root / "checkpoint"
        if restore_dir is None and requeue and ckpt.is_dir() and any(ckpt.iterdir()):
            spec.restore_dir = spec.checkpoint_dir  # continue where the dead attempt got to
        spec.log_path = str(root / "worker.log")
        with self.st.lock:
            self.st.inflight.add(trial_id)
            start = float((last_epoch or {}).get("epoch") or 0.0) if spec.restore_dir else 0.0
            self.st.run_start[trial_id], self.st.progress[trial_id] = start, 0.0
            self.st.planned[trial_id] = max(0.0, planned_epochs(spec) - start)
        submitted = self.dispatch(
            spec,
            lambda step, values: self._on_report(trial_id, spec.attempt, step, values),
            lambda outcome: self._on_done(trial_id, outcome, spec),
        )
        if not submitted:
            return
        with self.st.lock:
            cancelled = trial_id in self.st.cancelling
        if cancelled:  # cancelled while it was being submitted
            self.executor.cancel(trial_id)

    def _on_report(self, trial_id: int, attempt: int, step: int, values: dict[str, float]) -> Any:
        if self.st.stop_requested.is_set():
            return "stop"
        with self.st.lock:
            epoch = values.get("epoch")
            if isinstance(epoch, (int, float)) and math.isfinite(epoch):
                self.st.progress[trial_id] = max(
                    0.0, float(epoch) - self.st.run_start.get(trial_id, 0.0)
                )
            if trial_id in self.st.baselines:
                decision = "continue"
            else:
                decision = self.st.opt.report(self.st.ids[trial_id], step, values)
            name = decision_name(decision)
            # written behind the answer, in order (scheduling.reportlog); no study named: a
            # report changes no row the trials listing shows, so neither the listing cache's
            # version nor the other replicas (NOTIFY) need to hear of it
            now = utcnow()
            report = dict(
                trial_id=trial_id,
                attempt=attempt,
                step=step,
                values=finite_or_none(values),
                decision=name,
                created_at=now,
            )
            event = None
            if trial_id not in self.st.baselines:
                event = self.run.history.event_row(
                    "report", {"trial_id": trial_id, "step": step, "values": exact(values)}, now
                )
            self.st.last_report[trial_id] = self.m.reports.append(report, event)
            if name == "exploit":
                self.st.exploits[trial_id] = decision
            elif name == "pause":
                self.st.pausing.add(trial_id)
        if self.st.tracker is not None:
            self.st.tracker.report(trial_id, step, values)
        return "continue" if name == "continue" else "stop"

    def _on_done(self, trial_id: int, outcome: TrialOutcome, spec: TrialSpec) -> None:
        resubmitted = False
        try:
            resubmitted = self._handle_done(trial_id, outcome, spec)
        finally:
            if not resubmitted:  # an exploiting trial stays in flight (keeps its slot): resubmitted
                with self.st.lock:
                    known = trial_id in self.st.inflight
                    self.st.inflight.discard(trial_id)
                    self.st.progress.pop(trial_id, None)
                    self.st.planned.pop(trial_id, None)
                if known:
                    self.run.release_slot()
                if self.st.tracker is not None:
                    self.st.tracker.ended(trial_id)  # its run ends if the trial did (tracking.hub)
            self.st.wake.set()

    def _handle_done(self, trial_id: int, outcome: TrialOutcome, spec: TrialSpec) -> bool:
        """Store the outcome and tell the optimiser; True when the trial was submitted again (PBT)."""
        with self.st.lock:
            last_report = self.st.last_report.pop(trial_id, 0)
            cancelled_by = self.st.cancelling.get(trial_id)
        user_stop = self.st.stop_requested.is_set() and not self.st.shutting_down.is_set()
        trained = float((outcome.values or {}).get("epochs_trained") or 0.0)
        if cancelled_by is not None:  # a user cancelled this trial: failed, whatever it returned
            self.m.reports.flush(last_report)  # never a trial ended before its reports are stored
            self.run.lifecycle.end_cancelled(trial_id, cancelled_by, trained)
            return False
        if outcome.cancelled or (user_stop and (outcome.state == "failed" or outcome.stopped)):
            # ended by the user's stop (cancelled, or told "stop" on its way out): not pruned, not failed
            self.m.reports.flush(last_report)
            with self.db.write(self.study_id) as s:  # user stop: back to the queue, rerun on resume
                t = s.get(Trial, trial_id)
                if t is not None:
                    t.state, t.error = "queued", "cancelled when the study was stopped"
                    t.epochs_trained = (t.epochs_trained or 0.0) + trained
            return False
        with self.st.lock:
            exploit = self.st.exploits.pop(trial_id, None)
            pausing = trial_id in self.st.pausing
            self.st.pausing.discard(trial_id)
        reached = bool((outcome.values or {}).get("budget_reached", 1.0))
        if pausing and outcome.state == "complete" and not reached:
            self.m.reports.flush(last_report)
            self.run.promotions.pause_at_rung(
                trial_id, trained
            )  # waits for a promotion (scheduling.promotions)
            return False
        if exploit is not None and outcome.state == "complete":
            self.m.reports.flush(last_report)
            return self.run.pbt.exploit(trial_id, exploit, trained)
        values = outcome.values
        state = outcome.state
        error = outcome.error
        finished = bool((values or {}).get("budget_reached", 1.0))
        if (
            state == "complete"
            and self.st.turns
            and trial_id not in self.st.baselines
            and not finished
        ):
            self.m.reports.flush(last_report)
            self.run.pbt.pause_member(
                trial_id, trained
            )  # end of a PBT segment: the next member's turn
            return False
        if state == "complete":
            missing = [n for n, _ in self.st.objectives if n not in (values or {})]
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
        with self.st.lock:
            if trial_id not in self.st.baselines:
                try:
                    self.st.opt.tell(self.st.ids[trial_id], tell_values, state=state)
                except (
                    InvalidConfig
                ) as err:  # e.g. a constraint's metric is missing from the result
                    state, error, tell_values = (
                        "failed",
                        f"the optimiser refused the result: {err}",
                        None,
                    )
                    self.st.opt.tell(self.st.ids[trial_id], None, state="failed")
            # the history positions of what was told; the rows are written after the lock is
            # released (replay orders by seq), so one study's completions do not queue behind
            # each other's transactions
            retries_seq = self.run.history.next_seq() if outcome.retries else None
            tell_seq = self.run.history.next_seq() if trial_id not in self.st.baselines else None
        if error:  # users see it without server paths or tracebacks; the log keeps it whole
            log.info("study %s trial %s %s: %s", self.study_id, trial_id, state, error)
        # the run's spec has the trial's number and config (a PBT exploit changes them only for
        # the next run): one UPDATE, no read of the row, committed with the outcomes of the
        # trials that end meanwhile, after this trial's reports (scheduling.reportlog)
        judged = values if state != "failed" else None
        feasible, reason = self.feasibility(trial_id in self.st.baselines, spec.config, judged)
        now = utcnow()
        events = []
        if retries_seq is not None:
            payload = {"trial_id": trial_id, "retries": list(outcome.retries)}
            events.append(self.run.history.event_row("retries", payload, now, retries_seq))
        if tell_seq is not None:
            payload = {"trial_id": trial_id, "values": exact(tell_values), "state": state}
            events.append(self.run.history.event_row("tell", payload, now, tell_seq))
        ckpt = trial_dir(self.m.artifacts_dir, self.study_id, spec.number) / "checkpoint"
        checkpoints = []
        if ckpt.is_dir() and any(ckpt.iterdir()):
            checkpoints.append({"trial_id": trial_id, "path": str(ckpt), "created_at": now})
        finish = {
            "o_id": trial_id,
            "o_state": state,
            "o_values": finite_or_none(values),
            "o_error": public_error(error),
            "o_finished_at": now,
            "o_feasible": feasible,
            "o_infeasible_reason": reason,
            "o_trained": trained,
            "o_attempt": outcome.attempt or 0,
        }
        self.m.reports.store_outcome(Outcome(self.study_id, finish, events, checkpoints))
        if state == "complete":
            self.run.tests.queue_tests()
            if self.st.webhook is not None:
                self.st.webhook.completed()  # committed: the front may have a new point
        return False

    def judge(self, t: Trial, values: dict[str, float] | None) -> None:
        """Store whether ``t``'s final values satisfy the study's constraints (and why not)."""
        t.feasible, t.infeasible_reason = self.feasibility(t.kind == "baseline", t.config, values)

    def feasibility(
        self, baseline: bool, config: dict, values: dict[str, float] | None
    ) -> tuple[bool | None, str | None]:
        """Whether final ``values`` satisfy the study's constraints, and why not (baselines are
        judged without the search space's known objectives)."""
        known = self.st.known if not baseline else None
        return feasibility(self.st.constraints, values, known, dict(config))
