"""Isolation between users: ids are never reused after a delete (SQLite used to hand a deleted study's
id, and its artifact folder, to the next user's study), a delete removes the artifacts, and an
enumeration of every id over every route finds nothing of the other user. Delete and resume of one
study are serialised: no runner outlives its study."""

from __future__ import annotations

import sqlite3
import threading

import httpx
import pytest

from tests.api.conftest import client_for, make_token, python_study, wait_for


def _h(token):
    return {"Authorization": f"Bearer {token}"}


def _finished(client, spec):
    study = client.create_study(spec=spec)
    study.wait(timeout=120, poll=0.2, progress=False)
    assert study.state == "finished", study.data
    return study


def test_ids_never_reused_and_deleted_artifacts_never_served(db_url, server_factory):
    server = server_factory(db_url)
    alice_token, bob_token = make_token(db_url, "alice"), make_token(db_url, "bob")
    alice, bob = client_for(server, alice_token), client_for(server, bob_token)
    kept = _finished(
        alice, python_study("tests.api.workloads:with_checkpoint", max_trials=2, name="kept")
    )
    gone = _finished(
        alice, python_study("tests.api.workloads:with_checkpoint", max_trials=2, name="gone")
    )
    gone_trials = gone.trials()
    folder = server.workdir / "artifacts" / f"study-{gone.id}"
    assert folder.is_dir() and any(folder.rglob("weights.bin"))
    gone.delete()
    # bob's new study (the highest id was just freed): his trials export nothing (his workload writes no
    # adapter), so alice's deleted adapters must not come back through his trials
    mine = _finished(bob, python_study("tests.api.workloads:quick", max_trials=2, name="bob's"))
    with httpx.Client(base_url=server.url, trust_env=False) as http:
        for t in mine.trials():
            r = http.get(f"/api/v1/trials/{t['id']}/adapter", headers=_h(bob_token))
            assert r.status_code == 404, "bob downloaded an adapter his study never made"
    assert mine.id > gone.id  # a fresh id, and fresh trial ids
    assert min(t["id"] for t in mine.trials()) > max(t["id"] for t in gone_trials)
    assert not folder.exists()  # its checkpoints and logs are gone too
    with httpx.Client(base_url=server.url, trust_env=False) as http:
        for t in gone_trials:  # nobody gets the deleted study's adapter, reports or trial
            for path in (
                f"/api/v1/trials/{t['id']}",
                f"/api/v1/trials/{t['id']}/reports",
                f"/api/v1/trials/{t['id']}/adapter",
            ):
                for token in (alice_token, bob_token):
                    assert http.get(path, headers=_h(token)).status_code == 404, path
        assert http.get(f"/api/v1/studies/{gone.id}", headers=_h(bob_token)).status_code == 404

        # enumerate every id on every route, as both users: each sees exactly their own
        owned = {
            "alice": {"studies": {kept.id}, "trials": {t["id"] for t in kept.trials()}},
            "bob": {"studies": {mine.id}, "trials": {t["id"] for t in mine.trials()}},
        }
        top = max(mine.id, max(owned["bob"]["trials"])) + 2
        for name, token in (("alice", alice_token), ("bob", bob_token)):
            for i in range(1, top + 1):
                for path in (
                    f"/api/v1/studies/{i}",
                    f"/api/v1/studies/{i}/trials",
                    f"/api/v1/studies/{i}/pareto",
                    f"/api/v1/studies/{i}/hypervolume",
                ):
                    code = http.get(path, headers=_h(token)).status_code
                    assert code == (200 if i in owned[name]["studies"] else 404), (name, path, code)
                for path in (f"/api/v1/trials/{i}", f"/api/v1/trials/{i}/reports"):
                    code = http.get(path, headers=_h(token)).status_code
                    assert code == (200 if i in owned[name]["trials"] else 404), (name, path, code)
                code = http.get(f"/api/v1/trials/{i}/adapter", headers=_h(token)).status_code
                assert code == 404 or (
                    code == 200 and i in owned[name]["trials"] and name == "alice"
                ), (name, i, code)


