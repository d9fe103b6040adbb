"""The study's optimiser history (a part of ``StudyRunner``, see ``scheduling.state``): every ask /
add / report / tell is appended to ``events`` in the transaction of the trial change it belongs to
(as are the ``enqueue`` and ``attach`` entries of the user's own configs and results,
``scheduling.outside``), and a new runner rebuilds its optimiser by replaying them in order
(optimisers are a pure function of seed + history: ``autopeft.optim.base``). This is the one rebuild
path.

An optimiser that declares ``REBUILDS_BY_ADD`` has each logged ask replayed as ``add_trial`` of
the trial's stored config (no suggestion recomputed: a GP fit per trial for ``mobo``); any other
replays the real ask, and a suggestion that differs from the stored trial (other id, or other
config for a trial PBT never changed) is counted and logged as a divergence.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, select

from autopeft.api.models import Event, Trial, TrialReport
from autopeft.api.scheduling.state import Part
from autopeft.api.scheduling.values import unexact
from autopeft.optim.base import config_key

log = logging.getLogger("autopeft.scheduler")


class HistoryReplay(Part):
    def event(self, s, kind: str, payload: dict[str, Any]) -> None:
        """Append the next entry to the history, in the caller's transaction ``s``."""
        s.add(Event(study_id=self.study_id, seq=self.next_seq(), kind=kind, payload=payload))

    def event_at(self, s, kind: str, payload: dict[str, Any], seq: int) -> None:
        """Append a history entry at a position taken earlier (under the study's lock)."""
        s.add(Event(study_id=self.study_id, seq=seq, kind=kind, payload=payload))

    def next_seq(self) -> int:
        """The next history position: taken under a lock of its own, never held with another
        (callers may hold the study's lock, or be inside a write transaction, or neither)."""
        with self.st.seq_lock:
            self.st.seq += 1
            return self.st.seq

    def event_row(
        self, kind: str, payload: dict[str, Any], now, seq: int | None = None
    ) -> dict[str, Any]:
        """A history entry (by default the next) as a row for ``scheduling.reportlog``."""
        seq = self.next_seq() if seq is None else seq
        return dict(study_id=self.study_id, seq=seq, kind=kind, payload=payload, created_at=now)

    def replay(self) -> list[int]:
        """Rebuild the optimiser from ``events``; return the trial ids to run again (those
        ``queued`` or ``running`` when the previous runner ended), in trial-number order."""
        self.m.reports.flush()  # a previous runner's reports, still being written
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
        # never told to the optimiser: baselines and replicates
        self.st.baselines = {tid for tid, _, _, kind in rows if kind in ("baseline", "replicate")}
        configs = {tid: config for tid, config, _, _ in rows}
        cloned = {tid for tid, _, parent, _ in rows if parent is not None}  # PBT may change them
        by_add = type(self.st.opt).REBUILDS_BY_ADD
        diverged = 0
        for ev in events:
            p = ev.payload
            tid = p["trial_id"]
            if ev.kind == "ask":
                if by_add and tid in configs:
                    opt_id = self.st.opt.add_trial(configs[tid], state="running").id
                else:
                    sugg = self.st.opt.ask(1)[0]
                    opt_id = sugg.id
                    if (
                        tid in configs
                        and tid not in cloned
                        and config_key(sugg.config) != config_key(configs[tid])
                    ):
                        diverged += 1
                if str(opt_id) != p["optimizer_id"]:
                    diverged += 1
                self.know(tid, opt_id)
            elif ev.kind in ("add", "attach"):  # reused warm start / attached (scheduling.outside)
                self.know(
                    tid, self.st.opt.add_trial(p["config"], unexact(p["values"]), "complete").id
                )
            elif ev.kind == "enqueue":  # the user's config, registered as asked (every optimiser)
                opt_id = self.st.opt.add_trial(p["config"], state="running").id
                if str(opt_id) != p["optimizer_id"]:
                    diverged += 1
                self.know(tid, opt_id)
            elif ev.kind == "report":
                self.st.opt.report(self.st.ids[tid], p["step"], unexact(p["values"]))
            elif ev.kind == "tell":
                self.st.opt.tell(self.st.ids[tid], unexact(p["values"]), state=p["state"])
            elif ev.kind == "resume":  # promoted from a rung (scheduling.promotions)
                self.st.opt.resume(self.st.ids[tid])
            self.st.seq = ev.seq
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
        # trials waiting at a rung wait on (the optimiser promotes them), not run again at once
        waiting = {self.st.by_opt_id.get(str(opt_id)) for opt_id in self.st.opt.paused}
        self.st.rung_paused = [tid for tid in unfinished if tid in waiting]
        unfinished = [tid for tid in unfinished if tid not in waiting]
        if (
            self.st.turns
        ):  # paused or running PBT members go on with the segment after their last report
            with self.db.read() as s:
                for tid in unfinished:
                    if tid not in self.st.baselines:
                        last = s.scalar(
                            select(func.max(TrialReport.step)).where(TrialReport.trial_id == tid)
                        )
                        self.st.next_step[tid] = int(last or 0) + self.st.opt.population.interval
        return list(unfinished)

    def know(self, trial_id: int, opt_id: Any) -> None:
        """Map a search trial to its optimiser id, both ways."""
        self.st.ids[trial_id] = opt_id
        self.st.by_opt_id[str(opt_id)] = trial_id
