"""The webhook threads: a study's events become deliveries, posted with retries behind the scheduler.

The scheduler's threads only enqueue (:class:`StudyHook`: ``completed`` after a trial completed,
``ended`` when the study finished or failed), so a slow or dead receiver never delays a trial or
the study's end. One events thread turns them into deliveries: for ``front`` it recomputes the
study's validation front from the store (``services.front.front_runs``) and announces each point
that was not on it before (the points on the front when the runner started count as announced, so
a restart repeats nothing). Each delivery is a row of ``webhook_deliveries`` (its owner sees them,
``GET /studies/{id}/webhook``) and is posted by one of :data:`WORKERS` delivery threads:

* the body is the JSON of the row's ``payload``; headers ``X-Autopeft-Event``,
  ``X-Autopeft-Delivery`` (the event id: the same on every try, for idempotent receivers) and,
  when the study has a secret, ``X-Autopeft-Signature: sha256=<hex>`` (``rules.sign``);
* before every try the URL is checked against the operator's allow-list again (``rules``); a URL
  no longer allowed gets no request and the delivery fails;
* a 2xx delivers; a connection error, a timeout, a 5xx, 408 or 429 is tried again after
  ``backoff_s``, doubled after each failure (a 429's ``Retry-After`` is honoured up to
  ``MAX_BACKOFF_S``), at most ``tries`` tries in all; any other answer (4xx, a redirect, which is
  never followed) fails at once.

A delivery still pending when the process stops is picked up by the next scheduler
(:meth:`WebhookSender.resume_pending`). Deliveries may arrive out of order (retries, several
threads): the body's ``timestamp`` says when the event happened. The secret is read from the
stored spec at each try and never logged.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select

from autopeft.api.models import Study, WebhookDelivery, utcnow
from autopeft.api.webhooks.rules import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    EVENTS,
    MAX_BACKOFF_S,
    SIGNATURE_HEADER,
    WebhookRules,
    sign,
)

log = logging.getLogger("autopeft.webhooks")

#: delivery threads (one slow receiver holds one of them for at most ``timeout_s``)
WORKERS = 4
#: deliveries kept per study (the newest; older finished ones are deleted)
KEPT_PER_STUDY = 200
MAX_ERROR_CHARS = 500
#: answers tried again besides 5xx: request timeout, too many requests
RETRY_STATUS = (408, 429)


def body_of(payload: dict[str, Any]) -> bytes:
    """The bytes posted (and signed) for ``payload``."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()


