"""PBT on a peft workload, members taking turns (a part of ``StudyRunner``, see
``scheduling.state``).

``population_size`` members (independent of ``max_parallel``) train in segments of
``perturbation_interval`` reports (budget ``{"step": n}``); between segments a member is paused
(``queued``, its checkpoint kept) and the next one in line runs. At a segment's last report the
optimiser may answer with an ``Exploit``: the donor's checkpoint is copied into the member's own
folder at once (the donor may train on and overwrite its own), the member's config becomes the
explored one, and the exploit is appended to the trial's ``lineage`` (every one, in order).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from sqlalchemy import select

from autopeft.api.artifacts import trial_dir
from autopeft.api.models import Trial, TrialReport
from autopeft.api.scheduling.state import Part
from autopeft.optim.base import Exploit

log = logging.getLogger("autopeft.scheduler")


class PBTTurns(Part):
    def takes_turns(self) -> bool:
        """Members of a population-based study (the optimiser's declared ``population``) on a
        peft workload take turns (segments of ``population.interval`` reports); python workloads
        define their own steps, so their members all run at once."""
        return self.st.opt.population is not None and self.st.spec["workload"].get("kind") == "peft"

    def room_for_member(self) -> bool:
        """PBT keeps ``population_size`` members alive (training or paused); others always ask."""
        if not self.st.turns:
            return True
        with self.st.lock:
            alive = len(self.st.inflight - self.st.baselines) + len(self.st.paused)
        return alive < self.st.opt.population.size

    def pause_member(self, trial_id: int, trained: float) -> None:
        with self.db.write(self.study_id) as s:
            t = s.get(Trial, trial_id)
            t.state = "queued"
            t.epochs_trained = (t.epochs_trained or 0.0) + trained
            last = s.scalar(
                select(TrialReport.step)
                .where(TrialReport.trial_id == trial_id)
                .order_by(TrialReport.id.desc())
                .limit(1)
            )
        with self.st.lock:
            self.st.next_step[trial_id] = int(last or 0) + self.st.opt.population.interval
            self.st.paused.append(trial_id)

    def exploit(self, trial_id: int, exploit: Exploit, trained: float) -> bool:
        """PBT: continue this trial from the donor's checkpoint with the perturbed config; the
        donor's checkpoint is copied into this trial's folder now (the donor may train on)."""
        donor_tid = self.st.by_opt_id.get(str(exploit.source_id))
        with self.db.read() as s:
            t = s.get(Trial, trial_id)
            number = t.number
            donor_number = s.get(Trial, donor_tid).number if donor_tid is not None else None
        own = trial_dir(self.m.artifacts_dir, self.study_id, number) / "checkpoint"
        donor = (
            trial_dir(self.m.artifacts_dir, self.study_id, donor_number) / "checkpoint"
            if donor_number is not None
            else None
        )
        copied = donor is not None and _copy_checkpoint(donor, own)
        with self.db.write(self.study_id) as s:
            t = s.get(Trial, trial_id)
            t.config = dict(exploit.config)
            if donor_tid is not None:
                t.parent_id = donor_tid
            t.epochs_trained = (t.epochs_trained or 0.0) + trained
            entry = {
                "step": int(exploit.step),
                "source": donor_tid,
                "source_number": donor_number,
                "changes": {k: list(v) for k, v in (exploit.changes or {}).items()},
                "restored": copied,
            }
            t.lineage = [*(t.lineage or []), entry]
            if self.st.turns:
                t.state = "queued"
        log.info(
            "study %s: trial %s exploits trial %s (%s)",
            self.study_id,
            number,
            donor_number,
            "from its checkpoint" if copied else "no checkpoint to copy: weights kept",
        )
        if self.st.turns:
            # the member goes on from the copied checkpoint's report (the donor may be ahead)
            start = max(int(exploit.step), _checkpoint_report(own) if copied else 0)
            nxt = start + self.st.opt.population.interval
            last = self.st.opt.population.max_step
            with self.st.lock:
                self.st.next_step[trial_id] = min(nxt, int(last)) if last else nxt
                self.st.paused.append(trial_id)
            return False
        self.run.runs.submit(trial_id, restore_dir=str(own) if copied else None)
        return True

    def end_paused(self, why: str) -> None:
        """The budget ended with PBT members between segments: each is told with its last report
        (``pruned``: not trained to its last report) so it stays on record and out of the front."""
        with self.st.lock:
            members, self.st.paused = list(self.st.paused), []
        self.run.promotions.prune_at_last_report(members, why)


def _checkpoint_report(directory: Path) -> int:
    """The report a peft checkpoint was saved at (0 for another workload's format)."""
    from autopeft.trials import checkpoint

    try:
        return int(checkpoint.read_meta(directory).get("report") or 0)
    except (OSError, ValueError, TypeError):
        return 0


def _copy_checkpoint(source: Path, target: Path, tries: int = 5) -> bool:
    """Copy a checkpoint folder (for the peft workload's format ``meta.json`` names the files'
    step: a copy taken while the source was being rewritten is retried). False when the source
    has none."""
    from autopeft.trials import checkpoint

    for _ in range(tries):
        if not source.is_dir() or not any(source.iterdir()):
            return False
        tmp = target.with_name(target.name + ".copy")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        # a peft checkpoint can be checked; a python workload's own format is taken as written
        if not checkpoint.exists(tmp) or checkpoint.is_consistent(tmp):
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
            return True
        time.sleep(0.2)
    shutil.rmtree(target.with_name(target.name + ".copy"), ignore_errors=True)
    return False
