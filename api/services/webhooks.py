"""A study's webhook as its owner sees it: where it posts, what, and how the recent deliveries went
(the secret is never shown). See ``api.webhooks``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from autopeft.api.errors import ApiError
from autopeft.api.models import Study, WebhookDelivery
from autopeft.api.services.studies import get_study
from autopeft.api.webhooks.rules import EVENTS, WebhookRules
from autopeft.api.webhooks.sender import delivery_public

MAX_DELIVERIES = 200


def webhook_of(study: Study) -> dict[str, Any]:
    """The study's stored webhook (404 when it has none)."""
    webhook = (study.spec or {}).get("webhook")
    if not webhook:
        raise ApiError(
            404,
            "not_found",
            f"study {study.id} has no webhook (a study gets one at creation: webhook.url)",
        )
    return webhook


def webhook_public(
    session: Session, user_id: int, study_id: int, rules: WebhookRules, limit: int = 50
) -> dict[str, Any]:
    """The webhook of the user's study and its newest ``limit`` deliveries, newest first."""
    study = get_study(session, user_id, study_id)
    webhook = webhook_of(study)
    rows = session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.study_id == study.id)
        .order_by(WebhookDelivery.id.desc())
        .limit(min(limit, MAX_DELIVERIES))
    ).all()
    return {
        "url": webhook["url"],
        "events": list(webhook.get("events") or EVENTS),
        "signed": bool(webhook.get("secret")),
        "refused": rules.refusal(webhook["url"]),
        "deliveries": [delivery_public(r) for r in rows],
    }


def set_webhook(
    session: Session, user_id: int, study_id: int, webhook: dict[str, Any], rules: WebhookRules
) -> Study:
    """Give the user's study ``webhook`` (a validated :class:`WebhookSpec` dump), replacing the one
    it has; ``InvalidConfig`` naming ``url`` when the operator does not allow its host."""
    rules.check(webhook["url"], "url")
    session.get(Study, study_id, with_for_update=True)  # PostgreSQL: serialised with extend
    study = get_study(session, user_id, study_id)
    study.spec = {**study.spec, "webhook": webhook}
    return study


def remove_webhook(session: Session, user_id: int, study_id: int) -> None:
    """Take the user's study's webhook away (404 when it has none); its pending deliveries fail
    at their next try, unsent."""
    session.get(Study, study_id, with_for_update=True)
    study = get_study(session, user_id, study_id)
    webhook_of(study)
    study.spec = {k: v for k, v in study.spec.items() if k != "webhook"}
