"""The create form's plan panel and the linear / log scale toggles, in headless Chromium against a
real controller: "Plan" sends the form's spec to ``POST /studies?dry_run=true`` and shows the
API's numbers (trainable-parameter range, predicted memory, the full and model-chosen trials the
budget buys, warnings) without storing anything; a refused spec marks its field as creating it
would. The scale toggles switch the front's axes (study page, 3-D figure, compare page) between
linear and log, starting from the automatic choice."""

from __future__ import annotations

import json

from tests.dashboard.conftest import study_spec
from tests.dashboard.test_pages import PARETO, wait_front

COMPARE = "document.getElementById('compare-fronts')"


def _auto(values) -> str:
    """The dashboard's automatic rule: log when every value is positive and they span >= 100x."""
    v = [x for x in values if x is not None]
    return "log" if v and min(v) > 0 and max(v) / min(v) >= 100 else "linear"


def _axes(p, gd_js: str, scene: bool = False) -> dict:
    return p.evaluate(f"""() => {{ const l = {gd_js}.layout{".scene" if scene else ""};
        const a = (x) => x ? [x.type, x.title.text] : null;
        return {{x: a(l.xaxis), y: a(l.yaxis), z: a(l.zaxis)}}; }}""")


def _wait_axis(p, gd_js: str, axis: str, kind: str):
    p.wait_for_function(
        f"() => {{ const gd = {gd_js}; return gd && gd.layout && gd.layout.{axis}.type === '{kind}'; }}"
    )


def _flip(kind: str) -> str:
    return "linear" if kind == "log" else "log"


def test_the_create_form_shows_the_plan_before_creating(page, dash_server, tiny_model, small_csv):
    api = dash_server.api
    before = len(api.get("/studies")["studies"])
    p = page.goto("#/new")
    p.locator("#create-form").wait_for()
    assert p.locator("#plan-panel").is_hidden()
    p.get_by_label("Name", exact=True).fill("planned in the form")
    p.get_by_label("Search space").select_option("lora_per_layer")
    p.get_by_label("Max trials").fill("40")
    p.get_by_label("Epoch budget").fill("9")
    p.get_by_label("Model").fill(str(tiny_model))
    p.get_by_label("Dataset", exact=True).select_option("path")
    p.get_by_label("Server path").fill(str(small_csv))
    p.get_by_label("More workload keys (JSON)").fill('{"epochs": 2, "max_length": 32}')
    with p.expect_request(lambda r: "/api/v1/studies?dry_run=true" in r.url) as sent:
        p.get_by_role("button", name="Plan").click()
    spec = json.loads(sent.value.post_data)
    assert spec["max_epochs"] == 9 and spec["max_trials"] == 40
    assert spec["workload"]["epochs"] == 2 and spec["workload"]["dataset"] == str(small_csv)
    p.wait_for_function(  # the server's first plan of a model reads its config: allow for it
        "() => document.getElementById('plan-panel').dataset.state === 'ready'", timeout=90_000
    )
    # the numbers shown are the API's plan of the same spec
    resp = api.http.post("/studies", params={"dry_run": "true"}, json=spec)
    assert resp.status_code == 200, resp.text
    plan = resp.json()
    shown = {
        key: p.locator(f"#plan-panel dd[data-plan='{key}']").inner_text()
        for key in ("trainable", "memory", "full-trials", "chosen-trials", "epochs", "epoch-time")
    }
    lo, hi = plan["trainable_params"]["min"], plan["trainable_params"]["max"]
    assert 0 <= lo < hi
    assert shown["trainable"] == f"{lo:,} – {hi:,}"
    mlo, mhi = round(plan["memory_mb"]["min"]), round(plan["memory_mb"]["max"])
    assert mhi > mlo > 0 and shown["memory"] == f"{mlo:,} – {mhi:,} MB"
    assert plan["epochs_per_trial"] == 2 and shown["epochs"] == "2 epochs"
    # 9 epochs less the linear probe's forward passes buy 4 full trials of 2 epochs: fewer than
    # mobo's initial design of 5, so its model chooses none, and the panel warns
    assert plan["full_trials"] == 4 and shown["full-trials"] == "4"
    assert plan["initial_design"] == 5
    assert (
        shown["chosen-trials"].startswith("0 ") and "initial design of 5" in shown["chosen-trials"]
    )
    if plan["seconds_per_epoch"] is None:
        assert shown["epoch-time"].startswith("not measured")
    else:
        assert f"median of {plan['measured_trials']}" in shown["epoch-time"]
    warnings = p.locator("#plan-warnings li").all_inner_texts()
    assert warnings == plan["warnings"] and any("n_initial" in w for w in warnings)
    assert len(api.get("/studies")["studies"]) == before  # nothing stored
    p.locator("#plan-panel").scroll_into_view_if_needed()
    page.screenshot("create-plan")

    # a bigger budget, planned again: the model now chooses trials, and the warning is gone
    p.get_by_label("Epoch budget").fill("40")
    assert p.locator("#plan-stale").is_visible()  # the plan shown is no longer this form's
    p.get_by_role("button", name="Plan").click()
    full = p.locator("#plan-panel dd[data-plan='full-trials']")
    p.wait_for_function(
        """() => document.getElementById('plan-panel').dataset.state === 'ready'
              && document.querySelector("#plan-panel dd[data-plan='full-trials']").textContent !== '4'""",
        timeout=60_000,
    )
    roomy = api.http.post(
        "/studies", params={"dry_run": "true"}, json={**spec, "max_epochs": 40}
    ).json()
    assert full.inner_text() == str(roomy["full_trials"]) and roomy["full_trials"] > 5
    assert (
        p.locator("#plan-panel dd[data-plan='chosen-trials']")
        .inner_text()
        .startswith(f"{roomy['full_trials'] - 5} ")
    )
    assert p.locator("#plan-warnings").count() == 0

    # a spec the server refuses: the 422 names the field, which is marked and focused as on create
    p.get_by_label("More workload keys (JSON)").fill('{"epochs": -1, "max_length": 32}')
    p.get_by_role("button", name="Plan").click()
    p.locator("#create-error").filter(has_text="workload.epochs").wait_for(timeout=60_000)
    assert p.evaluate("() => document.activeElement.id") == "f-workload-extra"
    assert p.get_by_label("More workload keys (JSON)").get_attribute("aria-invalid") == "true"
    assert "workload.epochs" in p.locator("#f-workload-extra-error").inner_text()
    assert p.locator("#plan-panel").is_hidden()
    refused = [e for e in page.errors if "422" in e]
    assert len(refused) == 1, page.errors  # the browser logs the refused request; nothing else
    page.errors.remove(refused[0])
    page.screenshot("create-plan-error")
    # and an epoch budget the API refuses marks the budget field
    p.get_by_label("More workload keys (JSON)").fill('{"epochs": 2, "max_length": 32}')
    p.get_by_label("Epoch budget").fill("-3")
    p.get_by_role("button", name="Plan").click()
    p.locator("#create-error").filter(has_text="max_epochs").wait_for(timeout=60_000)
    assert p.evaluate("() => document.activeElement.id") == "f-max-epochs"
    refused = [e for e in page.errors if "422" in e]
    assert len(refused) == 1, page.errors
    page.errors.remove(refused[0])
    assert len(api.get("/studies")["studies"]) == before


