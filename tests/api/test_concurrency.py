"""8 concurrent trial processes reporting as fast as they can, on SQLite: no "database is
locked", every report stored, every trial complete."""

from __future__ import annotations

import time

from tests.api.conftest import client_for, make_token, python_study


def test_eight_concurrent_reporting_workers_on_sqlite(sqlite_url, server_factory):
    reports = 40
    server = server_factory(
        sqlite_url, env={"AUTOPEFT_TEST_REPORTS": str(reports), "AUTOPEFT_LOG_LEVEL": "info"}
    )
    client = client_for(server, make_token(sqlite_url, "alice"))
    study = client.create_study(
        spec=python_study("tests.api.workloads:chatty", max_trials=16, max_parallel=8)
    )
    # read while they write, too
    deadline = time.monotonic() + 300
    max_running = 0
    while study.refresh().state == "running":
        max_running = max(max_running, study.counts["running"])
        study.trials()
        assert time.monotonic() < deadline, f"study still running: {study.counts}"
    assert max_running >= 2, max_running
    assert study.state == "finished", study.data
    assert study.counts["complete"] == 16, study.counts
    for t in study.trials():
        assert len(client.reports(t["id"])) == reports
    log = server.log().lower()
    assert "database is locked" not in log and "operationalerror" not in log
