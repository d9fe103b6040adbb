"""Enqueued configs and attached results (``POST /studies/{id}/enqueue`` and ``/attach``) through
the real server, the client and the CLI: enqueued configs are the next trials run and are told and
counted like any; a bad config is a 422 naming ``configs.<i>.<key>``; an attached result is a
complete trial of kind ``attached``, told to the optimiser (a restart replays it: the history's
optimiser ids stay in step), on the validation front but on the test-split front only with the
user's test values, and never exported. Also the optimisers' side: every one takes a told point it
did not ask for, and a warm start's list is not skipped by one."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import create_engine, text

from autopeft.client import ApiError
from tests.api import test_failover
from tests.api.conftest import client_for, make_token, python_study
from tests.api.workloads import OBJECTIVES, SPACE, _metrics
from tests.waiting import wait_for

replicas = test_failover.replicas  # the two-replica fixture (PostgreSQL), shared

CONFIGS = [{"x": 0.31, "y": 0.05}, {"x": 0.77, "y": 0.66}]


def _events(db_url: str, study_id: int) -> list[tuple[str, dict]]:
    import json

    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT kind, payload FROM events WHERE study_id = :s ORDER BY seq"),
            {"s": study_id},
        ).all()
    engine.dispose()
    return [(k, p if isinstance(p, dict) else json.loads(p)) for k, p in rows]


def _by_number(study) -> dict[int, dict]:
    return {t["number"]: t for t in study.trials()}


def test_enqueued_configs_run_next_and_count_in_the_budget(sqlite_url, server_factory):
    server = server_factory(sqlite_url, env={"AUTOPEFT_TEST_SLEEP": "0.3"})
    client = client_for(server, make_token(sqlite_url, "alice"))
    study = client.create_study(
        spec=python_study("tests.api.workloads:sleepy", max_trials=5, max_parallel=1)
    )
    wait_for(lambda: study.refresh().counts["complete"] >= 1, 60, "a complete trial")
    study.stop()
    made = len(study.trials())
    out = study.enqueue(CONFIGS)
    assert out["configs"] == CONFIGS and out["waiting"] == 2 and out["max_trials_added"] == 0
    assert out["study"]["state"] == "stopped"  # they wait for the resume
    study.resume().wait(timeout=120, poll=0.2, progress=False)
    trials = _by_number(study)
    assert sorted(trials) == list(range(5))  # counted in max_trials: 5 trials in all
    requeued = [n for n in range(made) if trials[n]["attempts"] > 1]
    first = made  # the next trials made after the resume are the enqueued ones, in order
    for i, config in enumerate(CONFIGS):
        t = trials[first + i]
        assert t["config"] == config and t["label"] == "enqueued" and t["kind"] == "search"
        assert t["state"] == "complete" and t["values"] == pytest.approx(_metrics(config))
    assert all(trials[n]["label"] is None for n in trials if n < made or n >= made + 2), requeued
    enqueue_events = [p for k, p in _events(sqlite_url, study.id) if k == "enqueue"]
    assert [p["config"] for p in enqueue_events] == CONFIGS
    tells = {p["trial_id"] for k, p in _events(sqlite_url, study.id) if k == "tell"}
    assert {trials[first]["id"], trials[first + 1]["id"]} <= tells  # told like any trial
    spec = study.refresh().spec
    assert [e["trial_id"] for e in spec["enqueued"]] == [trials[first + i]["id"] for i in (0, 1)]

    # a finished study runs again for them, max_trials raised by what does not fit (recorded)
    out = study.enqueue([{"x": 0.5, "y": 0.5}])
    assert out["max_trials_added"] == 1 and out["study"]["state"] == "running"
    assert out["study"]["spec"]["extensions"][-1]["by"] == "enqueue"
    study.wait(timeout=120, poll=0.2, progress=False)
    trials = _by_number(study)
    assert sorted(trials) == list(range(6)) and trials[5]["config"] == {"x": 0.5, "y": 0.5}
    assert trials[5]["label"] == "enqueued" and trials[5]["state"] == "complete"

    # a restart replays the enqueued trials (registered as asked): the next asks stay in step
    server.stop()
    server.start()
    study.extend(max_trials=1).wait(timeout=120, poll=0.2, progress=False)
    assert study.counts["complete"] == 7
    log = server.log()
    assert "diverged" not in log, log


def test_bad_enqueued_configs_are_refused_naming_the_field(sqlite_url, server_factory):
    server = server_factory(sqlite_url)
    token = make_token(sqlite_url, "alice")
    client = client_for(server, token)
    study = client.create_study(spec=python_study(max_trials=1))
    for configs, field in (
        ([{"x": 0.1, "y": 0.1}, {"x": 1.5, "y": 0.1}], "configs.1.x"),
        ([{"x": 0.1, "y": 0.1, "z": 3}], "configs.0.z"),
        ([{"x": 0.1}], "configs.0.y"),
        ([{"x": "a", "y": 0.1}], "configs.0.x"),
        (["not a mapping"], "configs.0"),
    ):
        with pytest.raises(ApiError) as err:
            study.enqueue(configs)
        assert err.value.status == 422 and err.value.field == field, (configs, err.value)
    r = httpx.post(
        f"{server.url}/api/v1/studies/{study.id}/enqueue",
        json={"configs": []},
        headers={"Authorization": f"Bearer {token}"},
        trust_env=False,
    )
    assert r.status_code == 422
    assert "enqueued" not in study.refresh().spec  # nothing recorded by a refused request
    other = client_for(server, make_token(sqlite_url, "bob"))
    with pytest.raises(ApiError) as err:
        other.study(study.id)
    assert err.value.status == 404
    r = httpx.post(
        f"{server.url}/api/v1/studies/{study.id}/enqueue",
        json={"configs": [{"x": 0.1, "y": 0.1}]},
        headers={"Authorization": f"Bearer {make_token(sqlite_url, 'carol')}"},
        trust_env=False,
    )
    assert r.status_code == 404  # another user's study does not exist for you


def test_attached_result_is_told_on_the_validation_front_only_and_never_exported(
    sqlite_url, server_factory, capsys
):
    server = server_factory(sqlite_url)
    token = make_token(sqlite_url, "alice")
    client = client_for(server, token)
    study = client.create_study(
        spec=python_study("tests.api.workloads:with_checkpoint", max_trials=3)
    )
    study.wait(timeout=120, poll=0.2, progress=False)
    assert study.state == "finished"

    # refused: values missing an objective, or not a number; a config outside the space
    for body, field in (
        ({"config": {"x": 0.2, "y": 0.1}, "values": {"accuracy": 0.9}}, "values.cost"),
        (
            {"config": {"x": 0.2, "y": 0.1}, "values": {"accuracy": "high", "cost": 1}},
            "values.accuracy",
        ),
        ({"config": {"x": 2.0, "y": 0.1}, "values": {"accuracy": 0.9, "cost": 1}}, "config.x"),
        (
            {
                "config": {"x": 0.2, "y": 0.1},
                "values": {"accuracy": 0.9, "cost": 1},
                "test_values": {"f1": 1},
            },
            "test_values.f1",
        ),
    ):
        with pytest.raises(ApiError) as err:
            study.attach(**body)
        assert err.value.status == 422 and err.value.field == field, (body, err.value)

    # a dominating result: on the validation front, alone; not on the test-split one
    best = study.attach({"x": 0.3, "y": 0.0}, {"accuracy": 2.0, "cost": -1.0}, label="paper")
    assert best["kind"] == "attached" and best["state"] == "complete" and best["label"] == "paper"
    assert best["number"] == 3 and best["attempts"] == 0 and best["test_values"] is None
    assert best["test_source"] is None
    assert [t["id"] for t in study.pareto()] == [best["id"]]
    assert best["id"] not in [t["id"] for t in study.pareto(split="test")]
    assert study.refresh().counts["complete"] == 4 and study.state == "finished"
    assert [t for t in study.trials() if t["id"] == best["id"]][0]["kind"] == "attached"
    attach_events = [p for k, p in _events(sqlite_url, study.id) if k == "attach"]
    assert [p["trial_id"] for p in attach_events] == [best["id"]]

    # with the user's test values it is on the test-split front, marked as reported by the user
    other = study.attach(
        {"x": 0.4, "y": 0.0},
        {"accuracy": 3.0, "cost": -2.0},
        test_values={"accuracy": 0.7, "examples": 200},
    )
    assert other["test_values"] == {"test_accuracy": 0.7, "test_examples": 200.0}
    assert other["test_source"] == "user"
    tested = {t["id"]: t for t in study.pareto(split="test")}
    assert other["id"] in tested and best["id"] not in tested
    assert tested[other["id"]]["values"]["accuracy"] == 0.7
    assert tested[other["id"]]["test_source"] == "user"
    listed = {t["id"]: t for t in study.trials()}
    assert listed[other["id"]]["test_source"] == "user"
    assert all(t["test_source"] is None for t in listed.values() if t["kind"] == "search")

    # never exported (no weights here), while a trained trial is
    trained = min(t["id"] for t in listed.values() if t["kind"] == "search")
    headers = {"Authorization": f"Bearer {token}"}
    ok = httpx.get(
        f"{server.url}/api/v1/trials/{trained}/adapter", headers=headers, trust_env=False
    )
    assert ok.status_code == 200
    for what in ("adapter", "merged"):
        r = httpx.get(
            f"{server.url}/api/v1/trials/{best['id']}/{what}", headers=headers, trust_env=False
        )
        assert r.status_code == 409 and "attached" in r.json()["error"]["message"], r.text

    # a restart replays the attached results (told, not trained): the next ask's id is in step
    server.stop()
    server.start()
    study.extend(max_trials=1).wait(timeout=120, poll=0.2, progress=False)
    trials = _by_number(study)
    assert sorted(trials) == list(range(6)) and trials[5]["kind"] == "search"
    asks = [p for k, p in _events(sqlite_url, study.id) if k == "ask"]
    assert asks[-1]["optimizer_id"] == "5"  # 3 asked + 2 attached before it
    assert "diverged" not in server.log()
    assert trials[3]["attempts"] == 0 and trials[4]["attempts"] == 0  # never trained

    # the CLI: attach, and the front shows it marked
    from autopeft.cli import main

    remote = ["--url", server.url, "--token", token]
    capsys.readouterr()
    code = main(
        ["study", "attach", str(study.id), "--config", '{"x": 0.35, "y": 0.0}']
        + ["--values", '{"accuracy": 4.0, "cost": -3.0}', *remote]
    )
    out = capsys.readouterr().out
    assert code == 0 and "attached" in out, out
    assert _by_number(study)[6]["kind"] == "attached"
    assert main(["study", "show", str(study.id), *remote]) == 0
    assert "attached" in capsys.readouterr().out
    code = main(
        ["study", "attach", str(study.id), "--config", '{"x": 0.35}', "--values", "{}", *remote]
    )
    assert code == 1 and "config.y" in capsys.readouterr().err


def test_attach_to_a_running_study_and_enqueue_from_the_cli(sqlite_url, server_factory, capsys):
    """A running study's runner makes the attached trial (the request waits for it)."""
    server = server_factory(sqlite_url, env={"AUTOPEFT_TEST_SLEEP": "0.3"})
    token = make_token(sqlite_url, "alice")
    client = client_for(server, token)
    study = client.create_study(
        spec=python_study(
            "tests.api.workloads:sleepy",
            max_trials=4,
            max_parallel=1,
            optimizer={"name": "tpe", "options": {"n_startup_trials": 2}},
        )
    )
    wait_for(lambda: study.refresh().counts["running"] >= 1, 60, "a running trial")
    t = study.attach({"x": 0.3, "y": 0.0}, {"accuracy": 0.99, "cost": 0.3})
    assert t["kind"] == "attached" and t["state"] == "complete"
    from autopeft.cli import main

    remote = ["--url", server.url, "--token", token]
    capsys.readouterr()
    code = main(["study", "enqueue", str(study.id), "--config", '{"x": 0.9, "y": 0.9}', *remote])
    out = capsys.readouterr().out
    assert code == 0 and "1 config(s) enqueued" in out, out
    study.wait(timeout=120, poll=0.2, progress=False)
    trials = list(study.trials())
    searched = [t for t in trials if t["kind"] == "search"]
    # the attached result is not counted in max_trials; the enqueued config is (max_trials raised,
    # and recorded, only when the runner had asked for the last trial before it heard of it)
    spec = study.refresh().spec
    raised = sum(e["max_trials"] for e in spec.get("extensions") or [] if e.get("by") == "enqueue")
    assert len(searched) == spec["max_trials"] == 4 + raised and raised <= 1
    assert [t["config"] for t in searched if t["label"] == "enqueued"] == [{"x": 0.9, "y": 0.9}]
    assert all(t["state"] == "complete" for t in trials)
    assert "diverged" not in server.log()
    # tpe is rebuilt by replaying real asks: the enqueue and attach entries replay in between
    server.stop()
    server.start()
    study.extend(max_trials=1).wait(timeout=120, poll=0.2, progress=False)
    assert study.counts["complete"] == len(trials) + 1
    assert "diverged" not in server.log(), server.log()
    code = main(["study", "enqueue", str(study.id), "--config", '{"x": 9, "y": 0.9}', *remote])
    assert code == 1 and "configs.0.x" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["random", "mobo", "tpe", "pbt"])
