"""``Study.wait``'s progress. Without a terminal (a log, CI, ``make demo`` piped): one line per
finished trial and one per change of the study's state, never a redrawn bar or an ETA; the last
line is the finished state. In a terminal: a bar whose end is the study's budget (its epochs or its
time when set), not ``max_trials``."""

from __future__ import annotations

import io
import re
import sys

import pytest

from autopeft.client import budget_progress, progress_line, trial_line
from tests.api.conftest import client_for, make_token, python_study

TRIAL_LINE = re.compile(r"^study \d+ trial #(\d+) (complete|failed|pruned)")


def test_wait_logs_a_line_per_change_without_a_terminal(sqlite_url, server_factory, capsys):
    server = server_factory(sqlite_url)
    client = client_for(server, make_token(sqlite_url, "alice"))
    study = client.create_study(spec=python_study(max_trials=6, max_parallel=2))
    study.wait(timeout=180, poll=0.05, progress=True)  # pytest's capture: stderr is no TTY
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines, "no progress at all"
    bodies = [re.sub(r"^\[\s*[\d.]+ min\] ", "", line) for line in lines]
    assert all(a != b for a, b in zip(bodies, bodies[1:])), lines  # only changes are logged
    assert len(lines) < 40, lines  # a 6-trial study polled every 50 ms: far fewer than the polls
    assert not any("\r" in line or "ETA" in line or "it/s" in line for line in lines)
    assert bodies[-1] == progress_line(study.id, "finished", study.counts)
    assert "6 trials done (complete 6, pruned 0, failed 0), 0 running" in bodies[-1]
    # one line per finished trial (those finished before the first line are counted in it)
    numbers = [int(m.group(1)) for b in bodies if (m := TRIAL_LINE.match(b))]
    before = int(re.search(r"(\d+) trials done", bodies[0]).group(1))
    assert len(numbers) == len(set(numbers)) == 6 - before, lines
    trials = {t["number"]: t for t in study.trials()}
    for body in bodies:
        if m := TRIAL_LINE.match(body):
            t = trials[int(m.group(1))]
            assert f"accuracy {t['values']['accuracy']:.4g}" in body, body
            assert "of 6 trials" in body  # no time or epoch budget: the trials are the budget
    state_lines = [b for b in bodies if not TRIAL_LINE.match(b)]
    assert [re.match(r"study \d+ (\w+):", b).group(1) for b in state_lines] in (
        ["running", "finished"],
        ["finished"],
    ), lines


def test_wait_is_silent_without_progress(sqlite_url, server_factory, capsys):
    server = server_factory(sqlite_url)
    client = client_for(server, make_token(sqlite_url, "alice"))
    client.create_study(spec=python_study(max_trials=2)).wait(timeout=120, poll=0.1, progress=False)
    assert capsys.readouterr().err == ""


def test_budget_progress_ends_at_the_budget_nearest_its_end():
    spec = {"max_trials": 40}
    assert budget_progress(spec, 3, 0.0, 100.0) == ("trial", 3.0, 40.0)
    spec = {"max_trials": 40, "max_epochs": 9}
    assert budget_progress(spec, 0, 0.0, 5.0) == ("epoch", 0.0, 9.0)  # not max_trials
    assert budget_progress(spec, 2, 4.5, 5.0) == ("epoch", 4.5, 9.0)
    assert budget_progress(spec, 39, 1.0, 5.0) == ("trial", 39.0, 40.0)  # the trials end it first
    spec = {"max_trials": 40, "max_seconds": 600}
    assert budget_progress(spec, 0, 0.0, 0.0) == ("s", 0.0, 600.0)
    assert budget_progress(spec, 5, 0.0, 120.0) == ("s", 120.0, 600.0)
    both = {"max_trials": 40, "max_epochs": 9, "max_seconds": 600}
    assert budget_progress(both, 5, 4.5, 500.0) == ("s", 500.0, 600.0)
    assert budget_progress(both, 5, 8.0, 300.0) == ("epoch", 8.0, 9.0)


