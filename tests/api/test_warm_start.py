"""Warm start from another study through the real server: ``optimizer.options.warm_start:
{"study": ID, "top": K}`` reuses the source's front results without training when the workload and
space are the same (a counter file counts trainings), maps configs onto a model of another depth
(trained, asked first), records what it reused and mapped, and refuses bad references naming the field."""

from __future__ import annotations

import pytest

from autopeft.client import ApiError
from tests.api import test_peft_search
from tests.api.conftest import client_for, make_token, python_study
from tests.api.test_peft_search import OBJECTIVES as PEFT_OBJECTIVES
from tests.dashboard.conftest import study_spec

peft_workload = test_peft_search.peft_workload  # the tiny-BERT workload fixture, shared


def _trainings(counter) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def test_reused_results_are_not_trained_again(sqlite_url, server_factory, tmp_path):
    counter = tmp_path / "trainings"
    server = server_factory(sqlite_url, env={"AUTOPEFT_TEST_COUNTER": str(counter)})
    client = client_for(server, make_token(sqlite_url, "alice"))
    source = client.create_study(
        spec=python_study("tests.api.workloads:counted", max_trials=6, name="src")
    )
    source.wait(timeout=120, poll=0.2, progress=False)
    assert source.counts["complete"] == 6 and _trainings(counter) == 6
    front = sorted(source.pareto(), key=lambda t: -t["values"]["accuracy"])
    assert len(front) >= 2
    warm = client.create_study(
        spec=python_study(
            "tests.api.workloads:counted",
            max_trials=4,
            name="warm",
            optimizer={"name": "random", "options": {"warm_start": {"study": source.id, "top": 2}}},
        )
    )
    record = warm.spec["warm_start"]
    assert [e["source_trial"] for e in record["reused"]] == [t["id"] for t in front[:2]]
    assert record["mapped"] == [] and record["not_reused"] is None
    warm.wait(timeout=120, poll=0.2, progress=False)
    assert warm.state == "finished" and warm.counts["complete"] == 4
    assert _trainings(counter) == 6 + 2  # 4 trials, 2 of them reused: 2 trainings
    trials = {t["number"]: t for t in warm.trials()}
    record = warm.refresh().spec["warm_start"]
    for number, (entry, src) in enumerate(zip(record["reused"], front[:2])):
        t = trials[number]
        assert entry["trial_id"] == t["id"] and t["attempts"] == 0  # never ran
        assert t["config"] == src["config"] and t["values"] == src["values"]
    assert all(trials[n]["attempts"] == 1 for n in (2, 3))
    assert {t["number"] for t in warm.pareto()} & {0, 1}  # reused results count on the new front
    # a new runner replays the history, reused trials included (told, not trained): one more trial, one training
    server.stop()
    server.start()
    warm.extend(max_trials=1).wait(timeout=120, poll=0.2, progress=False)
    assert warm.counts["complete"] == 5 and _trainings(counter) == 6 + 2 + 1
    assert "diverged" not in server.log()

    # another space (y up to 0.5 only): mapped (y clipped) and trained, nothing reused
    space = {
        "params": {
            "x": {"type": "float", "low": 0.0, "high": 1.0},
            "y": {"type": "float", "low": 0.0, "high": 0.5},
        }
    }
    other = client.create_study(
        spec=python_study(
            "tests.api.workloads:counted",
            max_trials=2,
            name="other",
            space=space,
            optimizer={"name": "random", "options": {"warm_start": {"study": source.id, "top": 2}}},
        )
    )
    assert other.spec["warm_start"]["reused"] == [] and len(other.spec["warm_start"]["mapped"]) == 2
    assert "another space" in other.spec["warm_start"]["not_reused"]
    assert [e["config"] for e in other.spec["warm_start"]["mapped"]] == [
        {"x": t["config"]["x"], "y": min(t["config"]["y"], 0.5)} for t in front[:2]
    ]
    other.wait(timeout=120, poll=0.2, progress=False)
    assert _trainings(counter) == 9 + 2
    assert [t["config"] for t in sorted(other.trials(), key=lambda t: t["number"])] == [
        e["config"] for e in other.spec["warm_start"]["mapped"]
    ]


