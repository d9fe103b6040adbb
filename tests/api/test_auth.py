"""Auth: no token is 401, others' studies are 404 for every verb, tokens are stored hashed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import REPO, make_token, python_study


@pytest.fixture
def two_users(sqlite_url, server_factory):
    server = server_factory(sqlite_url)
    return server, make_token(sqlite_url, "alice"), make_token(sqlite_url, "bob")


def _h(token):
    return {"Authorization": f"Bearer {token}"}


def test_no_or_bad_token_is_401_in_the_envelope(two_users):
    server, _, _ = two_users
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        r = httpx.get(server.url + "/api/v1/studies", headers=headers, trust_env=False)
        assert r.status_code == 401, headers
        assert r.json()["error"]["code"] == "unauthorized"
        assert set(r.json()["error"]) == {"code", "message", "field"}
    assert httpx.get(server.url + "/healthz", trust_env=False).status_code == 200


def test_user_b_cannot_read_change_or_stop_user_a_study(two_users):
    server, alice, bob = two_users
    with httpx.Client(base_url=server.url, trust_env=False) as http:
        spec = python_study("tests.api.workloads:sleepy", max_trials=50, max_parallel=1)
        r = http.post("/api/v1/studies", json=spec, headers=_h(alice))
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        for method, path in (
            ("GET", f"/api/v1/studies/{sid}"),
            ("POST", f"/api/v1/studies/{sid}/stop"),
            ("POST", f"/api/v1/studies/{sid}/resume"),
            ("DELETE", f"/api/v1/studies/{sid}"),
            ("GET", f"/api/v1/studies/{sid}/trials"),
            ("GET", f"/api/v1/studies/{sid}/pareto"),
            ("GET", f"/api/v1/studies/{sid}/hypervolume"),
        ):
            r = http.request(method, path, headers=_h(bob))
            assert r.status_code == 404, (method, path, r.text)
            assert r.json()["error"]["code"] == "not_found"
        assert http.get("/api/v1/studies", headers=_h(bob)).json()["studies"] == []
        # the study is untouched by bob's attempts
        study = http.get(f"/api/v1/studies/{sid}", headers=_h(alice)).json()
        assert study["state"] == "running"
        trials = http.get(f"/api/v1/studies/{sid}/trials", headers=_h(alice)).json()["trials"]
        if trials:
            tid = trials[0]["id"]
            for path in (
                f"/api/v1/trials/{tid}",
                f"/api/v1/trials/{tid}/reports",
                f"/api/v1/trials/{tid}/adapter",
            ):
                assert http.get(path, headers=_h(bob)).status_code == 404
        assert (
            http.post(f"/api/v1/studies/{sid}/stop", headers=_h(alice)).json()["state"] == "stopped"
        )


def test_tokens_are_stored_hashed(sqlite_url, tmp_path):
    # the real CLI prints the token once
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "autopeft"),
            "token",
            "create",
            "carol",
            "--db",
            sqlite_url,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert token.startswith("apt_") and len(token) > 40
    import sqlite3

    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT token_hash, prefix FROM api_tokens").fetchall()
        conn.execute("PRAGMA wal_checkpoint(FULL)")
    assert len(rows) == 1 and rows[0][0] != token and len(rows[0][0]) == 64
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("autopeft.db*"))
    assert token.encode() not in raw and token[10:].encode() not in raw