def test_every_optimiser_takes_a_result_it_did_not_ask_for(name):
    from autopeft.optim import create_optimizer
    from autopeft.space import SearchSpace

    space = SearchSpace.from_dict(SPACE)
    objectives = [(o["name"], o["direction"]) for o in OBJECTIVES]
    opt = create_optimizer(name, space, objectives, seed=0)
    first = opt.ask(1)[0]
    told = opt.add_trial({"x": 0.3, "y": 0.0}, {"accuracy": 2.0, "cost": -1.0}, "complete")
    assert told.state == "complete" and len(opt.trials) == 2
    assert [t.id for t in opt.pareto()] == [told.id]
    opt.tell(first.id, _metrics(first.config))
    running = opt.add_trial({"x": 0.5, "y": 0.5}, state="running")  # an enqueued config
    opt.tell(running.id, _metrics({"x": 0.5, "y": 0.5}))
    nxt = opt.ask(1)[0]
    assert nxt.id == 3 and nxt.config not in ({"x": 0.3, "y": 0.0}, {"x": 0.5, "y": 0.5})


def test_a_result_added_between_asks_never_skips_a_warm_start_config():
    from autopeft.optim import create_optimizer
    from autopeft.space import SearchSpace

    space = SearchSpace.from_dict(SPACE)
    warm = [{"x": 0.1, "y": 0.1}, {"x": 0.2, "y": 0.2}, {"x": 0.3, "y": 0.3}]
    objectives = [(o["name"], o["direction"]) for o in OBJECTIVES]
    opt = create_optimizer("random", space, objectives, seed=0, warm_start=warm)
    asked = [opt.ask(1)[0].config]
    opt.add_trial({"x": 0.9, "y": 0.9}, {"accuracy": 0.1, "cost": 1.0})
    opt.add_trial(warm[2], {"accuracy": 0.1, "cost": 1.0})  # already evaluated: not asked again
    asked += [s.config for s in opt.ask(2)]
    assert asked[:2] == warm[:2] and asked[2] not in warm