def test_warm_start_onto_a_model_of_another_depth(sqlite_url, server_factory):
    server = server_factory(sqlite_url)
    client = client_for(server, make_token(sqlite_url, "alice"))
    source = client.create_study(spec=study_spec("six layers", max_trials=6, num_layers=6))
    source.wait(timeout=120, poll=0.2, progress=False)
    assert source.counts["complete"] == 6
    target = client.create_study(
        spec=study_spec(
            "four layers",
            max_trials=3,
            num_layers=4,
            optimizer={"name": "random", "options": {"warm_start": {"study": source.id, "top": 2}}},
        )
    )
    record = target.spec["warm_start"]
    assert record["reused"] == [] and len(record["mapped"]) == 2 and "depth" in record["not_reused"]
    for entry in record["mapped"]:
        layers = {
            int(k.rsplit(".", 1)[1]) for k in entry["config"] if k.rsplit(".", 1)[-1].isdigit()
        }
        assert layers == {0, 1, 2, 3}
    target.wait(timeout=120, poll=0.2, progress=False)
    assert target.state == "finished" and target.counts["complete"] == 3
    trials = sorted(target.trials(), key=lambda t: t["number"])
    assert [t["config"] for t in trials[:2]] == [
        e["config"] for e in record["mapped"]
    ]  # asked first
    assert all(t["attempts"] == 1 for t in trials)  # and trained

    # bad references name the field; another user's study does not exist for you
    bob = client_for(server, make_token(sqlite_url, "bob"))
    cases = [
        (bob, {"study": source.id}, "optimizer.options.warm_start.study"),
        (client, {"study": source.id, "top": 0}, "optimizer.options.warm_start.top"),
        (
            client,
            {"study": source.id, "top": 9},
            "optimizer.options.warm_start.top",
        ),  # above max_trials
        (client, {"study": source.id, "from": 1}, "optimizer.options.warm_start.from"),
        (client, {"study": "six layers"}, "optimizer.options.warm_start.study"),
    ]
    for who, ws, field in cases:
        with pytest.raises(ApiError) as err:
            who.create_study(
                spec=study_spec(
                    "bad",
                    max_trials=3,
                    num_layers=4,
                    optimizer={"name": "random", "options": {"warm_start": ws}},
                )
            )
        assert err.value.status == 422 and err.value.field == field, (ws, err.value)


