"""Study webhooks (``spec.webhook``): signed JSON posted to a loopback receiver when a study finishes,
fails or gets a new Pareto point; retried on 5xx, not on 4xx; only to the operator's hosts; the
secret never answered. Every request stays on 127.0.0.0/8."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from sqlalchemy import select

from autopeft.api.models import Study, Trial
from autopeft.api.webhooks.rules import EVENTS, REDACTED, WebhookRules, _entry, redact, sign
from autopeft.client import ApiError, verify_signature
from autopeft.errors import InvalidConfig
from tests.api.conftest import client_for, free_port, make_token, post_study, python_study
from tests.waiting import wait_for

SECRET = "s3cret-for-the-webhook-tests"


class Receiver:
    """A loopback HTTP server that records every POST (path, headers, raw body) and answers each
    path with its scripted statuses in turn (the last one repeats; default 200)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body}
                    )
                    statuses = receiver.script.get(self.path) or [200]
                    status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["path"] == path]

    def events(self, path: str) -> list[dict]:
        return [json.loads(r["body"]) for r in self.at(path)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _signed(request: dict, secret: str = SECRET) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), request["body"], hashlib.sha256).hexdigest()
    return request["headers"].get("X-Autopeft-Signature") == expected


# -- the rules, without a server -----------------------------------------------------------------
def test_the_allow_list_matches_hosts_and_ports_without_resolving():
    rules = WebhookRules(
        hosts=tuple(
            _entry(h) for h in ("127.0.0.1:8080", "hooks.example.com", "*.corp.test", "[::1]:9")
        )
    )
    assert rules.refusal("http://127.0.0.1:8080/x") is None
    assert "127.0.0.1:8081" in rules.refusal("http://127.0.0.1:8081/x")
    assert rules.refusal("https://hooks.example.com/a?b=c") is None  # any port of a bare host
    assert rules.refusal("http://HOOKS.example.com:99/") is None
    assert rules.refusal("https://ci.corp.test/") is None
    assert rules.refusal("https://corp.test/") is not None  # *.domain: its sub-domains only
    assert rules.refusal("https://evilcorp.test/") is not None
    assert rules.refusal("http://[::1]:9/") is None and rules.refusal("http://[::1]:10/")
    # a name that only resolves to an allowed address is still refused (nothing is looked up)
    assert rules.refusal("http://localhost:8080/") is not None
    for bad in (
        "ftp://127.0.0.1:8080/",
        "http:///x",
        "http://u:p@127.0.0.1:8080/",
        "127.0.0.1:8080",
    ):
        assert rules.refusal(bad) is not None, bad
    with pytest.raises(InvalidConfig) as err:
        WebhookRules().check("http://127.0.0.1:8080/")
    assert err.value.field == "webhook.url" and "AUTOPEFT_WEBHOOK_HOSTS" in err.value.message