def test_an_attached_result_is_never_reused_by_a_warm_start(sqlite_url, server_factory):
    """A warm start reuses only results trained here (with a checkpoint): an attached one on the
    source's front is mapped, and trained by the new study."""
    server = server_factory(sqlite_url)
    client = client_for(server, make_token(sqlite_url, "alice"))
    source = client.create_study(spec=python_study(max_trials=2, name="src"))
    source.wait(timeout=120, poll=0.2, progress=False)
    best = source.attach({"x": 0.3, "y": 0.0}, {"accuracy": 2.0, "cost": -1.0})
    warm = client.create_study(
        spec=python_study(
            max_trials=2,
            name="warm",
            optimizer={"name": "random", "options": {"warm_start": {"study": source.id, "top": 1}}},
        )
    )
    record = warm.spec["warm_start"]
    assert record["reused"] == [] and [e["source_trial"] for e in record["mapped"]] == [best["id"]]
    warm.wait(timeout=120, poll=0.2, progress=False)
    first = _by_number(warm)[0]
    assert first["config"] == {"x": 0.3, "y": 0.0} and first["attempts"] == 1
    assert first["values"] == pytest.approx(_metrics({"x": 0.3, "y": 0.0}))  # trained here


def test_peft_attach_computes_the_exact_cost_and_is_never_tested(
    sqlite_url, server_factory, tiny_model, small_csv, tmp_path
):
    """The real peft workload: ``trainable_params`` of an attached result is computed from the
    config by the study's cost model (a value that disagrees is refused, naming it), and a new
    runner never queues a held-out test run for it (it has no adapter here)."""
    from tests.conftest import tiny_peft_workload

    server = server_factory(sqlite_url)
    client = client_for(server, make_token(sqlite_url, "alice"))
    study = client.create_study(
        spec={
            "name": "peft",
            "space": "lora_per_layer",
            "objectives": [
                {"name": "accuracy", "direction": "maximize"},
                {"name": "trainable_params", "direction": "minimize"},
            ],
            "workload": tiny_peft_workload(tiny_model, small_csv),
            "optimizer": {"name": "random"},
            "baselines": [],
            "max_trials": 2,
            "max_parallel": 1,
        }
    )
    study.wait(timeout=600, poll=0.5, progress=False)
    trained = sorted(study.trials(), key=lambda t: t["number"])[0]
    assert trained["state"] == "complete", trained
    with pytest.raises(ApiError) as err:
        study.attach(
            trained["config"],
            {"accuracy": 0.9, "trainable_params": trained["values"]["trainable_params"] + 1},
        )
    assert err.value.status == 422 and err.value.field == "values.trainable_params"
    attached = study.attach(trained["config"], {"accuracy": 1.0}, label="elsewhere")
    assert attached["values"]["trainable_params"] == trained["values"]["trainable_params"]
    assert [t["id"] for t in study.pareto()] == [attached["id"]]  # it dominates
    study.extend(max_trials=1).wait(timeout=600, poll=0.5, progress=False)
    events = _events(sqlite_url, study.id)
    assert not [p for k, p in events if k == "test_failed" and p["trial_id"] == attached["id"]]
    after = client.trial(attached["id"])
    assert after["test_values"] is None and after["test_source"] is None
    assert attached["id"] not in [t["id"] for t in study.pareto(split="test")]
    tested = [t for t in study.trials() if t["test_values"]]
    assert tested and all(t["test_source"] == "service" for t in tested)


