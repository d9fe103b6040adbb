"""The dashboard's pages in headless Chromium against a real controller with seeded studies:
each page renders what the REST API says (the Pareto plot holds exactly /pareto's trials), a
click on a point opens its trial, the trial page shows curves, the per-layer heatmap and
exports the adapter, lineage edges are the trials' parent_id, and the pages work at 1280x800,
in a narrow window and from the keyboard. Screenshots go to docs/screenshots/."""

from __future__ import annotations

import io
import math
import zipfile

import pytest

from tests.dashboard.conftest import study_spec

PARETO = "document.getElementById('pareto-plot')"


def plot_traces(page, selector_js: str):
    return page.evaluate(f"""() => {{ const gd = {selector_js};
        return (gd && gd.data || []).map(t => ({{name: t.name, type: t.type, ids: t.customdata || [], x: t.x || [], y: t.y || [],
                                                z: t.z || null, opacity: (t.marker && t.marker.opacity) ?? 1}})); }}""")


def wait_front(page, n: int):
    page.wait_for_function(f"""() => {{ const gd = {PARETO};
        return gd && gd.data && gd.data.some(t => t.name === 'Pareto front' && (t.customdata || []).length === {n}); }}""")


def test_studies_list(page, seeded, dash_server):
    p = page.goto("#/")
    for key in ("two", "three"):
        s = seeded[key]
        row = p.locator(f"#studies-table tr[data-study-id='{s['id']}']")
        row.wait_for()
        assert s["name"] in row.inner_text()
        assert f"{s['counts']['complete']}/{s['spec']['max_trials']}" in row.inner_text()
        assert "finished" in row.inner_text()
        hv = dash_server.api.get(f"/studies/{s['id']}/hypervolume")["hypervolume"]
        p.wait_for_function(
            f"() => !document.querySelector(\"tr[data-study-id='{s['id']}'] td.num\").textContent.includes('–')"
        )
        shown = float(row.locator("td.num").inner_text().replace(",", ""))
        assert shown == pytest.approx(hv, rel=1e-3)
        best = max(
            t["values"]["accuracy"]
            for t in dash_server.api.get(f"/studies/{s['id']}/pareto")["trials"]
        )
        assert f"{best:.4g}" in row.inner_text()
    page.screenshot("studies")


def test_pareto_plot_is_the_api_front(page, seeded, dash_server):
    s = seeded["two"]
    front = dash_server.api.get(f"/studies/{s['id']}/pareto")["trials"]
    complete = [
        t
        for t in dash_server.api.get(f"/studies/{s['id']}/trials")["trials"]
        if t["state"] == "complete"
    ]
    assert 0 < len(front) < len(complete)
    p = page.goto(f"#/studies/{s['id']}")
    wait_front(p, len(front))
    traces = {t["name"]: t for t in plot_traces(p, PARETO)}
    shown = traces["Pareto front"]
    assert sorted(shown["ids"]) == sorted(t["id"] for t in front)
    by_id = {t["id"]: t for t in front}
    for tid, x, y in zip(shown["ids"], shown["x"], shown["y"]):
        assert (x, y) == (
            by_id[tid]["values"]["accuracy"],
            by_id[tid]["values"]["trainable_params"],
        )
    faded = traces["dominated"]
    assert sorted(faded["ids"]) == sorted(t["id"] for t in complete if t["id"] not in by_id)
    assert faded["opacity"] < 0.5 <= shown["opacity"]
    # hover text carries the config
    hover = p.evaluate(f"() => {PARETO}.data.find(t => t.name === 'Pareto front').text[0]")
    assert "lora.rank[]" in hover and "accuracy" in hover
    # hypervolume: the history ends at the API's value; one point per complete trial
    hv = dash_server.api.get(f"/studies/{s['id']}/hypervolume")
    p.wait_for_function(
        "() => { const d = document.getElementById('hv-trials'); return d && d.data && d.data[0].y.length > 0; }"
    )
    ys = p.evaluate("() => Array.from(document.getElementById('hv-trials').data[0].y)")
    assert len(ys) == len(complete)
    assert ys[-1] == pytest.approx(hv["hypervolume"], rel=1e-9)
    assert all(b >= a - 1e-9 * abs(a) for a, b in zip(ys, ys[1:])), (
        "hypervolume history must not decrease"
    )
    assert len(p.evaluate("() => document.getElementById('hv-time').data[0].x")) == len(complete)
    assert p.locator("#trials-table tbody tr").count() == len(complete)
    page.screenshot("study")
    page.screenshot("study-full-page", full_page=True)


