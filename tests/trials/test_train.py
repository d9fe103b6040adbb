"""The peft workload on a tiny random BERT: metrics, costs, determinism, checkpoints, budgets."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import load_file

from autopeft.errors import InvalidConfig
from autopeft.trials import TrialContext, run_workload
from autopeft.trials import checkpoint as ckpt
from autopeft.trials.train import HEAD_LR

TASK = ("accuracy", "macro_f1", "loss", "train_loss")
LORA = {"lora.rank": 4, "lora.targets": "q,v", "lora.dropout": 0.1, "lr": 3e-3}


@pytest.fixture
def workload(tiny_model, small_csv):
    # 180 rows -> 36 validation, 18 test, 126 train; batch 16 -> 8 steps per epoch, one report each.
    return {
        "kind": "peft",
        "model": str(tiny_model),
        "dataset": str(small_csv),
        "validation_fraction": 0.2,
        "batch_size": 16,
        "max_length": 32,
        "warmup_ratio": 0.1,
        "evals_per_epoch": 1,
    }


def _run(workload, config, **trial):
    return run_workload(workload, config, TrialContext("t", **trial))


def test_metrics_and_costs(workload):
    reports = []
    out = _run(
        workload, {**LORA, "epochs": 2}, reporter=lambda s, m: reports.append((s, m)) or "continue"
    )
    assert [s for s, _ in reports] == [1, 2]
    assert set(TASK) <= set(reports[0][1])
    for key in (
        *TASK,
        "trainable_params",
        "params_pct",
        "train_time_s",
        "peak_memory_mb",
        "examples_per_s",
        "epoch",
        "base_params",
    ):
        assert isinstance(out[key], float), key
    assert {k: out[k] for k in TASK} == {k: reports[-1][1][k] for k in TASK}
    assert 0.0 <= out["accuracy"] <= 1.0 and 0.0 <= out["macro_f1"] <= 1.0
    assert out["epoch"] == 2 and out["train_examples"] == 126 and out["eval_examples"] == 36
    assert out["train_time_s"] > 0 and out["examples_per_s"] > 0 and out["peak_memory_mb"] >= 0
    # LoRA r4 on q and v of 2 layers (32 wide) plus the 3-class head.
    assert out["trainable_params"] == 2 * 2 * (32 * 4 + 4 * 32) + 32 * 3 + 3
    assert out["params_pct"] == pytest.approx(100 * out["trainable_params"] / out["base_params"])


def test_empty_config_trains_the_head_only(workload, tmp_path):
    out = _run(workload, {}, checkpoint_dir=tmp_path)
    assert out["trainable_params"] == 32 * 3 + 3
    saved = load_file(tmp_path / ckpt.WEIGHTS)
    assert sorted(saved) == ["classifier.bias", "classifier.weight"]


def test_same_seed_same_metrics_other_seed_differs(workload):
    a = _run(workload, {**LORA, "seed": 1})
    b = _run(workload, {**LORA, "seed": 1})
    c = _run(workload, {**LORA, "seed": 2})
    assert {k: a[k] for k in TASK} == {k: b[k] for k in TASK}
    assert a["train_loss"] != c["train_loss"]


@pytest.mark.parametrize(
    "config, extra",
    [
        (LORA, {}),
        ({"lr": 1e-3, "scheduler": "cosine"}, {"full_finetune": True}),
    ],
    ids=["lora_dropout", "full_finetune_cosine"],
)
def test_two_epochs_straight_equal_one_plus_resume(workload, tmp_path, config, extra):
    workload = {**workload, **extra}
    config = {**config, "epochs": 2}
    straight = _run(workload, config, checkpoint_dir=tmp_path / "straight")
    first = _run(workload, config, checkpoint_dir=tmp_path / "split", budget={"epochs": 1})
    assert first["epoch"] == 1
    resumed = _run(
        workload,
        config,
        checkpoint_dir=tmp_path / "split",
        restore_dir=tmp_path / "split",
        budget={"epochs": 2},
    )
    assert resumed["epoch"] == 2
    for key in TASK:
        assert resumed[key] == pytest.approx(straight[key], abs=1e-4), key
    # Not only the metrics: the trained weights agree.
    a = load_file(tmp_path / "straight" / ckpt.WEIGHTS)
    b = load_file(tmp_path / "split" / ckpt.WEIGHTS)
    assert sorted(a) == sorted(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)
    # and the one-epoch run differs from the two-epoch run (the test can fail)
    assert abs(first["train_loss"] - straight["train_loss"]) > 1e-4


def test_report_false_stops_after_that_epoch(workload, tmp_path):
    out = _run(
        workload,
        {**LORA, "epochs": 3},
        checkpoint_dir=tmp_path,
        reporter=lambda step, m: "stop" if step == 1 else "continue",
    )
    assert out["epoch"] == 1
    assert ckpt.exists(tmp_path)


def test_budgets(workload):
    out = _run(workload, {**LORA, "epochs": 3}, budget={"epochs": 1})
    assert out["epoch"] == 1
    out = _run(workload, LORA, budget={"fraction": 0.5})
    assert out["train_examples"] == 63 and out["eval_examples"] == 36
    out = _run({**workload, "max_train": 60}, LORA, budget={"fraction": 0.5})
    assert out["train_examples"] == 30


def test_restore_past_the_budget_only_evaluates(workload, tmp_path):
    done = _run(workload, {**LORA, "epochs": 2}, checkpoint_dir=tmp_path)
    again = _run(workload, {**LORA, "epochs": 2}, restore_dir=tmp_path, budget={"epochs": 2})
    assert again["epoch"] == 2 and again["train_time_s"] == 0
    assert again["accuracy"] == pytest.approx(done["accuracy"], abs=1e-6)
    assert again["loss"] == pytest.approx(done["loss"], abs=1e-5)


def test_other_fraction_is_a_warm_start(workload, tmp_path):
    _run(workload, {**LORA, "epochs": 2}, checkpoint_dir=tmp_path, budget={"fraction": 0.5})
    reports = []
    out = _run(
        workload,
        {**LORA, "epochs": 2},
        restore_dir=tmp_path,
        reporter=lambda s, m: reports.append(s),
    )
    assert reports == [1, 2] and out["train_examples"] == 126


def test_pbt_restore_takes_the_new_lr(workload, tmp_path):
    _run(
        workload,
        {**LORA, "epochs": 2, "lr": 1e-3, "scheduler": "constant"},
        checkpoint_dir=tmp_path / "a",
        budget={"epochs": 1},
    )
    _run(
        workload,
        {**LORA, "epochs": 2, "lr": 4e-3, "scheduler": "constant", "weight_decay": 0.05},
        checkpoint_dir=tmp_path / "b",
        restore_dir=tmp_path / "a",
    )
    state = torch.load(tmp_path / "b" / ckpt.STATE, weights_only=True)
    assert state["epoch"] == 2 and state["step"] == 16
    groups = {g["name"]: g for g in state["optimizer"]["param_groups"]}
    # LoRA A / B decay at the searched lr (B in the LoRA+ group, ratio 1); the head at its own lr
    lrs = {"decay": 4e-3, "plus": 4e-3, "head": HEAD_LR, "head_no_decay": HEAD_LR}
    assert {n: g["initial_lr"] for n, g in groups.items()} == lrs
    assert {n: g["lr"] for n, g in groups.items()} == {n: pytest.approx(v) for n, v in lrs.items()}
    assert {n: g["weight_decay"] for n, g in groups.items()} == {
        "decay": 0.05,
        "plus": 0.05,
        "head": 0.05,
        "head_no_decay": 0.0,
    }


def test_restore_into_another_peft_structure_fails(workload, tmp_path):
    _run(workload, LORA, checkpoint_dir=tmp_path)
    for other in ({"lora.rank": 8}, {"lora.targets": "q,k,v"}):
        with pytest.raises(InvalidConfig, match="does not match") as err:
            _run(workload, {**LORA, **other}, restore_dir=tmp_path)
        assert err.value.field == "restore_dir"
    with pytest.raises(InvalidConfig, match="no checkpoint"):
        _run(workload, LORA, restore_dir=tmp_path / "nothing")


def test_threads_follow_resources(workload):
    seen = []
    before = torch.get_num_threads()
    _run(
        workload,
        LORA,
        resources={"cpus": 2, "gpus": 0},
        reporter=lambda s, m: seen.append(torch.get_num_threads()),
    )
    assert seen == [2] and torch.get_num_threads() == before


def test_mixed_precision_on_cpu_says_it_falls_back(workload, caplog):
    with caplog.at_level(logging.WARNING, logger="autopeft.trials.trainer_setup"):
        out = _run({**workload, "precision": "bf16"}, LORA)
    assert "fp32" in caplog.text and out["epoch"] == 1


def test_full_finetune_trains_everything_and_rejects_peft_keys(workload):
    out = _run({**workload, "full_finetune": True}, {"lr": 1e-3})
    assert out["trainable_params"] == out["base_params"] and out["params_pct"] == 100
    with pytest.raises(InvalidConfig) as err:
        _run({**workload, "full_finetune": True}, LORA)
    assert err.value.field.startswith("lora.")


def test_dropout_knob_reaches_the_model(workload):
    # The tiny BERT's own dropout is 0.1; the "dropout" knob overrides it.
    a = _run(workload, {**LORA, "dropout": 0.0})
    b = _run(workload, {**LORA})
    assert a["train_loss"] != b["train_loss"]
