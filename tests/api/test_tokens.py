"""Token lifecycle: expiry, list, revoke over REST (one's own) and by the admin CLI; roles; stored as an
HMAC keyed with AUTOPEFT_SECRET (the secret has a real job)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import REPO, make_token, wait_for

EXE = str(Path(sys.executable).parent / "autopeft")
SECRET = "a-test-secret-of-enough-length-42"


def _get(server, token, path="/api/v1/studies"):
    return httpx.get(
        server.url + path, headers={"Authorization": f"Bearer {token}"}, trust_env=False
    )


def _db(sqlite_url: str) -> str:
    return sqlite_url.removeprefix("sqlite:///")


def test_rest_create_list_revoke_refused_at_once(sqlite_url, server_factory):
    # a long token cache: the revoke itself must make the next request fail, not the cache running out
    server = server_factory(
        sqlite_url, env={"AUTOPEFT_SECRET": SECRET, "AUTOPEFT_TOKEN_CACHE_S": "60"}
    )
    first = make_token(sqlite_url, "alice", SECRET)
    h = {"Authorization": f"Bearer {first}"}
    with httpx.Client(base_url=server.url, trust_env=False) as http:
        r = http.post("/api/v1/tokens", json={"name": "laptop", "expires_in_days": 7}, headers=h)
        assert r.status_code == 201, r.text
        made = r.json()
        second = made["token"]
        assert (
            second.startswith("apt_") and made["prefix"] == second[:10] and made["name"] == "laptop"
        )
        expires = dt.datetime.fromisoformat(made["expires_at"])
        assert (
            dt.timedelta(days=6.9)
            < expires - dt.datetime.fromisoformat(made["created_at"])
            < dt.timedelta(days=7.1)
        )
        assert _get(server, second).status_code == 200  # works, and is now cached
        listed = http.get("/api/v1/tokens", headers=h).json()["tokens"]
        assert [t["prefix"] for t in listed] == [first[:10], second[:10]]
        assert [t["current"] for t in listed] == [True, False]
        assert all("token" not in t for t in listed) and listed[1]["last_used_at"] is not None
        # bob can neither see nor revoke alice's tokens
        bob = {"Authorization": f"Bearer {make_token(sqlite_url, 'bob', SECRET)}"}
        assert len(http.get("/api/v1/tokens", headers=bob).json()["tokens"]) == 1
        assert http.delete(f"/api/v1/tokens/{made['id']}", headers=bob).status_code == 404
        assert _get(server, second).status_code == 200
        assert http.delete(f"/api/v1/tokens/{made['id']}", headers=h).status_code == 204
        r = _get(server, second)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert http.get("/api/v1/tokens", headers=h).json()["tokens"][1]["revoked"] is True
        # bounds and names
        for body, field in (
            ({"expires_in_days": 400}, "expires_in_days"),
            ({"expires_in_days": 0}, "expires_in_days"),
            ({"name": "evil\u202etxt.exe"}, "name"),
            ({"name": "zero\u200bwidth"}, "name"),
        ):
            r = http.post("/api/v1/tokens", json=body, headers=h)
            assert r.status_code == 422 and r.json()["error"]["field"] == field, (body, r.text)


def test_expired_token_is_refused_on_the_next_request(sqlite_url, server_factory):
    server = server_factory(sqlite_url, env={"AUTOPEFT_TOKEN_CACHE_S": "60"})
    expires = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(seconds=3)
    token = make_token(sqlite_url, "carol", expires_at=expires)
    assert _get(server, token).status_code == 200  # valid, and cached for 60 s
    # refused once it expired, although the cache would still hold it for a minute
    wait_for(lambda: _get(server, token).status_code == 401, 30, "the expired token to be refused")
    assert dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) >= expires
    past = make_token(sqlite_url, "carol", expires_at=expires - dt.timedelta(days=1))
    assert _get(server, past).status_code == 401


def test_admin_cli_roles_list_revoke(sqlite_url, server_factory):
    server = server_factory(sqlite_url, env={"AUTOPEFT_TOKEN_CACHE_S": "0"})

    def cli(*args, ok=True):
        out = subprocess.run(
            [EXE, "token", *args, "--db", sqlite_url],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
        assert (out.returncode == 0) == ok, (args, out.stdout, out.stderr)
        return out.stdout + out.stderr

    admin = cli("create", "root", "--role", "admin", "--name", "ops").strip()
    user = cli("create", "dave", "--expires-in", "30").strip()
    me = _get(server, admin, "/api/v1/me").json()
    assert me["name"] == "root" and me["role"] == "admin"
    assert _get(server, user, "/api/v1/me").json()["role"] == "user"
    listing = cli("list")
    assert "root" in listing and "admin" in listing and "dave" in listing and "ops" in listing
    assert admin not in listing and user not in listing  # never the tokens themselves
    dave_id = next(line.split()[0] for line in listing.splitlines() if " dave " in line)
    assert "revoked" in cli("revoke", dave_id)
    assert _get(server, user).status_code == 401
    assert "revoked" in cli("list", "--user", "dave")
    assert "no token" in cli("revoke", "999", ok=False)
    assert "printable" in cli("create", "bad\u202ename", ok=False)


def test_tokens_are_hmacs_of_the_secret(sqlite_url, server_factory):
    """The stored hash is HMAC-SHA256(AUTOPEFT_SECRET, token): useless without the secret, and a token
    planted in the database by someone who lacks the secret does not work."""
    server = server_factory(sqlite_url, env={"AUTOPEFT_SECRET": SECRET})
    token = make_token(sqlite_url, "erin", SECRET)
    with sqlite3.connect(_db(sqlite_url)) as conn:
        stored, scheme = conn.execute("SELECT token_hash, scheme FROM api_tokens").fetchone()
    assert (
        scheme == "hmac"
        and stored == hmac.new(SECRET.encode(), token.encode(), hashlib.sha256).hexdigest()
    )
    assert stored != hashlib.sha256(token.encode()).hexdigest()
    assert _get(server, token).status_code == 200
    assert (
        _get(server, make_token(sqlite_url, "erin", "some-other-secret-0123456789")).status_code
        == 401
    )
    # a pre-HMAC token (plain sha256, scheme sha256) still works and is rehashed on first use
    legacy = "apt_legacy-token-made-before-the-upgrade-0123456789"
    with sqlite3.connect(_db(sqlite_url)) as conn:
        conn.execute(
            "INSERT INTO api_tokens (user_id, token_hash, scheme, prefix, created_at, revoked) "
            "VALUES (1, ?, 'sha256', ?, '2026-01-01 00:00:00', 0)",
            (hashlib.sha256(legacy.encode()).hexdigest(), legacy[:10]),
        )
    assert _get(server, legacy).status_code == 200
    with sqlite3.connect(_db(sqlite_url)) as conn:
        row = conn.execute(
            "SELECT token_hash, scheme FROM api_tokens WHERE prefix = ?", (legacy[:10],)
        ).fetchone()
    assert row == (hmac.new(SECRET.encode(), legacy.encode(), hashlib.sha256).hexdigest(), "hmac")
    # the same planted row with an HMAC under another key is refused
    planted = "apt_planted-by-someone-without-the-secret-000000"
    with sqlite3.connect(_db(sqlite_url)) as conn:
        conn.execute(
            "INSERT INTO api_tokens (user_id, token_hash, scheme, prefix, created_at, revoked) "
            "VALUES (1, ?, 'hmac', ?, '2026-01-01 00:00:00', 0)",
            (hmac.new(b"guess", planted.encode(), hashlib.sha256).hexdigest(), planted[:10]),
        )
    assert _get(server, planted).status_code == 401


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_token_rows_migrate_from_the_old_schema(db, tmp_path, request):
    """0001 -> 0002 keeps existing tokens usable (scheme sha256) and users become plain users."""
    from sqlalchemy import create_engine, text

    from autopeft.api.db import normalise_url
    from autopeft.api.migrate import upgrade

    url = (
        f"sqlite:///{tmp_path / 'old.db'}"
        if db == "sqlite"
        else request.getfixturevalue("postgres").new_database()
    )
    upgrade(url, "0001")
    engine = create_engine(normalise_url(url))
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (name, created_at) VALUES ('old', '2026-01-01')"))
        conn.execute(
            text(
                "INSERT INTO api_tokens (user_id, token_hash, prefix, created_at, revoked) "
                "VALUES (1, :h, 'apt_old000', '2026-01-01', false)"
            ),
            {"h": hashlib.sha256(b"apt_old").hexdigest()},
        )
    upgrade(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT role FROM users")).scalar() == "user"
        assert conn.execute(text("SELECT scheme FROM api_tokens")).scalar() == "sha256"
    engine.dispose()
    from autopeft.api.db import Database
    from autopeft.api.security import find_token

    database = Database(url)
    with database.read() as session:
        owner, legacy = find_token(session, "apt_old", "any-secret")
    database.dispose()
    assert owner is not None and owner.user_name == "old" and legacy
