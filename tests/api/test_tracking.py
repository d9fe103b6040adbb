"""Experiment tracking through the real server (``spec.tracking``): a real peft study (tiny random
BERT) logs to a real MLflow SQLite store, read back with ``MlflowClient`` (one run per trial,
params = configs, metrics per step, the exported adapter as an artifact, loadable by peft), and
TensorBoard event files read back record by record; bad settings are 422s naming the field."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from tests.api import test_peft_search
from tests.api.conftest import REPO, client_for, free_port, make_token, post_study, python_study
from tests.waiting import wait_for

pytest.importorskip("mlflow")

peft_workload = test_peft_search.peft_workload  # the tiny-BERT workload fixture, shared


def _spec(workload, **fields) -> dict:
    spec = {
        "name": "tracked",
        "space": "lora_per_layer",
        "objectives": test_peft_search.OBJECTIVES,
        "optimizer": {"name": "random", "options": {}},
        "workload": workload,
        "baselines": [],
        "max_trials": 2,
        "max_parallel": 2,
        "seed": 0,
    }
    spec.update(fields)
    return spec


def _events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of every TFRecord event file under ``folder`` (length, crc, event proto, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


BAD = [
    ({"mlflow": {"adapter": "zip"}}, "tracking.mlflow.adapter"),
    ({"mlflow": {"tracking_uri": "sqlite:////etc/mlflow.db"}}, "tracking.mlflow.tracking_uri"),
    ({"mlflow": {"tracking_uri": "sqlite:///../../x.db"}}, "tracking.mlflow.tracking_uri"),
    ({"mlflow": {"tracking_uri": "postgresql://u@db/x"}}, "tracking.mlflow.tracking_uri"),
    ({"mlflow": {"tracking_uri": "databricks"}}, "tracking.mlflow.tracking_uri"),
    ({"mlflow": {"tracking_uri": "file:///tmp/mlruns"}}, "tracking.mlflow.tracking_uri"),
    ({"mlflow": {"experiment": " padded "}}, "tracking.mlflow.experiment"),
    ({"tensorboard": {"dir": "/etc/board"}}, "tracking.tensorboard.dir"),
    ({"tensorboard": {"dir": "../../.."}}, "tracking.tensorboard.dir"),
    ({"wandb": {}}, "tracking.wandb"),
]


def test_mlflow_holds_one_run_per_trial_with_steps_and_the_adapter(
    sqlite_url, server_factory, peft_workload, workdir, tmp_path
):
    from mlflow.tracking import MlflowClient

    dead_port = free_port()  # an MLflow server the operator allows, that does not answer
    server = server_factory(sqlite_url, {"AUTOPEFT_TRACKING_HOSTS": f"127.0.0.1:{dead_port}"})
    token = make_token(sqlite_url, "alice")
    for bad, field in BAD:  # bad settings first: 422s naming the field
        answer = post_study(server, token, _spec(peft_workload, tracking=bad))
        assert answer.status_code == 422, (bad, answer.text)
        assert answer.json()["error"]["field"] == field, (bad, answer.json())
    client = client_for(server, token)
    # beside it, a study whose MLflow server does not answer: its trials are not held up
    unreachable = client.create_study(
        spec=python_study(
            tracking={"mlflow": {"tracking_uri": f"http://127.0.0.1:{dead_port}"}}, max_trials=3
        )
    )
    tracking = {
        "mlflow": {"tracking_uri": "sqlite:///team/mlflow.db", "experiment": "tiny bert"},
        "tensorboard": {},
    }
    study = client.create_study(spec=_spec(peft_workload, tracking=tracking))
    assert study.spec["tracking"]["mlflow"]["tracking_uri"] == "sqlite:///team/mlflow.db"
    study.wait(timeout=300, poll=0.5, progress=False)
    assert study.state == "finished" and study.counts["complete"] == 2, study.data
    trials = {t["id"]: t for t in study.trials()}
    reports = {tid: client.reports(tid) for tid in trials}

    store = workdir / "artifacts" / "mlflow" / "team" / "mlflow.db"
    mlflow = MlflowClient(tracking_uri=f"sqlite:///{store}")

    def runs():
        try:
            experiment = mlflow.get_experiment_by_name("tiny bert")
            found = mlflow.search_runs([experiment.experiment_id]) if experiment else []
        except Exception:  # the server may hold the store's write lock for a moment
            return None
        return found if len(found) == 2 and all(r.info.status != "RUNNING" for r in found) else None

    wait_for(runs, 120, "two terminated MLflow runs", 0.5)
    assert "tracking_errors" not in study.refresh().spec
    unreachable.wait(timeout=60, poll=0.2, progress=False)
    assert unreachable.state == "finished" and unreachable.counts["complete"] == 3
    errors = unreachable.refresh().spec["tracking_errors"]
    assert errors[0]["sink"] == "mlflow" and "could not start" in errors[0]["error"], errors
    server.stop()  # the tracking queue is drained at exit: nothing more is written
    found = runs()
    assert {r.info.run_name for r in found} == {f"trial-{t['number']}" for t in trials.values()}
    for run in found:
        trial = trials[int(run.data.tags["autopeft.trial_id"])]
        assert run.info.status == "FINISHED" and run.data.tags["autopeft.state"] == "complete"
        assert run.data.tags["autopeft.study_id"] == str(study.id)
        assert run.data.params == {k: str(v) for k, v in trial["config"].items()}
        assert run.data.metrics["accuracy"] == pytest.approx(trial["values"]["accuracy"])
        history = mlflow.get_metric_history(run.info.run_id, "loss")
        steps = [r["step"] for r in reports[trial["id"]]]
        assert sorted(m.step for m in history) == steps == [1, 2, 3, 4]
        by_step = {m.step: m.value for m in history}
        assert all(
            by_step[r["step"]] == pytest.approx(r["values"]["loss"]) for r in reports[trial["id"]]
        )
        listed = {f.path for f in mlflow.list_artifacts(run.info.run_id, "adapter")}
        assert "adapter/adapter_config.json" in listed, listed
        if trial["test_values"]:  # front trials were evaluated on the held-out split
            assert run.data.metrics["test_accuracy"] == pytest.approx(
                trial["test_values"]["test_accuracy"]
            )

    # the adapter artifact is what peft loads
    import peft

    local = mlflow.download_artifacts(found[0].info.run_id, "adapter", str(tmp_path / "dl"))
    config = peft.PeftConfig.from_pretrained(local)
    assert config.peft_type.value in ("LORA", "IA3", "PREFIX_TUNING")

    # TensorBoard: one folder of event files a trial, every report's scalars at its step
    board = workdir / "artifacts" / "tensorboard" / f"study-{study.id}"
    assert sorted(p.name for p in board.iterdir()) == [
        f"trial-{t['number']:05d}" for t in sorted(trials.values(), key=lambda t: t["number"])
    ]
    for trial in trials.values():
        scalars = _events(board / f"trial-{trial['number']:05d}")
        assert [s for s, _ in scalars["loss"]] == [r["step"] for r in reports[trial["id"]]]
        assert [v for _, v in scalars["loss"]] == pytest.approx(
            [r["values"]["loss"] for r in reports[trial["id"]]], rel=1e-6
        )
        assert scalars["accuracy"][-1][1] == pytest.approx(trial["values"]["accuracy"], rel=1e-6)


def test_asking_for_mlflow_where_it_is_missing_is_a_422(server_factory, tmp_path):
    """A server where mlflow does not import (a package on its path that refuses to): asking for
    MLflow tracking is a 422 naming ``tracking.mlflow``, not a crash; TensorBoard alone is fine."""
    shadow = tmp_path / "shadow"
    (shadow / "mlflow").mkdir(parents=True)
    (shadow / "mlflow" / "__init__.py").write_text("raise ImportError('no mlflow here')\n")
    bare = server_factory(
        f"sqlite:///{tmp_path / 'bare.db'}",
        env={"PYTHONPATH": os.pathsep.join((str(shadow), str(REPO)))},
    )
    token = make_token(f"sqlite:///{tmp_path / 'bare.db'}", "bob")
    answer = post_study(bare, token, python_study(tracking={"mlflow": {}}))
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "tracking.mlflow"
    assert "mlflow-skinny" in answer.json()["error"]["message"]
    assert (
        post_study(
            bare, token, python_study(tracking={"tensorboard": {}}, max_trials=1)
        ).status_code
        == 201
    )
