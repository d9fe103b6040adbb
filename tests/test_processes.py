"""autopeft.processes.stop_process: SIGTERM first, SIGKILL after the timeout, always reaped."""

from __future__ import annotations

import signal
import subprocess
import sys

from autopeft.processes import stop_process


def test_stop_process_terminates_politely():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stop_process(proc)
    assert proc.returncode == -signal.SIGTERM


def test_stop_process_kills_what_ignores_sigterm():
    code = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"  # the handler is installed
    stop_process(proc, timeout=0.5)
    assert proc.returncode == -signal.SIGKILL
    proc.stdout.close()
