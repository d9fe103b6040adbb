"""Where a study's files live, and what users see of an error.

Artifacts: ``<artifacts_dir>/study-<id>/trial-<number:05d>/`` holds a trial's ``checkpoint/``
(the latest, restored on a retry or a promotion), ``adapter/`` (exported on completion),
``worker.log`` and ``test.log``. Used by the scheduler, the tracking hub, the webhooks and the
services; nothing here imports the rest of the API.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

MAX_ERROR_CHARS = 2000
# an absolute path (two or more segments), not the middle of a word, a fraction or a URL
_PATH = re.compile(r"(?<![\w.~:/])(?:/[^\s/'\"`:,;()\[\]<>]+){2,}/?")


def public_error(error: str | None) -> str | None:
    """What users see of a trial's (or study's) error: no traceback and no server paths (an absolute
    path keeps its last part, ``…/data.csv``). The whole text goes to the controller's log and the
    worker's log."""
    if not error:
        return error
    text = error.split("Traceback (most recent call last)")[0].rstrip()
    text = _PATH.sub(lambda m: "…/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], text)
    return text[:MAX_ERROR_CHARS] or "failed (see the worker log)"


def study_dir(artifacts_dir: Path, study_id: int) -> Path:
    return Path(artifacts_dir) / f"study-{study_id}"


def remove_artifacts(artifacts_dir: Path, study_id: int) -> None:
    """Delete a study's checkpoints, adapters and worker logs (after its rows are gone)."""
    shutil.rmtree(study_dir(artifacts_dir, study_id), ignore_errors=True)


def trial_dir(artifacts_dir: Path, study_id: int, number: int) -> Path:
    return study_dir(artifacts_dir, study_id) / f"trial-{number:05d}"
