"""``on_report`` / ``on_done`` callbacks of one executor submission, recorded: shared by the
executor tests of every backend (local processes, Ray)."""

from __future__ import annotations

import threading


class Recorder:
    """``decision``: what ``on_report`` answers — a string, or a function of the step."""

    def __init__(self, decision="continue"):
        self.reports, self.outcomes, self.decision = [], [], decision
        self.done = threading.Event()

    def on_report(self, step, metrics):
        self.reports.append((step, metrics))
        return self.decision(step) if callable(self.decision) else self.decision

    def on_done(self, outcome):
        self.outcomes.append(outcome)
        self.done.set()

    def outcome(self, timeout: float = 120):
        assert self.done.wait(timeout), "on_done was not called"
        assert len(self.outcomes) == 1
        return self.outcomes[0]
