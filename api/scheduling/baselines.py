"""Baseline trials (a part of ``StudyRunner``, see ``scheduling.state``): ``spec.baselines`` names
hand-picked reference points (``autopeft.trials.baselines``: built-in names or the user's own
``{name, config}``), each run once as a trial of kind ``baseline`` with its own workload, never told
to the optimiser, and counted in ``max_trials``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from autopeft.api.models import Trial
from autopeft.api.scheduling.state import Part


class Baselines(Part):
    def baselines_to_create(self) -> list[str]:
        with self.db.read() as s:
            done = set(
                s.scalars(
                    select(Trial.label).where(
                        Trial.study_id == self.study_id, Trial.kind == "baseline"
                    )
                )
            )
        from autopeft.trials.baselines import baseline_name

        names = [baseline_name(b) for b in self.st.spec.get("baselines") or []]
        return [b for b in names if b not in done]

    def create_baseline(self, name: str, number: int) -> None:
        from autopeft.trials.baselines import baseline_trial

        config, _ = baseline_trial(name, self.st.spec["workload"], self.st.spec.get("baselines"))
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
        with self.st.lock:
            self.st.baselines.add(tid)
        self.run.runs.submit(tid)

    def workload_of(self, t: Trial) -> dict[str, Any]:
        """The workload a trial runs: a baseline's (and a baseline's replicate's) own, else the
        study's."""
        if t.kind == "baseline" or (t.kind == "replicate" and t.label):
            from autopeft.trials.baselines import baseline_trial

            return baseline_trial(t.label, self.st.spec["workload"], self.st.spec.get("baselines"))[
                1
            ]
        return self.st.spec["workload"]
