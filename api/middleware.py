"""ASGI middleware of the controller: request body limits and security headers.

``BodyLimit`` refuses a request whose body is larger than allowed with a 413 in the error
envelope: at once when ``Content-Length`` says so (nothing is read), else as soon as the streamed
body passes the limit (so a chunked upload of any size costs at most the limit). The dataset
upload route gets its own, larger limit (the upload itself is streamed to disk, never held).

``SecurityHeaders`` adds, to every response, a Content-Security-Policy that allows this origin
only (scripts, styles, images, fetches; no frames, no plugins, no inline scripts),
``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY`` and ``Referrer-Policy: no-referrer``.
The dashboard and ``/docs`` (a self-hosted Swagger UI) work under it.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.exceptions import HTTPException

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


def _too_large(limit: int) -> str:
    return f"request body larger than {limit} bytes"


class BodyLimit:
    def __init__(self, app, limit_for: Callable[[str, str], int]):
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope["method"], scope["path"])
        declared = next((v for k, v in scope.get("headers", []) if k == b"content-length"), None)
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                too_big = False
            if too_big:
                return await _send_413(send, limit)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, _too_large(limit))
            return message

        await self.app(scope, limited_receive, send)


async def _send_413(send, limit: int) -> None:
    body = json.dumps(
        {"error": {"code": "too_large", "message": _too_large(limit), "field": None}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + [
                    h for h in HEADERS if h[0] not in names
                ]
            await send(message)

        await self.app(scope, receive, with_headers)