def test_scale_toggles_switch_the_front_axes(page, seeded, dash_server):
    """Each axis of the front starts on the automatic scale; its toggle switches it between linear
    and log (the layout's axis type and its title follow), and back."""
    s = seeded["two"]
    api = dash_server.api
    front = api.get(f"/studies/{s['id']}/pareto")["trials"]
    complete = [
        t for t in api.get(f"/studies/{s['id']}/trials")["trials"] if t["state"] == "complete"
    ]
    p = page.goto(f"#/studies/{s['id']}")
    wait_front(p, len(front))
    auto_y = _auto([t["values"]["trainable_params"] for t in complete])
    auto_x = _auto([t["values"]["accuracy"] for t in complete])
    axes = _axes(p, PARETO)
    assert (axes["x"][0], axes["y"][0]) == (auto_x, auto_y)
    toggle_y = p.locator("#pareto-scale-y")
    assert toggle_y.get_attribute("aria-pressed") == ("true" if auto_y == "log" else "false")
    assert auto_y in toggle_y.inner_text()

    toggle_y.click()
    _wait_axis(p, PARETO, "yaxis", _flip(auto_y))
    axes = _axes(p, PARETO)
    assert axes["y"][1].endswith("log scale") == (_flip(auto_y) == "log")
    assert axes["x"][0] == auto_x  # the other axis keeps its scale
    assert p.locator("#pareto-scale-y").get_attribute("aria-pressed") == (
        "true" if _flip(auto_y) == "log" else "false"
    )
    assert p.evaluate("() => document.activeElement.id") == "pareto-scale-y"  # focus stays
    p.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot("study-scale-toggled")
    # the front's points are the same on either scale
    ys = p.evaluate(f"() => Array.from({PARETO}.data.find(t => t.name === 'Pareto front').y)")
    assert sorted(ys) == sorted(t["values"]["trainable_params"] for t in front)
    # the x axis switches on its own; the keyboard toggles too
    p.locator("#pareto-scale-x").focus()
    p.keyboard.press("Enter")
    _wait_axis(p, PARETO, "xaxis", _flip(auto_x))
    assert _axes(p, PARETO)["y"][0] == _flip(auto_y)
    # back to where they started
    p.locator("#pareto-scale-y").click()
    p.locator("#pareto-scale-x").click()
    _wait_axis(p, PARETO, "yaxis", auto_y)
    _wait_axis(p, PARETO, "xaxis", auto_x)


