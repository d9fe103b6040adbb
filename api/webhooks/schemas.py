"""Request and response bodies of study webhooks (``spec.webhook``, ``/studies/{id}/webhook``)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from autopeft.api.webhooks.rules import REDACTED, check_url

WebhookEvent = Literal["finished", "failed", "front"]


class WebhookSpec(BaseModel):
    """Signed JSON posted to ``url`` on the chosen events (see docs/studies.md, "Webhooks")."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(
        min_length=1,
        max_length=2000,
        description="http(s) URL the controller posts to; its host must be on the operator's "
        "allow-list (AUTOPEFT_WEBHOOK_HOSTS)",
    )
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=256,
        description="HMAC-SHA256 key of the X-Autopeft-Signature header (sha256=<hex> of the raw "
        "body); never answered back. Without one, deliveries are unsigned",
    )
    events: list[WebhookEvent] = Field(
        default_factory=lambda: ["finished", "failed", "front"],
        min_length=1,
        max_length=3,
        description="finished, failed (the study's end) and / or front (a new point joined its "
        "Pareto front); default all",
    )

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        return check_url(url)

    @field_validator("secret", mode="before")
    @classmethod
    def _not_redacted(cls, secret: Any) -> Any:
        if secret == REDACTED:
            raise ValueError(
                "this is the placeholder answers show in place of a secret: give the secret itself "
                "(or leave webhook out of a clone's changes to keep the original's)"
            )
        return secret

    @field_validator("events")
    @classmethod
    def _unique(cls, events: list[str]) -> list[str]:
        return list(dict.fromkeys(events))


class WebhookDeliveryPublic(BaseModel):
    id: int
    event_id: str = Field(description="the X-Autopeft-Delivery header: the same on every try")
    event: Literal["finished", "failed", "front", "ping"]
    state: Literal["pending", "delivered", "failed"] = Field(
        description="pending: tries left; delivered: a 2xx answer; failed: no tries left, a 4xx "
        "or redirect answer, or the host is no longer allowed"
    )
    attempts: int = Field(description="requests made so far")
    status_code: int | None = Field(default=None, description="the last answer's status")
    error: str | None = Field(default=None, description="why the last try failed")
    payload: dict[str, Any] = Field(description="the JSON body posted")
    created_at: dt.datetime
    last_attempt_at: dt.datetime | None = None
    delivered_at: dt.datetime | None = None


class WebhookPublic(BaseModel):
    url: str
    events: list[WebhookEvent]
    signed: bool = Field(
        description="whether deliveries carry X-Autopeft-Signature (a secret is set)"
    )
    refused: str | None = Field(
        default=None,
        description="why the operator's allow-list now refuses the URL (deliveries fail unsent); "
        "null: allowed",
    )
    deliveries: list[WebhookDeliveryPublic] = Field(description="the newest first")