def test_delete_racing_resume_leaves_no_runner(sqlite_url, server_factory):
    """A DELETE racing a resume used to leave a runner working on the deleted study (log: FOREIGN KEY
    constraint failed; 'NoneType' object has no attribute 'state')."""
    server = server_factory(sqlite_url, env={"AUTOPEFT_TEST_SLEEP": "3"})
    token = make_token(sqlite_url, "racer")
    client = client_for(server, token)
    deleted = []
    with httpx.Client(base_url=server.url, trust_env=False, timeout=120) as http:
        for round_ in range(6):
            study = client.create_study(
                spec=python_study(
                    "tests.api.workloads:sleepy",
                    max_trials=40,
                    max_parallel=2,
                    name=f"race {round_}",
                )
            )
            wait_for(lambda s=study: s.refresh().counts["running"] > 0, 60, "a running trial")
            study.stop()
            answers = {}

            def call(kind, method, path, answers=answers):
                answers[kind] = http.request(method, path, headers=_h(token)).status_code

            threads = [
                threading.Thread(
                    target=call, args=("resume", "POST", f"/api/v1/studies/{study.id}/resume")
                ),
                threading.Thread(
                    target=call, args=("delete", "DELETE", f"/api/v1/studies/{study.id}")
                ),
            ]
            if round_ % 2:
                threads.reverse()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert answers["delete"] == 204 and answers["resume"] in (200, 404), answers
            deleted.append(study.id)
        # the next study runs to its end: any runner left on a deleted study would have written by then
        last = client.create_study(
            spec=python_study("tests.api.workloads:quick", max_trials=4, name="after")
        )
        last.wait(timeout=120, poll=0.2, progress=False)
        assert last.state == "finished"
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
        for table in ("trials", "events"):
            orphans = conn.execute(
                f"SELECT count(*) FROM {table} WHERE study_id NOT IN (SELECT id FROM studies)"
            )
            assert orphans.fetchone()[0] == 0, table
        left = conn.execute(
            f"SELECT count(*) FROM studies WHERE id IN ({','.join(map(str, deleted))})"
        ).fetchone()
        assert left[0] == 0
    log = server.log()
    for bad in ("FOREIGN KEY", "NoneType", "Traceback", "failed"):
        assert bad not in log, log
    for sid in deleted:
        assert not (server.workdir / "artifacts" / f"study-{sid}").exists(), sid
    assert client.me()["usage"]["running_trials"] == 0


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_store_never_reuses_ids(db, tmp_path, request):
    """Straight at the store: delete the row with the highest id of every table, insert again."""
    from sqlalchemy import create_engine, text

    from autopeft.api.db import normalise_url
    from autopeft.api.migrate import upgrade

    url = (
        f"sqlite:///{tmp_path / 'ids.db'}"
        if db == "sqlite"
        else request.getfixturevalue("postgres").new_database()
    )
    upgrade(url)
    engine = create_engine(normalise_url(url))
    inserts = {
        "users": "INSERT INTO users (name, role, created_at) VALUES (:n, 'user', '2026-01-01')",
        "studies": "INSERT INTO studies (user_id, name, state, spec, created_at, elapsed_s) "
        "VALUES (1, :n, 'running', '{}', '2026-01-01', 0)",
        "datasets": "INSERT INTO datasets (user_id, name, filename, format, encoding, size_bytes, sha256, rows, "
        "columns, text_column, label_column, label_counts, created_at) VALUES (1, :n, 'f', 'csv', "
        "'utf-8', 1, 'x', 1, '[]', '[]', 'label', '{}', '2026-01-01')",
    }
    with engine.begin() as conn:
        conn.execute(text(inserts["users"]), {"n": "owner"})
    for table, sql in inserts.items():
        with engine.begin() as conn:
            conn.execute(text(sql), {"n": f"{table}-a"})
            conn.execute(text(sql), {"n": f"{table}-b"})
            top = conn.execute(text(f"SELECT max(id) FROM {table}")).scalar()
            if table != "users":
                conn.execute(text(f"DELETE FROM {table} WHERE id = :i"), {"i": top})
        with engine.begin() as conn:
            if table == "users":
                conn.execute(text(f"DELETE FROM {table} WHERE id = :i"), {"i": top})
            conn.execute(text(sql), {"n": f"{table}-c"})
            new = conn.execute(text(f"SELECT max(id) FROM {table}")).scalar()
        assert new > top, (table, new, top)
    engine.dispose()
