"""The demo's study is what the service accepts and fills with its measured defaults."""

from __future__ import annotations

from autopeft.api.schemas import StudyCreate
from autopeft.api.services.spec import DEFAULT_OPTIMIZER, validate_spec
from autopeft.cli.demo import study_spec
from autopeft.trials.baselines import DEFAULT_BASELINES


def test_demo_spec_gets_the_default_optimiser_and_baselines():
    spec = validate_spec(StudyCreate(**study_spec(10, 40, 1500)).model_dump(mode="json"))
    assert spec["optimizer"]["name"] == DEFAULT_OPTIMIZER["name"]
    assert (
        spec["optimizer"]["options"]["early_stopping"]["kind"]
        == DEFAULT_OPTIMIZER["options"]["early_stopping"]["kind"]
    )
    assert (
        spec["optimizer"]["options"]["early_stopping"]["max_step"] == 2 * 2
    )  # epochs x evals_per_epoch
    assert spec["baselines"] == list(DEFAULT_BASELINES)
    assert spec["workload"]["test_fraction"] > 0 and spec["max_seconds"] == 600
