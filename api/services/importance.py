"""``GET /studies/{id}/importance``: per-objective importance of the searched parameters over the
study's complete search trials (baselines and replicate runs are not points of the search
space), computed by ``autopeft.optim.importance`` with Optuna's evaluators."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from autopeft.api.models import Trial
from autopeft.api.services.studies import get_study
from autopeft.api.study import build_space


def importance(
    session: Session, user_id: int, study_id: int, evaluator: str = "fanova"
) -> dict[str, Any]:
    from autopeft.optim.importance import param_importances

    study = get_study(session, user_id, study_id)
    rows = session.scalars(
        select(Trial)
        .where(Trial.study_id == study.id, Trial.state == "complete", Trial.kind == "search")
        .order_by(Trial.number)
    ).all()
    return param_importances(
        build_space(study.spec),
        [(t.config or {}, t.values or {}) for t in rows],
        study.spec["objectives"],
        evaluator=evaluator,
        seed=int(study.spec.get("seed") or 0),
    )
