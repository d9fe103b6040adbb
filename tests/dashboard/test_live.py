"""Login, the create-study form and live updates, in headless Chromium against a real
controller: without a token only the login shows; a study created from the form runs; a
trial that completes while the study page is open appears within 5 s, without a reload."""

from __future__ import annotations

import time

from tests.dashboard.conftest import study_spec


def test_without_a_token_the_login_shows(anonymous_page, dash_server):
    p = anonymous_page.goto("#/")
    form = p.locator("#login-form")
    form.wait_for()
    assert p.locator("#studies-table").count() == 0
    assert p.locator("#nav a").count() == 0
    anonymous_page.screenshot("login")
    # a wrong token is refused and stays out of storage
    p.get_by_label("API token").fill("not-a-token")
    p.get_by_role("button", name="Sign in").click()
    p.locator("#login-error").filter(has_text="does not accept").wait_for()
    assert p.evaluate("() => localStorage.getItem('autopeft.token')") is None
    # the 401 of that attempt is the one expected console error
    expected = [e for e in anonymous_page.errors if "401" in e]
    assert len(expected) == 1, anonymous_page.errors
    anonymous_page.errors.remove(expected[0])
    # the right token opens the page asked for, and is kept
    p.get_by_label("API token").fill(dash_server.token)
    p.get_by_label("API token").press("Enter")
    p.locator("#studies-table").wait_for()
    assert p.evaluate("() => localStorage.getItem('autopeft.token')") == dash_server.token
    # signing out brings the login back
    p.get_by_role("button", name="Sign out").click()
    form.wait_for()
    assert p.evaluate("() => localStorage.getItem('autopeft.token')") is None
    p.goto(f"{dash_server.url}/#/studies/1")
    form.wait_for()


def test_a_study_created_from_the_form_runs(page, dash_server):
    p = page.goto("#/new")
    p.locator("#create-form").wait_for()
    p.get_by_label("Name", exact=True).fill("from the form")
    p.get_by_label("Search space").select_option("mixed")
    p.get_by_label("Layers (per-layer spaces)").fill("4")
    p.get_by_role("button", name="Add objective").click()
    p.locator("#obj-name-2").fill("latency_ms")
    p.get_by_label("Optimiser", exact=True).select_option("sobol")
    p.get_by_label("Max trials").fill("4")
    p.get_by_label("Parallel trials").fill("2")
    p.get_by_label("Kind").select_option("python")
    p.get_by_label("Entrypoint").fill("tests.dashboard.workloads:arch")
    p.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot("create")
    # a broken JSON field is caught in the page, before any request
    p.get_by_label("Options (JSON)").fill("{oops")
    p.get_by_role("button", name="Create study").click()
    p.locator("#create-error").filter(has_text="Options").wait_for()
    assert p.evaluate("() => document.activeElement.id") == "f-options"
    p.get_by_label("Options (JSON)").fill("{}")
    # the server's 422 envelope names the field: that input is marked and focused
    p.get_by_label("Entrypoint").fill("no_such_module:fn")
    p.get_by_role("button", name="Create study").click()
    p.locator("#create-error").filter(has_text="workload.entrypoint").wait_for()
    assert p.evaluate("() => document.activeElement.id") == "f-entrypoint"
    assert p.get_by_label("Entrypoint").get_attribute("aria-invalid") == "true"
    assert "no_such_module" in p.locator("#f-entrypoint-error").inner_text()
    expected = [e for e in page.errors if "422" in e]
    assert len(expected) == 1, page.errors  # the browser logs the refused POST; nothing else
    page.errors.remove(expected[0])
    p.get_by_label("Entrypoint").fill("tests.dashboard.workloads:arch")
    p.get_by_role("button", name="Create study").click()
    p.wait_for_url("**/#/studies/*")
    study_id = int(p.url.rsplit("/", 1)[1])
    study = dash_server.api.get(f"/studies/{study_id}")
    assert study["name"] == "from the form"
    assert study["spec"]["optimizer"]["name"] == "sobol"
    assert [o["name"] for o in study["spec"]["objectives"]] == [
        "accuracy",
        "trainable_params",
        "latency_ms",
    ]
    assert study["spec"]["workload"]["entrypoint"] == "tests.dashboard.workloads:arch"
    # it runs: its four trials complete and the page says so
    p.locator("#study-summary dd[data-fact='complete']").filter(has_text="4").wait_for(
        timeout=90_000
    )
    p.locator("h1 .badge").filter(has_text="finished").wait_for(timeout=30_000)
    assert p.locator("#trials-table tbody tr[data-state='complete']").count() == 4
    assert dash_server.api.get(f"/studies/{study_id}")["counts"]["complete"] == 4


def test_a_completed_trial_appears_without_reload(page, dash_server):
    api = dash_server.api
    s = api.create(
        study_spec(
            "live", entrypoint="tests.dashboard.workloads:gated", max_trials=2, max_parallel=1
        )
    )
    p = page.goto(f"#/studies/{s['id']}")
    p.locator("#trials-table tbody tr[data-state='running']").wait_for(timeout=60_000)
    assert p.locator("#trials-table tbody tr[data-state='complete']").count() == 0
    p.evaluate("() => { window.__notReloaded = true; }")
    dash_server.gate.touch()
    opened = time.monotonic()
    p.locator("#trials-table tbody tr[data-state='complete']").first.wait_for(timeout=5_000)
    assert time.monotonic() - opened < 5
    first = int(
        p.locator("#trials-table tbody tr[data-state='complete']").first.get_attribute(
            "data-trial-id"
        )
    )
    assert api.get(f"/trials/{first}")["state"] == "complete"
    # the plot follows: the new trial is on the (one-point) front
    p.wait_for_function(
        "(id) => document.getElementById('pareto-plot').data.some(t => t.name === 'Pareto front' "
        "&& Array.from(t.customdata).includes(id))",
        arg=first,
        timeout=5_000,
    )
    # the second trial is created after the first completes: it appears too, and the study ends
    p.locator("#trials-table tbody tr[data-state='complete']").nth(1).wait_for(timeout=30_000)
    p.locator("h1 .badge").filter(has_text="finished").wait_for(timeout=30_000)
    assert p.evaluate("() => window.__notReloaded === true")


