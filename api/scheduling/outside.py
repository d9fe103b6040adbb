"""Enqueued configs and attached results (a part of ``StudyRunner``, see ``scheduling.state``; see
``services.outside``).

``_attach_waiting`` makes every waiting ``spec.attached`` entry a ``complete`` trial of kind
``attached`` (told with ``add_trial``; an ``attach`` history entry), at the start of the runner and
at every turn of its loop. ``_start_enqueued`` starts the first waiting ``spec.enqueued`` config
(``add_trial(config, state="running")``; an ``enqueue`` history entry) when a slot is free, before
anything is asked of the optimiser. Each writes the new trial's id back into its entry, in the
same transaction as the trial. The optimiser is told before the transaction, never while it is
open (the runner's lock is never taken inside a write: see ``scheduling.runs``).
"""

from __future__ import annotations

import copy
import logging

from autopeft.api.models import Study, Trial, utcnow
from autopeft.api.scheduling.state import Part
from autopeft.api.scheduling.values import exact
from autopeft.api.services.outside import (
    ENQUEUED_LABEL,
    attach_payload,
    attached_trial,
    waiting,
)
from autopeft.errors import InvalidConfig

log = logging.getLogger("autopeft.scheduler")


class OutsideTrials(Part):
    def counted(self, created: int) -> int:
        """Trials that count in ``max_trials``: those made (attached ones left out) and the
        enqueued configs still waiting (room kept for them)."""
        return created - self.st.attached_n + len(waiting(self.st.spec, "enqueued"))

    def enqueued_waiting(self) -> bool:
        return bool(waiting(self.st.spec, "enqueued"))

    def attach_waiting(self, created: int) -> int:
        """Make the waiting attached results trials; returns the trial count after them."""
        todo = waiting(self.st.spec, "attached")
        if not todo:
            return created
        entries = self.st.spec["attached"]
        told: dict[int, object] = {}
        refused: dict[int, str] = {}
        for i in todo:
            e = entries[i]
            try:
                with self.st.lock:
                    told[i] = self.st.opt.add_trial(e["config"], e["values"], "complete")
            except InvalidConfig as err:  # checked at the request: another optimiser's rule
                refused[i] = f"the optimiser refused it: {err}"
        with self.db.write(self.study_id) as s:
            study = s.get(Study, self.study_id, with_for_update=True)
            spec = copy.deepcopy(study.spec)
            for i in todo:
                entry = spec["attached"][i]
                if i in refused:
                    entry["refused"] = refused[i]
                    continue
                t = attached_trial(
                    self.study_id,
                    created,
                    entry,
                    str(told[i].id),
                    self.run.runs.feasibility(False, entry["config"], entry["values"]),
                )
                s.add(t)
                s.flush()
                payload = attach_payload(t.id, entry)
                self.run.history.event(s, "attach", {**payload, "values": exact(payload["values"])})
                with self.st.lock:
                    self.run.history.know(t.id, told[i].id)
                entry["trial_id"] = t.id
                created += 1
                self.st.attached_n += 1
            study.spec = spec
        self.st.spec = {
            **self.st.spec,
            "attached": spec["attached"],
            "enqueued": spec.get("enqueued"),
        }
        log.info("study %s: %d attached result(s) told", self.study_id, len(todo) - len(refused))
        if self.st.webhook is not None:
            self.st.webhook.completed()  # committed: the front may have a new point
        return created

    def start_enqueued(self, number: int) -> None:
        """Start the first waiting enqueued config as trial ``number``."""
        i = waiting(self.st.spec, "enqueued")[0]
        config = self.st.spec["enqueued"][i]["config"]
        with self.st.lock:
            told = self.st.opt.add_trial(config, state="running")
        first_step = self.st.opt.population.interval if self.st.turns else None
        now = utcnow()
        with self.db.write(self.study_id) as s:
            study = s.get(Study, self.study_id, with_for_update=True)
            spec = copy.deepcopy(study.spec)
            t = Trial(
                study_id=self.study_id,
                number=number,
                state="running",
                config=dict(told.config),
                optimizer_id=str(told.id),
                attempts=1,
                started_at=now,
                scheduled_by=self.m.replica_id,
                kind="search",
                label=ENQUEUED_LABEL,
            )
            s.add(t)
            s.flush()
            payload = {"trial_id": t.id, "optimizer_id": str(told.id), "config": dict(told.config)}
            self.run.history.event(s, "enqueue", payload)
            spec["enqueued"][i]["trial_id"] = t.id
            if number - self.st.attached_n >= int(spec["max_trials"]):
                # asked meanwhile (the request counted before this runner heard of the config):
                # an accepted config still runs, and the budget says so
                spec["max_trials"] = int(spec["max_trials"]) + 1
                at = now.isoformat(timespec="seconds")
                extension = {"max_trials": 1, "at": at, "by": "enqueue"}
                spec["extensions"] = [*(spec.get("extensions") or []), extension]
            study.spec = spec
            trial_spec = self.run.runs.spec_of(t, first_step)
        self.st.spec = {
            **self.st.spec,
            "enqueued": spec["enqueued"],
            "attached": spec.get("attached"),
            "max_trials": spec["max_trials"],
        }
        with self.st.lock:
            self.run.history.know(trial_spec.trial_id, told.id)
            if first_step is not None:
                self.st.next_step[trial_spec.trial_id] = first_step
        self.run.runs.launch(trial_spec, None)
