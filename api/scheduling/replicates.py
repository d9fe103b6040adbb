"""Seed-aware fronts (a part of ``StudyRunner``, see ``scheduling.state``): with ``spec.replicates``
= k > 1, when the search would end, every candidate on the validation front (selected on seed means,
see ``services.front``) that has fewer than k runs gets ``replicate`` trials: the same config (and a
baseline's own workload) with the next training seeds. They are never told to the optimiser, run
beyond ``max_epochs`` and ``max_trials`` (the search's budget), and are tested on the held-out split
like the front. Replicating can change the front (a lucky point's mean drops), so the check repeats
until every point on it has k runs, at most :data:`MAX_REPLICATES_PER_SEED` per extra seed."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import func, select

from autopeft.api.models import Study, Trial
from autopeft.api.scheduling.state import Part

#: replicate trials a study may make per extra seed (k - 1): a bound on the rounds of re-selection
MAX_REPLICATES_PER_SEED = 24


class Replicates(Part):
    def replicates_todo(self) -> list[tuple[int, int]]:
        """``(candidate's trial id, seed index)`` of the runs the front still needs."""
        k = int(self.st.spec.get("replicates") or 1)
        if k <= 1 or self.st.spec["workload"].get("kind") != "peft":
            return []
        from autopeft.api.services.front import front_runs

        with self.db.read() as s:
            study = s.get(Study, self.study_id)
            front, _ = front_runs(s, study)
            roots = [g.root.id for g in front if g.root.kind != "attached"]  # no training here
            runs = Counter(
                s.scalars(  # every replicate made, whatever became of it (one try a seed)
                    select(Trial.parent_id).where(
                        Trial.study_id == self.study_id, Trial.kind == "replicate"
                    )
                )
            )
            made = s.scalar(
                select(func.count())
                .select_from(Trial)
                .where(Trial.study_id == self.study_id, Trial.kind == "replicate")
            )
        room = (k - 1) * MAX_REPLICATES_PER_SEED - int(made or 0)
        todo = [(root, j) for root in roots for j in range(1 + runs[root], k)]
        with self.st.lock:
            queued = set(self.st.replicate_todo)
        return [r for r in todo if r not in queued][: max(0, room)]

    def create_replicate(self, root_id: int, j: int, number: int) -> None:
        """Run ``root_id``'s config again with its training seed + ``j``."""
        from autopeft.trials.knobs import resolve_knobs

        with self.db.read() as s:
            root = s.get(Trial, root_id)
            # a baseline's name picks its workload (_workload_of); other labels stay with the root
            config, label = dict(root.config), root.label if root.kind == "baseline" else None
            seed = resolve_knobs(self.run.baseline_runs.workload_of(root), config)["seed"]
        with self.db.write(self.study_id) as s:
            trial = Trial(
                study_id=self.study_id,
                number=number,
                state="queued",
                config={**config, "seed": int(seed) + j},
                optimizer_id="",
                attempts=0,
                kind="replicate",
                label=label,
                parent_id=root_id,
            )
            s.add(trial)
            s.flush()
            tid = trial.id
        with self.st.lock:
            self.st.baselines.add(tid)  # never told to the optimiser
        self.run.runs.submit(tid)
