"""Backpressure: at most ``limit`` API requests are handled at once; past that a request waits in
a bounded queue for at most ``wait_s``, and is otherwise answered at once with 503 and
``Retry-After`` — never held for a minute, never a 500.

Why it holds. Every admitted request runs in the handler thread pool and holds at most one read
and one write connection; the controller sizes the thread pool at ``limit`` plus a reserve and
its request engine's pool at two connections per thread (``api.app``), so an admitted request
never waits for a thread or a connection, only for the database itself. Requests are admitted
in arrival order. Dataset uploads (long, streamed bodies) have a gate of their own, so a few
slow uploads cannot hold the slots every poll needs. A refused request's body is read and
dropped (up to :data:`DRAIN_LIMIT`) before the 503, so a client still sending it gets the answer,
not a reset connection. ``/healthz``, ``/readyz``, the dashboard's
static files and ``/docs`` pass without a slot.

``AdmissionGate.describe()`` is what ``/readyz`` shows: in flight, waiting, limits, and how many
requests were refused since start; ``saturated`` when every slot is busy.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from autopeft.api.middleware import HEADERS


@dataclass
class AdmissionGate:
    """One class of requests: ``limit`` at once, ``queue`` waiting at most ``wait_s`` each."""

    name: str
    limit: int
    queue: int
    wait_s: float
    in_flight: int = 0
    waiting: int = 0
    admitted: int = 0
    refused: int = 0
    _waiters: list = field(default_factory=list, repr=False)

    async def enter(self) -> bool:
        """Take a slot (True), or refuse (False): the queue is full or ``wait_s`` passed."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            self.admitted += 1
            return True
        if self.waiting >= self.queue or self.wait_s <= 0:
            self.refused += 1
            return False
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self.waiting += 1
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.wait_s)
        except asyncio.TimeoutError:
            if fut.done() and not fut.cancelled():  # handed a slot as the wait ran out: keep it
                self.admitted += 1
                return True
            fut.cancel()
            self.refused += 1
            return False
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.leave()  # handed a slot, but this request is gone: pass it on
            else:
                fut.cancel()
            raise
        finally:
            self.waiting -= 1
            if fut in self._waiters:
                self._waiters.remove(fut)
        self.admitted += 1
        return True

    def leave(self) -> None:
        """Free a slot: hand it to the longest waiter still waiting, else give it back."""
        while self._waiters:
            fut = self._waiters.pop(0)
            if not fut.done():
                fut.set_result(None)  # the slot passes over: in_flight unchanged
                return
        self.in_flight -= 1

    @property
    def saturated(self) -> bool:
        return self.in_flight >= self.limit

    def retry_after(self) -> int:
        """Seconds a refused client should wait: about the time to drain what is queued."""
        return max(1, min(30, math.ceil(self.wait_s * (1 + self.waiting / max(1, self.limit)))))

    def describe(self) -> dict:
        return {
            "in_flight": self.in_flight,
            "waiting": self.waiting,
            "limit": self.limit,
            "queue": self.queue,
            "admitted": self.admitted,
            "refused": self.refused,
            "saturated": self.saturated,
        }


class Admission:
    """ASGI middleware putting each ``/api/`` request through its gate (``gate_for``)."""

    def __init__(self, app, gate_for: Callable[[str, str], AdmissionGate | None]):
        self.app, self.gate_for = app, gate_for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        gate = self.gate_for(scope["method"], scope["path"])
        if gate is None:
            return await self.app(scope, receive, send)
        if not await gate.enter():
            await _drain(receive, DRAIN_LIMIT)
            return await _send_503(send, gate)
        try:
            await self.app(scope, receive, send)
        finally:
            gate.leave()


#: bytes of a refused request's body read (and dropped) before the 503, so that the client, still
#: sending, is not reset; a longer body is cut off
DRAIN_LIMIT = 8 * 2**20


async def _drain(receive, limit: int) -> None:
    seen = 0
    while seen <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return  # the client went away
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def retry_headers(seconds: int) -> dict[str, str]:
    """The headers of every 503 that asks the client to come back: ``Retry-After`` and
    ``Connection: close``. The client waits Retry-After seconds, often past the server's keep-alive
    (5 s); closed now, its next request opens a new connection instead of racing the idle close (a
    POST on a connection closed under it fails: clients retry only GETs)."""
    return {"Retry-After": str(seconds), "Connection": "close"}


async def _send_503(send, gate: AdmissionGate) -> None:
    body = json.dumps(
        {
            "error": {
                "code": "overloaded",
                "message": f"the server is at capacity ({gate.limit} {gate.name} requests at "
                "once, and a full queue); retry after the Retry-After seconds",
                "field": None,
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(
                    (k.lower().encode(), v.encode())
                    for k, v in retry_headers(gate.retry_after()).items()
                ),
                *HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
