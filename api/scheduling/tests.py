"""Forward-only evaluation of saved adapters on the held-out test split (a part of
``StudyRunner``, see ``scheduling.state``).

After every complete trial the validation front is recomputed from the store; each run of a
point on it (a candidate's trial and its replicates), and each baseline, that has no test values
yet is queued for an evaluation run: the same
workload with ``evaluate: "test"`` and ``restore_dir`` = the trial's checkpoint, on the same
executor (a slot of ``max_parallel``). Its ``test_*`` metrics go to ``trials.test_values``. A
trial on the front at any time was on it when it completed (fronts only lose members), so
every front the study ever had is tested; trials never on the front never touch the test split.
"""

from __future__ import annotations

import logging

from autopeft.api.artifacts import trial_dir
from autopeft.api.models import Study, Trial
from autopeft.api.scheduling.state import Part
from autopeft.api.scheduling.values import finite_or_none
from autopeft.workers.base import TrialOutcome, TrialSpec

log = logging.getLogger("autopeft.scheduler")


class HeldOutTests(Part):
    def queue_tests(self) -> None:
        """Queue a test evaluation for every trial on the validation front, and every baseline,
        that has a saved adapter and no test values yet (peft workloads)."""
        if self.st.spec["workload"].get("kind") != "peft":
            return
        from autopeft.api.services.front import front_runs

        with self.db.read() as s:
            study = s.get(Study, self.study_id)
            front, complete = front_runs(s, study)
            wanted = [
                t.id
                for g in complete
                for t in g.runs
                if t.test_values is None
                and t.kind != "attached"  # measured elsewhere: no adapter here to test
                and (g in front or t.kind == "baseline")
            ]
        with self.st.lock:
            for tid in wanted:
                if tid not in self.st.evaluating and tid not in self.st.pending_tests:
                    self.st.pending_tests.append(tid)

    def submit_test(self, trial_id: int) -> None:
        with self.db.read() as s:
            t = s.get(Trial, trial_id)
            root = trial_dir(self.m.artifacts_dir, self.study_id, t.number)
            spec = TrialSpec(
                trial_id=t.id,
                study_id=t.study_id,
                number=t.number,
                workload={**self.run.baseline_runs.workload_of(t), "evaluate": "test"},
                config=dict(t.config),
                attempt=t.attempts,
            )
        spec.restore_dir = str(root / "checkpoint")
        spec.log_path = str(root / "test.log")
        with self.st.lock:
            self.st.evaluating.add(trial_id)
        self.run.runs.dispatch(
            spec,
            lambda step, values: "continue",
            lambda outcome: self._on_tested(trial_id, outcome),
        )

    def _on_tested(self, trial_id: int, outcome: TrialOutcome) -> None:
        try:
            if outcome.state == "complete" and outcome.values:
                with self.db.write(self.study_id) as s:
                    t = s.get(Trial, trial_id)
                    if t is not None:
                        t.test_values = finite_or_none(
                            {k: v for k, v in outcome.values.items() if k.startswith("test_")}
                        )
                if self.st.tracker is not None:
                    self.st.tracker.tested(trial_id)
            elif not outcome.cancelled:
                log.warning(
                    "study %s: test evaluation of trial %s failed: %s",
                    self.study_id,
                    trial_id,
                    (outcome.error or "").splitlines()[0] if outcome.error else "?",
                )
                with self.db.write(self.study_id) as s:
                    self.run.history.event(
                        s,
                        "test_failed",
                        {"trial_id": trial_id, "error": (outcome.error or "")[:2000]},
                    )
        finally:
            with self.st.lock:
                known = trial_id in self.st.evaluating
                self.st.evaluating.discard(trial_id)
            if known:
                self.run.release_slot()
            self.st.wake.set()
