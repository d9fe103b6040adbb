"""Holes probed as an outsider with a token (issue 31): the trials' cache is the server's (confined,
shared by content hash, counted in the owner's quota), layer indices past the model, encodings
that are not file encodings, model paths that would tell which server folders exist, tokens that
would outlive the token that made them."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from tests.api.conftest import client_for, make_token, post_study
from tests.conftest import tiny_peft_workload
from tests.waiting import wait_for

OBJECTIVES = [
    {"name": "accuracy", "direction": "maximize"},
    {"name": "trainable_params", "direction": "minimize"},
]


def _spec(workload: dict, **fields) -> dict:
    spec = {
        "name": "probe",
        "space": "lora_per_layer",
        "objectives": OBJECTIVES,
        "optimizer": {"name": "random"},
        "baselines": [],
        "workload": workload,
        "max_trials": 1,
        "max_parallel": 1,
    }
    spec.update(fields)
    return spec


@pytest.fixture
def api(sqlite_url, server_factory):
    server = server_factory(sqlite_url)
    token = make_token(sqlite_url, "mallory")
    return server, token


def _refused(server, token, spec) -> dict:
    answer = post_study(server, token, spec)
    assert answer.status_code == 422, answer.text
    return answer.json()["error"]


def test_refusals_name_the_field(api, tmp_path, tiny_model, small_csv):
    server, token = api
    peft = {"kind": "peft", "model": str(tiny_model), "dataset": str(small_csv)}
    # the cache is the server's: no path of the user's, NUL bytes or not
    for cache in (str(tmp_path / "x"), str(server.workdir / "artifacts" / "datasets"), "a\x00b"):
        err = _refused(server, token, _spec({**peft, "cache_dir": cache}))
        assert err["field"] == "workload.cache_dir", err
    assert not (tmp_path / "x").exists()
    # layers the model does not have (the tiny model has 2)
    err = _refused(server, token, _spec(peft, num_layers=1024))
    assert err["field"] == "num_layers" and "2 layers" in err["message"], err
    # an encoding that is no file encoding, and UTF-16 whose byte order the file does not say
    for encoding in ("idna", "punycode", "rot13"):
        err = _refused(server, token, _spec({**peft, "encoding": encoding}))
        assert err["field"] == "workload.encoding", (encoding, err)
    utf16 = tmp_path / "u16.csv"
    utf16.write_bytes("text,label\nfine,pos\nbad,neg\n".encode("utf-16-le"))
    err = _refused(server, token, _spec({**peft, "dataset": str(utf16), "encoding": "utf-16"}))
    assert err["field"] == "workload.encoding" and "utf-16-le" in err["message"], err
    # a missing folder and a folder that holds no model get the same answer
    empty = tmp_path / "empty"
    empty.mkdir()
    answers = [
        _refused(server, token, _spec({**peft, "model": str(path)}))
        for path in (empty, tmp_path / "missing")
    ]
    assert {a["field"] for a in answers} == {"workload.model"}
    assert answers[0]["message"].replace(str(empty), "X") == answers[1]["message"].replace(
        str(tmp_path / "missing"), "X"
    )


def test_a_token_cannot_make_one_that_outlives_it(sqlite_url, server_factory):
    server = server_factory(sqlite_url)
    soon = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(seconds=86)
    short = make_token(sqlite_url, "alice", expires_at=soon)
    forever = make_token(sqlite_url, "alice")  # an admin's token without expiry
    url = server.url + "/api/v1/tokens"

    def create(token, days):
        return httpx.post(
            url,
            json={"expires_in_days": days},
            headers={"Authorization": f"Bearer {token}"},
            trust_env=False,
        )

    answer = create(short, 365)
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "expires_in_days"
    assert create(short, 0.0005).status_code == 201  # 43 s: within its own life
    made = create(forever, 365)
    assert made.status_code == 201, made.text
    month = create(made.json()["token"], 30)  # a 365-day token makes one of 30 days
    assert month.status_code == 201, month.text
    answer = create(month.json()["token"], 31)  # which cannot make one of 31
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "expires_in_days"
    assert create(month.json()["token"], 29).status_code == 201


def test_the_trial_cache_is_the_servers_and_counts_in_the_quota(
    sqlite_url, server_factory, tiny_model, small_csv
):
    server = server_factory(sqlite_url)
    alice = client_for(server, make_token(sqlite_url, "alice"))
    cache = server.workdir / "artifacts" / "cache"
    workload = tiny_peft_workload(tiny_model)
    # a server-path dataset: its tokenised form is kept in the server's shared cache
    study = alice.create_study(spec=_spec({**workload, "dataset": str(small_csv)}))
    study.wait(timeout=300, poll=0.5, progress=False)
    assert study.counts["complete"] == 1, study.data
    shared = list((cache / "tokenized").glob("*.npz"))
    assert len(shared) == 1, list(cache.rglob("*"))
    # an upload: the entry is its owner's, counted in their stored bytes, gone with the dataset
    ds = alice.upload_dataset(small_csv)
    assert alice.me()["usage"]["stored_bytes"] == ds["size_bytes"]
    study = alice.create_study(spec=_spec({**workload, "dataset_id": ds["id"]}))
    study.wait(timeout=300, poll=0.5, progress=False)
    assert study.counts["complete"] == 1, study.data
    user_id = alice.me()["id"]
    owned = list((cache / "users" / str(user_id) / "tokenized").glob("*.npz"))
    assert len(owned) == 1 and list((cache / "tokenized").glob("*.npz")) == shared
    assert alice.me()["usage"]["stored_bytes"] == ds["size_bytes"] + owned[0].stat().st_size
    # a second study of the same data shares the entry (content hash), making no new one
    again = alice.create_study(spec=_spec({**workload, "dataset_id": ds["id"]}, seed=1))
    again.wait(timeout=300, poll=0.5, progress=False)
    assert list((cache / "users" / str(user_id) / "tokenized").glob("*.npz")) == owned
    alice.delete_dataset(ds["id"])
    wait_for(lambda: alice.me()["usage"]["stored_bytes"] == 0, 30, "the cache to be released")
    assert not (cache / "users" / str(user_id)).exists()