def test_trial_line_names_the_trial_its_values_and_the_budget():
    objectives = [
        {"name": "accuracy", "direction": "maximize"},
        {"name": "trainable_params", "direction": "minimize"},
    ]
    counts = {"complete": 3, "failed": 1, "running": 2}
    done = {
        "number": 7,
        "state": "complete",
        "values": {"accuracy": 0.81234, "trainable_params": 12288.0},
    }
    line = trial_line(4, done, objectives, counts, ("epoch", 4.5, 9.0))
    assert line == (
        "study 4 trial #7 complete: accuracy 0.8123, trainable_params 12,288 "
        "(4 done, 2 running; budget 4.5 of 9 epochs)"
    )
    failed = {
        "number": 8,
        "state": "failed",
        "error": "Traceback...\nValueError: boom",
        "values": None,
    }
    line = trial_line(4, failed, objectives, counts, ("s", 90.0, 600.0))
    assert (
        line
        == "study 4 trial #8 failed: ValueError: boom (4 done, 2 running; budget 1.5 of 10.0 min)"
    )
    probe = {"number": 0, "state": "complete", "label": "linear_probe", "values": {"accuracy": 0.5}}
    assert trial_line(4, probe, objectives, counts).startswith(
        "study 4 trial #0 (linear_probe) complete"
    )


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _last_frame(text: str) -> str:
    return [f for f in re.split(r"[\r\n]", text) if f.strip()][-1]


@pytest.mark.parametrize(
    "budget, entrypoint, end",
    [
        ({"max_epochs": 3}, "tests.api.workloads:one_epoch", "3.0/3.0"),
        ({"max_seconds": 1.5}, "tests.api.workloads:sleepy", "1.5/1.5"),
        ({}, "tests.api.workloads:quick", "4/4"),
    ],
    ids=["epochs", "seconds", "trials"],
)
def test_the_bar_ends_at_the_study_budget(
    sqlite_url, server_factory, monkeypatch, budget, entrypoint, end
):
    """In a terminal the bar's total is max_epochs or max_seconds where set (max_trials, 50 here,
    only without them); it ends full at that budget."""
    server = server_factory(sqlite_url)
    client = client_for(server, make_token(sqlite_url, "alice"))
    trials = 4 if not budget else 50
    spec = python_study(entrypoint=entrypoint, max_trials=trials, max_parallel=1, **budget)
    study = client.create_study(spec=spec)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    study.wait(timeout=180, poll=0.05, progress=True)
    monkeypatch.undo()
    frame = _last_frame(terminal.getvalue())
    assert study.state == "finished"
    assert f" {end} " in frame, frame
    assert "/50" not in terminal.getvalue()  # max_trials is never the bar's end with a budget
    unit = {"max_epochs": "epoch", "max_seconds": "s"}.get(next(iter(budget), ""), "trial")
    assert f"{unit}/s" in frame or f"s/{unit}" in frame, frame  # tqdm's rate in the budget's unit
    done = sum(study.counts[k] for k in ("complete", "failed", "pruned"))
    assert f"done={done}" in frame, frame
    if "max_epochs" in budget:
        assert study.counts["complete"] == 3  # one epoch a trial: the budget ended the study


def test_wait_logs_the_epoch_budget_without_a_terminal(sqlite_url, server_factory, capsys):
    server = server_factory(sqlite_url)
    client = client_for(server, make_token(sqlite_url, "alice"))
    spec = python_study(
        entrypoint="tests.api.workloads:one_epoch", max_trials=50, max_parallel=1, max_epochs=3
    )
    study = client.create_study(spec=spec).wait(timeout=180, poll=0.05, progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    bodies = [re.sub(r"^\[\s*[\d.]+ min\] ", "", line) for line in lines]
    per_trial = [b for b in bodies if TRIAL_LINE.match(b)]
    assert per_trial and all(re.search(r"budget [\d.]+ of 3 epochs", b) for b in per_trial), lines
    assert "budget 3 of 3 epochs" in per_trial[-1], lines
    assert not any("of 50 trials" in b for b in bodies)
    assert bodies[-1] == progress_line(study.id, "finished", study.counts)
