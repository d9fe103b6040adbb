"""Stopping a child process we started (a server, a controller): shared by the demo and the
benchmarks."""

from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; always reaps the process."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
