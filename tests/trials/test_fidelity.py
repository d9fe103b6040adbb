"""Trials that learn at every fidelity: reports within an epoch, mid-epoch resume, the head's own
learning rate, mean pooling, the held-out test split, evaluation of a saved adapter, the probe."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from autopeft.errors import InvalidConfig
from autopeft.trials import TrialContext, data, run_workload
from autopeft.trials import checkpoint as ckpt
from autopeft.trials.train import HEAD_LR, PeftTrainer

TASK = ("accuracy", "macro_f1", "loss", "train_loss")
LORA = {"lora.rank": 4, "lora.targets": "q,v", "lr": 3e-3}


@pytest.fixture
def workload(tiny_model, small_csv):
    # 180 rows -> 36 validation, 18 test, 126 train; batch 16 -> 8 steps an epoch; 4 reports an epoch
    return {
        "kind": "peft",
        "model": str(tiny_model),
        "dataset": str(small_csv),
        "validation_fraction": 0.2,
        "batch_size": 16,
        "max_length": 32,
        "warmup_ratio": 0.1,
        "evals_per_epoch": 4,
    }


def _run(workload, config, **trial):
    return run_workload(workload, config, TrialContext("t", **trial))


def test_reports_within_an_epoch(workload):
    reports = []
    out = _run(workload, {**LORA, "epochs": 2}, reporter=lambda s, m: reports.append((s, m)))
    assert [s for s, _ in reports] == list(range(1, 9))
    assert [m["epoch"] for _, m in reports] == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    assert out["epoch"] == 2 and out["epochs_trained"] == 2 and out["budget_reached"] == 1
    # every report is a real evaluation: the curve moves
    assert len({m["loss"] for _, m in reports}) == 8


def test_mid_epoch_resume_equals_straight(workload, tmp_path):
    config = {**LORA, "epochs": 2, "lora.dropout": 0.1}
    straight = _run(workload, config, checkpoint_dir=tmp_path / "straight")
    first = _run(workload, config, checkpoint_dir=tmp_path / "split", budget={"step": 3})
    assert (
        first["epoch"] == 0.75 and first["budget_reached"] == 0 and first["epochs_trained"] == 0.75
    )
    meta = json.loads((tmp_path / "split" / ckpt.META).read_text())
    assert meta["report"] == 3 and meta["step"] == 6
    steps = []
    resumed = _run(
        workload,
        config,
        checkpoint_dir=tmp_path / "split",
        restore_dir=tmp_path / "split",
        reporter=lambda s, m: steps.append(s),
    )
    assert steps == [4, 5, 6, 7, 8]  # a promotion trains what is left, never from the start
    assert resumed["epochs_trained"] == pytest.approx(1.25) and resumed["budget_reached"] == 1
    for key in TASK:
        assert resumed[key] == pytest.approx(straight[key], abs=1e-4), key
    a, b = (
        load_file(tmp_path / "straight" / ckpt.WEIGHTS),
        load_file(tmp_path / "split" / ckpt.WEIGHTS),
    )
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)


def test_head_trains_at_its_own_rate(workload):
    trainer = PeftTrainer(workload, {**LORA, "lr": 1e-4}, TrialContext("t"))
    assert trainer.group_lrs() == {
        "decay": 1e-4,
        "no_decay": 1e-4,
        "head": HEAD_LR,
        "head_no_decay": HEAD_LR,
        "plus": 1e-4,  # LoRA's B (LoRA+ ratio 1)
    }
    trainer = PeftTrainer(workload, {**LORA, "lr": 0.05}, TrialContext("t"))
    assert trainer.group_lrs()["head"] == 0.05  # never slower than the body
    trainer = PeftTrainer({**workload, "head_lr": 2e-3}, LORA, TrialContext("t"))
    assert trainer.group_lrs()["head"] == 2e-3
    # and it acts: with a tiny body lr the head still learns at the default, not with head_lr = lr
    # (mean pooling: the random tiny model's [CLS] carries little of the polarity word)
    workload = {**workload, "pooling": "mean"}
    fast = _run(workload, {**LORA, "lr": 1e-5, "epochs": 2})
    slow = _run({**workload, "head_lr": 1e-5}, {**LORA, "lr": 1e-5, "epochs": 2})
    assert fast["loss"] < slow["loss"] - 0.01


def test_pooling_detected_from_a_sentence_transformers_folder(workload, tiny_model, tmp_path):
    import shutil

    from autopeft.peft.pooling import detect_pooling

    assert detect_pooling(tiny_model) == "model"
    st = tmp_path / "st"
    shutil.copytree(tiny_model, st)
    (st / "1_Pooling").mkdir()
    (st / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False})
    )
    assert detect_pooling(st) == "mean"
    auto = _run({**workload, "model": str(st)}, LORA, checkpoint_dir=tmp_path / "a")
    mean = _run({**workload, "model": str(tiny_model), "pooling": "mean"}, LORA)
    model = _run({**workload, "model": str(st), "pooling": "model"}, LORA)
    assert auto["loss"] == pytest.approx(mean["loss"], abs=1e-6)  # auto = mean for this folder
    assert auto["loss"] != pytest.approx(model["loss"], abs=1e-6)
    assert json.loads((tmp_path / "a" / ckpt.META).read_text())["pooling"] == "mean"
    with pytest.raises(InvalidConfig) as err:
        _run({**workload, "pooling": "max"}, LORA)
    assert err.value.field == "workload.pooling"


def test_mean_pooling_reads_the_masked_mean(tiny_model):
    from transformers import AutoModelForSequenceClassification

    from autopeft.peft.pooling import apply_pooling, masked_mean

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=3).eval()
    ids = torch.randint(1000, 2000, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    with torch.no_grad():
        hidden = model.bert(input_ids=ids, attention_mask=mask)[0]
        cls_logits = model(input_ids=ids, attention_mask=mask).logits
        apply_pooling(model, "mean")
        logits = model(input_ids=ids, attention_mask=mask).logits
    expected = model.classifier(masked_mean(hidden, mask))
    torch.testing.assert_close(logits, expected)
    assert not torch.allclose(logits, cls_logits)
    assert sum(p.numel() for p in model.parameters()) < sum(
        p.numel()
        for p in AutoModelForSequenceClassification.from_pretrained(
            tiny_model, num_labels=3
        ).parameters()
    )


def test_test_split_is_disjoint_and_never_trained_on(workload, tmp_path):
    labels = np.repeat(np.arange(3), 60)
    train, val, test = data.split_with_test(labels, 0.2, 0.1, seed=0)
    assert len(val) == 36 and len(test) == 18 and len(train) == 126
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert np.bincount(labels[test]).tolist() == [6, 6, 6]
    same_val, _ = data.split_indices(labels, 0.2, seed=0)[1], None
    assert same_val.tolist() == val.tolist()  # the validation split is what it was without test
    trainer = PeftTrainer(workload, LORA, TrialContext("t"))
    tokens = trainer.prepare_data()
    tr, va, te = trainer.select(tokens)
    assert len(te) == 18 and not set(tr) & set(te)
    with pytest.raises(InvalidConfig) as err:
        _run({**workload, "validation_fraction": 0.5, "test_fraction": 0.45}, LORA)
    assert err.value.field == "workload.test_fraction"


def test_evaluate_a_saved_adapter_on_test(workload, tmp_path):
    trained = _run(workload, {**LORA, "epochs": 2}, checkpoint_dir=tmp_path)
    again = _run(
        {**workload, "evaluate": "validation"}, {**LORA, "epochs": 2}, restore_dir=tmp_path
    )
    assert again["validation_accuracy"] == pytest.approx(trained["accuracy"], abs=1e-9)
    assert again["validation_loss"] == pytest.approx(trained["loss"], abs=1e-5)
    test = _run({**workload, "evaluate": "test"}, {**LORA, "epochs": 2}, restore_dir=tmp_path)
    assert set(test) == {"test_accuracy", "test_macro_f1", "test_loss", "test_examples"}
    assert test["test_examples"] == 18 and 0 <= test["test_accuracy"] <= 1
    with pytest.raises(InvalidConfig) as err:
        _run({**workload, "evaluate": "test"}, LORA, restore_dir=tmp_path / "none")
    assert err.value.field == "restore_dir"
    with pytest.raises(InvalidConfig) as err:
        _run({**workload, "evaluate": "train"}, LORA)
    assert err.value.field == "workload.evaluate"


def test_linear_probe_fits_the_head_on_frozen_features(workload, tmp_path):
    reports = []
    workload = {**workload, "pooling": "mean"}
    out = _run(
        {**workload, "linear_probe": True},
        {},
        checkpoint_dir=tmp_path,
        reporter=lambda s, m: reports.append(s),
    )
    assert reports == [1] and out["trainable_params"] == 32 * 3 + 3
    assert out["epochs_trained"] == pytest.approx(1 / 3) and out["budget_reached"] == 1
    # better than chance on the learnable toy task; the head alone was saved and evaluates the same
    assert out["accuracy"] > 0.5
    assert sorted(load_file(tmp_path / ckpt.WEIGHTS)) == ["classifier.bias", "classifier.weight"]
    again = _run({**workload, "evaluate": "validation"}, {}, restore_dir=tmp_path)
    assert again["validation_accuracy"] == pytest.approx(out["accuracy"], abs=1e-9)
    with pytest.raises(InvalidConfig) as err:
        _run({**workload, "linear_probe": True, "full_finetune": True}, {})
    assert err.value.field == "workload.linear_probe"


def test_small_data_trains_at_a_smaller_batch(workload):
    from autopeft.trials.knobs import SMALL_DATA, SMALL_DATA_BATCH, default_batch_size

    assert (
        default_batch_size(SMALL_DATA) == SMALL_DATA_BATCH
        and default_batch_size(SMALL_DATA + 1) == 32
    )
    reports = []
    wl = {k: v for k, v in workload.items() if k != "batch_size"}  # 126 examples: 8 steps of 16
    out = _run({**wl, "evals_per_epoch": 8}, LORA, reporter=lambda s, m: reports.append(m["epoch"]))
    assert reports == [i / 8 for i in range(1, 9)] and out["epoch"] == 1


def test_mean_pooling_for_a_decoder_is_refused_at_validation(tmp_path, small_csv):
    from transformers import GPT2Config

    from autopeft.trials import validate_workload

    folder = tmp_path / "gpt2"
    GPT2Config(n_layer=1, n_embd=16, n_head=2).save_pretrained(folder)
    with pytest.raises(InvalidConfig) as err:
        validate_workload(
            {"kind": "peft", "model": str(folder), "dataset": str(small_csv), "pooling": "mean"}
        )
    assert err.value.field == "workload.pooling"
    validate_workload(
        {"kind": "peft", "model": str(folder), "dataset": str(small_csv)}
    )  # auto: fine
