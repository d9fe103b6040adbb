"""``autopeft trial run`` through a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CLI = [sys.executable, "-c", "import sys; from autopeft.cli import main; sys.exit(main())"]


def _cli(*args, cache):
    env = {
        **os.environ,
        "AUTOPEFT_CACHE_DIR": str(cache),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    return subprocess.run(
        [*CLI, "trial", "run", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_trial_run_prints_metrics_as_json(tiny_model, small_csv, tmp_path):
    out = _cli(
        "--model",
        str(tiny_model),
        "--dataset",
        str(small_csv),
        "--config",
        json.dumps({"lora.rank": 2, "lr": 1e-3}),
        "--epochs",
        "2",
        "--max-train",
        "60",
        "--cpus",
        "1",
        "--json",
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
        cache=tmp_path / "cache",
    )
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout)
    assert metrics["epoch"] == 2 and metrics["train_examples"] == 60
    assert metrics["trainable_params"] == 2 * 2 * (32 * 2 + 2 * 32) + 32 * 3 + 3
    assert (tmp_path / "ckpt" / "meta.json").is_file()


def test_trial_run_with_a_space_completes_and_checks_the_config(tiny_model, small_csv, tmp_path):
    # lora_per_layer: per-layer ranks default to the first choice (0), lr is searched.
    out = _cli(
        "--space",
        "lora_per_layer",
        "--model",
        str(tiny_model),
        "--dataset",
        str(small_csv),
        "--config",
        json.dumps({"lr": 1e-3, "lora.rank.1": 4}),
        "--max-train",
        "30",
        "--json",
        cache=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["trainable_params"] == 2 * (32 * 4 + 4 * 32) + 32 * 3 + 3
    bad = _cli(
        "--space",
        "lora_per_layer",
        "--model",
        str(tiny_model),
        "--dataset",
        str(small_csv),
        "--config",
        json.dumps({"lr": 1e-3, "lora.rank.1": 5}),
        "--json",
        cache=tmp_path,
    )
    assert bad.returncode == 2 and "lora.rank.1" in bad.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--label-column", "sentiment"], "'sentiment'"),
        (["--config", "{not json"], "--config"),
        (
            ["--labels", "pos,neg"],
            "line 4, column 'label': a label that is not one of the declared labels",
        ),
    ],
)
def test_trial_run_errors_exit_2_with_a_message(tiny_model, small_csv, tmp_path, args, needle):
    out = _cli(
        "--model", str(tiny_model), "--dataset", str(small_csv), "--json", *args, cache=tmp_path
    )
    assert out.returncode == 2
    assert needle in out.stderr and out.stdout == ""


def test_trial_run_causal_lm(tiny_llama, sft_jsonl, tmp_path):
    out = _cli(
        "--task",
        "causal_lm",
        "--model",
        str(tiny_llama),
        "--dataset",
        str(sft_jsonl),
        "--config",
        json.dumps({"lora.rank": 4, "lora.targets": "all", "lr": 1e-2}),
        "--max-train",
        "60",
        "--json",
        cache=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout)
    assert {"loss", "perplexity", "exact_match", "accuracy"} <= set(metrics) and metrics[
        "train_examples"
    ] == 60
    # q, k, v, o, gate, up, down of 2 layers: 64 wide, k / v 32 (GQA), MLP 128
    assert metrics["trainable_params"] == 2 * 4 * (2 * 128 + 2 * 96 + 3 * 192)
