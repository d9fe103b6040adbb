"""An uploaded dataset reaches a Ray worker node that does not share the controller's files: a real
two-node cluster on 127.0.0.1 whose second node accepts dataset files only from a folder of its own
(``AUTOPEFT_DATA_DIRS``), so reading the controller's copy there is refused. A peft study on a CSV
uploaded through the API, pinned to that node, completes and exports its adapter: the file travelled
through the object store. (Slow: a cluster and real fine-tuning.)"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="ray is not installed (pip install 'ray[default]')")

from autopeft.client import Client
from tests.api.conftest import make_token
from tests.conftest import make_rows
from tests.workers.cluster import LocalCluster
from tests.workers.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="autopeft-rd-"))
    own = root / "node2-data"
    own.mkdir()
    c = LocalCluster(root, env={"PYTHONPATH": str(REPO)})
    try:
        c.start_node("head", num_cpus=1, head=True)
        c.env["AUTOPEFT_DATA_DIRS"] = str(own)  # node2 reads dataset files from its own folder only
        c.start_node("node2", num_cpus=1, resources='{"node2": 1}')
        yield c
    finally:
        c.close()


def _spec(tiny_model, dataset_id: int) -> dict:
    return {
        "name": "on node2",
        "space": "lora_per_layer",
        "max_trials": 1,
        "max_parallel": 1,
        "objectives": [
            {"name": "accuracy", "direction": "maximize"},
            {"name": "trainable_params", "direction": "minimize"},
        ],
        "optimizer": {"name": "random"},
        "workload": {
            "kind": "peft",
            "model": str(tiny_model),
            "dataset_id": dataset_id,
            "epochs": 1,
            "max_length": 32,
            "batch_size": 16,
            "max_eval": 20,
            "resources": {"cpus": 1, "custom": {"node2": 1}},
        },
    }


@pytest.mark.parametrize("transfer", ["auto", "shared"])
def test_uploaded_dataset_is_shipped_to_a_node_without_the_file(
    cluster,
    server_factory,
    sqlite_url,
    tmp_path,
    tiny_model,
    transfer,
):
    env = {
        "AUTOPEFT_EXECUTOR": "ray",
        "AUTOPEFT_RAY_ADDRESS": cluster.address,
        "AUTOPEFT_PYTHON_WORKLOADS": "off",
        "AUTOPEFT_RAY_TRANSFER": transfer,
        "AUTOPEFT_CACHE_DIR": str(tmp_path / "cache"),
        **cluster.driver_env(),
    }
    server = server_factory(sqlite_url, env=env)
    client = Client(server.url, make_token(sqlite_url, "remote"))
    data = tmp_path / "reviews.csv"
    data.write_text(
        "text,label\n" + "".join(f'"{t}",{lab}\n' for t, lab in make_rows(60)), encoding="utf-8"
    )
    ds = client.upload_dataset(data)
    study = client.create_study(spec=_spec(tiny_model, ds["id"]))
    study.wait(timeout=600, poll=0.5, progress=False)
    trials = study.trials()
    if (
        transfer == "shared"
    ):  # the control: told the nodes share files, node2 is refused the controller's copy
        assert study.counts["failed"] == 1 and "not allowed" in trials[0]["error"], trials
        assert str(server.workdir) not in trials[0]["error"]
        return
    assert study.counts["complete"] == 1, (study.data, [t["error"] for t in trials])
    out = study.export(trials[0]["id"], tmp_path / "adapter")
    assert any(p.is_file() for p in out.rglob("*"))