def test_scale_toggles_in_the_3d_view(page, seeded, dash_server):
    """The 3-D figure takes the same per-objective choice on its scene axes (checked on the module
    the page runs; in the page too when the browser has WebGL)."""
    s = seeded["three"]
    front = dash_server.api.get(f"/studies/{s['id']}/pareto")["trials"]
    p = page.goto(f"#/studies/{s['id']}")
    wait_front(p, len(front))
    types = p.evaluate("""async () => { const m = await import('/static/js/charts.js');
        const t = (id, a, b, c) => ({ id, kind: 'search', state: 'complete', number: id, config: {},
                                      values: { accuracy: a, trainable_params: b, latency_ms: c } });
        const complete = [t(1, 0.5, 1000, 3), t(2, 0.7, 2000000, 4), t(3, 0.6, 40000, 5)];
        const objectives = [{ name: 'accuracy', direction: 'maximize' },
                            { name: 'trainable_params', direction: 'minimize' },
                            { name: 'latency_ms', direction: 'minimize' }];
        const fig = (scales) => { const f = m.paretoFigure({ complete, front: complete.slice(1), objectives,
                                                              x: 0, y: 1, z: 2, scales });
            return [f.layout.scene.xaxis.type, f.layout.scene.yaxis.type, f.layout.scene.zaxis.type,
                    f.axes.map(a => a.key + ':' + a.type).join(',')]; };
        return [fig({}), fig({ trainable_params: 'linear', latency_ms: 'log' }),
                fig({ accuracy: 'log' })]; }""")
    assert types[0] == ["linear", "log", "linear", "x:linear,y:log,z:linear"]
    assert types[1] == ["linear", "linear", "log", "x:linear,y:linear,z:log"]
    assert types[2] == ["log", "log", "linear", "x:log,y:log,z:linear"]
    # a log scale is refused where a value is 0 or less (the toggle is disabled there)
    refused = p.evaluate("""async () => { const m = await import('/static/js/charts.js');
        return [m.axisScale([0, 5, 900], 'log').type, m.axisScale([1, 5, 900], 'log').type,
                m.axisScale([1, 5, 900], 'linear').type, m.axisScale([1, 5, 900]).type]; }""")
    assert refused == ["linear", "log", "linear", "log"]
    if p.evaluate("() => !document.getElementById('mode-3d').disabled"):
        p.get_by_label("3-D scatter").check()
        p.wait_for_function(f"() => {PARETO}.data.some(t => t.type === 'scatter3d')")
        p.locator("#pareto-scale-z").wait_for()
        before = _axes(p, PARETO, scene=True)["z"][0]
        p.locator("#pareto-scale-z").click()
        p.wait_for_function(f"() => {PARETO}.layout.scene.zaxis.type === '{_flip(before)}'")


def test_compare_page_picks_the_scale_and_toggles_it(page, seeded, dash_server):
    """The compare page's fronts take the automatic choice over the fronts it plots, and each axis
    has the same toggle."""
    api = dash_server.api
    other = api.wait_done(api.create(study_spec("compared on a scale", max_trials=5, seed=9))["id"])
    two = seeded["two"]
    fronts = [api.get(f"/studies/{s['id']}/pareto")["trials"] for s in (two, other)]
    auto_x = _auto([t["values"]["trainable_params"] for f in fronts for t in f])
    auto_y = _auto([t["values"]["accuracy"] for f in fronts for t in f])
    p = page.goto(f"#/compare/{two['id']},{other['id']}")
    p.wait_for_function(
        f"() => {{ const gd = {COMPARE}; return gd && gd.data && gd.data.length === 2; }}"
    )
    axes = _axes(p, COMPARE)
    assert (axes["x"][0], axes["y"][0]) == (auto_x, auto_y)
    assert axes["x"][1].startswith("trainable_params")
    assert axes["x"][1].endswith("log scale") == (auto_x == "log")
    p.locator("#compare-scale-x").click()
    _wait_axis(p, COMPARE, "xaxis", _flip(auto_x))
    assert _axes(p, COMPARE)["y"][0] == auto_y
    assert p.locator("#compare-scale-x").get_attribute("aria-pressed") == (
        "true" if _flip(auto_x) == "log" else "false"
    )
    page.screenshot("compare-scale-toggled")
    p.locator("#compare-scale-x").click()
    _wait_axis(p, COMPARE, "xaxis", auto_x)
