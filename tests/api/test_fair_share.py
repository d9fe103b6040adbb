"""Fair sharing of the executor's slots across users (and studies), and per-user quotas."""

from __future__ import annotations

import datetime as dt
import threading

import httpx
import pytest

from autopeft.api.slots import Holder, SlotAllocator
from tests.api.conftest import client_for, make_token, python_study


def _running_over_time(
    trials_by_user: dict[str, list[dict]],
) -> list[tuple[dt.datetime, dict[str, int]]]:
    """Running trials per user after every start / finish, from the stored timestamps."""
    events = []
    for user, trials in trials_by_user.items():
        for t in trials:
            events.append((dt.datetime.fromisoformat(t["started_at"]), 1, user))
            events.append((dt.datetime.fromisoformat(t["finished_at"]), -1, user))
    events.sort(key=lambda e: (e[0], e[1]))  # a finish before a start at the same instant
    counts = dict.fromkeys(trials_by_user, 0)
    out = []
    for when, delta, user in events:
        counts[user] += delta
        out.append((when, dict(counts)))
    return out


def test_two_users_share_two_workers_evenly(sqlite_url, server_factory):
    """Both studies ask for 2 trials at once on 2 workers: once each has started a trial, every
    freed slot goes to the user running fewer, so their running counts stay within one."""
    server = server_factory(
        sqlite_url, env={"AUTOPEFT_MAX_RUNNING_TRIALS": "2", "AUTOPEFT_TEST_SLEEP": "0.9"}
    )
    alice, bob = (
        client_for(server, make_token(sqlite_url, "alice")),
        client_for(server, make_token(sqlite_url, "bob")),
    )
    spec = python_study("tests.api.workloads:sleepy", max_trials=8, max_parallel=2)
    a = alice.create_study(spec={**spec, "name": "alice's"})
    b = bob.create_study(spec={**spec, "name": "bob's"})
    for study in (a, b):
        study.wait(timeout=300, poll=0.3, progress=False)
        assert study.state == "finished" and study.counts["complete"] == 8, study.data
    timeline = _running_over_time({"alice": a.trials(), "bob": b.trials()})
    assert max(sum(c.values()) for _, c in timeline) <= 2  # two workers in all
    # both active: from the later of the two first starts (the allocator is work-conserving, so a
    # runner still starting up leaves its slots to the other) until the first of the two studies
    # ran its last trial
    start = max(min(dt.datetime.fromisoformat(t["started_at"]) for t in s.trials()) for s in (a, b))
    end = min(max(dt.datetime.fromisoformat(t["started_at"]) for t in s.trials()) for s in (a, b))
    window = [c for when, c in timeline if start <= when < end]
    assert len(window) >= 8, timeline
    assert all(abs(c["alice"] - c["bob"]) <= 1 for c in window), window
    assert {"alice": 1, "bob": 1} in window  # side by side, not in turns
    for study in (a, b):  # both progressed during the window: each started trials in it
        assert (
            sum(start <= dt.datetime.fromisoformat(t["started_at"]) < end for t in study.trials())
            >= 3
        )


def test_per_user_limits(sqlite_url, server_factory):
    server = server_factory(
        sqlite_url,
        env={
            "AUTOPEFT_MAX_RUNNING_TRIALS_PER_USER": "2",
            "AUTOPEFT_MAX_ACTIVE_STUDIES_PER_USER": "2",
        },
    )
    token = make_token(sqlite_url, "greedy")
    h = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, headers=h, trust_env=False) as http:
        r = http.post("/api/v1/studies", json=python_study(max_parallel=3))
        assert r.status_code == 403 and r.json()["error"]["field"] == "max_parallel", r.text
        assert "AUTOPEFT_MAX_RUNNING_TRIALS_PER_USER" in r.json()["error"]["message"]
        slow = python_study("tests.api.workloads:sleepy", max_trials=200, max_parallel=2)
        ids = [http.post("/api/v1/studies", json=slow).json()["id"] for _ in range(2)]
        r = http.post("/api/v1/studies", json=slow)
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_requests", r.text
        assert "AUTOPEFT_MAX_ACTIVE_STUDIES_PER_USER" in r.json()["error"]["message"]
        # two studies with max_parallel 2 each, but never more than 2 trials of this user at once
        seen = []
        for _ in range(30):
            counts = [http.get(f"/api/v1/studies/{i}").json()["counts"]["running"] for i in ids]
            seen.append(sum(counts))
        assert max(seen) <= 2 and max(seen) >= 1, seen
        assert http.get("/api/v1/me").json()["usage"]["running_trials"] <= 2
        http.post(f"/api/v1/studies/{ids[0]}/stop")
        assert http.post("/api/v1/studies", json=python_study(max_trials=1)).status_code == 201
        r = http.post(f"/api/v1/studies/{ids[0]}/resume")  # two running again: a third is refused
        assert r.status_code == 429, r.text
        other = make_token(sqlite_url, "other")  # limits are per user
        r = http.post(
            "/api/v1/studies",
            json=python_study(max_trials=1),
            headers={"Authorization": f"Bearer {other}"},
        )
        assert r.status_code == 201


# -- the allocator on its own ----------------------------------------------------------------------