def test_click_on_a_point_opens_its_trial(page, seeded, dash_server):
    s = seeded["two"]
    front = dash_server.api.get(f"/studies/{s['id']}/pareto")["trials"]
    p = page.goto(f"#/studies/{s['id']}")
    wait_front(p, len(front))
    points = p.evaluate(f"""() => {{ const gd = {PARETO}; const fl = gd._fullLayout; const r = gd.getBoundingClientRect();
        return gd.data.filter(t => t.mode === 'markers').flatMap(t => t.customdata.map((id, i) => ({{id, front: t.name === 'Pareto front',
            x: r.left + fl._size.l + fl.xaxis.l2p(t.x[i]), y: r.top + fl._size.t + fl.yaxis.l2p(t.y[i])}}))); }}""")
    mine = [q for q in points if q["front"]]

    def clearance(q):
        return min(
            (math.dist((q["x"], q["y"]), (o["x"], o["y"])) for o in points if o is not q),
            default=1e9,
        )

    target = max(mine, key=clearance)
    p.mouse.move(target["x"], target["y"])
    p.mouse.click(target["x"], target["y"])
    p.wait_for_url(f"**/#/trials/{target['id']}")
    trial = dash_server.api.get(f"/trials/{target['id']}")
    p.get_by_role("heading", name=f"Trial #{trial['number']}").wait_for()


def test_trial_page_curves_heatmap_config_export(page, seeded, dash_server):
    s = seeded["two"]
    trial = dash_server.api.get(f"/studies/{s['id']}/pareto")["trials"][0]
    reports = dash_server.api.get(f"/trials/{trial['id']}/reports")["reports"]
    p = page.goto(f"#/trials/{trial['id']}")
    p.get_by_role("heading", name=f"Trial #{trial['number']}").wait_for()
    # learning curves: one plot per reported metric, the points of the reports
    p.wait_for_function(
        "() => document.querySelectorAll('#curves .plot.curve').length > 0 && "
        "Array.from(document.querySelectorAll('#curves .plot.curve')).every(d => d.data)"
    )
    curves = p.evaluate(
        "() => Array.from(document.querySelectorAll('#curves .plot.curve')).map(d => "
        "({metric: d.dataset.metric, x: Array.from(d.data[0].x), y: Array.from(d.data[0].y)}))"
    )
    assert {c["metric"] for c in curves} == {"loss", "accuracy"}
    for c in curves:
        assert c["x"] == [r["step"] for r in reports]
        assert c["y"] == [r["values"][c["metric"]] for r in reports]
    # heatmap: layer x module, masked layers "off", sizes from the per-layer or shared keys
    p.wait_for_function(
        "() => { const d = document.getElementById('layers-plot'); return d && d.data && d.data.length; }"
    )
    heat = p.evaluate(
        "() => { const t = document.getElementById('layers-plot').data[0]; return {x: t.x, y: t.y, text: t.text}; }"
    )
    cfg = trial["config"]
    assert heat["x"] == [f"L{i}" for i in range(6)]
    rows = dict(zip(heat["y"], heat["text"]))
    lora = next(v for k, v in rows.items() if k.startswith("LoRA rank"))
    for i in range(6):
        on = cfg.get(f"layers.{i}", True)
        assert lora[i] == (str(cfg.get(f"lora.rank.{i}", cfg.get("lora.rank", 0))) if on else "off")
        assert rows["serial adapter"][i] == (str(cfg["serial.size"]) if on else "off")
    # config table lists every key
    table = p.locator("#config-table").inner_text()
    assert all(k in table for k in cfg)
    # values
    assert (
        p.locator("#trial-values dd[data-value='accuracy']").inner_text()
        == f"{trial['values']['accuracy']:.6g}"
    )
    page.screenshot("trial")
    # export: the zip the API serves, downloaded by the button
    with p.expect_download() as info:
        p.get_by_role("button", name="Export adapter (.zip)").click()
    download = info.value
    assert download.suggested_filename == f"trial-{trial['id']}-adapter.zip"
    with zipfile.ZipFile(io.BytesIO(open(download.path(), "rb").read())) as zf:
        assert {"weights.bin", "autopeft_config.json"} <= set(zf.namelist())
    p.locator("#export-status").filter(has_text="Downloaded").wait_for()


