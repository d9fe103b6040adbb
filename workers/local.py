"""Local process executor: one fresh Python process per trial attempt.

Reports travel over a pair of pipes between the controller and the worker process (see
``autopeft.workers._worker`` for the protocol); the controller-side thread of each trial
calls ``on_report`` and writes the decision back, so a workload blocks in ``trial.report``
until the controller has stored the report and answered.

To keep start-up off the critical path, ``prestart`` processes are started ahead of time
(interpreter plus ``autopeft.trials`` imported) and wait for a spec; a process is never reused
for a second trial. A worker that dies without a result (crash, ``os._exit``, signal, OOM
kill) becomes a failed trial whose error names the exit code or signal and ends with the last
lines of its log.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from autopeft.workers.base import Executor, OnDone, OnReport, TrialOutcome, TrialSpec, relay_decision

log = logging.getLogger("autopeft.workers.local")


class _Proc:
    def __init__(self, env: dict[str, str], cwd: str | None):
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "autopeft.workers._worker", str(to_child_r), str(from_child_w)],
            pass_fds=(to_child_r, from_child_w), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
            start_new_session=True)
        os.close(to_child_r)
        os.close(from_child_w)
        self.to_child = os.fdopen(to_child_w, "w", encoding="utf-8", buffering=1)
        self.from_child = os.fdopen(from_child_r, "r", encoding="utf-8")
        self.ready = False

    def wait_ready(self) -> bool:
        if not self.ready:
            line = self.from_child.readline()
            self.ready = bool(line) and json.loads(line).get("type") == "ready"
        return self.ready

    def send(self, msg: dict) -> None:
        self.to_child.write(json.dumps(msg) + "\n")
        self.to_child.flush()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        for f in (self.to_child, self.from_child):
            try:
                f.close()
            except OSError:
                pass


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "worker did not exit"
    if code < 0:
        try:
            return f"worker killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"worker killed by signal {-code}"
    return f"worker exited with code {code} without a result"


def _tail(path: str | None, lines: int = 15) -> str:
    if not path or not Path(path).is_file():
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8000))
            text = f.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])
    except OSError:
        return ""


class LocalProcessExecutor(Executor):
    """Runs every trial attempt in its own process on this machine.

    Args:
        pythonpath: extra entries prepended to the workers' ``PYTHONPATH`` (so that python
            workloads such as ``tests.api.workloads:fn`` import).
        env: extra environment variables for the workers.
        prestart: how many idle processes to keep ready (0: start on demand).
        cpus_per_trial: passed to workloads as ``resources["cpus"]``.
        cancel_grace_s: SIGTERM, then SIGKILL after this long.
    """

    name = "local"

    def __init__(self, pythonpath: str | None = None, env: dict[str, str] | None = None, prestart: int = 1,
                 cpus_per_trial: int = 1, cancel_grace_s: float = 3.0, cwd: str | None = None):
        self._env = dict(os.environ)
        self._env.update(env or {})
        paths = [p for p in (pythonpath, self._env.get("PYTHONPATH")) if p]
        if paths:
            self._env["PYTHONPATH"] = os.pathsep.join(paths)
        self._env.setdefault("OMP_NUM_THREADS", str(cpus_per_trial))
        self._cwd = cwd
        self._prestart = max(0, int(prestart))
        self._cpus = cpus_per_trial
        self._grace = cancel_grace_s
        self._lock = threading.Lock()
        self._idle: list[_Proc] = []
        self._running: dict[int, _Proc] = {}
        self._cancelled: set[int] = set()
        self._closed = False
        self._refill()

    # -- pool -------------------------------------------------------------------------------
    def _refill(self) -> None:
        with self._lock:
            if self._closed:
                return
            missing = self._prestart - len(self._idle)
            for _ in range(max(0, missing)):
                self._idle.append(_Proc(self._env, self._cwd))

    def _take(self) -> _Proc:
        with self._lock:
            while self._idle:
                proc = self._idle.pop(0)
                if proc.popen.poll() is None:
                    break
                proc.close()
            else:
                proc = None
        if proc is None:
            proc = _Proc(self._env, self._cwd)
        if self._prestart:
            threading.Thread(target=self._refill, daemon=True, name="autopeft-prestart").start()
        return proc

    # -- contract ---------------------------------------------------------------------------
    def submit(self, spec: TrialSpec, on_report: OnReport, on_done: OnDone) -> None:
        if self._closed:
            raise RuntimeError("executor is shut down")
        if not spec.resources:
            spec.resources = {"cpus": self._cpus, "gpus": 0}
        if spec.log_path:
            Path(spec.log_path).parent.mkdir(parents=True, exist_ok=True)
        proc = self._take()
        with self._lock:
            self._running[spec.trial_id] = proc
        threading.Thread(target=self._drive, args=(spec, proc, on_report, on_done), daemon=True,
                         name=f"autopeft-trial-{spec.trial_id}").start()

    def _drive(self, spec: TrialSpec, proc: _Proc, on_report: OnReport, on_done: OnDone) -> None:
        outcome: TrialOutcome | None = None
        try:
            if proc.wait_ready():
                proc.send({"spec": spec.to_dict()})
                for line in proc.from_child:
                    msg = json.loads(line)
                    kind = msg.get("type")
                    if kind == "report":
                        decision = relay_decision(on_report, msg["step"], msg["metrics"])
                        proc.send({"decision": decision})
                    elif kind == "done":
                        outcome = TrialOutcome("complete", values=msg["values"], stopped=bool(msg.get("stopped")))
                        break
                    elif kind == "error":
                        outcome = TrialOutcome("failed", error=msg["message"])
                        break
        except (OSError, ValueError) as err:  # broken pipe, bad line
            log.warning("trial %s: lost the worker's pipe: %s", spec.trial_id, err)
        code = None
        if outcome is None:  # no result: the exit code (or signal) is the reason
            code = self._reap(proc)
        with self._lock:
            self._running.pop(spec.trial_id, None)
            cancelled = spec.trial_id in self._cancelled
            self._cancelled.discard(spec.trial_id)
            closed = self._closed
        if not closed:   # shut down: no on_done, the controller requeues the trial on its next start
            if cancelled:
                outcome = TrialOutcome("failed", error="cancelled", cancelled=True)
            elif outcome is None:
                tail = _tail(spec.log_path)
                outcome = TrialOutcome("failed", error=_describe_exit(code) + (f"; last output:\n{tail}" if tail else ""))
            try:
                on_done(outcome)   # with a result in hand, before the process has finished exiting
            except Exception:  # noqa: BLE001
                log.exception("on_done of trial %s failed", spec.trial_id)
        if code is None:
            self._reap(proc)

    @staticmethod
    def _reap(proc: _Proc) -> int | None:
        try:
            code = proc.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.popen.wait()
        proc.close()
        return code

    def cancel(self, trial_id: int) -> bool:
        with self._lock:
            proc = self._running.get(trial_id)
            if proc is None:
                return False
            self._cancelled.add(trial_id)
        proc.kill(signal.SIGTERM)
        threading.Timer(self._grace, proc.kill).start()
        return True

    def running(self) -> list[int]:
        with self._lock:
            return list(self._running)

    def capacity(self) -> int | None:
        return None

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            procs = list(self._running.values()) + self._idle
            self._idle = []
        for proc in procs:
            proc.kill(signal.SIGKILL)
        if wait:
            deadline = time.monotonic() + 10
            for proc in procs:
                try:
                    proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
