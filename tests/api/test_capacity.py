"""Capacity (issue 31): many clients at once never get a 500 or a hung request, on SQLite and on
PostgreSQL; past capacity the answer is 503 with Retry-After, and /readyz says the replica is
saturated. Everything on loopback, bounded by the clients' timeouts (no time is asserted)."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter

import httpx
import pytest

from tests.api.conftest import client_for, make_token, python_study, wait_for

CLIENTS = 200
TIMEOUT_S = 90.0  # a client that waits longer counts as a failure (the old server hung ~60 s)


async def _burst(url: str, token: str, paths: list[str]) -> list[httpx.Response | Exception]:
    """One GET per path, all at once, each on its own connection."""
    limits = httpx.Limits(max_connections=len(paths), max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=url, limits=limits, timeout=TIMEOUT_S, trust_env=False
    ) as http:

        async def one(path: str):
            try:
                return await http.get(path, headers={"Authorization": f"Bearer {token}"})
            except httpx.HTTPError as err:
                return err

        return await asyncio.gather(*(one(p) for p in paths))


def _check(answers) -> Counter:
    """Every answer is a 200, or a 503 with Retry-After: no 500, no reset, no timeout."""
    codes: Counter = Counter()
    for answer in answers:
        assert not isinstance(answer, Exception), repr(answer)
        codes[answer.status_code] += 1
        assert answer.status_code in (200, 503), (answer.status_code, answer.text[:300])
        if answer.status_code == 503:
            assert int(answer.headers["retry-after"]) >= 1
            assert answer.json()["error"]["code"] == "overloaded"
    return codes


def test_200_concurrent_gets_are_answered(db_url, server_factory):
    server = server_factory(db_url)
    token = make_token(db_url, "alice")
    study = client_for(server, token).create_study(spec=python_study(max_trials=2))
    study.wait(timeout=120, poll=0.2, progress=False)
    mixed = [
        f"/api/v1/studies/{study.id}",
        f"/api/v1/studies/{study.id}/pareto",
        f"/api/v1/studies/{study.id}/trials",
        f"/api/v1/studies/{study.id}/hypervolume",
        "/api/v1/tokens",
        "/api/v1/datasets",
    ]
    for paths in (
        ["/api/v1/me"] * CLIENTS,  # one token, not yet cached: one lookup for all of them
        ["/api/v1/studies"] * CLIENTS,
        [mixed[i % len(mixed)] for i in range(CLIENTS)],
    ):
        codes = _check(asyncio.run(_burst(server.url, token, paths)))
        assert codes[200] > 0, codes
    ready = httpx.get(server.url + "/readyz", trust_env=False).json()
    assert ready["ready"] is True and ready["requests"]["in_flight"] == 0, ready


def _hold_a_slot(server) -> socket.socket:
    """A request admitted and kept in flight: headers sent, its body never finished."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(
        b"POST /api/v1/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    return sock