def test_enqueue_and_attach_on_a_follower_reach_the_leader(replicas):
    """Two replicas on PostgreSQL: asked on the follower, recorded in the store; the leader's
    runner makes the attached trial (the request waits for it) and runs the enqueued config."""
    db_url, servers = replicas(0.5)
    leader, follower = test_failover.roles(servers)
    client = client_for(servers[follower], make_token(db_url, "alice"))
    study = client.create_study(
        spec=python_study("tests.api.workloads:sleepy", max_trials=3, max_parallel=1)
    )
    wait_for(lambda: study.trials(state="running"), 60, "a running trial")
    attached = study.attach({"x": 0.3, "y": 0.0}, {"accuracy": 2.0, "cost": -1.0})
    assert attached["kind"] == "attached" and attached["state"] == "complete", attached
    study.enqueue([{"x": 0.9, "y": 0.9}])
    study.wait(timeout=120, poll=0.2, progress=False)
    trials = list(study.trials())
    assert [t["config"] for t in trials if t["label"] == "enqueued"] == [{"x": 0.9, "y": 0.9}]
    # counted in max_trials: raised (and recorded) only when the leader had asked meanwhile
    spec = study.refresh().spec
    assert len([t for t in trials if t["kind"] == "search"]) == spec["max_trials"]
    raised = [e for e in spec.get("extensions") or [] if e.get("by") == "enqueue"]
    assert spec["max_trials"] == 3 + sum(e["max_trials"] for e in raised)
    assert all(t["state"] == "complete" for t in trials)
    assert {
        t["scheduled_by"] for t in test_failover.trials_of(db_url, study.id) if t["attempts"]
    } == {leader}
    assert "Traceback" not in servers[leader].log(), servers[leader].log()