def test_allocator_prefers_the_user_with_fewer_running_trials():
    slots = SlotAllocator(capacity=2)
    a1, b1 = Holder(1, 10), Holder(2, 20)
    assert slots.acquire(a1) and slots.acquire(a1)  # alice alone: both slots
    assert not slots.acquire(b1) and not slots.acquire(a1)  # full; both wait
    slots.release(a1)
    assert b1.wake.is_set()  # bob is woken: he runs nothing
    assert not slots.acquire(a1)  # alice asks first, but it is bob's turn
    assert slots.acquire(b1)
    slots.release(a1)
    assert slots.acquire(a1)  # now alice's (she runs none)
    assert slots.running(1) == 1 and slots.running(2) == 1


def test_a_study_whose_trials_end_together_keeps_its_share():
    """Both of alice's trials end before her runner asks again: with ``rejoin`` she is in line
    for the second freed slot at once, so bob (waiting) gets one slot, not both; a runner that
    wants no more withdraws and the slot goes to the next in line."""
    slots = SlotAllocator(capacity=2)
    a, b = Holder(1, 10), Holder(2, 20)
    assert slots.acquire(a) and slots.acquire(a)
    assert not slots.acquire(b)  # bob waits
    slots.release(a, rejoin=True)
    slots.release(a, rejoin=True)
    assert slots.acquire(b)  # bob runs none: the first freed slot is his
    assert not slots.acquire(b)  # the second is alice's: she runs none, he runs one
    assert slots.acquire(a)
    assert slots.running(1) == 1 and slots.running(2) == 1
    slots.release(a, rejoin=True)  # alice's last trial ended; bob waits again
    a.wake.clear(), b.wake.clear()
    assert not slots.acquire(b)  # alice is first in line: she is woken, not bob
    assert a.wake.is_set() and not b.wake.is_set()
    slots.withdraw(a)  # alice's study has nothing more to run
    assert b.wake.is_set()  # bob is told the slot is his
    assert slots.acquire(b)
    assert slots.running(2) == 2


def test_allocator_shares_a_user_half_among_their_studies_and_caps_users():
    slots = SlotAllocator(capacity=4, per_user=3)
    a1, a2, b, e1, e2 = Holder(1, 1), Holder(1, 2), Holder(2, 3), Holder(8, 8), Holder(9, 9)
    assert all(slots.acquire(h) for h in (e1, e1, e2, e2))  # all slots busy until everybody waits
    assert not any(slots.acquire(h) for h in (a1, a2, b))
    slots.forget(e1)
    slots.forget(e2)
    got = {h: 0 for h in (a1, a2, b)}
    for _ in range(6):
        for h in (a1, a1, a2, b):
            if slots.acquire(h):
                got[h] += 1
    assert got[b] == 2 and got[a1] == 1 and got[a2] == 1, got
    slots.forget(b)
    assert slots.running(2) == 0
    for _ in range(3):
        for h in (a1, a2):
            slots.acquire(h)
    assert slots.running(1) == 3  # the per-user cap, although a slot is free


def test_allocator_is_thread_safe_and_never_oversubscribed():
    slots = SlotAllocator(capacity=3)
    holders = [Holder(u, u * 10 + s) for u in range(4) for s in range(2)]
    peak, lock, stop = [0], threading.Lock(), threading.Event()

    def work(h):
        while not stop.is_set():
            if slots.acquire(h):
                with lock:
                    peak[0] = max(peak[0], slots.running())
                slots.release(h)
            else:
                h.wake.wait(0.01)
                h.wake.clear()

    threads = [threading.Thread(target=work, args=(h,)) for h in holders]
    for t in threads:
        t.start()
    import time

    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert slots.running() <= 3
    stop.set()
    for t in threads:
        t.join()
    assert 1 <= peak[0] <= 3 and slots.running() == 0


@pytest.mark.parametrize("capacity", [None, 0])
def test_allocator_without_capacity_never_blocks(capacity):
    slots = SlotAllocator(capacity=capacity)
    h = Holder(1, 1)
    assert all(slots.acquire(h) for _ in range(50)) and slots.running() == 50


def test_a_data_parallel_trial_holds_one_slot_per_worker():
    """A gang of 2 workers takes 2 of 4 slots; a second gang and a single trial fill the rest;
    releasing one gang frees both its slots; a gang larger than the capacity runs alone."""
    from autopeft.api.slots import gang_size

    assert gang_size({"workload": {"resources": {"workers": 2}}}) == 2
    assert gang_size({"workload": {"kind": "python"}}) == 1
    slots = SlotAllocator(capacity=4)
    gang, single = Holder(1, 10, size=2), Holder(2, 20)
    assert slots.acquire(gang)
    assert slots.running() == 2
    assert slots.acquire(single)
    assert not slots.acquire(gang)  # 3 of 4 held: no room for 2 more
    assert slots.running() == 3
    slots.release(gang)
    assert slots.running() == 1
    assert slots.acquire(gang) and slots.running() == 3
    slots.forget(gang)
    assert slots.running() == 1
    huge = Holder(3, 30, size=8)
    assert not slots.acquire(huge)  # waits for the whole cluster
    slots.release(single)
    assert slots.acquire(huge) and slots.running() == 4
    assert not slots.acquire(single)
    slots.release(huge)
    assert slots.running() == 0