@pytest.fixture
def deeper_model(tiny_model, tmp_path):
    """tiny_model's twin with 3 layers instead of 2 (same width and tokenizer)."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig.from_pretrained(tiny_model)
    config.num_hidden_layers = 3
    folder = tmp_path / "tiny_bert_3"
    BertModel(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(tiny_model / name, folder / name)
    return folder


@pytest.mark.slow  # about 90 s on 2 busy cores: five tiny-BERT trainings plus test evaluations
def test_peft_warm_start_reuses_on_the_same_model_and_maps_onto_a_deeper_one(
    sqlite_url, server_factory, peft_workload, deeper_model, tmp_path
):
    """The real peft workload: a 2-layer source study; warm starts on the same model (the best trial
    reused: not trained, its adapter exported from the copied checkpoint) and on a 3-layer model
    (mapped by relative depth, trained)."""
    server = server_factory(sqlite_url)
    client = client_for(server, make_token(sqlite_url, "alice"))
    workload = {**peft_workload, "epochs": 1}
    base = {
        "space": "lora_per_layer",
        "objectives": PEFT_OBJECTIVES,
        "baselines": [],
        "max_parallel": 1,
    }
    source = client.create_study(
        spec={
            **base,
            "name": "src",
            "workload": workload,
            "max_trials": 2,
            "optimizer": {"name": "random"},
        }
    )
    source.wait(timeout=600, poll=0.5, progress=False)
    assert source.counts["complete"] == 2, source.data
    warm = {"name": "random", "options": {"warm_start": {"study": source.id, "top": 1}}}
    same = client.create_study(
        spec={**base, "name": "same", "workload": workload, "max_trials": 2, "optimizer": warm}
    )
    deep = client.create_study(
        spec={
            **base,
            "name": "deep",
            "workload": {**workload, "model": str(deeper_model)},
            "max_trials": 1,
            "optimizer": warm,
        }
    )
    best = max(source.pareto(), key=lambda t: t["values"]["accuracy"])
    assert [e["source_trial"] for e in same.spec["warm_start"]["reused"]] == [best["id"]]
    record = deep.spec["warm_start"]
    assert record["reused"] == [] and [e["source_trial"] for e in record["mapped"]] == [best["id"]]
    mapped = record["mapped"][0]["config"]
    per_layer = [k for k in best["config"] if k.rpartition(".")[2] == "1"]
    assert per_layer
    for (
        key
    ) in per_layer:  # relative depth: layers 0, 1, 2 of 3 take the source's layers 0, 1, 1 (of 2)
        group = key.rpartition(".")[0]
        assert [mapped[f"{group}.{i}"] for i in range(3)] == [
            best["config"][f"{group}.{j}"] for j in (0, 1, 1)
        ]
    same.wait(timeout=600, poll=0.5, progress=False)
    deep.wait(timeout=600, poll=0.5, progress=False)
    assert same.counts["complete"] == 2 and deep.counts["complete"] == 1, (same.data, deep.data)
    reused = next(t for t in same.trials() if t["number"] == 0)
    assert (
        reused["attempts"] == 0
        and reused["values"] == best["values"]
        and reused["config"] == best["config"]
    )
    assert client.reports(reused["id"]) == []  # never trained here
    assert (same.export(reused["id"], tmp_path / "adapter") / "adapter_config.json").is_file()
    trained = next(t for t in deep.trials() if t["number"] == 0)
    assert (
        trained["attempts"] == 1 and trained["config"] == mapped and client.reports(trained["id"])
    )


def test_warm_start_from_an_exported_front_file(sqlite_url, server_factory, tmp_path, capsys):
    """``study export ID --front FILE`` writes the front; ``study create --warm-start-from FILE``
    asks its configs first, best first; a file that is not a front is refused naming the field."""
    import json

    import yaml

    from autopeft.cli import main

    server = server_factory(sqlite_url)
    token = make_token(sqlite_url, "alice")
    client = client_for(server, token)
    source = client.create_study(
        spec=python_study("tests.api.workloads:quick", max_trials=6, name="src")
    )
    source.wait(timeout=120, poll=0.2, progress=False)
    remote = ["--url", server.url, "--token", token]
    front_file = tmp_path / "front.json"
    assert main(["study", "export", str(source.id), "--front", str(front_file), *remote]) == 0
    doc = json.loads(front_file.read_text())
    front = sorted(source.pareto(), key=lambda t: (-t["values"]["accuracy"], t["number"]))
    assert [t["number"] for t in doc["trials"]] == sorted(t["number"] for t in front)
    assert doc["objectives"] == source.spec["objectives"]

    spec_file = tmp_path / "warm.yaml"
    spec = python_study("tests.api.workloads:quick", max_trials=3, name="warm")
    spec["optimizer"] = {"name": "random"}
    spec_file.write_text(yaml.safe_dump(spec))
    capsys.readouterr()
    args = ["study", "create", str(spec_file), "--warm-start-from", str(front_file)]
    assert main([*args, "--warm-start-top", "2", *remote]) == 0
    warm_id = int(capsys.readouterr().out.split()[1])
    warm = client.study(warm_id)
    assert warm.spec["optimizer"]["options"]["warm_start"] == [t["config"] for t in front[:2]]
    warm.wait(timeout=120, poll=0.2, progress=False)
    trials = {t["number"]: t for t in warm.trials()}
    assert [trials[n]["config"] for n in (0, 1)] == [t["config"] for t in front[:2]]
    assert trials[0]["attempts"] == 1  # mapped from a file: trained, not reused

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"trials": []}))
    capsys.readouterr()
    assert main(["study", "create", str(spec_file), "--warm-start-from", str(bad), *remote]) == 2
    assert "warm_start.file" in capsys.readouterr().err
