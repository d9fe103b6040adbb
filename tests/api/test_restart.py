"""`kill -9` of the controller mid-study, then a restart: nothing completed is lost, the study
finishes with exactly `max_trials` complete trials, and trial numbers stay unique."""

from __future__ import annotations

from tests.api.conftest import client_for, make_token, python_study, wait_for


def test_kill9_mid_study_then_restart(db_url, server_factory):
    _kill9_then_restart(db_url, server_factory, "random")


def test_kill9_with_an_optimiser_replayed_by_asking(sqlite_url, server_factory):
    """tpe is rebuilt by replaying real asks (not add_trial): the same path must hold."""
    _kill9_then_restart(sqlite_url, server_factory, "tpe")


def _kill9_then_restart(db_url, server_factory, optimizer):
    env = {"AUTOPEFT_TEST_SLEEP": "0.6"}
    server = server_factory(db_url, env=env)
    client = client_for(server, make_token(db_url, "alice"))
    study = client.create_study(
        spec=python_study(
            "tests.api.workloads:sleepy",
            max_trials=12,
            max_parallel=3,
            optimizer={"name": optimizer, "options": {}},
        )
    )
    wait_for(
        lambda: study.refresh().counts["complete"] >= 3 and study.counts["running"] > 0,
        120,
        "some complete and some running trials",
    )
    server.kill9()
    # what the dead controller had committed
    from sqlalchemy import create_engine, text

    from autopeft.api.db import normalise_url

    engine = create_engine(normalise_url(db_url))
    with engine.connect() as conn:
        before = {
            (n, s)
            for n, s in conn.execute(
                text("SELECT number, state FROM trials WHERE study_id = :s"), {"s": study.id}
            )
        }
        completed_before = {
            n: v
            for n, v in conn.execute(
                text(
                    "SELECT number, \"values\" FROM trials WHERE study_id = :s AND state = 'complete'"
                ),
                {"s": study.id},
            )
        }
    engine.dispose()
    assert any(s == "running" for _, s in before), before
    assert completed_before

    restarted = server_factory(db_url, env=env)
    client = client_for(restarted, client._http.headers["Authorization"].split()[1])
    study = client.study(study.id)
    study.wait(timeout=300, poll=0.2, progress=False)
    assert study.state == "finished", study.data
    trials = study.trials()
    numbers = [t["number"] for t in trials]
    assert sorted(numbers) == list(range(12)), numbers  # unique, none skipped, none extra
    assert study.counts == {"queued": 0, "running": 0, "complete": 12, "failed": 0, "pruned": 0}
    after = {t["number"]: t for t in trials}
    for number, values in completed_before.items():  # nothing completed was lost or redone
        assert after[number]["state"] == "complete" and after[number]["attempts"] == 1
        stored = values if isinstance(values, dict) else __import__("json").loads(values)
        assert after[number]["values"] == stored
    requeued = [n for n, s in before if s == "running"]
    assert all(after[n]["attempts"] == 2 for n in requeued)
    assert "diverged" not in restarted.log() and "different from the stored" not in restarted.log()


def test_a_study_that_cannot_resume_fails_with_its_trials(
    sqlite_url, server_factory, tiny_model, small_csv, tmp_path
):
    """A restarted controller whose study can no longer be rebuilt (its model folder is gone) marks
    the study failed, and the trials that were running when it died end with it: a failed study
    never shows a trial running forever (seen in the soak: one runner of two failed on resume)."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    server = server_factory(sqlite_url)
    client = client_for(server, make_token(sqlite_url, "alice"))
    workload = {
        "kind": "peft",
        "model": str(model),
        "dataset": str(small_csv),
        "validation_fraction": 0.2,
        "batch_size": 8,
        "max_length": 32,
        "epochs": 3,
        "pooling": "mean",
    }
    study = client.create_study(
        spec=python_study(
            space="lora_per_layer",
            objectives=[
                {"name": "accuracy", "direction": "maximize"},
                {"name": "trainable_params", "direction": "minimize"},
            ],
            workload=workload,
            baselines=[],
            max_trials=4,
            max_parallel=2,
        )
    )
    wait_for(lambda: study.refresh().counts["running"] > 0, 120, "a running trial")
    server.kill9()
    shutil.rmtree(model)
    server.start()
    wait_for(lambda: study.refresh().state == "failed", 120, "the study to fail on resume")
    trials = study.trials()
    assert not [t for t in trials if t["state"] in ("queued", "running")], trials
    ended = [t for t in trials if t["state"] == "failed"]
    assert ended and all("the study failed" in t["error"] for t in ended), ended
    assert study.data["message"]
