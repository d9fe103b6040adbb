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

GPUs (:mod:`autopeft.workers.gpus`): on a node with GPUs every trial gets its own GPU or a share of
one through ``CUDA_VISIBLE_DEVICES`` (set in the worker before CUDA starts; ``""`` for a trial granted
none). Shares follow :mod:`autopeft.workers.placement` (``gpus_per_trial="auto"``, the default: a peft
trial's predicted memory times the safety margin, over one GPU's memory); a trial waits (``running``,
not started) until its share is free. A trial that fails with CUDA out of memory is not a failed
config: the margin grows, and the trial runs again *alone* on a GPU nobody else holds (up to
``oom_retries`` times; ``outcome.retries`` says why, like the Ray executor's retries).
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
from typing import TYPE_CHECKING

from autopeft.errors import InvalidConfig
from autopeft.workers.base import Executor, TrialOutcome, TrialSpec, relay_decision
from autopeft.workers.gpus import Gpu, GpuPool, MemoryMargin, inventory

if TYPE_CHECKING:  # the callbacks' types, for annotations only
    from autopeft.workers.base import OnDone, OnReport

log = logging.getLogger("autopeft.workers.local")


class _Proc:
    def __init__(self, env: dict[str, str], cwd: str | None):
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "autopeft.workers._worker", str(to_child_r), str(from_child_w)],
            pass_fds=(to_child_r, from_child_w),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
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
        gpus: the node's GPUs (default: :func:`autopeft.workers.gpus.inventory`).
        gpus_per_trial: ``"auto"`` (a share by predicted memory for peft trials) or a number.
        gpu_margin: initial safety factor on predicted memory (grows after an out-of-memory error).
        memory_overhead_bytes: added to each trial's predicted memory (CUDA context, framework).
        oom_retries: how many times a trial that ran out of GPU memory is retried alone.
    """

    name = "local"

    def __init__(
        self,
        pythonpath: str | None = None,
        env: dict[str, str] | None = None,
        prestart: int = 1,
        cpus_per_trial: int = 1,
        cancel_grace_s: float = 3.0,
        cwd: str | None = None,
        gpus: list[Gpu] | None = None,
        gpus_per_trial: float | str = "auto",
        gpu_margin: float = 1.2,
        memory_overhead_bytes: int = 512 * 2**20,
        oom_retries: int = 2,
    ):
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
        self.gpu_pool = GpuPool(inventory() if gpus is None else gpus)
        self.margin = MemoryMargin(gpu_margin)
        self._gpus_per_trial = gpus_per_trial
        self._overhead = int(memory_overhead_bytes)
        self._oom_retries = max(0, int(oom_retries))
        if self.gpu_pool.gpus:
            log.info(
                "local executor: %d GPU(s): %s",
                len(self.gpu_pool.gpus),
                ", ".join(f"{g.index} ({g.memory / 2**30:.0f} GiB)" for g in self.gpu_pool.gpus),
            )
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
        if spec.log_path:
            Path(spec.log_path).parent.mkdir(parents=True, exist_ok=True)
        proc = self._take()
        with self._lock:
            self._running[spec.trial_id] = proc
        threading.Thread(
            target=self._drive,
            args=(spec, proc, on_report, on_done),
            daemon=True,
            name=f"autopeft-trial-{spec.trial_id}",
        ).start()

    def _gpu_request(self, spec: TrialSpec) -> float:
        """The GPU share of ``spec`` (0 on a node without GPUs); ``InvalidConfig`` when it cannot be met."""
        if not self.gpu_pool.gpus:
            return 0.0
        from autopeft.workers.placement import request_for

        req = request_for(
            spec.workload,
            spec.config,
            spec.resources,
            cpus=self._cpus,
            gpus=self._gpus_per_trial,
            gpu_memory_bytes=self.gpu_pool.memory_per_gpu,
            memory_overhead_bytes=self._overhead,
            margin=self.margin.factor,
        )
        return req.gpus

    def _drive(self, spec: TrialSpec, proc: _Proc, on_report: OnReport, on_done: OnDone) -> None:
        retries: list[str] = []
        alone = False
        while True:
            try:
                share = self._gpu_request(spec)
                granted = self._grant(spec, share, alone)
            except (InvalidConfig, ValueError) as err:
                granted, share = None, 0.0
                outcome, code = TrialOutcome("failed", error=f"resources: {err}"), None
                proc.kill()
            else:
                outcome, code = (
                    self._attempt(spec, proc, on_report) if granted is not None else (None, None)
                )
                if granted:
                    self.gpu_pool.release(granted, 1.0 if alone else share)
            with self._lock:
                retry = (
                    outcome is not None
                    and outcome.oom
                    and share > 0
                    and len(retries) < self._oom_retries
                    and not self._closed
                    and spec.trial_id not in self._cancelled
                )
            if not retry:
                break
            where = f"GPU {','.join(map(str, granted))}" if granted else "its GPU"
            retries.append(
                f"attempt {spec.attempt}: CUDA out of memory on {where} (share {share:g}); "
                f"retried alone, margin now x{self.margin.grow():.2f}"
            )
            log.warning("trial %s: %s", spec.trial_id, retries[-1])
            self._reap(proc)
            spec.attempt += 1
            alone = True
            proc = self._take()
            with self._lock:
                self._running[spec.trial_id] = proc
        if (
            outcome is None and granted is not None
        ):  # no result: the exit code (or signal) is the reason
            code = self._reap(proc)
        with self._lock:
            self._running.pop(spec.trial_id, None)
            cancelled = spec.trial_id in self._cancelled
            self._cancelled.discard(spec.trial_id)
            closed = self._closed
        if not closed:  # shut down: no on_done, the controller requeues the trial on its next start
            if cancelled:
                outcome = TrialOutcome("failed", error="cancelled", cancelled=True)
            elif outcome is None:
                tail = _tail(spec.log_path)
                outcome = TrialOutcome(
                    "failed",
                    error=_describe_exit(code) + (f"; last output:\n{tail}" if tail else ""),
                )
            if retries:
                outcome.attempt, outcome.retries = spec.attempt, list(retries)
            try:
                on_done(outcome)  # with a result in hand, before the process has finished exiting
            except Exception:
                log.exception("on_done of trial %s failed", spec.trial_id)
        if code is None:
            self._reap(proc)

    def _grant(self, spec: TrialSpec, share: float, alone: bool) -> list[int] | None:
        """GPUs for this attempt ([] for none; None: cancelled or shut down while waiting); sets the
        spec's resources and ``CUDA_VISIBLE_DEVICES``."""
        if not self.gpu_pool.gpus:
            if not spec.resources:
                spec.resources = {"cpus": self._cpus, "gpus": 0}
            return []
        granted: list[int] = []
        if share > 0:
            got = self.gpu_pool.acquire(
                share,
                alone=alone,
                cancelled=lambda: self._closed or spec.trial_id in self._cancelled,
            )
            if got is None:
                return None
            granted = got
        resources = dict(spec.resources or {})
        resources["cpus"] = resources.get("cpus") or self._cpus
        resources["gpus"] = 1.0 if alone else share
        spec.resources = resources
        spec.cuda_visible_devices = ",".join(str(i) for i in granted)
        return granted

    def _attempt(
        self, spec: TrialSpec, proc: _Proc, on_report: OnReport
    ) -> tuple[TrialOutcome | None, int | None]:
        """Run one attempt in ``proc``; ``(outcome, None)``, or ``(None, None)`` when it ended without one."""
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
                        outcome = TrialOutcome(
                            "complete", values=msg["values"], stopped=bool(msg.get("stopped"))
                        )
                        break
                    elif kind == "error":
                        outcome = TrialOutcome(
                            "failed", error=msg["message"], oom=bool(msg.get("oom"))
                        )
                        break
        except (OSError, ValueError) as err:  # broken pipe, bad line
            log.warning("trial %s: lost the worker's pipe: %s", spec.trial_id, err)
        return outcome, None

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
            self._running.clear()  # shut down: nothing runs any more (no on_done will come)
        for proc in procs:
            proc.kill(signal.SIGKILL)
        if wait:
            deadline = time.monotonic() + 10
            for proc in procs:
                try:
                    proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
