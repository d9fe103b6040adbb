"""/api/v1/studies/{id}/webhook: a study's webhook and its recent deliveries; a test delivery."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from autopeft.api.deps import CurrentUser, StateDep
from autopeft.api.errors import ApiError
from autopeft.api.routers._common import ERRORS
from autopeft.api.schemas import StudyId
from autopeft.api.services import studies as svc
from autopeft.api.services import webhooks as webhook_svc
from autopeft.api.webhooks.rules import PING, WebhookRules
from autopeft.api.webhooks.schemas import WebhookDeliveryPublic, WebhookPublic, WebhookSpec
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


@router.put("/{study_id}/webhook", response_model=WebhookPublic, operation_id="set_webhook")
def set_webhook(study_id: StudyId, body: WebhookSpec, user: CurrentUser, state: StateDep):
    """Give the study a webhook, or replace its one (a new URL, secret or events; give the secret
    again to keep deliveries signed: it is never shown). 422 naming ``url`` when the operator's
    allow-list does not have its host. Deliveries still pending go to the new URL with the new
    secret; on a study that is running here, new events are posted from now on."""
    rules = WebhookRules.from_settings(state.settings)
    webhook = body.model_dump(mode="json")
    with state.scheduler.study_lock(study_id):
        with state.db.write(study_id) as session:
            spec = dict(webhook_svc.set_webhook(session, user.id, study_id, webhook, rules).spec)
        state.scheduler.webhook_added(study_id, spec)
    return get_webhook(study_id, user, state)


@router.delete(
    "/{study_id}/webhook", status_code=204, response_class=Response, operation_id="delete_webhook"
)
def delete_webhook(study_id: StudyId, user: CurrentUser, state: StateDep):
    """Remove the study's webhook: nothing more is posted (pending deliveries fail unsent); its
    delivery history stays until the study is deleted. 404 when it has none."""
    with state.db.write(study_id) as session:
        webhook_svc.remove_webhook(session, user.id, study_id)
    return Response(status_code=204)
