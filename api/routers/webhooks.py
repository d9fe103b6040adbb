"""/api/v1/studies/{id}/webhook: a study's webhook and its recent deliveries; a test delivery."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from autopeft.api.deps import CurrentUser, StateDep
from autopeft.api.errors import ApiError
from autopeft.api.routers._common import ERRORS
from autopeft.api.schemas import StudyId
from autopeft.api.services import studies as svc
from autopeft.api.services import webhooks as webhook_svc
from autopeft.api.webhooks.rules import PING, WebhookRules
from autopeft.api.webhooks.schemas import WebhookDeliveryPublic, WebhookPublic
from autopeft.api.webhooks.sender import study_part

router = APIRouter(prefix="/studies", tags=["webhooks"], responses=ERRORS)


@router.get("/{study_id}/webhook", response_model=WebhookPublic, operation_id="get_webhook")
def get_webhook(
    study_id: StudyId,
    user: CurrentUser,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=webhook_svc.MAX_DELIVERIES)] = 50,
):
    """Where the study's webhook posts, which events, whether deliveries are signed (never the
    secret), and its newest deliveries: state, tries made, the last answer's status or error, and
    the body sent. 404 when the study has no webhook."""
    rules = WebhookRules.from_settings(state.settings)
    with state.db.read() as session:
        return webhook_svc.webhook_public(session, user.id, study_id, rules, limit)


@router.post(
    "/{study_id}/webhook/ping",
    status_code=202,
    response_model=WebhookDeliveryPublic,
    operation_id="ping_webhook",
    responses={503: {"description": "this process sends no webhooks (shutting down)"}},
)
def ping_webhook(study_id: StudyId, user: CurrentUser, state: StateDep):
    """Queue a ``ping`` delivery to the study's webhook (signed like the others, whatever its
    ``events``), to check the receiver; follow it with ``GET .../webhook``. 422 naming
    ``webhook.url`` when the operator's allow-list no longer has its host."""
    with state.db.read() as session:
        study = svc.get_study(session, user.id, study_id)
        webhook = webhook_svc.webhook_of(study)
        data = {"study": study_part(study)}
    sender = getattr(state.scheduler, "webhooks", None)
    if sender is None:
        raise ApiError(503, "unavailable", "this process sends no webhooks")
    sender.rules.check(webhook["url"])
    out = sender.deliver(study_id, PING, data)
    if out is None:
        raise ApiError(503, "unavailable", "the server is shutting down; try again shortly")
    return out