def test_three_objectives_views(page, seeded, dash_server):
    s = seeded["three"]
    front = dash_server.api.get(f"/studies/{s['id']}/pareto")["trials"]
    ids = sorted(t["id"] for t in front)
    p = page.goto(f"#/studies/{s['id']}")
    wait_front(p, len(front))
    # the hypervolume history (3-D slicing in the page) ends at the API's value
    hv = dash_server.api.get(f"/studies/{s['id']}/hypervolume")["hypervolume"]
    p.wait_for_function(
        "() => { const d = document.getElementById('hv-trials'); return d && d.data && d.data[0].y.length > 0; }"
    )
    assert p.evaluate(
        "() => Array.from(document.getElementById('hv-trials').data[0].y).pop()"
    ) == pytest.approx(hv, rel=1e-9)
    # any 2 objectives: the front is still the 3-objective front from the API
    p.select_option("#pareto-y", label="latency_ms")
    p.wait_for_function(f"() => {PARETO}.layout.yaxis.title.text.startsWith('latency_ms')")
    traces = {t["name"]: t for t in plot_traces(p, PARETO)}
    assert sorted(traces["Pareto front"]["ids"]) == ids
    by_id = {t["id"]: t for t in front}
    assert all(
        y == by_id[i]["values"]["latency_ms"]
        for i, y in zip(traces["Pareto front"]["ids"], traces["Pareto front"]["y"])
    )
    # parallel coordinates: one line per complete trial, front lines highlighted
    p.get_by_label("Parallel coordinates").check()
    p.wait_for_function("() => document.getElementById('pareto-plot').dataset.mode === 'parallel'")
    lines = plot_traces(p, PARETO)
    assert sorted(t["ids"][0] for t in lines if t["name"] == "Pareto front") == ids
    assert len(lines) == s["counts"]["complete"]
    page.screenshot("study-parallel-coordinates")
    # 3-D scatter when the browser has WebGL
    if p.evaluate("() => !document.getElementById('mode-3d').disabled"):
        p.get_by_label("3-D scatter").check()
        p.wait_for_function(f"() => {PARETO}.data.some(t => t.type === 'scatter3d')")
        traces = {t["name"]: t for t in plot_traces(p, PARETO)}
        assert sorted(traces["Pareto front"]["ids"]) == ids
        assert traces["Pareto front"]["z"] is not None


def test_trials_table_sorts_and_filters(page, seeded, dash_server):
    s = seeded["two"]
    trials = [t for t in dash_server.api.get(f"/studies/{s['id']}/trials")["trials"]]
    front = {t["id"] for t in dash_server.api.get(f"/studies/{s['id']}/pareto")["trials"]}
    p = page.goto(f"#/studies/{s['id']}")
    rows = p.locator("#trials-table tbody tr")
    p.wait_for_function(
        f"() => document.querySelectorAll('#trials-table tbody tr').length === {len(trials)}"
    )
    # sort by accuracy, from the keyboard: focus the header button, press Enter (descending first)
    button = p.locator("#trials-table thead button[data-key='obj:accuracy']")
    button.focus()
    p.keyboard.press("Enter")
    header = p.locator("#trials-table thead th").filter(
        has=p.locator("button[data-key='obj:accuracy']")
    )
    assert header.get_attribute("aria-sort") == "descending"
    shown = [int(r) for r in rows.evaluate_all("rs => rs.map(r => r.dataset.trialId)")]
    assert shown == [t["id"] for t in sorted(trials, key=lambda t: -t["values"]["accuracy"])]
    p.keyboard.press("Enter")
    assert header.get_attribute("aria-sort") == "ascending"
    # filters: the front only; then a config value
    p.get_by_label("Pareto front only").check()
    assert sorted(
        int(r) for r in rows.evaluate_all("rs => rs.map(r => r.dataset.trialId)")
    ) == sorted(front)
    p.get_by_label("Pareto front only").uncheck()
    key, value = "lora.targets", trials[0]["config"]["lora.targets"]
    p.get_by_label("Filter").fill(f"{key}={value}")
    expected = sorted(t["id"] for t in trials if t["config"]["lora.targets"] == value)
    p.wait_for_function(
        f"() => document.querySelectorAll('#trials-table tbody tr').length === {len(expected)}"
    )
    assert (
        sorted(int(r) for r in rows.evaluate_all("rs => rs.map(r => r.dataset.trialId)"))
        == expected
    )
    # a row's link opens the trial
    rows.first.get_by_role("link").first.click()
    p.wait_for_url("**/#/trials/*")


