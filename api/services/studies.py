"""Study and trial queries and state changes used by the routers (per-user isolation here)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from autopeft.api.artifacts import public_error, trial_dir
from autopeft.api.errors import ApiError, not_found
from autopeft.api.models import TRIAL_STATES, Study, Trial, TrialReport, columns, utcnow
from autopeft.api.webhooks.rules import redact

MAX_PAGE = 5000


def counts(session: Session, study_ids: list[int]) -> dict[int, dict[str, int]]:
    out = {sid: dict.fromkeys(TRIAL_STATES, 0) for sid in study_ids}
    if study_ids:
        rows = session.execute(
            select(Trial.study_id, Trial.state, func.count())
            .where(Trial.study_id.in_(study_ids))
            .group_by(Trial.study_id, Trial.state)
        )
        for sid, state, n in rows:
            out[sid][state] = n
    return out


_TIMES = ("created_at", "started_at", "finished_at")


def study_public(study: Study, study_counts: dict[str, int]) -> dict[str, Any]:
    return {
        **columns(study, "id", "name", "state"),
        "counts": study_counts,
        "spec": redact(study.spec),  # never the webhook's secret
        "message": public_error(study.message),
        "notes": study.notes,
        "tags": list(study.tags or []),
        **columns(study, *_TIMES),
    }


def trial_public(t: Trial) -> dict[str, Any]:
    return {
        **columns(t, "id", "study_id", "number", "state", "config", "values", "attempts"),
        "parent_id": t.parent_id,
        "kind": t.kind or "search",
        "label": t.label,
        "notes": t.notes,
        "tags": list(t.tags or []),
        "test_values": t.test_values,
        "test_source": test_source(t.kind, t.test_values),
        "epochs_trained": float(t.epochs_trained or 0.0),
        **columns(t, "lineage", "feasible", "infeasible_reason"),
        "error": public_error(t.error),
        **columns(t, *_TIMES),
    }


def test_source(kind: str | None, test_values: Any) -> str | None:
    """Who measured a trial's held-out test values: ``service`` (its adapter, evaluated here),
    ``user`` (an attached result's, as reported), None without any."""
    if not test_values:
        return None
    return "user" if kind == "attached" else "service"


def get_study(session: Session, user_id: int, study_id: int) -> Study:
    study = session.get(Study, study_id)
    if study is None or study.user_id != user_id:  # others' studies do not exist for you
        raise not_found("study", study_id)
    return study


def get_trial(session: Session, user_id: int, trial_id: int) -> Trial:
    trial = session.get(Trial, trial_id)
    if trial is None or session.get(Study, trial.study_id).user_id != user_id:
        raise not_found("trial", trial_id)
    return trial


def check_quotas(
    session: Session, settings, user_id: int, max_parallel: int, study_id: int | None = None
) -> None:
    """The operator's per-user limits on starting a study: running trials (403 naming
    ``max_parallel``) and running studies (429)."""
    cap = settings.max_running_trials_per_user
    if cap and max_parallel > cap:
        raise ApiError(
            403,
            "quota_exceeded",
            f"max_parallel {max_parallel} is above your limit of {cap} running "
            f"trials (AUTOPEFT_MAX_RUNNING_TRIALS_PER_USER); ask for at most {cap}",
            "max_parallel",
        )
    limit = settings.max_active_studies_per_user
    if limit:
        running = session.scalar(
            select(func.count())
            .select_from(Study)
            .where(Study.user_id == user_id, Study.state == "running", Study.id != (study_id or 0))
        )
        if running >= limit:
            raise ApiError(
                429,
                "too_many_requests",
                f"you have {running} running studies, the limit is {limit} "
                "(AUTOPEFT_MAX_ACTIVE_STUDIES_PER_USER); wait for one to finish or stop one",
            )


def create_study(session: Session, user_id: int, spec: dict[str, Any]) -> Study:
    dataset_id = (spec.get("workload") or {}).get("dataset_id")
    study = Study(
        user_id=user_id,
        name=spec["name"],
        state="running",
        spec=spec,
        started_at=utcnow(),
        dataset_id=dataset_id,
    )
    session.add(study)
    session.flush()
    return study


def list_studies(session: Session, user_id: int) -> list[dict[str, Any]]:
    studies = session.scalars(
        select(Study).where(Study.user_id == user_id).order_by(Study.id)
    ).all()
    c = counts(session, [s.id for s in studies])
    return [study_public(s, c[s.id]) for s in studies]


def matches(study: dict[str, Any], q: str | None, tags: list[str]) -> bool:
    """Whether a listed study matches a search: every tag of ``tags`` (case-insensitive) and
    ``q`` as a case-insensitive substring of its name, notes or one of its tags."""
    have = {t.lower() for t in study.get("tags") or []}
    if any(t.lower() not in have for t in tags):
        return False
    if not q:
        return True
    q = q.lower()
    return any(q in (text or "").lower() for text in (study["name"], study.get("notes"), *have))


def annotate(row: Study | Trial, fields: dict[str, Any]) -> None:
    """Set the given ``notes`` / ``tags`` of a study or trial (tags deduplicated, in order)."""
    if "notes" in fields:
        notes = fields["notes"]
        row.notes = notes if notes and notes.strip() else None
    if "tags" in fields:
        row.tags = list(dict.fromkeys(t.strip() for t in fields["tags"] or []))


def show_study(session: Session, user_id: int, study_id: int) -> dict[str, Any]:
    study = get_study(session, user_id, study_id)
    return study_public(study, counts(session, [study.id])[study.id])


def set_state(session: Session, user_id: int, study_id: int, state: str) -> Study:
    study = get_study(session, user_id, study_id)
    if state == "running" and study.state == "running":
        return study
    if state == "stopped" and study.state != "running":
        raise ApiError(409, "conflict", f"study {study_id} is {study.state}, not running")
    study.state = state
    study.message = None if state == "running" else study.message
    if state == "running":
        study.finished_at = None
    return study


EXTEND_LIMITS = {"max_trials": 100_000, "max_seconds": 10 * 365 * 86400, "max_epochs": 1e9}


def extend_study(
    session: Session, user_id: int, study_id: int, added: dict[str, float]
) -> tuple[Study, bool]:
    """Add ``added`` (``max_trials`` / ``max_seconds`` / ``max_epochs``) to the study's budget and
    record it in ``spec.extensions``; a finished study is set running again. Returns (study,
    whether it needs a runner started)."""
    session.get(
        Study, study_id, with_for_update=True
    )  # PostgreSQL: serialised with the runner's finish
    study = get_study(session, user_id, study_id)
    added = {k: v for k, v in added.items() if v}
    if not added:
        raise ApiError(
            422,
            "invalid_request",
            "nothing to add: give max_trials, max_seconds and / or max_epochs above 0",
            "max_trials",
        )
    if study.state == "failed":
        raise ApiError(
            409,
            "conflict",
            f"study {study_id} failed ({public_error(study.message)}); resume it to "
            "retry, or clone it with changes",
        )
    spec = dict(study.spec)
    for key, more in added.items():
        if key != "max_trials" and spec.get(key) is None:
            raise ApiError(
                422,
                "invalid_request",
                f"study {study_id} has no {key} budget to extend (it is not limited by it)",
                key,
            )
        total = (spec.get(key) or 0) + more
        if total > EXTEND_LIMITS[key]:
            raise ApiError(
                422,
                "invalid_request",
                f"{key} would be {total:g}, above the limit of {EXTEND_LIMITS[key]:g}",
                key,
            )
        spec[key] = int(total) if key == "max_trials" else float(total)
    spec["extensions"] = [
        *(spec.get("extensions") or []),
        {**added, "at": utcnow().isoformat(timespec="seconds")},
    ]
    study.spec = spec
    restart = study.state == "finished"
    if restart:
        study.state, study.finished_at, study.message = "running", None, None
    return study, restart


#: keys the service adds to a stored spec (not part of a new study's body)
SERVICE_KEYS = (
    "extensions",
    "cloned_from",
    "warm_start",
    "tracking_errors",
    "enqueued",
    "attached",
)


def merge_patch(base: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: mappings merge key by key, ``None`` removes a key, anything else
    replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _without_derived(spec: dict[str, Any]) -> dict[str, Any]:
    """The stored spec less what validation derived from the workload (the last report step given to
    early stopping and PBT as ``max_step``), so a clone with another workload derives its own."""
    import copy

    from autopeft.api.study import build_space
    from autopeft.trials.knobs import final_report_steps

    spec = copy.deepcopy({k: v for k, v in spec.items() if k not in SERVICE_KEYS})
    workload = spec.get("workload") or {}
    options = (spec.get("optimizer") or {}).get("options") or {}
    if workload.get("kind") != "peft":
        return spec
    try:
        fewest, most = final_report_steps(workload, build_space(spec))
    except Exception:
        return spec
    stopper = options.get("early_stopping")
    if isinstance(stopper, dict) and stopper.get("max_step") == most:
        stopper.pop("max_step")
    if spec["optimizer"].get("name") in ("pbt", "mopbt") and options.get("max_step") == fewest:
        options.pop("max_step")
    return spec


def clone_spec(original: Study, overrides: dict[str, Any]) -> dict[str, Any]:
    """The body of a new study: ``original``'s spec with ``overrides`` merged over it (see
    :func:`merge_patch`), checked by the create schema (422 naming the field)."""
    from fastapi.exceptions import RequestValidationError
    from pydantic import ValidationError

    from autopeft.api.schemas import StudyCreate

    if not isinstance(overrides, dict):
        raise ApiError(
            422, "invalid_request", "the body is a mapping of the spec fields to change", None
        )
    bad = [k for k in overrides if k in SERVICE_KEYS]
    if bad:
        raise ApiError(
            422, "invalid_request", f"{bad[0]} is kept by the service, not set by a clone", bad[0]
        )
    merged = merge_patch(_without_derived(dict(original.spec)), overrides)
    merged.setdefault("name", f"{original.name} (clone)"[:200])
    if "name" not in overrides:
        merged["name"] = f"{original.name} (clone)"[:200]
    try:
        return StudyCreate.model_validate(merged).model_dump(mode="json")
    except ValidationError as err:
        raise RequestValidationError(err.errors()) from None


def cancel_trial_check(session: Session, user_id: int, trial_id: int) -> Trial:
    """The user's trial, if it can be cancelled (queued or running; 409 otherwise)."""
    trial = get_trial(session, user_id, trial_id)
    if trial.state not in ("queued", "running"):
        raise ApiError(
            409,
            "conflict",
            f"trial {trial_id} is {trial.state}: only a queued or running trial can be cancelled",
        )
    return trial


def trial_when_ended(db, user_id: int, trial_id: int, timeout: float) -> dict[str, Any]:
    """The trial once it is no longer queued or running, or as it is after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        with db.read() as session:
            out = trial_public(get_trial(session, user_id, trial_id))
        if out["state"] not in ("queued", "running") or time.monotonic() > deadline:
            return out
        time.sleep(0.05)


def delete_study(session: Session, user_id: int, study_id: int) -> None:
    study = get_study(session, user_id, study_id)
    trial_ids = select(Trial.id).where(Trial.study_id == study.id).scalar_subquery()
    session.execute(delete(TrialReport).where(TrialReport.trial_id.in_(trial_ids)))
    session.delete(study)


def list_reports(session: Session, user_id: int, trial_id: int) -> dict[str, Any]:
    trial = get_trial(session, user_id, trial_id)
    reports = session.scalars(
        select(TrialReport).where(TrialReport.trial_id == trial.id).order_by(TrialReport.id)
    ).all()
    return {
        "reports": [
            {
                "step": r.step,
                "attempt": r.attempt,
                "values": r.values,
                "decision": r.decision,
                "created_at": r.created_at,
            }
            for r in reports
        ]
    }


def adapter_zip(spec: dict, trial: Trial, artifacts_dir: Path, resolve_workload=None) -> bytes:
    """Zip of the trial's exported adapter (``adapter/``, built from a peft trial's checkpoint on
    first use, see ``services.export``), else of its checkpoint folder; ``spec``: its study's.
    ``resolve_workload``: the stored workload -> one a trainer accepts (an uploaded dataset's
    file)."""
    from autopeft.api.services.export import ensure_peft_adapter

    root = trial_dir(artifacts_dir, trial.study_id, trial.number)
    if resolve_workload is not None and not (root / "adapter").is_dir():
        spec = {**spec, "workload": resolve_workload(spec.get("workload") or {})}
    ensure_peft_adapter(spec, trial.config, trial.id, root)
    for candidate in (root / "adapter", root / "checkpoint"):
        if candidate.is_dir() and any(candidate.iterdir()):
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                for path in sorted(candidate.rglob("*")):
                    if path.is_file():
                        zf.write(path, path.relative_to(candidate).as_posix())
            return buf.getvalue()
    raise ApiError(
        404,
        "not_found",
        f"trial {trial.id} has no adapter or checkpoint to export (state {trial.state})",
    )
