"""PBT through the controller: a report answered with Exploit stops the trial, which restarts
from the donor's checkpoint with the perturbed config (parent_id set, attempts counted)."""

from __future__ import annotations

from tests.api.conftest import client_for, make_token, python_study


def test_pbt_exploit_restarts_from_the_donor_checkpoint(sqlite_url, server_factory):
    from tests.api.workloads import PBT_SPACE

    server = server_factory(sqlite_url)
    client = client_for(server, make_token(sqlite_url, "alice"))
    spec = python_study(
        "tests.api.workloads:pbt_toy",
        max_trials=4,
        max_parallel=4,
        space=PBT_SPACE,
        optimizer={"name": "pbt", "options": {"population_size": 4, "perturbation_interval": 2}},
    )
    study = client.create_study(spec=spec)
    study.wait(timeout=300, poll=0.2, progress=False)
    assert study.state == "finished" and study.counts["complete"] == 4, study.data
    trials = {t["id"]: t for t in study.trials()}
    clones = [t for t in trials.values() if t["parent_id"] is not None]
    assert clones, "no trial exploited another"
    for t in clones:
        assert t["parent_id"] in trials and t["parent_id"] != t["id"]
        assert t["attempts"] >= 2
        reports = client.reports(t["id"])
        assert "exploit" in [r["decision"] for r in reports]
        # every later attempt resumed from a donor's checkpoint (copied at the exploit), not from
        # step 1; a later attempt may itself be exploited before step 8, and the last attempt
        # reports nothing when its donor had already finished its 8 steps
        steps: dict[int, list[int]] = {}
        for r in reports:
            steps.setdefault(r["attempt"], []).append(r["step"])
        assert all(min(s) >= 2 for a, s in steps.items() if a > 1), reports
        last = steps.get(t["attempts"])
        assert not last or max(last) == 8, reports
        assert (
            t["lineage"]
            and t["lineage"][-1]["restored"]
            and t["lineage"][-1]["source"] == t["parent_id"]
        )
