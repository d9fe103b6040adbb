"""`autopeft space list | show` through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from autopeft import count_trainable, load_space
from autopeft.models import load_model_config


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "autopeft.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_space_list_names_presets():
    out = run_cli("space", "list")
    assert out.returncode == 0, out.stderr
    for name in ("autopeft_sapa", "lora_per_layer", "mixed"):
        assert name in out.stdout


@pytest.mark.parametrize("preset", ["lora_per_layer", "mixed"])
def test_space_show_range_bounds_every_sample_and_is_attained(preset, minilm_path):
    out = run_cli(
        "space", "show", preset, "--model", str(minilm_path), "--num-labels", "3", "--json"
    )
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    model_config = load_model_config(minilm_path)
    space = load_space(preset, model_config=model_config)
    assert info["num_layers"] == 6 and info["size"] == space.size()
    counts = [count_trainable(c, model_config, num_labels=3) for c in space.sample(300, seed=0)]
    assert info["trainable_min"] <= min(counts) and max(counts) <= info["trainable_max"]
    # the extremes are real configs: all-zero ranks leave only the 3-label head (384 * 3 + 3)
    if preset == "lora_per_layer":
        assert info["trainable_min"] == 384 * 3 + 3
        assert info["trainable_max"] == 6 * 2 * 32 * (384 + 384) + 384 * 3 + 3


def test_space_show_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("peft:\n  lora:\n    rank: {choices: [0, -2]}\n")
    out = run_cli("space", "show", str(bad))
    assert out.returncode == 2 and "peft.lora.rank" in out.stderr
    out = run_cli("space", "show", "lora_per_layer")
    assert out.returncode == 2 and "model config" in out.stderr