def test_enqueue_on_a_study_whose_time_budget_is_spent_is_a_conflict(sqlite_url, server_factory):
    """A study that ended on its time budget would run nothing more: enqueue says to extend the
    budget first (409), records nothing; after extend it runs the config."""
    server = server_factory(sqlite_url, env={"AUTOPEFT_TEST_SLEEP": "0.6"})
    client = client_for(server, make_token(sqlite_url, "alice"))
    study = client.create_study(
        spec=python_study(
            "tests.api.workloads:sleepy", max_trials=50, max_parallel=1, max_seconds=1
        )
    )
    study.wait(timeout=120, poll=0.2, progress=False)
    assert study.state == "finished" and study.data["message"] == "time budget reached"
    with pytest.raises(ApiError) as err:
        study.enqueue([{"x": 0.5, "y": 0.5}])
    assert err.value.status == 409 and "max_seconds" in err.value.message
    assert "enqueued" not in study.refresh().spec
    made = len(study.trials())
    study.extend(max_seconds=600)
    study.enqueue([{"x": 0.5, "y": 0.5}])
    wait_for(
        lambda: any(t["label"] == "enqueued" and t["state"] == "complete" for t in study.trials()),
        60,
        "the enqueued config to run",
    )
    enqueued = [t for t in study.trials() if t["label"] == "enqueued"]
    # next, or after the one trial the runner (running again since the extend) had started
    assert made <= enqueued[0]["number"] <= made + 1
    assert enqueued[0]["config"] == {"x": 0.5, "y": 0.5}
    study.stop()