def test_backoff_doubles_and_is_capped():
    rules = WebhookRules(backoff_s=2.0)
    assert [rules.delay(n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert rules.delay(30) == 300.0


def test_signature_and_redaction():
    body = b'{"event":"finished"}'
    assert sign("k" * 16, body) == "sha256=" + hmac.new(b"k" * 16, body, "sha256").hexdigest()
    assert verify_signature("k" * 16, body, sign("k" * 16, body))
    assert not verify_signature("k" * 16, body + b" ", sign("k" * 16, body))
    assert not verify_signature("k" * 16, body, None)
    spec = {"name": "x", "webhook": {"url": "http://h/", "secret": SECRET, "events": ["front"]}}
    shown = redact(spec)
    assert shown["webhook"] == {"url": "http://h/", "secret": REDACTED, "events": ["front"]}
    assert spec["webhook"]["secret"] == SECRET  # the stored spec is not changed
    assert redact({"name": "x"}) == {"name": "x"}


# -- in-process: the scheduler's hooks -----------------------------------------------------------
def _manager(store, tmp_path, receiver, **rules):
    from autopeft.api.scheduler import SchedulerManager
    from tests.api.scheduler_harness import FakeExecutor

    rules = WebhookRules(hosts=(("127.0.0.1", receiver.port),), backoff_s=0.05, **rules)
    return SchedulerManager(store, FakeExecutor(), tmp_path / "artifacts", 0, webhooks=rules)


def _create(store, manager, **fields) -> int:
    from autopeft.api.models import User

    with store.write() as s:
        user = s.scalar(select(User).where(User.name == "alice"))
        study = Study(user_id=user.id, name="hooked", state="running", spec=python_study(**fields))
        s.add(study)
        s.flush()
        sid = study.id
    manager.start(sid)
    return sid


def test_front_events_name_each_new_point_once(store, tmp_path, receiver):
    from autopeft.workers.base import TrialOutcome

    manager = _manager(store, tmp_path, receiver)
    try:
        webhook = {"url": receiver.url("/front"), "secret": SECRET, "events": ["front"]}
        sid = _create(store, manager, webhook=webhook, max_trials=3, max_parallel=1)
        ex = manager.executor
        values = [
            {"accuracy": 0.5, "cost": 0.5},  # the first point: on the front
            {"accuracy": 0.4, "cost": 0.6},  # dominated: no event
            {"accuracy": 0.9, "cost": 0.1},  # dominates the first: a new point
        ]
        done = []
        for v, announced in zip(values, (1, 1, 2)):
            tid = wait_for(lambda: [t for t in ex.running() if t not in done], 30, "a trial")[0]
            ex.finish(tid, TrialOutcome("complete", values=v))
            done.append(tid)
            wait_for(
                lambda n=announced: len(receiver.at("/front")) >= n, 30, f"{announced} event(s)"
            )
        wait_for(lambda: manager._live(sid) is None, 30, "the study to end")
    finally:
        manager.shutdown()
    events = receiver.events("/front")
    assert [e["trial"]["id"] for e in events] == [done[0], done[2]], events
    assert [e["trial"]["values"] for e in events] == [values[0], values[2]]
    assert all(e["event"] == "front" and e["study"]["id"] == sid for e in events)
    assert all(_signed(r) for r in receiver.at("/front"))
    assert not receiver.at("/hook")  # finished was not subscribed


def test_a_webhook_given_to_a_running_study_posts_from_then_on(store, tmp_path, receiver):
    """``PUT`` on a running study: the points already on the front are not news, the next one is;
    after ``DELETE`` nothing more is posted (the study's end included)."""
    from autopeft.api.models import WebhookDelivery
    from autopeft.api.services.webhooks import remove_webhook, set_webhook
    from autopeft.workers.base import TrialOutcome

    manager = _manager(store, tmp_path, receiver)
    try:
        sid = _create(store, manager, max_trials=3, max_parallel=1)
        with store.read() as s:
            owner = s.get(Study, sid).user_id
        ex, done = manager.executor, []

        def finish(values):
            tid = wait_for(lambda: [t for t in ex.running() if t not in done], 30, "a trial")[0]
            ex.finish(tid, TrialOutcome("complete", values=values))
            done.append(tid)

        def completed(n):
            with store.read() as s:
                states = s.scalars(select(Trial.state).where(Trial.study_id == sid)).all()
            return states.count("complete") >= n

        finish({"accuracy": 0.5, "cost": 0.5})
        wait_for(lambda: completed(1), 30, "the first trial to complete")
        webhook = {"url": receiver.url("/late"), "secret": SECRET, "events": list(EVENTS)}
        with store.write(sid) as s:
            spec = dict(set_webhook(s, owner, sid, webhook, manager.webhooks.rules).spec)
        manager.webhook_added(sid, spec)
        finish({"accuracy": 0.9, "cost": 0.1})
        wait_for(lambda: receiver.at("/late"), 30, "the new point's event")
        with store.write(sid) as s:
            remove_webhook(s, owner, sid)
        finish({"accuracy": 0.95, "cost": 0.05})
        wait_for(lambda: manager._live(sid) is None, 30, "the study to end")
    finally:
        manager.shutdown()  # what was queued is handled before the threads stop
    (request,) = receiver.at("/late")
    event = json.loads(request["body"])
    assert event["event"] == "front" and event["trial"]["id"] == done[1] and _signed(request)
    with store.read() as s:
        rows = s.scalars(select(WebhookDelivery).where(WebhookDelivery.study_id == sid)).all()
    assert [r.event_id for r in rows] == [event["event_id"]]


def test_a_study_that_fails_posts_failed(store, tmp_path, receiver):
    manager = _manager(store, tmp_path, receiver)
    try:
        # a space that no longer builds (stored before a change of the rules): the runner fails
        bad_space = {"params": {"x": {"type": "bogus"}}}
        sid = _create(store, manager, space=bad_space, webhook={"url": receiver.url("/f")})
        wait_for(lambda: receiver.at("/f"), 30, "the failed event")
    finally:
        manager.shutdown()
    (request,) = receiver.at("/f")
    event = json.loads(request["body"])
    assert event["event"] == "failed" and event["study"]["id"] == sid
    assert event["study"]["state"] == "failed" and event["study"]["message"]
    assert request["headers"]["X-Autopeft-Event"] == "failed"
    assert "X-Autopeft-Signature" not in request["headers"]  # no secret: unsigned


def test_the_allow_list_is_checked_again_at_delivery(store, tmp_path, receiver):
    """A study created while its host was allowed, delivered after the operator removed it: the
    delivery fails unsent."""
    from autopeft.api.models import WebhookDelivery

    allowed = _manager(store, tmp_path, receiver)
    sid = _create(store, allowed, webhook={"url": receiver.url("/gone")}, max_trials=1)
    allowed.stop(sid, wait=True)
    allowed.shutdown()
    other = WebhookRules(hosts=(("127.0.0.1", free_port()),), backoff_s=0.05)
    from autopeft.api.webhooks.sender import WebhookSender

    sender = WebhookSender(store, other)
    try:
        delivery = sender.deliver(sid, "ping", {"study": {"id": sid}})

        def failed():
            with store.read() as s:
                row = s.get(WebhookDelivery, delivery["id"])
                return row if row.state == "failed" else None

        row = wait_for(failed, 30, "the delivery to fail")
    finally:
        sender.close()
    assert row.attempts == 0 and "AUTOPEFT_WEBHOOK_HOSTS" in row.error, row.error
    assert not receiver.requests


def test_429_is_tried_again_and_a_redirect_is_not_followed(store, tmp_path, receiver):
    from autopeft.api.models import WebhookDelivery
    from autopeft.api.webhooks.sender import WebhookSender

    manager = _manager(store, tmp_path, receiver)
    sid = _create(store, manager, webhook={"url": receiver.url("/busy")}, max_trials=1)
    manager.stop(sid, wait=True)
    manager.shutdown()
    receiver.script["/busy"] = [429, 200]
    receiver.script["/moved"] = [302]
    sender = WebhookSender(store, manager.webhooks.rules)
    try:
        busy = sender.deliver(sid, "ping", {"study": {"id": sid}})

        def ended(delivery_id):
            with store.read() as s:
                row = s.get(WebhookDelivery, delivery_id)
                return row if row.state != "pending" else None

        busy = wait_for(lambda: ended(busy["id"]), 30, "the 429 delivery to end")
        with store.write() as s:  # the study's URL now answers with a redirect
            study = s.get(Study, sid)
            study.spec = {**study.spec, "webhook": {"url": receiver.url("/moved")}}
        moved = sender.deliver(sid, "ping", {"study": {"id": sid}})
        moved = wait_for(lambda: ended(moved["id"]), 30, "the redirected delivery to end")
    finally:
        sender.close()
    assert busy.state == "delivered" and busy.attempts == 2 and len(receiver.at("/busy")) == 2
    assert moved.state == "failed" and moved.attempts == 1 and moved.status_code == 302
    assert "redirects are not followed" in moved.error and len(receiver.at("/moved")) == 1


def test_deliveries_left_pending_are_sent_by_the_next_scheduler(store, tmp_path, receiver):
    """A delivery still pending when the process stopped (its row says so) is posted by the next
    process's scheduler, with the same event id and body, signed."""
    from autopeft.api.models import WebhookDelivery
    from autopeft.api.webhooks.sender import body_of

    manager = _manager(store, tmp_path, receiver)
    webhook = {"url": receiver.url("/later"), "secret": SECRET, "events": ["finished"]}
    sid = _create(store, manager, webhook=webhook, max_trials=1)
    manager.stop(sid, wait=True)
    manager.shutdown()
    payload = {"event": "finished", "event_id": "left-pending-1", "study": {"id": sid}}
    with store.write() as s:
        s.add(
            WebhookDelivery(
                study_id=sid,
                event_id="left-pending-1",
                event="finished",
                payload=payload,
                state="pending",
                attempts=1,
                error="answered 503",
            )
        )
    assert not receiver.at("/later")
    restarted = _manager(store, tmp_path, receiver)
    try:
        restarted.recover()

        def delivered():
            with store.read() as s:
                row = s.scalar(
                    select(WebhookDelivery).where(WebhookDelivery.event_id == "left-pending-1")
                )
                return row if row.state == "delivered" else None

        row = wait_for(delivered, 30, "the pending delivery to be sent")
    finally:
        restarted.shutdown()
    assert row.attempts == 2 and row.status_code == 200 and row.error is None
    (request,) = receiver.at("/later")
    assert request["body"] == body_of(payload) and _signed(request)
    assert request["headers"]["X-Autopeft-Delivery"] == "left-pending-1"


# -- through the real server ---------------------------------------------------------------------
def _get(server, token, path: str) -> httpx.Response:
    return httpx.get(
        f"{server.url}/api/v1{path}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        trust_env=False,
    )


def test_a_finished_study_posts_signed_events_and_never_shows_the_secret(
    sqlite_url, server_factory, receiver, capsys, monkeypatch
):
    server = server_factory(sqlite_url, {"AUTOPEFT_WEBHOOK_HOSTS": f"127.0.0.1:{receiver.port}"})
    token = make_token(sqlite_url, "alice")
    client = client_for(server, token)
    study = client.create_study(
        spec=python_study(webhook={"url": receiver.url("/hook"), "secret": SECRET})
    )
    assert study.spec["webhook"] == {
        "url": receiver.url("/hook"),
        "secret": REDACTED,
        "events": ["finished", "failed", "front"],
    }
    study.wait(timeout=120, poll=0.2, progress=False)
    assert study.state == "finished", study.data

    def settled():
        deliveries = study.webhook()["deliveries"]
        done = all(d["state"] != "pending" for d in deliveries)
        return deliveries if done and any(d["event"] == "finished" for d in deliveries) else None

    deliveries = wait_for(settled, 60, "every delivery, the finished event among them")
    requests = receiver.at("/hook")
    assert all(_signed(r) for r in requests), [r["headers"] for r in requests]
    assert all(
        verify_signature(SECRET, r["body"], r["headers"]["X-Autopeft-Signature"]) for r in requests
    )
    events = [json.loads(r["body"]) for r in requests]
    assert all(r["headers"]["X-Autopeft-Event"] == e["event"] for r, e in zip(requests, events))
    ids = [r["headers"]["X-Autopeft-Delivery"] for r in requests]
    assert len(set(ids)) == len(ids) == len(events)
    assert [e["event_id"] for e in events] == ids
    (finished,) = [e for e in events if e["event"] == "finished"]
    assert finished["study"]["id"] == study.id and finished["study"]["state"] == "finished"
    assert finished["study"]["counts"]["complete"] == 4
    # every point of the final front was announced, with its config and values
    trials = {t["id"]: t for t in study.trials()}
    announced = {e["trial"]["id"]: e["trial"] for e in events if e["event"] == "front"}
    front = {t["id"] for t in study.pareto()}
    assert front and front <= set(announced), (front, announced)
    for tid, point in announced.items():
        assert point["config"] == trials[tid]["config"] and point["values"] == trials[tid]["values"]

    hook = study.webhook()
    assert hook["url"] == receiver.url("/hook") and hook["signed"] and hook["refused"] is None
    assert hook["deliveries"] == deliveries
    assert {d["event_id"] for d in deliveries} == set(ids)
    assert all(d["state"] == "delivered" and d["attempts"] == 1 for d in deliveries)
    assert all(d["status_code"] == 200 for d in deliveries)
    assert {d["event_id"]: d["payload"] for d in deliveries} == {e["event_id"]: e for e in events}
    # the secret is in no answer: the study, the list, the webhook, a clone (which keeps it)
    clone = study.clone({"max_trials": 1, "webhook": {"url": receiver.url("/clone")}})
    for path in (
        f"/studies/{study.id}",
        "/studies",
        f"/studies/{study.id}/webhook",
        f"/studies/{clone.id}",
        f"/studies/{clone.id}/webhook",
    ):
        answer = _get(server, token, path)
        assert answer.status_code == 200 and SECRET not in answer.text, (path, answer.text)
    assert clone.spec["webhook"]["secret"] == REDACTED
    wait_for(lambda: receiver.at("/clone"), 60, "the clone's events")
    assert all(_signed(r) for r in receiver.at("/clone"))  # with the original's secret
    # a ping through the CLI: signed, delivered whatever the events
    from autopeft.cli import main

    argv = ["study", "webhook", str(study.id), "--ping", "--url", server.url, "--token", token]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "ping queued" in out and receiver.url("/hook") in out and SECRET not in out

    def pings():
        return [r for r in receiver.at("/hook") if json.loads(r["body"])["event"] == "ping"]

    (ping,) = wait_for(pings, 30, "the ping")
    assert _signed(ping) and json.loads(ping["body"])["study"]["id"] == study.id
    # another URL and secret (the CLI reads the secret from the environment), then none
    monkeypatch.setenv("HOOK_SECRET", "another-secret-of-enough-length")
    argv = ["study", "webhook", str(study.id), "--set", receiver.url("/moved"), "--ping"]
    argv += ["--secret-env", "HOOK_SECRET", "--events", "finished", "--url", server.url]
    assert main([*argv, "--token", token]) == 0
    out = capsys.readouterr().out
    assert receiver.url("/moved") in out and "another-secret" not in out
    assert study.webhook()["events"] == ["finished"]
    (moved,) = wait_for(lambda: receiver.at("/moved"), 30, "the ping to the new URL")
    assert _signed(moved, "another-secret-of-enough-length") and not _signed(moved)
    with pytest.raises(ApiError) as err:  # a host the operator does not allow: 422, nothing stored
        study.set_webhook(f"http://127.0.0.2:{receiver.port}/", SECRET)
    assert err.value.status == 422 and err.value.field == "url", err.value
    assert study.webhook()["url"] == receiver.url("/moved")
    argv = ["study", "webhook", str(study.id), "--remove", "--url", server.url, "--token", token]
    assert main(argv) == 0
    for call in (study.webhook, study.ping_webhook, study.delete_webhook):
        with pytest.raises(ApiError) as err:
            call()
        assert err.value.status == 404, call
    assert "webhook" not in study.refresh().spec
    assert SECRET not in server.log()


def test_retries_on_5xx_not_on_4xx_and_refusals_are_422s(sqlite_url, server_factory, receiver):
    unlisted = Receiver()  # a receiver the operator does not allow: it must get nothing
    try:
        server = server_factory(
            sqlite_url,
            {
                "AUTOPEFT_WEBHOOK_HOSTS": f"127.0.0.1:{receiver.port}",
                "AUTOPEFT_WEBHOOK_BACKOFF_S": "0.2",
                "AUTOPEFT_WEBHOOK_TRIES": "4",
            },
        )
        token = make_token(sqlite_url, "alice")
        bad = [
            ({"url": unlisted.url()}, "webhook.url", "AUTOPEFT_WEBHOOK_HOSTS"),
            ({"url": f"http://localhost:{receiver.port}/"}, "webhook.url", "not among"),
            ({"url": f"ftp://127.0.0.1:{receiver.port}/"}, "webhook.url", "http"),
            ({"url": receiver.url(), "events": ["started"]}, "webhook.events.0", "finished"),
            ({"url": receiver.url(), "events": []}, "webhook.events", ""),
            ({"url": receiver.url(), "secret": REDACTED}, "webhook.secret", "placeholder"),
            ({"url": receiver.url(), "secret": "short"}, "webhook.secret", "16"),
            ({"url": receiver.url(), "extra": 1}, "webhook.extra", ""),
        ]
        for webhook, field, words in bad:
            answer = post_study(server, token, python_study(webhook=webhook))
            assert answer.status_code == 422, (webhook, answer.text)
            error = answer.json()["error"]
            assert error["field"] == field and words in error["message"], (webhook, error)
        receiver.script["/flaky"] = [500, 503, 200]
        receiver.script["/reject"] = [400]
        client = client_for(server, token)
        flaky = client.create_study(
            spec=python_study(webhook={"url": receiver.url("/flaky"), "events": ["finished"]})
        )
        rejecting = client.create_study(
            spec=python_study(webhook={"url": receiver.url("/reject"), "events": ["finished"]})
        )

        def settled(study):
            deliveries = study.webhook()["deliveries"]
            return deliveries if deliveries and deliveries[0]["state"] != "pending" else None

        (ok,) = wait_for(lambda: settled(flaky), 120, "the flaky receiver's delivery")
        (refused,) = wait_for(lambda: settled(rejecting), 120, "the rejecting receiver's delivery")
        assert ok["state"] == "delivered" and ok["attempts"] == 3 and ok["status_code"] == 200, ok
        tries = receiver.at("/flaky")
        assert len(tries) == 3, tries
        assert {r["headers"]["X-Autopeft-Delivery"] for r in tries} == {ok["event_id"]}
        assert len({r["body"] for r in tries}) == 1  # the same event, tried again
        assert refused["state"] == "failed" and refused["attempts"] == 1, refused
        assert refused["status_code"] == 400 and "400" in refused["error"]
        assert len(receiver.at("/reject")) == 1  # a 4xx is final: no second try
        assert not unlisted.requests
        with pytest.raises(ApiError) as err:  # a study without a webhook has none to show
            client.create_study(spec=python_study(max_trials=1)).webhook()
        assert err.value.status == 404
    finally:
        unlisted.close()


def test_without_an_allow_list_webhooks_are_refused(sqlite_url, server_factory, receiver):
    server = server_factory(sqlite_url)
    token = make_token(sqlite_url, "alice")
    answer = post_study(server, token, python_study(webhook={"url": receiver.url()}))
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["field"] == "webhook.url" and "operator must allow" in error["message"], error
    assert not receiver.requests