def test_lineage_shows_every_exploit(page, dash_server):
    api = dash_server.api
    s = api.create(
        study_spec(
            "pbt lineage",
            entrypoint="tests.dashboard.workloads:pbt_arch",
            max_trials=4,
            max_parallel=4,
            optimizer={
                "name": "pbt",
                "options": {"population_size": 4, "perturbation_interval": 2},
            },
        )
    )
    s = api.wait_done(s["id"])
    trials = api.get(f"/studies/{s['id']}/trials")["trials"]
    # one edge per exploit in a trial's lineage (every one, not only the last parent)
    edges = sorted((e["source"], t["id"]) for t in trials for e in (t["lineage"] or []))
    assert {(t["parent_id"], t["id"]) for t in trials if t["parent_id"]} <= set(edges)
    p = page.goto(f"#/studies/{s['id']}/lineage")
    p.locator("#lineage-note").filter(has_text="pbt").wait_for()
    p.wait_for_function(
        "() => { const d = document.getElementById('lineage-plot'); return d && d.data; }"
    )
    shown = p.evaluate("""() => Array.from(document.querySelectorAll('#lineage-edges tbody tr')).map(r =>
        Array.from(r.querySelectorAll('a')).map(a => Number(a.getAttribute('href').split('/').pop())))""")
    assert sorted(tuple(e) for e in shown) == edges
    arrows = p.evaluate(
        "() => (document.getElementById('lineage-plot').layout.annotations || []).length"
    )
    assert arrows == len(edges)
    nodes = p.evaluate(
        "() => document.getElementById('lineage-plot').data.filter(t => t.mode === 'markers+text')"
        ".flatMap(t => Array.from(t.customdata))"
    )
    assert sorted(nodes) == sorted(t["id"] for t in trials)
    page.screenshot("lineage")
    if edges:  # the trial page names its parent
        child = edges[0][1]
        parent = next(t["parent_id"] for t in trials if t["id"] == child)
        p.goto(f"{dash_server.url}/#/trials/{child}")
        p.locator(f"#trial-lineage a[href='#/trials/{parent:d}']").wait_for()


def test_narrow_window(narrow_page, seeded, dash_server):
    s = seeded["two"]

    def no_sideways_scroll(where):
        overflow = p.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{where} scrolls sideways by {overflow}px at 420px"

    p = narrow_page.goto(f"#/studies/{s['id']}")
    p.wait_for_function(f"() => {PARETO} && {PARETO}.data && {PARETO}.data.length > 0")
    p.locator("#trials-table tbody tr").first.wait_for()
    no_sideways_scroll("the study page")
    box = p.locator("#pareto-plot").bounding_box()
    assert 300 <= box["width"] <= 420
    narrow_page.screenshot("study-narrow")
    trial = dash_server.api.get(f"/studies/{s['id']}/pareto")["trials"][0]
    p.goto(f"{dash_server.url}/#/trials/{trial['id']}")
    p.wait_for_function(
        "() => { const d = document.getElementById('layers-plot'); return d && d.data; }"
    )
    no_sideways_scroll("the trial page")
    narrow_page.screenshot("trial-narrow")
    for hash_, ready in (("#/", "#studies-table tbody tr"), ("#/new", "#create-form fieldset")):
        p.goto(f"{dash_server.url}/{hash_}")
        p.locator(ready).first.wait_for()
        no_sideways_scroll(hash_)


