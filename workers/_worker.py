"""Entry point of one local trial process: ``python -m autopeft.workers._worker IN_FD OUT_FD``.

Protocol (JSON lines over two inherited pipes; stdout / stderr stay free for the workload):

* controller -> worker: first line ``{"spec": TrialSpec.to_dict()}``; then one line
  ``{"decision": "continue" | "stop"}`` in answer to every report.
* worker -> controller: ``{"type": "ready"}`` once imports are done (the process may be
  started ahead of time and wait for its spec), then ``{"type": "report", "step", "metrics"}``
  per ``trial.report``, and finally ``{"type": "done", "values", "stopped"}`` or
  ``{"type": "error", "message"}``.

The process exits on its own when the controller goes away (closed pipe, or the parent pid
changes), so a killed controller leaves no trial running.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(70)


def main(argv: list[str]) -> int:
    in_fd, out_fd = int(argv[0]), int(argv[1])
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    inp = os.fdopen(in_fd, "r", encoding="utf-8", buffering=1)
    out = os.fdopen(out_fd, "w", encoding="utf-8", buffering=1)

    def send(msg: dict) -> None:
        out.write(json.dumps(msg, allow_nan=True) + "\n")
        out.flush()

    from autopeft.workers._attempt import run_attempt  # imports the workloads: start-up's bulk

    send({"type": "ready"})
    line = inp.readline()
    if not line:
        return 0  # a pre-started worker that was never used
    spec = json.loads(line)["spec"]
    if spec.get("cuda_visible_devices") is not None:  # before anything initialises CUDA
        os.environ["CUDA_VISIBLE_DEVICES"] = spec["cuda_visible_devices"]
    log_path = spec.get("log_path")
    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)

    def reporter(step: int, metrics: dict) -> str:
        send({"type": "report", "step": step, "metrics": metrics})
        answer = inp.readline()
        if not answer:
            os._exit(71)  # controller gone
        return json.loads(answer)["decision"]

    result = run_attempt(
        spec, reporter, spec.get("checkpoint_dir"), spec.get("restore_dir"), (BaseException,)
    )
    send(result)
    return 0 if result["type"] == "done" else 1


if __name__ == "__main__":
    status = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # the result is sent: skip interpreter teardown
