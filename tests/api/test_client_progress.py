"""``Study.wait`` without a terminal (a log, CI, ``make demo`` piped): one line each time the
study's counts change, never a redrawn bar or an ETA; the last line is the finished state."""

from __future__ import annotations

import re

from autopeft.client import progress_line
from tests.api.conftest import client_for, make_token, python_study


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


def test_wait_is_silent_without_progress(sqlite_url, server_factory, capsys):
    server = server_factory(sqlite_url)
    client = client_for(server, make_token(sqlite_url, "alice"))
    client.create_study(spec=python_study(max_trials=2)).wait(timeout=120, poll=0.1, progress=False)
    assert capsys.readouterr().err == ""