def test_keyboard_reaches_navigation(page, seeded):
    p = page.goto("#/")
    p.locator("#studies-table tbody tr").first.wait_for()
    focused = []
    for _ in range(8):
        p.keyboard.press("Tab")
        focused.append(p.evaluate("() => document.activeElement.textContent.trim()"))
        if focused[-1] == "New study":
            break
    assert "New study" in focused, focused
    p.keyboard.press("Enter")
    p.wait_for_url("**/#/new")
    # the form focuses its first field; the focus style is visible (not outline: none)
    p.wait_for_function("() => document.activeElement && document.activeElement.id === 'f-name'")
    outline = p.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"


def test_compare_studies_page(page, seeded, dash_server):
    """Two studies picked on the list open #/compare/...: one front trace per study holding
    exactly its /pareto trials, one hypervolume curve per study with a point per complete trial."""
    api = dash_server.api
    other = api.wait_done(
        api.create(study_spec("synthetic-arch again", max_trials=6, seed=5))["id"]
    )
    two = seeded["two"]
    p = page.goto("#/")
    for s in (two, other):
        p.locator(f"tr[data-study-id='{s['id']}'] input.compare-pick").check()
    p.locator("#compare-studies").click()
    p.wait_for_url(f"**#/compare/{two['id']},{other['id']}")
    p.wait_for_function(
        "() => { const gd = document.getElementById('compare-hv'); return gd && gd.data && gd.data.length === 2; }"
    )
    fronts = plot_traces(p, "document.getElementById('compare-fronts')")
    curves = plot_traces(p, "document.getElementById('compare-hv')")
    for s, front, curve in zip((two, other), fronts, curves):
        assert sorted(front["ids"]) == sorted(
            t["id"] for t in api.get(f"/studies/{s['id']}/pareto")["trials"]
        )
        assert len(curve["y"]) == s["counts"]["complete"]
        assert curve["y"] == sorted(curve["y"])
    assert p.locator("#compare-table tbody tr").count() == 2
    page.screenshot("compare")


def test_front_axes_turn_log_when_an_objective_spans_two_decades(page, seeded, dash_server):
    """A front whose trainable parameters run from an adapter's thousands to full fine-tuning's
    millions is unreadable on a linear axis: an axis whose values are all positive and span >= 100x
    is drawn on a log scale (and says so in its title)."""
    s = seeded["two"]
    api = dash_server.api
    front = api.get(f"/studies/{s['id']}/pareto")["trials"]
    complete = [
        t for t in api.get(f"/studies/{s['id']}/trials")["trials"] if t["state"] == "complete"
    ]
    p = page.goto(f"#/studies/{s['id']}")
    wait_front(p, len(front))
    axes = p.evaluate(f"""() => {{ const l = {PARETO}.layout;
        return {{x: [l.xaxis.type, l.xaxis.title.text], y: [l.yaxis.type, l.yaxis.title.text]}}; }}""")

    def expected(name):
        v = [t["values"][name] for t in complete]
        return "log" if min(v) > 0 and max(v) / min(v) >= 100 else "linear"

    for axis, name in (("x", "accuracy"), ("y", "trainable_params")):
        assert axes[axis][0] == expected(name), (axis, axes)
        assert axes[axis][1].endswith("log scale") == (expected(name) == "log")
    # the rule itself, on the module the page runs
    rule = p.evaluate("""async () => { const m = await import('/static/js/charts.js');
        return [m.axisType([1155, 74883, 22566531]), m.axisType([1155, 74883]),
                m.axisType([0, 10, 5000]), m.axisType([0.69, 0.74]), m.axisType([])]; }""")
    assert rule == ["log", "linear", "linear", "linear", "linear"]


