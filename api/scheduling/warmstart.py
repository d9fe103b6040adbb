"""Reused warm-start trials (a part of ``StudyRunner``, see ``scheduling.state``; see
``services.warmstart``).

Before anything else runs, every ``spec.warm_start.reused`` entry without a ``trial_id`` becomes a
trial of this study: ``complete`` with the source trial's values (and test values), its checkpoint
and adapter folders copied (exports and held-out tests work as for a trained trial), registered with
the optimiser by ``add_trial`` (an ``add`` event, replayed the same way after a restart) instead of
being trained. The new trial's id is written back into the entry, in the same transaction.
"""

from __future__ import annotations

import copy
import logging
import shutil

from autopeft.api.artifacts import trial_dir
from autopeft.api.models import Study, Trial, utcnow
from autopeft.api.scheduling.state import Part
from autopeft.api.scheduling.values import exact

log = logging.getLogger("autopeft.scheduler")


class WarmStartReuse(Part):
    def reuse_warm_start(self, created: int) -> int:
        """Create the reused trials still missing; returns the trial count after them."""
        todo = [
            e
            for e in (self.st.spec.get("warm_start") or {}).get("reused") or []
            if "trial_id" not in e
        ]
        if not todo:
            return created
        with self.db.write(self.study_id) as s:
            study = s.get(Study, self.study_id, with_for_update=True)
            spec = copy.deepcopy(study.spec)
            source_id = spec["warm_start"]["study"]
            for entry in spec["warm_start"]["reused"]:
                if "trial_id" in entry:
                    continue
                with self.st.lock:
                    told = self.st.opt.add_trial(entry["config"], entry["values"], "complete")
                now = utcnow()
                t = Trial(
                    study_id=self.study_id,
                    number=created,
                    state="complete",
                    config=dict(told.config),
                    values=dict(entry["values"]),
                    optimizer_id=str(told.id),
                    attempts=0,
                    test_values=entry.get("test_values"),
                    started_at=now,
                    finished_at=now,
                )
                s.add(t)
                s.flush()
                self.run.runs.judge(t, entry["values"])
                self.run.history.event(
                    s,
                    "add",
                    {
                        "trial_id": t.id,
                        "config": dict(told.config),
                        "values": exact(entry["values"]),
                    },
                )
                with self.st.lock:
                    self.run.history.know(t.id, told.id)
                entry["trial_id"] = t.id
                self._copy_artifacts(source_id, entry["source_number"], created)
                created += 1
            study.spec = spec
        self.st.spec["warm_start"] = spec["warm_start"]
        log.info(
            "study %s: reused %d trial(s) of study %s without training",
            self.study_id,
            len(todo),
            source_id,
        )
        return created

    def _copy_artifacts(self, source_study: int, source_number: int, number: int) -> None:
        src, dst = (
            trial_dir(self.m.artifacts_dir, source_study, source_number),
            trial_dir(self.m.artifacts_dir, self.study_id, number),
        )
        for name in ("checkpoint", "adapter"):
            if (src / name).is_dir() and not (dst / name).exists():
                shutil.copytree(src / name, dst / name)
