"""Constraints on the study page, in headless Chromium against the real controller: trials that
violate a constraint are never on the plotted front nor in the hypervolume history; they are grey
crosses on the plot and greyed rows of the trials table, with the reason."""

from __future__ import annotations

import statistics

import pytest

from tests.dashboard.conftest import study_spec
from tests.dashboard.test_pages import PARETO, plot_traces, wait_front

INFEASIBLE = "infeasible (violates a constraint)"


def test_infeasible_trials_are_greyed_and_never_on_the_front(page, seeded, dash_server):
    api = dash_server.api
    # the seeded 2-objective study again (same seed: same configs and values), now with a bound on
    # trainable_params at the median: its most accurate trials become infeasible
    plain = api.get(f"/studies/{seeded['two']['id']}/trials")["trials"]
    bound = statistics.median(t["values"]["trainable_params"] for t in plain)
    spec = study_spec(
        "two, params bounded",
        max_trials=12,
        optimizer={
            "name": "random",
            "options": {"constraints": [["trainable_params", "<=", bound]]},
        },
    )
    s = api.wait_done(api.create(spec)["id"])
    trials = [
        t for t in api.get(f"/studies/{s['id']}/trials")["trials"] if t["state"] == "complete"
    ]
    infeasible = {t["id"] for t in trials if t["feasible"] is False}
    assert infeasible and all(
        (t["values"]["trainable_params"] > bound) == (t["id"] in infeasible) for t in trials
    )
    unconstrained = {
        t["number"] for t in api.get(f"/studies/{seeded['two']['id']}/pareto")["trials"]
    }
    assert unconstrained & {
        t["number"] for t in trials if t["id"] in infeasible
    }  # the constraint matters here
    front = api.get(f"/studies/{s['id']}/pareto")["trials"]
    assert front and not {t["id"] for t in front} & infeasible

    p = page.goto(f"#/studies/{s['id']}")
    wait_front(p, len(front))
    traces = {t["name"]: t for t in plot_traces(p, PARETO)}
    assert sorted(traces["Pareto front"]["ids"]) == sorted(t["id"] for t in front)
    assert sorted(traces[INFEASIBLE]["ids"]) == sorted(infeasible)
    assert not set(traces["dominated"]["ids"]) & infeasible
    hover = p.evaluate(f"() => {PARETO}.data.find(t => t.name === {INFEASIBLE!r}).text[0]")
    assert "infeasible: trainable_params = " in hover
    # the hypervolume history counts feasible trials only and ends at the API's value
    hv = api.get(f"/studies/{s['id']}/hypervolume")
    assert hv["n_infeasible"] == len(infeasible)
    p.wait_for_function(
        "() => { const d = document.getElementById('hv-trials'); return d && d.data && d.data[0].y.length > 0; }"
    )
    ys = p.evaluate("() => Array.from(document.getElementById('hv-trials').data[0].y)")
    assert len(ys) == len(trials) - len(infeasible) and ys[-1] == pytest.approx(
        hv["hypervolume"], rel=1e-9
    )
    # greyed rows with the reason
    rows = p.locator("#trials-table tbody tr.infeasible")
    assert sorted(
        int(i) for i in rows.evaluate_all("rs => rs.map(r => r.dataset.trialId)")
    ) == sorted(infeasible)
    for text in rows.all_inner_texts():
        assert "trainable_params = " in text and "violates <=" in text
    color = rows.first.evaluate("r => getComputedStyle(r).color")
    assert color == "rgb(156, 163, 175)"
    assert "infeasible" in p.locator("#pareto-note").inner_text()
    page.screenshot("study-constraints")
    p.locator("#trials-table").scroll_into_view_if_needed()
    page.screenshot("study-constraints-table")
