"""ASHA promotions on a peft workload (a part of ``StudyRunner``, see ``scheduling.state``): early
stopping with ``promotions`` pauses a trial at a rung instead of stopping it (``report`` answers
``"pause"``).

The worker is told to stop; the trial becomes ``queued`` with its epochs so far counted and its
rung checkpoint kept, and waits in ``rung_paused``. Before a free slot is given to a new trial,
the optimiser's :meth:`~autopeft.optim.base.BaseOptimizer.promotion` may name a paused one: it is
resumed from its own checkpoint (``resume`` is logged in the history, so a new runner rebuilds the
same waiting set) and trains only the steps after the rung. Trials still waiting when the study
can start nothing more (budget, ``max_trials``, or nothing left to promote) are told ``pruned`` at
their last report, as stopped ones are.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from autopeft.api.models import Trial, TrialReport, utcnow
from autopeft.api.scheduling.state import Part
from autopeft.api.scheduling.values import exact

log = logging.getLogger("autopeft.scheduler")


class Promotions(Part):
    def pause_at_rung(self, trial_id: int, trained: float) -> None:
        with self.db.write(self.study_id) as s:
            t = s.get(Trial, trial_id)
            t.state = "queued"
            t.epochs_trained = (t.epochs_trained or 0.0) + trained
        with self.st.lock:
            self.st.rung_paused.append(trial_id)

    def promotable(self) -> int | None:
        """The paused trial the optimiser would resume now, or None."""
        with self.st.lock:
            if not self.st.rung_paused:
                return None
            opt_id = self.st.opt.promotion()
            tid = self.st.by_opt_id.get(str(opt_id)) if opt_id is not None else None
            return tid if tid in self.st.rung_paused else None

    def promote(self, trial_id: int) -> None:
        with self.st.lock:
            if trial_id not in self.st.rung_paused:
                return  # cancelled meanwhile
            self.st.rung_paused.remove(trial_id)
            self.st.opt.resume(self.st.ids[trial_id])
            seq = self.run.history.next_seq()
        with self.db.write(self.study_id) as s:
            self.run.history.event_at(s, "resume", {"trial_id": trial_id}, seq)
        log.info("study %s: trial %s promoted, resumed from its rung", self.study_id, trial_id)
        self.run.runs.submit(trial_id, restore_dir=self.run.runs.own_checkpoint(trial_id))

    def end_rung_paused(self, why: str) -> None:
        """Nothing more will run: trials waiting at a rung end as pruned at their last report."""
        with self.st.lock:
            waiting, self.st.rung_paused = list(self.st.rung_paused), []
        self.prune_at_last_report(waiting, why)

    def prune_at_last_report(self, trial_ids: list[int], why: str) -> None:
        """Tell each of ``trial_ids`` (waiting, not running) ``pruned`` with its last report's
        values: it stays on record and out of the front (PBT members between segments too)."""
        self.m.reports.flush()
        for tid in trial_ids:
            with self.db.read() as s:
                last = s.scalars(
                    select(TrialReport)
                    .where(TrialReport.trial_id == tid)
                    .order_by(TrialReport.id.desc())
                    .limit(1)
                ).first()
            values = (
                {k: v for k, v in last.values.items() if v is not None}
                if last is not None
                else None
            )
            with self.st.lock:
                self.st.opt.tell(self.st.ids[tid], values, state="pruned")
                with self.db.write(self.study_id) as s:
                    t = s.get(Trial, tid)
                    t.state, t.values, t.error, t.finished_at = "pruned", values, why, utcnow()
                    self.run.runs.judge(t, values)
                    self.run.history.event(
                        s, "tell", {"trial_id": tid, "values": exact(values), "state": "pruned"}
                    )
