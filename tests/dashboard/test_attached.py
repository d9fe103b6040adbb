"""Attached results and enqueued configs on the study and trial pages: the trials table marks
where each trial comes from (an attached result with its label and as on the front, an enqueued
config), user-reported test values are marked as such, an attached result is a star on the front
plot, and an attached trial offers no export."""

from __future__ import annotations

from tests.dashboard.conftest import study_spec
from tests.dashboard.test_pages import PARETO, wait_front


def test_attached_and_enqueued_trials_are_marked(page, dash_server):
    api = dash_server.api
    s = api.wait_done(api.create(study_spec("with an attached result", max_trials=3))["id"])
    trained = api.get(f"/studies/{s['id']}/trials")["trials"][0]
    r = api.http.post(f"/studies/{s['id']}/enqueue", json={"configs": [trained["config"]]})
    assert r.status_code == 200, r.text
    api.wait_done(s["id"])
    r = api.http.post(
        f"/studies/{s['id']}/attach",
        json={
            "config": trained["config"],
            "values": {"accuracy": 2.0, "trainable_params": 1.0},
            "test_values": {"accuracy": 0.5},
            "label": "from a paper",
        },
    )
    assert r.status_code == 201, r.text
    attached = r.json()
    trials = api.get(f"/studies/{s['id']}/trials")["trials"]
    enqueued = [t for t in trials if t["label"] == "enqueued"]
    assert len(enqueued) == 1 and enqueued[0]["state"] == "complete"

    p = page.goto(f"#/studies/{s['id']}")
    p.wait_for_function(
        f"() => document.querySelectorAll('#trials-table tbody tr').length === {len(trials)}"
    )
    row = p.locator(f"#trials-table tbody tr[data-trial-id='{attached['id']}']")
    assert row.locator("td.origin").inner_text() == "attached: from a paper"
    assert row.locator("td.origin").get_attribute("data-kind") == "attached"
    assert "on-front" in (row.get_attribute("class") or "")  # it dominates every trained trial
    assert "(reported)" in row.inner_text()
    other = p.locator(f"#trials-table tbody tr[data-trial-id='{enqueued[0]['id']}']")
    assert other.locator("td.origin").inner_text() == "enqueued"
    # on the front plot: a star, its hover text saying where it comes from
    wait_front(p, 1)
    front = p.evaluate(
        f"() => {{ const t = {PARETO}.data.find(t => t.name === 'Pareto front');"
        " return {ids: Array.from(t.customdata), symbol: t.marker.symbol, text: t.text}; }"
    )
    assert front["ids"] == [attached["id"]] and front["symbol"] == ["star"]
    assert "measured elsewhere" in front["text"][0] and "reported by the user" in front["text"][0]

    p = page.goto(f"#/trials/{attached['id']}")
    p.locator("#export-adapter").wait_for()
    assert p.locator("#export-adapter").is_disabled()
    assert "measured elsewhere" in p.locator("#export-status").inner_text()
    assert "reported by the user" in p.locator("main").inner_text()
