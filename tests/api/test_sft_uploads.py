"""SFT uploads (issue 33 item 2): prompt / completion and chat ``messages`` JSONL through
``POST /api/v1/datasets`` (detected or declared ``kind=sft``), checked record by record with the
causal_lm trials' own rule and refused with a 422 naming the row and the field, nothing stored; a
causal_lm study trains on one by ``workload.dataset_id``, and the kinds do not mix (a classification
study given an SFT upload, a causal_lm study given a classification upload: 422 naming
``workload.dataset_id``). Client and CLI too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from autopeft.client import ApiError
from tests.api.conftest import REPO, client_for, make_token

EXE = str(Path(sys.executable).parent / "autopeft")
ROWS = 60  # 6 test, 12 validation, 42 train examples


def _jsonl(path: Path, records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def _workload(model, **fields) -> dict:
    return {
        "kind": "peft",
        "task": "causal_lm",
        "model": str(model),
        "validation_fraction": 0.2,
        "batch_size": 16,
        "max_length": 32,
        "epochs": 1,
        "evals_per_epoch": 1,
        **fields,
    }


def _spec(workload: dict, **fields) -> dict:
    spec = {
        "name": "sft-upload",
        "space": "lora_decoder",
        "objectives": [
            {"name": "accuracy", "direction": "maximize"},
            {"name": "trainable_params", "direction": "minimize"},
        ],
        "optimizer": {"name": "random"},
        "baselines": [],
        "workload": workload,
        "max_trials": 1,
        "max_parallel": 1,
        "seed": 0,
    }
    spec.update(fields)
    return spec


@pytest.fixture
def alice(sqlite_url, server_factory):
    server = server_factory(sqlite_url)
    return server, client_for(server, make_token(sqlite_url, "alice"))


def test_sft_uploads_train_causal_lm_studies_by_id(alice, tiny_llama, tmp_path):
    from tests.decoders import write_sft_jsonl

    server, client = alice
    pairs = client.upload_dataset(write_sft_jsonl(tmp_path / "pairs.jsonl", ROWS))  # detected
    chat = client.upload_dataset(
        write_sft_jsonl(tmp_path / "chat.jsonl", ROWS, chat=True), kind="sft", name="chat"
    )
    assert pairs["kind"] == chat["kind"] == "sft"
    assert pairs["rows"] == chat["rows"] == ROWS and pairs["format"] == "jsonl"
    assert pairs["columns"] == ["prompt", "completion"] and chat["columns"] == ["messages"]
    assert pairs["text_column"] == [] and pairs["label_column"] == "" and pairs["labels"] == {}
    assert {d["id"]: d["kind"] for d in client.datasets()} == {
        pairs["id"]: "sft",
        chat["id"]: "sft",
    }

    trials = {}
    for ds in (pairs, chat):
        study = client.create_study(spec=_spec(_workload(tiny_llama, dataset_id=ds["id"])))
        workload = study.spec["workload"]
        assert workload["dataset_id"] == ds["id"] and workload["dataset"] == f"upload:{ds['id']}"
        assert str(server.workdir) not in json.dumps(study.data)  # never the stored file's path
        study.wait(timeout=600, poll=0.5, progress=False)
        assert study.state == "finished" and study.counts["complete"] == 1, study.data
        (trial,) = study.trials()
        assert {"loss", "perplexity", "exact_match"} <= set(trial["values"]), trial
        # trained and tested on the upload: its 60 rows make the 6-example held-out split
        assert trial["test_values"]["test_examples"] == ROWS // 10, trial["test_values"]
        trials[ds["id"]] = (study, trial)

    # a trial trained on an upload deleted since still exports (the data is not needed for that)
    client.delete_dataset(pairs["id"])
    study, trial = trials[pairs["id"]]
    adapter = study.export(trial["id"], tmp_path / "adapter")
    assert (adapter / "README.md").is_file() and len(list(adapter.iterdir())) > 1

    # the kinds do not mix: each refused naming workload.dataset_id
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(8)))
    classification = client.upload_dataset(labelled)
    assert classification["kind"] == "classification"
    for workload, words in (
        (
            {"kind": "peft", "model": str(tiny_llama), "dataset_id": chat["id"]},
            ["SFT dataset", "causal_lm"],
        ),
        (_workload(tiny_llama, dataset_id=classification["id"]), ["classification dataset"]),
    ):
        with pytest.raises(ApiError) as err:
            client.create_study(spec=_spec(workload))
        assert err.value.status == 422 and err.value.field == "workload.dataset_id", err.value
        assert all(w in err.value.message for w in words), err.value.message


PAIR = {"prompt": "a\nSentiment:", "completion": " good"}
USER = {"role": "user", "content": "hello"}
BOT = {"role": "assistant", "content": "hi"}

# (records, form fields, the error's field, words of its message)
REFUSALS = [
    ([PAIR, PAIR, {"prompt": "x"}], {}, "completion", ["row 3", "no 'completion'"]),
    ([{"prompt": 3, "completion": " b"}], {}, "prompt", ["row 1", "non-string (int)"]),
    ([PAIR, {"prompt": "x", "completion": "  "}], {}, "completion", ["row 2", "empty"]),
    ([PAIR, '{"prompt": "x", "completion": '], {}, "file", ["row 2", "not valid JSON"]),
    ([PAIR, {"messages": [USER, BOT]}], {}, "prompt", ["row 2", "no 'prompt'"]),
    (
        [{"messages": [USER, BOT]}, {"messages": [USER, {"role": "bot", "content": "x"}, BOT]}],
        {},
        "messages.1.role",
        ["row 2", "unknown role 'bot'"],
    ),
    ([{"messages": [BOT, USER]}], {}, "messages.1.role", ["row 1", "the assistant's"]),
    ([{"messages": [USER, {"role": "assistant", "content": 7}]}], {}, "messages.1.content", []),
    ([{"messages": [USER, {"role": "assistant", "content": " "}]}], {}, "messages.1.content", []),
    ([{"messages": []}], {}, "messages", ["non-empty list"]),
    ([{"messages": [USER, "hi"]}], {}, "messages.1", ["row 1", "message 1"]),
    # declared sft: a file without SFT fields, another format, a column that SFT does not use
    ([{"text": "a", "label": "x"}], {"kind": "sft"}, "prompt", ["'text', 'label'"]),
    (["text,label", "a,x", "b,y"], {"kind": "sft", "format": "csv"}, "kind", ["JSONL"]),
    ([PAIR], {"kind": "sft", "text_column": "prompt"}, "text_column", ["not used"]),
    ([PAIR], {"kind": "chat"}, "kind", ["classification, sft"]),
]


def test_sft_upload_refusals_name_the_row_and_field(alice, tmp_path):
    server, client = alice
    for records, fields, field, words in REFUSALS:
        path = _jsonl(tmp_path / "bad.jsonl", records)
        r = httpx.post(
            f"{server.url}/api/v1/datasets",
            headers=client._http.headers,
            data=fields,
            files={"file": ("bad.jsonl", path.read_bytes())},
            trust_env=False,
        )
        assert r.status_code == 422, (records, r.text)
        err = r.json()["error"]
        assert err["field"] == field, (records, err)
        assert all(w in err["message"] for w in words), (records, err)
        assert str(server.workdir) not in err["message"]
    stored = server.workdir / "artifacts" / "datasets"
    assert client.datasets() == []  # nothing stored
    assert not [p for p in stored.rglob("*") if p.is_file()], list(stored.rglob("*"))


def test_cli_uploads_sft_and_lists_its_kind(alice, tmp_path):
    server, client = alice
    token = client._http.headers["Authorization"].split()[1]
    path = _jsonl(tmp_path / "chat.jsonl", [{"messages": [USER, BOT]}] * 3)

    def cli(*args):
        out = subprocess.run(
            [EXE, "dataset", *args, "--url", server.url, "--token", token],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
        assert out.returncode == 0, (args, out.stdout, out.stderr)
        return out.stdout

    assert "SFT (messages)" in cli("upload", str(path), "--kind", "sft")
    header, _rule, row = cli("list").splitlines()[:3]
    assert header.split()[:5] == ["id", "name", "format", "kind", "rows"]
    assert row.split()[1:5] == ["chat.jsonl", "jsonl", "sft", "3"]
