"""Comparing studies through the real server: ``GET /studies/compare`` (client ``compare``, CLI
``study compare``) gives each study's front and its hypervolume after each complete trial, all
against one reference point; studies with other objectives or of another user are refused."""

from __future__ import annotations

import numpy as np
import pytest

from autopeft.client import ApiError
from autopeft.optim import pareto as pm
from tests.api.conftest import client_for, make_token, python_study
from tests.api.workloads import OBJECTIVES

DIRECTIONS = [o["direction"] for o in OBJECTIVES]
NAMES = [o["name"] for o in OBJECTIVES]


def _minimised(trials) -> np.ndarray:
    rows = [[t["values"][n] for n in NAMES] for t in trials]
    return pm.to_minimization(np.asarray(rows, float), DIRECTIONS)


def test_compare_two_studies_on_one_reference_point(sqlite_url, server_factory, capsys):
    server = server_factory(sqlite_url)
    token = make_token(sqlite_url, "alice")
    client = client_for(server, token)
    a = client.create_study(spec=python_study(max_trials=5, name="a"))
    b = client.create_study(
        spec=python_study(max_trials=7, name="b", optimizer={"name": "sobol"}, seed=3)
    )
    for s in (a, b):
        s.wait(timeout=120, poll=0.2, progress=False)
    result = client.compare([b.id, a.id])
    assert [s["id"] for s in result["studies"]] == [b.id, a.id]
    ref = result["reference_point"]
    ref_min = pm.to_minimization(np.asarray([[ref[n] for n in NAMES]], float), DIRECTIONS)[0]
    everything = np.vstack([_minimised(s.trials(state="complete")) for s in (a, b)])
    assert np.allclose(ref_min, pm.reference_point(everything))  # one point for both studies
    for study, row in zip((b, a), result["studies"]):
        complete = study.trials(state="complete")
        assert sorted(t["id"] for t in row["front"]) == sorted(t["id"] for t in study.pareto())
        history = row["history"]
        assert [h["n"] for h in history] == list(range(1, len(complete) + 1))
        hvs = [h["hypervolume"] for h in history]
        assert hvs == sorted(hvs) and hvs[-1] == pytest.approx(row["hypervolume"])
        assert row["hypervolume"] == pytest.approx(pm.hypervolume(_minimised(complete), ref_min))
        assert [h["compute"] for h in history] == sorted(h["compute"] for h in history)

    from autopeft.cli import main

    capsys.readouterr()
    assert (
        main(["study", "compare", str(a.id), str(b.id), "--url", server.url, "--token", token]) == 0
    )
    out = capsys.readouterr().out
    assert "hypervolume" in out and f"{a.id}" in out and "b" in out.split()

    other = client.create_study(
        spec=python_study(
            max_trials=1,
            name="other objectives",
            objectives=[OBJECTIVES[0], {"name": "cost", "direction": "maximize"}],
        )
    )
    with pytest.raises(ApiError) as err:
        client.compare([a.id, other.id])
    assert err.value.status == 422 and err.value.field == "ids"
    with pytest.raises(ApiError) as err:
        client.compare([a.id, a.id])
    assert err.value.status == 422 and err.value.field == "ids"
    bob = client_for(server, make_token(sqlite_url, "bob"))
    with pytest.raises(ApiError) as err:
        bob.compare([a.id])
    assert err.value.status == 404
