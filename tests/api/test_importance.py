"""``GET /studies/{id}/importance`` (client ``importance``, CLI ``study importance``): Optuna's
importance evaluators over a study's complete search trials, per objective, through the real
server with trials the executor ran."""

from __future__ import annotations

import pytest

from autopeft.client import ApiError
from tests.api.conftest import client_for, make_token, python_study

# tests.api.workloads:quick: accuracy = 1 - (x - 0.3)^2 - 0.5 y^2, cost = x + 0.1 y


def test_importance_through_rest_client_and_cli(sqlite_url, server_factory, capsys):
    server = server_factory(sqlite_url)
    token = make_token(sqlite_url, "alice")
    client = client_for(server, token)
    study = client.create_study(spec=python_study(max_trials=24, name="importance", seed=4))
    study.wait(timeout=300, poll=0.2, progress=False)

    result = study.importance()
    assert result["evaluator"] == "fanova" and result["n_trials"] == 24
    assert result["excluded"] == [] and result["reason"] is None
    cost, acc = result["objectives"]["cost"], result["objectives"]["accuracy"]
    # cost is x + 0.1 y: x explains nearly all of its variance
    assert set(cost) == {"x", "y"} and cost["x"] > 0.8
    assert list(cost) == ["x", "y"]  # most important first
    assert sum(cost.values()) == pytest.approx(1.0) and sum(acc.values()) == pytest.approx(1.0)
    for evaluator in ("ped_anova", "mdi"):
        other = study.importance(evaluator)
        assert other["evaluator"] == evaluator
        assert max(other["objectives"]["cost"], key=other["objectives"]["cost"].get) == "x"

    # refusals: an unknown evaluator names the field; another user's study is not found
    with pytest.raises(ApiError) as err:
        study.importance("anova")
    assert err.value.status == 422 and "evaluator" in str(err.value)
    bob = client_for(server, make_token(sqlite_url, "bob"))
    with pytest.raises(ApiError) as err:
        bob._json("GET", f"/api/v1/studies/{study.id}/importance")
    assert err.value.status == 404

    # too few complete trials: nothing computed, and why
    few = client.create_study(spec=python_study(max_trials=2, name="few"))
    few.wait(timeout=120, poll=0.2, progress=False)
    result = few.importance()
    assert result["n_trials"] == 2 and result["reason"].startswith("needs at least")
    assert result["objectives"] == {"accuracy": None, "cost": None}

    # the CLI prints a table, most important parameter first
    from autopeft.cli import main

    capsys.readouterr()
    args = ["study", "importance", str(study.id), "--url", server.url, "--token", token]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["parameter", "accuracy", "cost"]
    assert out[2].split()[0] == "x"
    assert any("fanova over 24 complete search trials" in line for line in out)