def _now_iso() -> str:
    return (
        dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def study_part(study: Study) -> dict[str, Any]:
    return {"id": study.id, "name": study.name, "state": study.state}


@dataclass(order=True)
class _Try:
    """The next try of one delivery, due at ``due`` (``time.monotonic``)."""

    due: float
    seq: int
    delivery_id: int = field(compare=False)
    study_id: int = field(compare=False)
    event: str = field(compare=False)
    event_id: str = field(compare=False)
    body: bytes = field(compare=False)
    tries: int = field(compare=False)  # tries made so far


class WebhookSender:
    """Owns the webhook threads (started with the first study that has a webhook)."""

    def __init__(self, db, rules: WebhookRules, workers: int = WORKERS):
        self.db, self.rules, self.workers = db, rules, workers
        self._events: queue.Queue = queue.Queue()
        self._due: list[_Try] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._http = None

    # -- lifecycle ----------------------------------------------------------------------------
    def _start(self) -> bool:
        """Start the threads if they are not running; False once closed."""
        with self._cond:
            if self._closed:
                return False
            if self._threads:
                return True
            import httpx

            from autopeft import __version__

            self._http = httpx.Client(
                timeout=self.rules.timeout_s,
                follow_redirects=False,  # a receiver cannot send the controller to another host
                trust_env=False,  # no proxy: the request goes to the allowed host itself
                headers={"User-Agent": f"autopeft-webhook/{__version__}"},
            )
            self._threads.append(
                threading.Thread(target=self._event_loop, daemon=True, name="autopeft-webhooks")
            )
            for i in range(self.workers):
                self._threads.append(
                    threading.Thread(
                        target=self._work, daemon=True, name=f"autopeft-webhook-{i + 1}"
                    )
                )
            for thread in self._threads:
                thread.start()
            return True

    def close(self, timeout: float = 5.0) -> None:
        """Turn what is queued into (pending) deliveries, then stop; pending ones are resumed by
        the next scheduler."""
        with self._cond:
            threads = list(self._threads)
        if threads:
            self._events.put(None)
            threads[0].join(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in threads[1:]:
            thread.join(timeout)
        if self._http is not None:
            self._http.close()

    def hook(self, study_id: int, spec: dict[str, Any]) -> StudyHook | None:
        """The study's hook for its runner, or None when the study has no webhook."""
        if not spec.get("webhook") or not self._start():
            return None
        return StudyHook(self, study_id)

    def resume_pending(self) -> int:
        """Queue the deliveries left pending by an earlier process; returns how many."""
        with self.db.read() as s:
            rows = s.execute(
                select(
                    WebhookDelivery.id,
                    WebhookDelivery.study_id,
                    WebhookDelivery.event,
                    WebhookDelivery.event_id,
                    WebhookDelivery.payload,
                    WebhookDelivery.attempts,
                )
                .where(WebhookDelivery.state == "pending")
                .order_by(WebhookDelivery.id)
            ).all()
        if rows and self._start():
            for row in rows:
                self._schedule(
                    _Try(
                        0.0,
                        0,
                        row.id,
                        row.study_id,
                        row.event,
                        row.event_id,
                        body_of(row.payload),
                        row.attempts,
                    )
                )
        return len(rows)

    # -- events -------------------------------------------------------------------------------
    def put(self, hook: StudyHook, op: str, *args: Any) -> None:
        self._events.put((hook, op, args))

    def _event_loop(self) -> None:
        while True:
            item = self._events.get()
            if item is None:
                return
            hook, op, args = item
            try:
                getattr(hook, op)(*args)
            except Exception as err:  # never reaches the scheduler
                log.warning("webhook of study %s: %s failed: %s", hook.study_id, op, err)

    def deliver(self, study_id: int, event: str, data: dict[str, Any]) -> dict[str, Any] | None:
        """Store a delivery of ``event`` (``data``: the body's other fields) and queue its first
        try; returns the row as :func:`delivery_public` shows it (None once closed)."""
        if not self._start():
            return None
        event_id = str(uuid.uuid4())
        payload = {"event": event, "event_id": event_id, "timestamp": _now_iso(), **data}
        body = body_of(payload)
        with self.db.write(study_id) as s:
            row = WebhookDelivery(
                study_id=study_id,
                event_id=event_id,
                event=event,
                payload=payload,
                state="pending",
                attempts=0,
            )
            s.add(row)
            s.flush()
            out = delivery_public(row)
            cutoff = s.scalar(
                select(WebhookDelivery.id)
                .where(WebhookDelivery.study_id == study_id)
                .order_by(WebhookDelivery.id.desc())
                .offset(KEPT_PER_STUDY)
                .limit(1)
            )
            if cutoff is not None:
                s.execute(
                    delete(WebhookDelivery).where(
                        WebhookDelivery.study_id == study_id,
                        WebhookDelivery.id <= cutoff,
                        WebhookDelivery.state != "pending",
                    )
                )
        self._schedule(_Try(0.0, 0, out["id"], study_id, event, event_id, body, 0))
        return out

    # -- delivery -----------------------------------------------------------------------------
    def _schedule(self, attempt: _Try, delay: float = 0.0) -> None:
        attempt.due, attempt.seq = time.monotonic() + delay, next(self._seq)
        with self._cond:
            heapq.heappush(self._due, attempt)
            self._cond.notify()

    def _next(self) -> _Try | None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                if self._due and self._due[0].due <= now:
                    return heapq.heappop(self._due)
                self._cond.wait(self._due[0].due - now if self._due else None)
            return None

    def _work(self) -> None:
        while True:
            attempt = self._next()
            if attempt is None:
                return
            try:
                self._try(attempt)
            except Exception as err:  # the row stays pending: the next process retries it
                log.warning(
                    "webhook of study %s: delivery %s: %s", attempt.study_id, attempt.event_id, err
                )

    def _try(self, attempt: _Try) -> None:
        with self.db.read() as s:
            study = s.get(Study, attempt.study_id)
            webhook = dict((study.spec or {}).get("webhook") or {}) if study is not None else None
        if study is None:
            return  # deleted, with its deliveries
        if not webhook:
            self._record(attempt, "failed", None, "the study has no webhook any more")
            return
        why = self.rules.refusal(webhook["url"])
        if why is not None:  # checked again at every try: nothing is sent to a host not allowed
            log.warning("webhook of study %s: not sent: %s", attempt.study_id, why)
            self._record(attempt, "failed", None, why)
            return
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: attempt.event,
            DELIVERY_HEADER: attempt.event_id,
        }
        if webhook.get("secret"):
            headers[SIGNATURE_HEADER] = sign(webhook["secret"], attempt.body)
        attempt.tries += 1
        status, error, retry_after, location = None, None, None, None
        try:
            with self._http.stream(
                "POST", webhook["url"], content=attempt.body, headers=headers
            ) as r:
                status = r.status_code  # the answer's body is never read
                retry_after = r.headers.get("Retry-After")
                location = r.headers.get("Location")
        except Exception as err:  # httpx.HTTPError, or an invalid URL
            error = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        if status is not None and 200 <= status < 300:
            self._record(attempt, "delivered", status, None)
            return
        retryable = status is None or status >= 500 or status in RETRY_STATUS
        if status is not None:
            error = f"answered {status}"
            if 300 <= status < 400:
                error += (
                    f" (redirects are not followed{': to ' + location[:200] if location else ''})"
                )
        if retryable and attempt.tries < self.rules.tries:
            delay = self.rules.delay(attempt.tries)
            if retry_after and retry_after.strip().isdigit():
                delay = max(delay, min(float(retry_after), MAX_BACKOFF_S))
            self._record(attempt, "pending", status, f"{error}; next try in {delay:g} s")
            self._schedule(attempt, delay)
            return
        log.info(
            "webhook of study %s: %s delivery %s failed after %d tr%s: %s",
            attempt.study_id,
            attempt.event,
            attempt.event_id,
            attempt.tries,
            "y" if attempt.tries == 1 else "ies",
            error,
        )
        self._record(attempt, "failed", status, error)

    def _record(self, attempt: _Try, state: str, status: int | None, error: str | None) -> None:
        with self.db.write(attempt.study_id) as s:
            row = s.get(WebhookDelivery, attempt.delivery_id)
            if row is None:
                return
            row.state, row.attempts, row.status_code = state, attempt.tries, status
            row.error = error[:MAX_ERROR_CHARS] if error else None
            row.last_attempt_at = utcnow() if attempt.tries else row.last_attempt_at
            if state == "delivered":
                row.delivered_at = row.last_attempt_at


def delivery_public(row: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": row.id,
        "event_id": row.event_id,
        "event": row.event,
        "state": row.state,
        "attempts": row.attempts,
        "status_code": row.status_code,
        "error": row.error,
        "payload": row.payload,
        "created_at": row.created_at,
        "last_attempt_at": row.last_attempt_at,
        "delivered_at": row.delivered_at,
    }


class StudyHook:
    """One study's webhook. Public methods enqueue; ``_``-methods run on the events thread, where
    the study's webhook is read from the store each time (a ``PUT`` or ``DELETE`` of it counts
    from the next event on)."""

    def __init__(self, sender: WebhookSender, study_id: int):
        self.sender, self.study_id = sender, study_id
        # the front as the runner starts: already announced (by an earlier runner, or never news)
        self.seen: set[int] = set()
        self.seen = self._front()[0]

    # -- called by the scheduler --------------------------------------------------------------
    def completed(self) -> None:
        """A trial completed (its outcome is committed): the front may have new points."""
        self.sender.put(self, "_announce_front")

    def ended(self, state: str, message: str | None) -> None:
        """The study finished or failed (committed)."""
        self.sender.put(self, "_announce_end", state, message)

    # -- on the events thread -----------------------------------------------------------------
    def _front(self) -> tuple[set[int], list[dict[str, Any]], dict[str, Any], set[str]]:
        """(the front's trial ids, its points not in ``seen`` as body parts, the study part, the
        events the study's webhook wants now)."""
        from autopeft.api.services.front import front_runs

        with self.sender.db.read() as s:
            study = s.get(Study, self.study_id)
            if study is None:
                return set(), [], {}, set()
            front, _ = front_runs(s, study)
            new = [
                {
                    "id": g.root.id,
                    "number": g.root.number,
                    "kind": g.root.kind or "search",
                    "label": g.root.label,
                    "config": dict(g.root.config or {}),
                    "values": dict(g.values or {}),
                    "runs": len(g.runs),
                }
                for g in front
                if g.root.id not in self.seen
            ]
            return {g.root.id for g in front}, new, study_part(study), _events_of(study)

    def _announce_front(self) -> None:
        ids, new, study, events = self._front()
        self.seen |= ids  # also while front is not wanted: a later subscription gets news only
        if "front" in events:
            for point in new:
                self.sender.deliver(self.study_id, "front", {"study": study, "trial": point})

    def _announce_end(self, state: str, message: str | None) -> None:
        from autopeft.api.artifacts import public_error
        from autopeft.api.services.studies import counts

        with self.sender.db.read() as s:
            study = s.get(Study, self.study_id)
            if study is None or state not in _events_of(study):
                return
            part = {
                **study_part(study),
                "state": state,
                "message": public_error(message),
                "counts": counts(s, [study.id])[study.id],
            }
        self.sender.deliver(self.study_id, state, {"study": part})


def _events_of(study: Study) -> set[str]:
    """The events the study's webhook wants (none without a webhook)."""
    webhook = (study.spec or {}).get("webhook")
    return set(webhook.get("events") or EVENTS) if webhook else set()