def _refused_then_closed(server, token: str) -> None:
    """A refused keep-alive request, then the server closes that connection: the client waits
    Retry-After seconds (often past the keep-alive timeout), and a POST sent on a connection the
    server closes under it fails where a fresh one would have been answered."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.settimeout(20)
    body = b'{"name": "x"}'
    sock.sendall(
        b"POST /api/v1/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    received = b""
    try:
        while chunk := sock.recv(65536):  # b"": the server closed the connection
            received += chunk
    finally:
        sock.close()
    head = received.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 503") and b"connection: close" in head, head


def test_a_saturated_replica_answers_503_with_retry_after_and_says_so(sqlite_url, server_factory):
    server = server_factory(
        sqlite_url,
        env={"AUTOPEFT_MAX_CONCURRENT_REQUESTS": "1", "AUTOPEFT_MAX_QUEUED_REQUESTS": "0"},
    )
    token = make_token(sqlite_url, "alice")
    me = server.url + "/api/v1/me"
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.get(me, headers=auth, trust_env=False).status_code == 200

    def readyz():
        return httpx.get(server.url + "/readyz", trust_env=False)

    held = _hold_a_slot(server)
    try:
        wait_for(lambda: readyz().status_code == 503, 30, "/readyz to say saturated")
        answer = readyz()
        assert answer.json()["ready"] is False and int(answer.headers["retry-after"]) >= 1
        assert answer.json()["requests"]["in_flight"] == 1
        refused = httpx.get(me, headers=auth, trust_env=False)
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "overloaded"
        assert refused.headers["connection"] == "close"
        _refused_then_closed(server, token)
        # what passes without a slot still answers: liveness, the dashboard
        assert httpx.get(server.url + "/healthz", trust_env=False).status_code == 200
        assert httpx.get(server.url + "/", trust_env=False).status_code == 200
    finally:
        held.close()
    wait_for(lambda: readyz().status_code == 200, 30, "the slot to be freed")
    assert httpx.get(me, headers=auth, trust_env=False).status_code == 200
    assert readyz().json()["requests"]["refused"] >= 1


@pytest.mark.parametrize("waiting", ["0.0", "5"])
def test_the_queue_admits_in_order_once_a_slot_frees(sqlite_url, server_factory, waiting):
    """With a queue, a request waits for the slot instead of being refused (and is refused at once
    without one)."""
    server = server_factory(
        sqlite_url,
        env={
            "AUTOPEFT_MAX_CONCURRENT_REQUESTS": "1",
            "AUTOPEFT_MAX_QUEUED_REQUESTS": "8",
            "AUTOPEFT_QUEUE_WAIT_S": waiting,
        },
    )
    token = make_token(sqlite_url, "alice")
    auth = {"Authorization": f"Bearer {token}"}
    held = _hold_a_slot(server)
    wait_for(
        lambda: httpx.get(server.url + "/readyz", trust_env=False).status_code == 503,
        30,
        "the slot to be held",
    )

    async def queued():
        async with httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=60) as http:
            pending = asyncio.ensure_future(http.get("/api/v1/me", headers=auth))
            for _ in range(200):  # until it waits in the queue
                state = (await http.get("/readyz")).json()["requests"]
                if state["waiting"] == 1 or pending.done():
                    break
                await asyncio.sleep(0.05)
            held.close()  # the slot frees: the waiting request takes it
            return await pending

    answer = asyncio.run(queued())
    assert answer.status_code == (200 if waiting == "5" else 503), answer.text


def test_cached_answers_are_each_users_own(db_url, server_factory):
    """The polled reads are served from a cache keyed on change counters; two users with the same
    counters never see each other's lists, and a change shows at once."""
    server = server_factory(db_url)
    alice = client_for(server, make_token(db_url, "alice"))
    bob = client_for(server, make_token(db_url, "bob"))
    assert alice.studies() == [] and bob.studies() == []  # both lists cached, counters equal
    study = alice.create_study(spec=python_study(max_trials=2))
    assert [s.id for s in alice.studies()] == [study.id]
    assert bob.studies() == []
    study.wait(timeout=120, poll=0.2, progress=False)
    assert alice.studies()[0].state == "finished"  # the runner's writes renew the list
    listed = httpx.get(
        f"{server.url}/api/v1/studies/{study.id}",
        headers={"Authorization": f"Bearer {make_token(db_url, 'bob')}"},
        trust_env=False,
    )
    assert listed.status_code == 404
    bob.create_study(spec=python_study(max_trials=1))
    assert [s.id for s in alice.studies()] == [study.id] and len(bob.studies()) == 1


def test_a_users_cached_list_is_never_anothers(store):
    """Unit: two users whose change counters are equal still get their own computed lists."""
    from autopeft.api.services.listing import ListingCache

    cache = ListingCache(store)
    store.own(1, [10], new=True)
    store.own(2, [20], new=True)
    assert store.version_of_user(1) == store.version_of_user(2)

    def get(user):
        return asyncio.run(cache.cached(("studies",), None, lambda: f"user {user}".encode(), user))

    assert get(1) == b"user 1" and get(2) == b"user 2" and get(1) == b"user 1"
    store.touch(10)  # alice's study changed: her list is computed again, bob's is not
    assert store.version_of_user(1) != store.version_of_user(2)
