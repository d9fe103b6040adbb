"""The executor contract.

An executor runs trials somewhere (local processes, Ray tasks) and reports back through two
callbacks given at submission:

* ``on_report(step, metrics) -> decision`` — called for every ``trial.report`` of the workload,
  in order, from an executor thread. The decision is ``"continue"`` or ``"stop"`` (anything
  else, e.g. a PBT ``Exploit``, is relayed to the workload as "stop"; the caller that returned
  it handles what comes next, typically by submitting the trial again with another config and
  ``restore_dir``). The callback may block briefly (it writes to the store).
* ``on_done(outcome)`` — called exactly once per ``submit``, from an executor thread, when the
  trial finished, failed (exception, crash, bad return value: ``outcome.error`` says why) or was
  cancelled — unless the executor was shut down first: trials still running at
  ``shutdown`` get no ``on_done`` (the controller requeues them when it starts again).

An executor may retry an attempt itself when the worker process or its node was lost (the
Ray executor does, up to ``max_retries`` times). Before each new attempt it increments
``spec.attempt`` of the submitted spec (reports of the new attempt therefore carry its number
when the caller reads ``spec.attempt`` at report time), and the final outcome says which
attempt produced it (``outcome.attempt``) and why the earlier ones were retried
(``outcome.retries``). Callers record ``outcome.attempt`` as the trial's attempt count.

Everything that crosses the boundary is plain JSON-serialisable data (``TrialSpec.to_dict``),
so that a remote executor (Ray) can ship it as is.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

OnReport = Callable[[int, dict[str, float]], Any]

log = logging.getLogger("autopeft.workers")


def relay_decision(on_report: OnReport, step: int, metrics: dict[str, Any]) -> str:
    """Call the controller's ``on_report`` and reduce its answer to what a workload is told:
    ``"continue"`` (None / True / "continue") or ``"stop"`` (anything else, e.g. a PBT Exploit).
    A controller-side error is logged and the trial continues, so it never dies silently."""
    try:
        decision = on_report(int(step), metrics)
    except Exception:
        log.exception("on_report failed; telling the trial to continue")
        return "continue"
    if decision is None or decision is True or decision == "continue":
        return "continue"
    return "stop"


@dataclass
class TrialSpec:
    """What a worker needs to run one attempt of one trial."""

    trial_id: int
    study_id: int
    number: int
    workload: dict[str, Any]
    config: dict[str, Any]
    attempt: int = 1
    checkpoint_dir: str | None = None
    restore_dir: str | None = None
    budget: dict[str, float] | None = None
    resources: dict[str, float] = field(default_factory=dict)
    log_path: str | None = None  # where the worker's stdout / stderr go (local executor)
    # the dataset file the workload reads, as it is on the controller's node: {"path", "sha256",
    # "size", "suffix"}. A local worker reads ``path``; the Ray executor ships the file to other nodes.
    data_file: dict[str, Any] | None = None
    # the GPUs the local executor granted, as CUDA_VISIBLE_DEVICES ("" : none); None: not set by us
    cuda_visible_devices: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialSpec:
        return cls(**d)


@dataclass
class TrialOutcome:
    """How an attempt ended. ``state`` is complete or failed; ``stopped`` says the workload
    returned early because a report was answered with something other than "continue"."""

    state: Literal["complete", "failed"]
    values: dict[str, float] | None = None
    error: str | None = None
    stopped: bool = False
    cancelled: bool = False
    attempt: int | None = None  # the attempt that produced this outcome, when the executor retried
    retries: list[str] = field(default_factory=list)  # why each earlier attempt was retried
    oom: bool = False  # failed with CUDA out of memory (executors retry such a trial alone)


OnDone = Callable[[TrialOutcome], None]


class Executor(abc.ABC):
    """Runs trials. Implementations: :class:`autopeft.workers.local.LocalProcessExecutor` and
    :class:`autopeft.workers.ray.RayExecutor`; ``tests/workers/test_executor_contract.py`` holds
    both to this contract."""

    name: str = "abstract"

    @abc.abstractmethod
    def submit(self, spec: TrialSpec, on_report: OnReport, on_done: OnDone) -> None:
        """Start ``spec`` (non-blocking). ``on_done`` will be called exactly once (see module doc)."""

    @abc.abstractmethod
    def cancel(self, trial_id: int) -> bool:
        """Ask a running trial to end; its ``on_done`` gets ``cancelled=True``. False if unknown."""

    @abc.abstractmethod
    def running(self) -> list[int]:
        """Trial ids submitted and not done yet."""

    @abc.abstractmethod
    def shutdown(self, wait: bool = True) -> None:
        """Stop every trial without calling ``on_done``; release resources. Idempotent."""

    def capacity(self) -> int | None:
        """How many trials can run at once (None: no limit known); schedulers may use it."""
        return None


def create_executor(kind: str, **options: Any) -> Executor:
    """``local`` (one process per trial) or ``ray`` (one Ray task per attempt; needs ``ray``)."""
    if kind == "local":
        from autopeft.workers.local import LocalProcessExecutor

        return LocalProcessExecutor(**options)
    if kind == "ray":
        try:
            from autopeft.workers.ray import RayExecutor
        except ImportError as err:
            raise ValueError(f"the ray executor is not available: {err}") from None
        return RayExecutor(**options)
    raise ValueError(f"unknown executor {kind!r}; known: local, ray")
