"""schemathesis against /openapi.json of a real server: no 5xx over >= 500 generated cases
(a bounded run: a fixed seed and a cap on examples per operation)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.api.conftest import REPO, client_for, make_token, python_study

MIN_CASES = 500


def test_no_server_error_over_generated_cases(db_url, server_factory, tmp_path):
    server = server_factory(db_url)
    token = make_token(db_url, "fuzzer")
    # some data to find, so the operations with ids do not all stop at 404
    client_for(server, token).create_study(spec=python_study(max_trials=2)).wait(timeout=120, poll=0.2,
                                                                                  progress=False)
    st = Path(sys.executable).parent / "st"
    out = subprocess.run([str(st), "run", f"{server.url}/openapi.json", "-H", f"Authorization: Bearer {token}",
                          "--checks", "not_a_server_error", "-n", "60", "--seed", "1", "--no-shrink",
                          "--request-timeout", "30", "--workers", "1"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    summary = out.stdout[-3000:]
    assert out.returncode == 0, summary
    cases = re.search(r"(\d+) generated", summary)
    assert cases and int(cases.group(1)) >= MIN_CASES, summary
    assert "Traceback" not in server.log(), server.log()
