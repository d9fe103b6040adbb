"""The in-process scheduler harness: a real ``SchedulerManager`` / ``StudyRunner`` against a
SQLite store in a temp dir, with a fake executor (a subclass of the real ``workers.base.Executor``)
that runs nothing: the test decides when each submitted trial reports and how it ends. The
``store`` and ``harness`` fixtures (tests/api/conftest.py) build them."""

from __future__ import annotations

import threading

from sqlalchemy import select

from autopeft.api.db import Database
from autopeft.api.models import Study, Trial, User
from autopeft.api.scheduler import SchedulerManager
from autopeft.workers.base import Executor, TrialOutcome, TrialSpec
from tests.api.conftest import python_study
from tests.waiting import wait_for


class FakeExecutor(Executor):
    """Keeps every submission; ``report`` / ``finish`` play the worker's part. A cancel ends the
    run at once with ``cancelled=True``, as the contract says."""

    name = "fake"

    def __init__(self):
        self._lock = threading.Lock()
        self.runs: dict[int, tuple[TrialSpec, object, object]] = {}
        self.submitted: list[TrialSpec] = []  # every submission, in order
        self.cancelled: list[int] = []
        self.peak = 0  # most runs in flight at once
        self.closed = False

    def submit(self, spec, on_report, on_done):
        if self.closed:
            raise RuntimeError("executor is shut down")
        with self._lock:
            self.runs[spec.trial_id] = (spec, on_report, on_done)
            self.submitted.append(spec)
            self.peak = max(self.peak, len(self.runs))

    def report(self, trial_id: int, step: int, values: dict[str, float]):
        with self._lock:
            _, on_report, _ = self.runs[trial_id]
        return on_report(step, values)

    def finish(self, trial_id: int, outcome: TrialOutcome) -> None:
        with self._lock:
            _, _, on_done = self.runs.pop(trial_id)
        on_done(outcome)

    def cancel(self, trial_id):
        with self._lock:
            run = self.runs.pop(trial_id, None)
            if run is not None:
                self.cancelled.append(trial_id)
        if run is None:
            return False
        run[2](TrialOutcome("failed", error="cancelled", cancelled=True))
        return True

    def running(self):
        with self._lock:
            return sorted(self.runs)

    def shutdown(self, wait=True):
        self.closed = True  # running trials get no on_done


def values_of(spec: TrialSpec) -> dict[str, float]:
    x, y = float(spec.config["x"]), float(spec.config["y"])
    return {"accuracy": 1.0 - (x - 0.3) ** 2, "cost": x + 0.1 * y}


class Harness:
    """One controller process's scheduler on ``store``; ``restart`` is a new one on the same DB."""

    def __init__(self, db: Database, artifacts):
        self.db, self.artifacts = db, artifacts
        self.managers: list[SchedulerManager] = []
        self.restart()

    def restart(self) -> None:
        if self.managers:
            self.managers[-1].shutdown()
        self.executor = FakeExecutor()
        self.manager = SchedulerManager(self.db, self.executor, self.artifacts, cpus_per_trial=0)
        self.managers.append(self.manager)

    def create(self, **fields) -> int:
        with self.db.write() as s:
            user = s.scalar(select(User).where(User.name == "alice"))
            study = Study(user_id=user.id, name="t", state="running", spec=python_study(**fields))
            s.add(study)
            s.flush()
            sid = study.id
        self.manager.start(sid)
        return sid

    def in_flight(self, n: int) -> list[int]:
        return wait_for(
            lambda: ids if len(ids := self.executor.running()) == n else None,
            30,
            f"{n} trial(s) in flight",
        )

    def complete(self, trial_id: int) -> None:
        spec = self.executor.runs[trial_id][0]
        self.executor.finish(trial_id, TrialOutcome("complete", values=values_of(spec)))

    def complete_all(self, sid: int) -> None:
        """Complete whatever is submitted until the study finishes."""

        def step():
            for tid in self.executor.running():
                self.complete(tid)
            return self.study(sid).state != "running"

        wait_for(step, 60, "the study to finish")

    def trials(self, sid: int) -> dict[int, Trial]:
        with self.db.read() as s:
            rows = s.scalars(select(Trial).where(Trial.study_id == sid)).all()
        return {t.id: t for t in rows}

    def study(self, sid: int) -> Study:
        with self.db.read() as s:
            return s.get(Study, sid)

    def close(self) -> None:
        for m in self.managers:
            m.shutdown()
