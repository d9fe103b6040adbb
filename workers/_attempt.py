"""One attempt of a trial inside a worker process, shared by the local worker
(``autopeft.workers._worker``) and the Ray task (``autopeft.workers._ray_remote``)."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any


def run_attempt(
    spec: dict[str, Any],
    reporter: Callable[[int, dict], str],
    checkpoint_dir: str | None,
    restore_dir: str | None,
    catch: tuple[type[BaseException], ...],
) -> dict[str, Any]:
    """Run ``spec``'s workload (``TrialSpec.to_dict()``) once with these checkpoint folders.

    Returns ``{"type": "done", "values", "stopped"}`` (``stopped``: a report was answered with
    something other than "continue") or, for an exception of a type in ``catch``,
    ``{"type": "error", "message", "oom"}``: the message ends with the last frames of the
    traceback, which is also printed whole to stderr (the worker's log)."""
    from autopeft.trials import TrialContext, run_workload

    ctx = TrialContext(
        trial_id=spec["trial_id"],
        number=spec["number"],
        checkpoint_dir=checkpoint_dir,
        restore_dir=restore_dir,
        reporter=reporter,
        budget=spec.get("budget"),
        resources=spec.get("resources") or None,
    )
    try:
        values = run_workload(spec["workload"], spec["config"], ctx)
        values = {str(k): float(v) for k, v in dict(values).items()}
    except catch as err:
        tb = traceback.format_exc(limit=8)
        print(traceback.format_exc(), file=sys.stderr, flush=True)
        from autopeft.workers.gpus import is_cuda_oom

        return {
            "type": "error",
            "message": f"{type(err).__name__}: {err}\n{tb[-3000:]}",
            "oom": is_cuda_oom(err),
        }
    stopped = ctx.last_decision not in (None, True, "continue")
    return {"type": "done", "values": values, "stopped": bool(stopped)}
