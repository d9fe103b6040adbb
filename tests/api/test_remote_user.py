"""Acceptance: a user on another machine (the client with only a URL and a token) uploads a CSV,
runs a real peft study on it — on the local and on the Ray executor — and exports an adapter. The
server reads no path the user names (``AUTOPEFT_DATA_DIRS`` is an empty folder) and runs no python
workloads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from autopeft.client import ApiError, Client
from tests.api.conftest import make_token
from tests.conftest import TOKENIZER_FILES, make_rows

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, minilm_path) -> Path:
    """A 2-layer, 32-wide random BERT with MiniLM's tokenizer (a model folder on the server)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    folder = tmp_path_factory.mktemp("tiny_bert")
    BertModel(config).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(Path(minilm_path) / name, folder / name)
    return folder


def _study(model: Path, dataset_id: int) -> dict:
    return {
        "name": "remote",
        "space": "lora_per_layer",
        "objectives": [
            {"name": "accuracy", "direction": "maximize"},
            {"name": "trainable_params", "direction": "minimize"},
        ],
        "optimizer": {"name": "random"},
        "max_trials": 2,
        "max_parallel": 1,
        "seed": 3,
        "workload": {
            "kind": "peft",
            "model": str(model),
            "dataset_id": dataset_id,
            "epochs": 1,
            "max_length": 32,
            "batch_size": 16,
            "max_eval": 30,
        },
    }


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_uploaded_csv_study_runs_and_exports_its_adapter(
    executor, sqlite_url, server_factory, tmp_path, tiny_model
):
    if executor == "ray":
        pytest.importorskip("ray")
    empty = tmp_path / "no-data-here"
    empty.mkdir()
    env = {
        "AUTOPEFT_EXECUTOR": executor,
        "AUTOPEFT_PYTHON_WORKLOADS": "off",
        "AUTOPEFT_DATA_DIRS": str(empty),
        "AUTOPEFT_CACHE_DIR": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    server = server_factory(sqlite_url, env=env)
    client = Client(
        server.url, make_token(sqlite_url, "remote-user")
    )  # a URL and a token, nothing else

    laptop = tmp_path / "laptop" / "reviews.csv"  # a file the server cannot read by path
    laptop.parent.mkdir()
    laptop.write_text(
        "text,label\n" + "".join(f'"{t}",{lab}\n' for t, lab in make_rows(90)), encoding="utf-8"
    )
    with pytest.raises(ApiError) as err:
        client.create_study(
            spec={
                **_study(tiny_model, 0),
                "workload": {"kind": "peft", "model": str(tiny_model), "dataset": str(laptop)},
            }
        )
    assert err.value.status == 422 and err.value.field == "workload.dataset"

    ds = client.upload_dataset(laptop)
    assert ds["rows"] == 90 and set(ds["labels"]) == {"neg", "neutral", "pos"}
    study = client.create_study(spec=_study(tiny_model, ds["id"]))
    study.wait(timeout=600, poll=0.5, progress=False)
    trials = study.trials()
    assert study.state == "finished" and study.counts["complete"] == 2, (
        study.data,
        [t["error"] for t in trials],
    )
    best = study.pareto()[0]
    assert 0.0 <= best["values"]["accuracy"] <= 1.0 and best["values"]["trainable_params"] > 0
    out = study.export(best["id"], tmp_path / "adapter")
    files = {p.name for p in out.rglob("*") if p.is_file()}
    assert "adapter_config.json" in files or any(f.endswith(".safetensors") for f in files), files