def test_stop_and_resume_buttons(page, dash_server):
    api = dash_server.api
    s = api.create(
        study_spec(
            "to stop", entrypoint="tests.dashboard.workloads:slow", max_trials=2, max_parallel=1
        )
    )
    p = page.goto(f"#/studies/{s['id']}")
    p.locator("#trials-table tbody tr[data-state='running']").wait_for(timeout=60_000)
    p.get_by_role("button", name="Stop study").click()
    p.locator("h1 .badge").filter(has_text="stopped").wait_for()
    assert api.get(f"/studies/{s['id']}")["state"] == "stopped"
    p.get_by_role("button", name="Resume").click()
    p.locator("h1 .badge").filter(has_text="running").wait_for()
    p.get_by_role("button", name="Stop study").click()
    p.locator("h1 .badge").filter(has_text="stopped").wait_for()
    assert api.get(f"/studies/{s['id']}")["state"] == "stopped"


# every text and class the studies list's status line takes, recorded as it changes
SEEN_STATUS = """
window.__statuses = [];
new MutationObserver(() => {
  const s = document.getElementById("studies-status");
  if (!s) return;
  const now = s.classList.contains("error") ? "error" : s.textContent;
  if (window.__statuses[window.__statuses.length - 1] !== now) window.__statuses.push(now);
}).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
"""


def test_a_study_deleted_while_the_list_loads_it_leaves_the_list(page, dash_server):
    """The list fetches each changed study's front after listing it; a study deleted in between
    (another user, the CLI) drops out of the table instead of turning the whole list into an
    error. The deletion happens, for real, while the list's /pareto request for it is held."""
    api = dash_server.api
    keep = api.create(study_spec("stays", max_trials=1, max_parallel=1))
    doomed = api.create(study_spec("deleted meanwhile", max_trials=1, max_parallel=1))
    for s in (keep, doomed):
        api.http.post(f"/studies/{s['id']}/stop")
    held = []

    def delete_then_continue(route):
        if not held:
            assert api.http.delete(f"/studies/{doomed['id']}").status_code == 204
        held.append(route.request.url)
        route.continue_()

    page.page.route(f"**/api/v1/studies/{doomed['id']}/pareto", delete_then_continue)
    page.page.add_init_script(SEEN_STATUS)
    p = page.goto("#/")
    p.locator(f"#studies-table tr[data-study-id='{keep['id']}']").wait_for()
    p.wait_for_function(
        "() => /updated live/.test(document.getElementById('studies-status').textContent)"
    )
    assert held, "the list never asked for the doomed study's front"
    assert p.locator(f"#studies-table tr[data-study-id='{doomed['id']}']").count() == 0
    assert p.evaluate("() => window.__statuses").count("error") == 0, p.evaluate(
        "() => window.__statuses"
    )
    # the only console entry is the browser's own log of the 404 the server gave
    assert page.errors and all("404" in e for e in page.errors), page.errors
    page.errors.clear()
    p.close()  # no poll left to meet the next deletion's 404
    api.http.delete(f"/studies/{keep['id']}")


def test_leaving_a_page_aborts_its_reads_in_flight(page, dash_server):
    """A poll under way when its page is left makes no more requests: the read it waits on is
    aborted (api.js leaveView). The study page's poll asks for the study, then its trials, then its
    fronts; its trials request is held here while the user moves to the create form."""
    api = dash_server.api
    s = api.create(study_spec("left behind", max_trials=1, max_parallel=1))
    api.http.post(f"/studies/{s['id']}/stop")
    held, seen, failed = [], [], []
    page.page.route(f"**/api/v1/studies/{s['id']}/trials*", lambda route: held.append(route))
    page.page.on("request", lambda r: seen.append(r.url))
    page.page.on("requestfailed", lambda r: failed.append((r.url, r.failure)))
    p = page.goto(f"#/studies/{s['id']}")
    for _ in range(100):
        if held:
            break
        p.wait_for_timeout(100)
    assert held, "the study page never asked for its trials"
    left_at = len(seen)
    p.evaluate("() => { location.hash = '#/new'; }")
    p.locator("#create-form").wait_for()
    for _ in range(50):
        if failed:
            break
        p.wait_for_timeout(100)
    assert [url for url, _ in failed] == [held[0].request.url], failed
    try:
        held[0].continue_()  # too late: the page gave up on it
    except Exception:
        pass
    p.wait_for_timeout(2500)  # longer than the study page's poll interval
    after = [u for u in seen[left_at:] if f"/studies/{s['id']}" in u]
    assert after == [], after
    assert not any(f"/studies/{s['id']}/pareto" in u for u in seen), seen
    p.close()
    api.http.delete(f"/studies/{s['id']}")
