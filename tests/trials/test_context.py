"""TrialContext: the reporter protocol, budgets and resources; no torch at import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autopeft.errors import InvalidConfig
from autopeft.trials import TrialContext


class Exploit:  # what a PBT optimiser might answer: neither "continue" nor "stop"
    pass


@pytest.mark.parametrize(
    "decision, expected",
    [
        ("continue", True),
        (None, True),
        (True, True),
        ("stop", False),
        (False, False),
        (Exploit(), False),
        ("exploit", False),
    ],
)
def test_report_maps_decisions_to_bool(decision, expected):
    seen = []

    def reporter(step, metrics):
        seen.append((step, metrics))
        return decision

    trial = TrialContext("t1", reporter=reporter)
    assert trial.report(3, {"accuracy": 0.5, "n": 2}) is expected
    assert seen == [(3, {"accuracy": 0.5, "n": 2.0})]
    assert trial.last_decision is decision


def test_report_without_reporter_continues():
    assert TrialContext("t").report(1, {"x": 1.0}) is True


def test_paths_and_resources(tmp_path):
    trial = TrialContext(
        "t",
        checkpoint_dir=str(tmp_path / "c"),
        restore_dir=str(tmp_path),
        resources={"cpus": 3, "gpus": 0},
    )
    assert trial.checkpoint_dir == tmp_path / "c" and isinstance(trial.restore_dir, Path)
    assert trial.cpus == 3 and trial.gpus == 0
    assert TrialContext("t").cpus is None


@pytest.mark.parametrize(
    "budget, message",
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 1.5}, "epochs"),
        ({"fraction": 0.0}, "fraction"),
        ({"fraction": 1.5}, "fraction"),
        ({"steps": 3}, "steps"),
        ([1], "mapping"),
    ],
)
def test_bad_budget(budget, message):
    with pytest.raises(InvalidConfig, match=message) as err:
        TrialContext("t", budget=budget)
    assert err.value.field == "budget"


def test_budget_normalised():
    assert TrialContext("t", budget={"epochs": 2.0, "fraction": 0.25}).budget == {
        "epochs": 2,
        "fraction": 0.25,
    }
    assert TrialContext("t", budget={}).budget is None


def test_importing_trials_and_context_does_not_import_torch():
    code = (
        "import sys, autopeft, autopeft.trials, autopeft.trials.context; "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