def test_study_page_shows_which_parameters_matter(page, seeded, dash_server):
    """The importance panel draws GET .../importance: one bar per parameter and objective, the
    most important parameters first, the values the API computed."""
    s = seeded["two"]
    imp = dash_server.api.get(f"/studies/{s['id']}/importance")
    assert imp["reason"] is None and imp["n_trials"] == 12
    p = page.goto(f"#/studies/{s['id']}")
    p.wait_for_function(
        "() => { const d = document.getElementById('importance-plot'); return d && d.data && d.data.length; }"
    )
    bars = p.evaluate(
        "() => document.getElementById('importance-plot').data.map(t => ({name: t.name, y: Array.from(t.y), x: Array.from(t.x)}))"
    )
    assert {b["name"] for b in bars} == {n for n, v in imp["objectives"].items() if v}
    for b in bars:
        want = imp["objectives"][b["name"]]
        for param, value in zip(b["y"], b["x"]):
            assert value == pytest.approx(want.get(param, 0.0))
    top = lambda q: max((v or {}).get(q, 0.0) for v in imp["objectives"].values())  # noqa: E731
    order = bars[0]["y"]
    assert [top(q) for q in order] == sorted((top(q) for q in order), reverse=True)
    assert "fANOVA (Optuna) over 12 complete search trials" in p.inner_text("#importance-summary")
    p.locator("#importance-h").scroll_into_view_if_needed()
    page.screenshot("study-importance")


def _edit_notes(p, box: str, notes: str, tags: str, shown: int | None = None) -> None:
    """Open the notes editor in ``box``, fill it and save; ``shown``: wait for that many tags."""
    if not p.locator(f"{box} [data-role=notes-input]").count():
        p.locator(box).get_by_role("button", name="Edit notes and tags").click()
    p.fill(f"{box} [data-role=notes-input]", notes)
    p.fill(f"{box} [data-role=tags-input]", tags)
    p.click(f"{box} [data-role=save]")
    if shown is not None:
        p.wait_for_function(
            f"() => document.querySelectorAll('{box} [data-role=tags] .tag').length === {shown}"
        )


def test_notes_and_tags_edited_on_the_study_page_and_searched_in_the_list(
    page, seeded, dash_server
):
    """The owner edits a study's notes and tags on its page (PATCH /studies/{id}), a bad tag is
    refused with the API's message, and the studies list finds the study by a tag or a word of its
    notes while hiding the others."""
    s, other = seeded["three"], seeded["two"]
    p = page.goto(f"#/studies/{s['id']}")
    box = "#study-notes-box"
    notes = "latency matters more than accuracy here"
    _edit_notes(p, box, notes, "edge, bad;tag")
    p.get_by_role("alert").filter(has_text="tags").wait_for()
    refused = [e for e in page.errors if "422" in e]
    assert len(refused) == 1  # the browser logs the refused PATCH, nothing else
    page.errors[:] = [e for e in page.errors if "422" not in e]
    _edit_notes(p, box, notes, "edge, int8 ready", shown=2)
    got = dash_server.api.get(f"/studies/{s['id']}")
    assert got["notes"] == "latency matters more than accuracy here"
    assert got["tags"] == ["edge", "int8 ready"]
    assert p.inner_text(f"{box} [data-role=notes]") == got["notes"]
    page.screenshot("study-notes")

    p = page.goto("#/")
    p.wait_for_selector(f"tr[data-study-id='{other['id']}']")
    for query in ("int8", "LATENCY matters", "edge"):
        p.fill("#studies-search", query)
        p.wait_for_function(f"() => !document.querySelector(\"tr[data-study-id='{other['id']}']\")")
        assert p.locator(f"tr[data-study-id='{s['id']}']").count() == 1
        assert p.locator(f"tr[data-study-id='{s['id']}'] .tag").count() == 2
    p.fill("#studies-search", "no such words")
    p.get_by_text("No study matches the search.").wait_for()
    p.fill("#studies-search", "")
    p.wait_for_selector(f"tr[data-study-id='{other['id']}']")

    # a trial's notes, on its page
    trial = dash_server.api.get(f"/studies/{s['id']}/trials")["trials"][0]
    p = page.goto(f"#/trials/{trial['id']}")
    _edit_notes(p, "#trial-notes-box", "the cheapest point worth a look", "shortlist", shown=1)
    got = dash_server.api.get(f"/trials/{trial['id']}")
    assert got["notes"] == "the cheapest point worth a look" and got["tags"] == ["shortlist"]
