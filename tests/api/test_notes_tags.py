"""Notes and tags on studies and trials (``PATCH /studies/{id}``, ``PATCH /trials/{id}``; client
``annotate`` / ``annotate_trial``; CLI ``study note`` / ``study tag``), editable by their owner
only, searchable in the study list (``?q=``, ``?tag=``), on SQLite and PostgreSQL, through the
real server while the scheduler runs the study."""

from __future__ import annotations

import httpx
import pytest

from autopeft.client import ApiError
from tests.api.conftest import client_for, make_token, python_study


def _patch(server, token, path, body):
    return httpx.patch(
        f"{server.url}/api/v1{path}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        trust_env=False,
    )


def test_notes_and_tags_on_studies_and_trials(db_url, server_factory, capsys):
    server = server_factory(db_url)
    token = make_token(db_url, "alice")
    alice = client_for(server, token)
    a = alice.create_study(
        spec=python_study("tests.api.workloads:sleepy", name="lr sweep", max_trials=4)
    )
    b = alice.create_study(spec=python_study(name="baseline run", max_trials=2))

    # set while the scheduler runs the study: the runner's own writes keep them
    a.annotate(notes="first try: ranks <= 8", tags=["tweets", "LoRA", "tweets"])
    assert a.notes == "first try: ranks <= 8" and a.tags == ["tweets", "LoRA"]
    a.wait(timeout=180, poll=0.2, progress=False)
    b.wait(timeout=180, poll=0.2, progress=False)
    a.refresh()
    assert a.state == "finished" and a.tags == ["tweets", "LoRA"]
    assert a.notes == "first try: ranks <= 8"

    # the list: every study has its tags; search by text (name, notes, tag) and by tags
    assert {s.id: s.tags for s in alice.studies()} == {a.id: ["tweets", "LoRA"], b.id: []}
    assert [s.id for s in alice.studies(q="RANKS")] == [a.id]  # notes, any case
    assert [s.id for s in alice.studies(q="baseline")] == [b.id]  # name
    assert [s.id for s in alice.studies(q="lora")] == [a.id]  # a tag
    assert [s.id for s in alice.studies(tags=["lora", "Tweets"])] == [a.id]
    assert alice.studies(tags=["tweets", "bbc"]) == []

    # a field given replaces; one not given is kept; null / [] clear
    a.annotate(tags=["bbc"])
    assert a.tags == ["bbc"] and a.notes == "first try: ranks <= 8"
    a.annotate(notes=None, tags=[])
    assert a.notes is None and a.tags == []

    # trials: the same, and the trial list shows them
    trial = a.trials()[0]
    got = alice.annotate_trial(trial["id"], notes="diverged at step 2", tags=["odd"])
    assert got["notes"] == "diverged at step 2" and got["tags"] == ["odd"]
    listed = {t["id"]: t for t in a.trials()}
    assert listed[trial["id"]]["tags"] == ["odd"]
    assert alice.trial(trial["id"])["notes"] == "diverged at step 2"
    alice.annotate_trial(trial["id"], tags=[])
    assert {t["id"]: t for t in a.trials()}[trial["id"]]["tags"] == []
    alice.annotate_trial(trial["id"], tags=["odd"])

    # refusals: 422 naming the field; others' studies and trials do not exist for you
    for body, field in (
        ({"tags": ["a" * 41]}, "tags"),
        ({"tags": ["no;semicolons"]}, "tags"),
        ({"tags": [f"t{i}" for i in range(21)]}, "tags"),
        ({"notes": "x" * 10_001}, "notes"),
        ({"name": "renamed"}, "name"),
    ):
        r = _patch(server, token, f"/studies/{a.id}", body)
        assert r.status_code == 422, (body, r.text)
        assert field in r.text
    bob_token = make_token(db_url, "bob")
    assert _patch(server, bob_token, f"/studies/{a.id}", {"notes": "mine"}).status_code == 404
    assert _patch(server, bob_token, f"/trials/{trial['id']}", {"tags": ["x"]}).status_code == 404
    bob = client_for(server, bob_token)
    assert bob.studies(q="lr") == []
    with pytest.raises(TypeError):
        a.annotate(name="x")

    # the CLI
    from autopeft.cli import main

    cli = ["--url", server.url, "--token", token]
    capsys.readouterr()
    assert main(["study", "note", str(a.id), "kept for the report", *cli]) == 0
    assert main(["study", "tag", str(a.id), "--add", "final", "--add", "tweets", *cli]) == 0
    assert main(["study", "tag", str(a.id), "--remove", "FINAL", *cli]) == 0
    assert main(["study", "tag", str(trial["id"]), "--trial", "--add", "look", *cli]) == 0
    assert main(["study", "list", "--tag", "tweets", *cli]) == 0
    out = capsys.readouterr().out
    assert f"study {a.id}: tags final, tweets" in out and f"study {a.id}: tags tweets" in out
    assert f"trial {trial['id']}: tags odd, look" in out
    table = out.split("tags\n", 1)[-1]
    assert "lr sweep" in out and "baseline run" not in table
    a.refresh()
    assert a.notes == "kept for the report" and a.tags == ["tweets"]
    with pytest.raises(ApiError):
        alice.annotate_trial(10**9, notes="none such")
