"""Two API replicas on one PostgreSQL database: one schedules (the leader, holder of the lease),
the other serves requests only; when the leader is SIGKILLed mid-study the other takes over and
every study ends with exactly ``max_trials`` complete trials, none run twice, none lost.

Both replicas are real server processes on 127.0.0.1 sharing the database and the artifacts
folder (as replicas share a volume); they are started together, so the migration lock is
exercised too.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from autopeft.api.db import normalise_url
from tests.api.conftest import Server, client_for, make_token, python_study, wait_for

MAX_TRIALS = 8


@pytest.fixture
def replicas(postgres, tmp_path: Path):
    """``start(sleep)``: two replicas ``a`` and ``b`` on a new database, their ``sleepy`` trials
    taking ``sleep`` seconds; returns (db_url, {name: Server})."""
    servers: dict[str, Server] = {}

    def start(sleep: float) -> tuple[str, dict[str, Server]]:
        db_url = postgres.new_database()
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            env = {
                "AUTOPEFT_REPLICA_ID": name,
                "AUTOPEFT_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
                "AUTOPEFT_TEST_SLEEP": str(sleep),
                "AUTOPEFT_PRESTART_WORKERS": "1",
            }
            servers[name] = Server(db_url, tmp_path / name, env)
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda s: s.start(), servers.values()))
        return db_url, servers

    try:
        yield start
    finally:
        for server in servers.values():
            server.stop()


def health(server: Server) -> dict:
    return httpx.get(server.url + "/healthz", timeout=5, trust_env=False).json()


def roles(servers: dict[str, Server]) -> tuple[str, str]:
    """(leader, follower) names, once both agree on who leads."""

    def agreed():
        seen = {name: health(s) for name, s in servers.items()}
        leaders = [n for n, h in seen.items() if h["scheduler"] == "leader"]
        if len(leaders) == 1 and all(h["leader"] == leaders[0] for h in seen.values()):
            return leaders[0]
        return None

    leader = wait_for(agreed, 30, "one leader both replicas name", 0.2)
    return leader, next(n for n in servers if n != leader)


def trials_of(db_url: str, study_id: int) -> list[dict]:
    engine = create_engine(normalise_url(db_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    'SELECT number, state, "values", attempts, scheduled_by FROM trials '
                    "WHERE study_id = :s ORDER BY number"
                ),
                {"s": study_id},
            ).all()
    finally:
        engine.dispose()
    return [
        {
            "number": r[0],
            "state": r[1],
            "values": json.loads(r[2]) if isinstance(r[2], str) else r[2],
            "attempts": r[3],
            "scheduled_by": r[4],
        }
        for r in rows
    ]


def test_sigkill_of_the_leader_mid_study_the_follower_takes_over(replicas):
    db_url, servers = replicas(1.2)
    leader, follower = roles(servers)
    client = client_for(servers[follower], make_token(db_url, "alice"))
    studies = [  # created through the follower: the leader must pick them up from the store
        client.create_study(
            spec=python_study(
                "tests.api.workloads:sleepy",
                name=f"failover-{i}",
                max_trials=MAX_TRIALS,
                max_parallel=2,
                seed=i,
            )
        )
        for i in range(2)
    ]

    def mid_study():
        counts = [s.refresh().counts for s in studies]
        return all(c["complete"] >= 2 and c["running"] > 0 for c in counts)

    wait_for(mid_study, 120, "both studies part done with trials running", 0.2)
    before = {s.id: trials_of(db_url, s.id) for s in studies}
    # only the leader schedules: every trial started so far was started by it
    started = [t for ts in before.values() for t in ts if t["scheduled_by"] is not None]
    assert started and {t["scheduled_by"] for t in started} == {leader}, started
    assert any(t["state"] == "running" for ts in before.values() for t in ts)

    servers[leader].kill9()
    killed = time.monotonic()
    wait_for(
        lambda: health(servers[follower])["scheduler"] == "leader",
        30,
        "the follower to take the scheduler lease",
        0.1,
    )
    takeover = time.monotonic() - killed
    print(f"\ntakeover after SIGKILL of the leader: {takeover:.2f} s")
    assert health(servers[follower])["leader"] == follower

    for study in studies:
        study.wait(timeout=180, poll=0.2, progress=False)
        assert study.state == "finished", study.data
        assert study.counts == {
            "queued": 0,
            "running": 0,
            "complete": MAX_TRIALS,
            "failed": 0,
            "pruned": 0,
        }
        after = {t["number"]: t for t in trials_of(db_url, study.id)}
        assert sorted(after) == list(range(MAX_TRIALS))  # unique, none skipped, none extra
        for t in before[study.id]:
            if t["state"] == "complete":  # nothing completed was lost or run again
                assert after[t["number"]]["attempts"] == t["attempts"] == 1
                assert after[t["number"]]["values"] == t["values"]
                assert after[t["number"]]["scheduled_by"] == leader
            elif t["state"] == "running":  # requeued by the new leader, run once more
                assert after[t["number"]]["attempts"] == t["attempts"] + 1
                assert after[t["number"]]["scheduled_by"] == follower
        new = [
            t for t in after.values() if t["number"] not in {b["number"] for b in before[study.id]}
        ]
        assert all(t["scheduled_by"] == follower and t["attempts"] == 1 for t in new), new
    log = servers[follower].log()
    assert "diverged" not in log and "different from the stored" not in log
    assert takeover < 30


def test_work_asked_on_the_follower_reaches_the_leader(replicas):
    """Cancel, stop, resume, extend and delete on the follower: the leader carries them out."""
    db_url, servers = replicas(2.5)
    leader, follower = roles(servers)
    client = client_for(servers[follower], make_token(db_url, "alice"))
    spec = python_study("tests.api.workloads:sleepy", max_trials=3, max_parallel=1)
    study = client.create_study(spec=spec)

    def running():
        return study.trials(state="running")

    first = wait_for(running, 60, "a running trial")[0]
    cancelled = client.cancel_trial(first["id"])  # answered once the leader has ended it
    assert cancelled["state"] == "failed" and "cancelled by alice" in cancelled["error"]

    second = wait_for(running, 60, "the next trial running")[0]
    assert study.stop().state == "stopped"
    wait_for(lambda: not running(), 30, "the leader to stop the study's trials")
    assert client.trial(second["id"])["state"] == "queued"  # put back, as a stop does
    assert study.resume().state == "running"
    study.extend(max_trials=1)  # the leader's runner takes the new budget from the store
    study.wait(timeout=120, poll=0.2, progress=False)
    assert study.state == "finished", study.data
    assert study.counts == {"queued": 0, "running": 0, "complete": 3, "failed": 1, "pruned": 0}
    trials = trials_of(db_url, study.id)
    assert [t["number"] for t in trials] == list(range(4))
    assert {t["scheduled_by"] for t in trials} == {leader}

    other = client.create_study(spec={**spec, "max_trials": 5})
    wait_for(lambda: other.trials(state="running"), 60, "the other study's trial running")
    other.delete()  # on the follower: the leader's runner stops first
    assert client._http.get(f"/api/v1/studies/{other.id}").status_code == 404
    assert not trials_of(db_url, other.id)
    assert health(servers[leader])["scheduler"] == "leader"
    assert "Traceback" not in servers[leader].log(), servers[leader].log()


def test_a_leader_that_loses_its_lease_stops_scheduling(replicas):
    """Fencing: the leader's lock connection is killed (the process lives on): it stops its
    scheduler at once; whichever replica takes the lease next finishes the study, nothing twice."""
    db_url, servers = replicas(1.2)
    leader, _ = roles(servers)
    client = client_for(servers[leader], make_token(db_url, "alice"))
    study = client.create_study(
        spec=python_study("tests.api.workloads:sleepy", max_trials=MAX_TRIALS, max_parallel=2)
    )
    wait_for(
        lambda: study.refresh().counts["complete"] >= 2 and study.counts["running"] > 0,
        120,
        "the study part done with trials running",
        0.2,
    )
    import psycopg

    from autopeft.api.scheduling.leader import LOCK_SPACE, SCHEDULER_LOCK

    conninfo = normalise_url(db_url).replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
            "AND granted AND classid = %s AND objid = %s AND objsubid = 2",
            (LOCK_SPACE, SCHEDULER_LOCK),
        ).fetchall()
    assert killed == [(True,)]
    wait_for(lambda: "lost the scheduler lease" in servers[leader].log(), 30, "the fencing")
    roles(servers)  # one leader again (either replica)
    study.wait(timeout=180, poll=0.2, progress=False)
    assert study.state == "finished", study.data
    assert study.counts["complete"] == MAX_TRIALS and study.counts["failed"] == 0, study.counts
    assert [t["number"] for t in trials_of(db_url, study.id)] == list(range(MAX_TRIALS))


def test_the_follower_lists_what_the_leader_writes(replicas):
    """The follower's listing (cached, kept valid by the change feed) follows the trials the
    leader's scheduler writes, and ends equal to the leader's."""
    db_url, servers = replicas(0.2)
    leader, follower = roles(servers)
    token = make_token(db_url, "alice")
    study = client_for(servers[leader], token).create_study(
        spec=python_study("tests.api.workloads:sleepy", max_trials=6, max_parallel=2)
    )
    follower_client = client_for(servers[follower], token)
    on_follower = follower_client.study(study.id)
    seen_states: set[str] = set()
    running_on_me: set[int] = set()  # /me on the follower counts the trials the leader runs

    def settled():
        trials = on_follower.trials()
        seen_states.update(t["state"] for t in trials)
        running_on_me.add(follower_client.me()["usage"]["running_trials"])
        return len(trials) == 6 and all(t["state"] == "complete" for t in trials)

    wait_for(settled, 90, "the follower to list 6 complete trials", 0.05)
    assert "running" in seen_states  # it followed the study as it ran, not only its end
    assert max(running_on_me) > 0 and max(running_on_me) <= 2  # max_parallel
    assert follower_client.me()["usage"]["running_trials"] == 0
    assert on_follower.trials() == client_for(servers[leader], token).study(study.id).trials()
