"""Where a study's webhook may post, and how a delivery is signed.

The controller makes the requests, so the URL a user gives is judged against the operator's
allow-list, ``AUTOPEFT_WEBHOOK_HOSTS`` (comma-separated ``host``, ``host:port`` or ``*.domain``;
IPv6 as ``[::1]:8080``). Unset, the server sends no webhooks at all and a study asking for one is
refused. The check is on the URL's own host name, before anything is resolved: a name that is not
on the list is never looked up and never receives a request. It is made when the study is created
(422 naming ``webhook.url``) and again before every request, so an operator who narrows the list
stops the deliveries to hosts no longer on it. Redirects are not followed (a receiver cannot send
the controller elsewhere), and no proxy from the environment is used.

A delivery's body is signed with the study's secret: ``X-Autopeft-Signature: sha256=<hex>``, the
HMAC-SHA256 of the raw body bytes. The secret is kept in the stored spec and never answered:
every spec the API returns has it replaced by :data:`REDACTED`.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from autopeft.errors import InvalidConfig

#: what a study may subscribe to (default: all of them)
EVENTS = ("finished", "failed", "front")
#: the event of ``POST /studies/{id}/webhook/ping`` (always delivered, whatever ``events`` says)
PING = "ping"
#: what answers show in place of a study's secret
REDACTED = "**redacted**"
SIGNATURE_HEADER = "X-Autopeft-Signature"
EVENT_HEADER = "X-Autopeft-Event"
DELIVERY_HEADER = "X-Autopeft-Delivery"
#: the longest wait between two tries of a delivery
MAX_BACKOFF_S = 300.0
_DEFAULT_PORTS = {"http": 80, "https": 443}


def check_url(url: str) -> str:
    """``url`` if it is an ``http(s)://`` URL with a host and without user or password (else a
    ``ValueError`` saying why); nothing is resolved."""
    if any(c.isspace() for c in url):
        raise ValueError("the URL has white space in it")
    parts = urlsplit(url)  # ValueError on e.g. "http://[" or a port out of range
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"a webhook URL is http:// or https://, not {scheme or 'schemeless'!r}")
    if not parts.hostname:
        raise ValueError("the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "the URL holds a user name or password: leave them out (deliveries are "
            "authenticated by the signature made with webhook.secret)"
        )
    _ = parts.port  # raises ValueError on a port that is not a number
    return url


def _entry(text: str) -> tuple[str, int | None]:
    """One allow-list entry as (host, port or None); ``*.domain`` keeps its star."""
    text = text.strip().lower()
    if text.startswith("["):  # [v6] or [v6]:port
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port) if port.isdigit() else -1  # -1: matches no port
    return text, None  # a name, an IPv4 address or a bare IPv6 address


@dataclass(frozen=True)
class WebhookRules:
    """The operator's side of webhooks (from :class:`autopeft.api.settings.Settings`)."""

    hosts: tuple[tuple[str, int | None], ...] = ()  # AUTOPEFT_WEBHOOK_HOSTS, parsed
    tries: int = 5  # AUTOPEFT_WEBHOOK_TRIES: requests per delivery at most
    timeout_s: float = 10.0  # AUTOPEFT_WEBHOOK_TIMEOUT_S: connect / read / write timeout
    backoff_s: float = 1.0  # AUTOPEFT_WEBHOOK_BACKOFF_S: wait before the 2nd try, doubled after

    @classmethod
    def from_settings(cls, settings: Any) -> WebhookRules:
        given = getattr(settings, "webhook_hosts", None) or ""
        return cls(
            hosts=tuple(_entry(h) for h in given.split(",") if h.strip()),
            tries=int(getattr(settings, "webhook_tries", 5)),
            timeout_s=float(getattr(settings, "webhook_timeout_s", 10.0)),
            backoff_s=float(getattr(settings, "webhook_backoff_s", 1.0)),
        )

    def delay(self, tries_made: int) -> float:
        """Seconds to wait after the ``tries_made``-th failed try: ``backoff_s`` doubled each
        time, at most :data:`MAX_BACKOFF_S`."""
        return min(MAX_BACKOFF_S, self.backoff_s * 2 ** (tries_made - 1))

    def refusal(self, url: str) -> str | None:
        """Why ``url`` may not be posted to (None: it may). Reads the URL only."""
        try:
            check_url(url)
            parts = urlsplit(url)
            host, port = parts.hostname.lower(), parts.port
        except ValueError as err:
            return str(err)
        port = port or _DEFAULT_PORTS[parts.scheme.lower()]
        if not self.hosts:
            return (
                "this server sends no webhooks: the operator must allow the receiving host with "
                "AUTOPEFT_WEBHOOK_HOSTS (comma-separated host or host:port)"
            )
        for allowed, allowed_port in self.hosts:
            if allowed_port is not None and allowed_port != port:
                continue
            if host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:])):
                return None
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return (
            f"{shown[:200]} is not among the hosts this server sends webhooks to "
            "(AUTOPEFT_WEBHOOK_HOSTS): the operator must allow it"
        )

    def check(self, url: str, field: str = "webhook.url") -> None:
        """``InvalidConfig`` naming ``field`` when ``url`` may not be posted to."""
        why = self.refusal(url)
        if why is not None:
            raise InvalidConfig(why, field)


def check_webhook(spec: dict[str, Any], rules: WebhookRules) -> None:
    """Refuse (``InvalidConfig`` naming ``webhook.url``) a webhook the operator does not allow."""
    webhook = spec.get("webhook")
    if webhook is not None:
        rules.check(webhook["url"])


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the HMAC-SHA256 of ``body``, hex."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def redact(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with its webhook's secret replaced by :data:`REDACTED` (a copy when it has one)."""
    webhook = spec.get("webhook") if isinstance(spec, dict) else None
    if not isinstance(webhook, dict) or not webhook.get("secret"):
        return spec
    return {**spec, "webhook": {**webhook, "secret": REDACTED}}
