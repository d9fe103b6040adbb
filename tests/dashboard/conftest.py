"""Fixtures of the dashboard tests: one real controller (uvicorn on 127.0.0.1, SQLite in a temp
dir, the local executor) with seeded studies of python workloads, and headless Chromium driven
by Playwright. Screenshots of every page are taken (into ``AUTOPEFT_SCREENSHOTS`` if set, see
below) and must stay under 200 KB.

Chromium is the distribution's (``apt-get install chromium``, ``/usr/bin/chromium``, or
``AUTOPEFT_CHROMIUM``); ``playwright install`` is never needed. Every page a test opens
records console errors and uncaught exceptions; the ``page`` fixture fails the test if any
was seen.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import Server, make_token, wait_for

CHROMIUM = os.environ.get("AUTOPEFT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]
# Screenshots go to a temp folder unless AUTOPEFT_SCREENSHOTS names one: refresh the committed
# ones with `AUTOPEFT_SCREENSHOTS=docs/screenshots pytest tests/dashboard`.
SCREENSHOTS = (
    Path(os.environ["AUTOPEFT_SCREENSHOTS"]).resolve()
    if os.environ.get("AUTOPEFT_SCREENSHOTS")
    else None
)
MAX_SCREENSHOT_BYTES = 300_000  # a full-page study screenshot with every panel is ~230 kB
VIEWPORT = {"width": 1280, "height": 800}
OBJ2 = [
    {"name": "accuracy", "direction": "maximize"},
    {"name": "trainable_params", "direction": "minimize"},
]
OBJ3 = OBJ2 + [{"name": "latency_ms", "direction": "minimize"}]


def study_spec(
    name: str, objectives=OBJ2, entrypoint: str = "tests.dashboard.workloads:arch", **fields
) -> dict:
    spec = {
        "name": name,
        "space": "mixed",
        "num_layers": 6,
        "objectives": objectives,
        "optimizer": {"name": "random", "options": {}},
        "workload": {"kind": "python", "entrypoint": entrypoint},
        "max_trials": 12,
        "max_parallel": 2,
        "seed": 1,
    }
    spec.update(fields)
    return spec


class Api:
    """A tiny REST helper for the tests (the dashboard itself is what is under test)."""

    def __init__(self, url: str, token: str):
        self.url = url
        self.http = httpx.Client(
            base_url=url + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
            trust_env=False,
        )

    def get(self, path: str):
        resp = self.http.get(path)
        resp.raise_for_status()
        return resp.json()

    def create(self, spec: dict) -> dict:
        resp = self.http.post("/studies", json=spec)
        assert resp.status_code == 201, resp.text
        return resp.json()

    def wait_done(self, study_id: int, timeout: float = 120) -> dict:
        def done():
            s = self.get(f"/studies/{study_id}")
            return s if s["state"] != "running" else None

        return wait_for(done, timeout, f"study {study_id} to finish", 0.2)


@pytest.fixture(scope="session")
def dash_server(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"no Chromium at {CHROMIUM} (apt-get install chromium, or set AUTOPEFT_CHROMIUM)"
        )
    workdir = tmp_path_factory.mktemp("dashboard")
    db_url = f"sqlite:///{workdir / 'autopeft.db'}"
    gate = workdir / "gate"
    token = make_token(db_url, "alice")
    server = Server(
        db_url, workdir, {"AUTOPEFT_DASH_GATE": str(gate), "AUTOPEFT_PRESTART_WORKERS": "4"}
    )
    try:
        server.start()
        server.token, server.gate = token, gate
        server.api = Api(server.url, token)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seeded(dash_server):
    """Two finished studies: 2 objectives (12 trials) and 3 objectives (10 trials)."""
    api = dash_server.api
    two = api.create(study_spec("synthetic-arch (python workload, 2 objectives)", max_trials=12))
    three = api.create(
        study_spec("synthetic latency too (3 objectives)", objectives=OBJ3, max_trials=10, seed=2)
    )
    two, three = api.wait_done(two["id"]), api.wait_done(three["id"])
    assert two["counts"]["complete"] == 12, two
    assert three["counts"]["complete"] == 10, three
    return {"two": two, "three": three}


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class Page:
    """A Playwright page plus the console errors and page errors seen on it."""

    def __init__(self, context, base_url: str, shots: Path):
        self.context, self.shots = context, shots
        self.base_url = base_url
        self.errors: list[str] = []
        self.page = context.new_page()
        self.page.on(
            "console",
            lambda m: (
                self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None
            ),
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def goto(self, hash_: str = "#/"):
        self.page.goto(f"{self.base_url}/{hash_}")
        return self.page

    def screenshot(self, name: str, full_page: bool = False) -> Path:
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), type="png", full_page=full_page)
        assert path.stat().st_size < MAX_SCREENSHOT_BYTES, f"{path} is {path.stat().st_size} bytes"
        return path


@pytest.fixture(scope="session")
def shots(tmp_path_factory) -> Path:
    return SCREENSHOTS or tmp_path_factory.mktemp("screenshots")


def _page(browser, server, token: str | None, shots: Path, viewport=VIEWPORT):
    context = browser.new_context(viewport=viewport, accept_downloads=True)
    if token:
        context.add_init_script(f"window.localStorage.setItem('autopeft.token', {token!r});")
    page = Page(context, server.url, shots)
    page.page.set_default_timeout(15_000)
    return page


@pytest.fixture
def page(browser, dash_server, shots):
    p = _page(browser, dash_server, dash_server.token, shots)
    yield p
    p.context.close()
    assert not p.errors, "browser console errors:\n" + "\n".join(p.errors)


@pytest.fixture
def anonymous_page(browser, dash_server, shots):
    p = _page(browser, dash_server, None, shots)
    yield p
    p.context.close()
    assert not p.errors, "browser console errors:\n" + "\n".join(p.errors)


@pytest.fixture
def narrow_page(browser, dash_server, shots):
    p = _page(
        browser, dash_server, dash_server.token, shots, viewport={"width": 420, "height": 820}
    )
    yield p
    p.context.close()
    assert not p.errors, "browser console errors:\n" + "\n".join(p.errors)
