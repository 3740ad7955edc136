"""Fault injection, end to end through the real event app: the stand-ins misbehave on purpose and every delivery
must still end with each Klaviyo write present once (events by unique_id, profiles and catalog objects by id) and
with the answer that loses nothing: 204 done, 503 deliver again, 202 only for what can never succeed (recorded).

Scenarios already covered elsewhere are not repeated here (tests/test_event_faults.py: 429 waited out, 429 longer
than the budget on a profile, persistent 5xx, 400 on a profile, refused phone number, commercetools 503 and
expired token, timeout answered 503, malformed envelopes; test_event_orders.py / test_event_catalog.py: events and
variants failing half-way, redelivered orders / refunds / publications, stale product and inventory versions, a
late unpublish of a republished product, disabled processors, unknown message types).

Two tools beyond the stand-ins' own `fail_next`:
- `KlaviyoFront`, a stdlib HTTP/1.1 server in front of the Klaviyo stand-in that can reset a connection, close it
  without answering, apply a write and then lose the answer, answer slowly, or throttle for as long as asked;
- `serve`, the event app under uvicorn on a real port, for the concurrency tests.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest
import uvicorn
from starlette.testclient import TestClient

from demo import sample
from event.app import create_app
from shared.config import Settings
from shared.dead_letters import CONTAINER
from shared.klaviyo import catalog_id
from tests.builders import change, message, pubsub
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import JSON_API, FakeKlaviyo, klaviyo_error

EVENTS = "/api/events"
BULK_EVENTS = "/api/event-bulk-create-jobs"
PROFILE_IMPORT = "/api/profile-import"
CHANNEL_CONFIG = {"product": {"inventory": {"useChannelInventory": sample.CHANNEL}}}


# --- a misbehaving front for the Klaviyo stand-in -------------------------------------------------------------


@dataclass
class _Rule:
    method: str
    pattern: re.Pattern[str]
    action: str  # reset | close | apply-then-reset | slow | refuse | twin
    times: int | None  # None: until `calm()`
    after: int = 0  # matching requests answered normally first
    seconds: float = 0.0
    status: int = 429
    headers: dict[str, str] | None = None


class _FrontHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: KlaviyoFront

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        front, path = self.server, unquote(urlsplit(self.path).path)
        rule = front.take(self.command, path)
        action = rule.action if rule else "answer"
        with front.working():
            if action in ("reset", "close"):
                front.note(self.command, path, action)
                self._drop(reset=action == "reset")
                return
            if action == "slow":
                time.sleep(rule.seconds)  # type: ignore[union-attr]
            if action == "refuse":
                status = rule.status  # type: ignore[union-attr]
                payload = json.dumps({"errors": [klaviyo_error(status)]}).encode()
                headers = {"Content-Type": JSON_API, **(rule.headers or {})}  # type: ignore[union-attr]
            else:
                if action == "twin":  # the same request from another delivery gets there first
                    front.fake.handle(self.command, self.path, self.headers.items(), body, base_url=front.url)
                status, headers, payload = front.fake.handle(self.command, self.path, self.headers.items(), body,
                                                             base_url=front.url)
            if action == "apply-then-reset":  # the write is done, its answer lost
                front.note(self.command, path, action)
                self._drop(reset=True)
                return
            front.note(self.command, path, status)
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:  # the client gave up waiting (a read timeout on its side)
                self.close_connection = True

    do_GET = do_POST = do_PATCH = do_DELETE = _any

    def _drop(self, *, reset: bool) -> None:
        self.close_connection = True
        if reset:  # RST on close instead of FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        else:
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class KlaviyoFront(ThreadingHTTPServer):
    """The Klaviyo stand-in behind a real socket whose connections misbehave on request (see `misbehave`).

    `seen` lists what the connector got for each request: the status, or the action when it got no answer.
    """

    daemon_threads = True

    def __init__(self, fake: FakeKlaviyo) -> None:
        super().__init__(("127.0.0.1", 0), _FrontHandler)
        self.fake = fake
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.seen: list[tuple[str, str, int | str]] = []
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._busy = 0
        threading.Thread(target=self.serve_forever, args=(0.05,), name="klaviyo-front", daemon=True).start()

    def misbehave(self, method: str, path_regex: str, action: str, *, times: int | None = 1, after: int = 0,
                  seconds: float = 0.0, status: int = 429, headers: dict[str, str] | None = None) -> None:
        """The next `times` requests matching `method` (or "*") and `path_regex` (full match), after the first
        `after` ones: `reset` (RST, no answer), `close` (FIN, no answer), `apply-then-reset` (the stand-in
        handles it, the answer is lost), `slow` (answered and handled after `seconds`), `refuse` (answered
        `status` with Klaviyo's error body and `headers`, not handled), `twin` (handled twice: another delivery's
        identical request came first)."""
        with self._lock:
            self._rules.append(_Rule(method, re.compile(path_regex), action, times, after, seconds, status,
                                     headers))

    def calm(self) -> None:
        """Every rule off: the stand-in answers normally again."""
        with self._lock:
            self._rules.clear()

    def take(self, method: str, path: str) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.method in ("*", method) and rule.pattern.fullmatch(path):
                    if rule.after > 0:
                        rule.after -= 1
                        return None
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self._rules.remove(rule)
                    return rule
        return None

    def note(self, method: str, path: str, outcome: int | str) -> None:
        with self._lock:
            self.seen.append((method, path, outcome))

    @contextmanager
    def working(self) -> Iterator[None]:
        with self._lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Until no request is being handled (a slow one may still be working after the client gave up)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if self._busy == 0:
                    return
            time.sleep(0.02)
        raise AssertionError("the Klaviyo front is still busy")

    def close(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def front(klaviyo: FakeKlaviyo) -> Iterator[KlaviyoFront]:
    server = KlaviyoFront(klaviyo)
    yield server
    server.wait_idle()
    server.close()


# --- the event app on a real port ----------------------------------------------------------------------------


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """The event app under uvicorn in a thread on 127.0.0.1; yields its base URL."""
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="event-app", daemon=True)
    thread.start()
    end = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < end, "the event app did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


# --- data and assertions ----------------------------------------------------------------------------------------


def seed(ct: FakeCommercetools) -> None:
    """The demo's sample project: categories, 3 products (8 SKUs), inventory, 3 customers, 4 orders, a payment."""
    for resource, objects in sample.project().items():
        for obj in objects:
            ct.add(resource, obj)


def people(n: int) -> list[dict[str, Any]]:
    """`n` new sample customers (after the three seeded), each with a phone number of their own (the sample
    cycles through three, and Klaviyo would merge profiles sharing one)."""
    result = sample.customers(3 + n)[3:]
    for index, person in enumerate(result):
        person["addresses"][0]["mobile"] = f"+44770090{index:04d}"
    return result


def open_order(number: int = 10, lines: int = 3) -> dict[str, Any]:
    """A sample order (not one of the four seeded) in the Open state, with `lines` line items."""
    order = list(sample.orders(number + 1, lines))[number]
    order["orderState"] = "Open"
    return order


def key(event: dict[str, Any]) -> tuple[str, str | None]:
    return event["metric"]["data"]["attributes"]["name"], event.get("unique_id")


def raw(klaviyo: FakeKlaviyo) -> Counter[tuple[str, str | None]]:
    """Every event Klaviyo received, repeats included, by (metric, unique_id)."""
    return Counter(key(e) for e in klaviyo.events)


def recorded(klaviyo: FakeKlaviyo) -> Counter[tuple[str, str | None]]:
    """The events Klaviyo keeps (a repeated unique_id counts once)."""
    return Counter(key(e) for e in klaviyo.recorded_events())


def placed(order: dict[str, Any], times: int = 1) -> Counter[tuple[str, str | None]]:
    """Placed Order + one Ordered Product per line, each `times`."""
    keys = [("Placed Order", order["id"]), *(("Ordered Product", line["id"]) for line in order["lineItems"])]
    return Counter({k: times for k in keys})


def accepted(klaviyo: FakeKlaviyo, method: str, path_regex: str = ".*") -> int:
    return len([r for r in klaviyo.requests if r.method == method and re.fullmatch(path_regex, r.path)
                and r.status is not None and r.status < 400])


def profile_owners(klaviyo: FakeKlaviyo) -> list[str | None]:
    """The external ids of Klaviyo's profiles, sorted: a person with two profiles shows twice."""
    return sorted((p.get("external_id") for p in klaviyo.profiles.values()), key=str)


def persons(klaviyo: FakeKlaviyo, *customers: str) -> list[str | None]:
    """`customers` and the people Klaviyo's events name (Klaviyo creates a profile from every event's profile),
    each once, sorted like `profile_owners`."""
    named = {(e["profile"]["data"]["attributes"]).get("external_id") for e in klaviyo.events}
    return sorted({*customers, *named}, key=str)


def dead_letters(ct: FakeCommercetools) -> dict[str, dict[str, Any]]:
    return {o["key"]: o["value"] for o in ct.store["custom-objects"].values() if o["container"] == CONTAINER}


def deliver(app: TestClient, notification: dict[str, Any], message_id: str | None = None) -> tuple[int, str, float]:
    """(status, X-Outcome, seconds taken) of one Pub/Sub delivery."""
    began = time.monotonic()
    response = app.post("/", json=pubsub(notification, message_id))
    return response.status_code, response.headers.get("x-outcome", ""), time.monotonic() - began


def order_created(order: dict[str, Any]) -> dict[str, Any]:
    return message("order", order["id"], "OrderCreated", order=order)


def customer_created(customer: dict[str, Any]) -> dict[str, Any]:
    return message("customer", customer["id"], "CustomerCreated", customer=customer, resourceVersion=1)


def product_published(product_id: str, version: int = 3) -> dict[str, Any]:
    return message("product", product_id, "ProductPublished", resourceVersion=version, scope="All")


@pytest.fixture
def via_front(configure: Callable[..., Settings], front: KlaviyoFront) -> Iterator[Callable[..., TestClient]]:
    """An event app whose Klaviyo is behind the misbehaving front (NODE_CONFIG overrides as arguments)."""
    clients: list[TestClient] = []

    def make(config: dict[str, Any] | None = None) -> TestClient:
        client = TestClient(create_app(configure(config, KLAVIYO_API_URL=front.url)))
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


# --- Klaviyo: throttling --------------------------------------------------------------------------------------


def test_klaviyo_429_without_retry_after_backs_off_and_succeeds(event_app: TestClient, ct: FakeCommercetools,
                                                                klaviyo: FakeKlaviyo) -> None:
    seed(ct)
    order = open_order()
    klaviyo.fail_next("POST", EVENTS, 429, times=2, headers={})  # no Retry-After: exponential backoff
    status, outcome, took = deliver(event_app, order_created(order))
    assert (status, outcome) == (204, "processed")
    assert took < 2  # jittered backoff from 0.25 s, never a long sleep
    assert [r.status for r in klaviyo.requests] == [429, 429, 202, 202, 202, 202]
    assert raw(klaviyo) == placed(order) and recorded(klaviyo) == placed(order)
    assert dead_letters(ct) == {}


def test_klaviyo_throttling_longer_than_the_budget_is_redelivered(
        via_front: Callable[..., TestClient], front: KlaviyoFront, ct: FakeCommercetools,
        klaviyo: FakeKlaviyo) -> None:
    """Klaviyo answers 429 (Retry-After: 1) to everything for longer than a delivery may take: the delivery is
    answered 503 within its budget, nothing is recorded as failed, and the redelivery after the burst succeeds."""
    seed(ct)
    app = via_front({"event": {"timeBudgetSeconds": 2.5}})
    customer = sample.customers(1)[0]
    front.misbehave("*", r"/api/.*", "refuse", times=None, status=429, headers={"Retry-After": "1"})
    status, outcome, took = deliver(app, customer_created(customer), "m-burst")
    assert (status, outcome) == (503, "retry")
    assert took < 2.5
    throttled = [s for _, _, s in front.seen]
    assert throttled and set(throttled) == {429} and len(throttled) <= 3  # Retry-After honoured, budget kept
    assert klaviyo.profiles == {} and dead_letters(ct) == {}

    front.calm()  # the burst is over
    status, outcome, _ = deliver(app, customer_created(customer), "m-burst")
    assert (status, outcome) == (204, "processed")
    assert accepted(klaviyo, "POST", PROFILE_IMPORT) == 1
    assert [p["external_id"] for p in klaviyo.profiles.values()] == [customer["id"]]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_klaviyo_server_errors_on_events_are_retried_without_duplicates(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo, status: int) -> None:
    seed(ct)
    order = open_order()
    klaviyo.fail_next("POST", EVENTS, status, times=2)
    assert deliver(event_app, order_created(order))[:2] == (204, "processed")
    assert [r.status for r in klaviyo.requests] == [status, status, 202, 202, 202, 202]
    assert raw(klaviyo) == placed(order)


# --- Klaviyo: broken connections, lost answers, slowness ------------------------------------------------------


@pytest.mark.parametrize("action", ["reset", "close"])
def test_connection_dropped_without_an_answer_is_redelivered(
        via_front: Callable[..., TestClient], front: KlaviyoFront, ct: FakeCommercetools, klaviyo: FakeKlaviyo,
        action: str) -> None:
    """Every attempt at the first event meets a reset (RST) or a connection closed without an answer."""
    seed(ct)
    app = via_front()
    order = open_order()
    front.misbehave("POST", EVENTS, action, times=None)
    status, outcome, took = deliver(app, order_created(order))
    assert (status, outcome) == (503, "retry")
    assert front.seen == [("POST", EVENTS, action)] * 4  # bounded attempts
    assert took < 5
    assert klaviyo.events == [] and dead_letters(ct) == {}

    front.calm()
    assert deliver(app, order_created(order))[:2] == (204, "processed")
    assert raw(klaviyo) == placed(order)


def test_answer_lost_after_the_event_was_written_creates_no_duplicate(
        via_front: Callable[..., TestClient], front: KlaviyoFront, ct: FakeCommercetools,
        klaviyo: FakeKlaviyo) -> None:
    """Klaviyo records the Placed Order, then the connection resets: the connector sends it again (safe, it has
    a unique_id), and Klaviyo keeps it once."""
    seed(ct)
    app = via_front()
    order = open_order()
    front.misbehave("POST", EVENTS, "apply-then-reset")
    assert deliver(app, order_created(order))[:2] == (204, "processed")
    assert [s for _, _, s in front.seen] == ["apply-then-reset", 202, 202, 202, 202]
    assert raw(klaviyo) == placed(order) + Counter({("Placed Order", order["id"]): 1})  # received twice...
    assert recorded(klaviyo) == placed(order)  # ...kept once
    assert all(e["unique_id"] for e in klaviyo.events)


def test_lost_answer_to_a_catalog_create_is_redelivered_and_updates(
        via_front: Callable[..., TestClient], front: KlaviyoFront, ct: FakeCommercetools,
        klaviyo: FakeKlaviyo) -> None:
    """A create is not repeated blindly within a delivery; the redelivery finds the item and updates it."""
    seed(ct)
    app = via_front()
    product = sample.products()[0]
    item = f"/api/catalog-items/{catalog_id(product['id'])}"
    front.misbehave("POST", "/api/catalog-items", "apply-then-reset")
    assert deliver(app, product_published(product["id"]))[:2] == (503, "retry")
    assert front.seen == [("PATCH", item, 404), ("POST", "/api/catalog-items", "apply-then-reset")]
    assert dead_letters(ct) == {}

    assert deliver(app, product_published(product["id"]))[:2] == (204, "processed")
    assert [(m, p, s) for m, p, s in front.seen[2:] if m != "GET"] == [
        ("PATCH", item, 200), *[("POST", "/api/catalog-variants", 201)] * 3]
    assert list(klaviyo.items) == [catalog_id(product["id"])]
    assert sorted(klaviyo.variants) == sorted(catalog_id(f"SLIM-JEANS-{s}") for s in "SML")


def test_read_timeout_whose_write_lands_late_is_redelivered_without_duplicate(
        via_front: Callable[..., TestClient], front: KlaviyoFront, ct: FakeCommercetools,
        klaviyo: FakeKlaviyo) -> None:
    """Klaviyo answers the profile import after the delivery's budget (and still applies it)."""
    app = via_front({"event": {"timeBudgetSeconds": 1}})
    customer = sample.customers(1)[0]
    ct.add("customers", customer)  # customer writes are based on the customer as commercetools has it now
    front.misbehave("POST", PROFILE_IMPORT, "slow", seconds=1.5)
    status, outcome, took = deliver(app, customer_created(customer))
    assert (status, outcome) == (503, "retry")
    assert took < 1.4  # the read timeout is cut to what is left of the budget
    front.wait_idle()
    assert len(klaviyo.profiles) == 1  # the late write landed

    assert deliver(app, customer_created(customer))[:2] == (204, "processed")  # the redelivery updates it
    assert len(klaviyo.profiles) == 1
    assert accepted(klaviyo, "POST", PROFILE_IMPORT) == 2
    assert dead_letters(ct) == {}


def test_slow_klaviyo_near_the_ack_deadline_is_answered_within_the_budget(
        via_front: Callable[..., TestClient], front: KlaviyoFront, ct: FakeCommercetools, klaviyo: FakeKlaviyo,
        configure: Callable[..., Settings]) -> None:
    """Each Klaviyo answer takes 0.5 s and the order needs 4 of them (2 s): more than the 1.2 s budget. The app
    answers 503 when the budget is spent, not when Klaviyo is done (the default budget, 8 s, keeps Connect's 10 s
    acknowledgement deadline the same way)."""
    assert configure().event_time_budget == 8
    seed(ct)
    app = via_front({"event": {"timeBudgetSeconds": 1.2}})
    order = open_order()
    front.misbehave("POST", EVENTS, "slow", seconds=0.5, times=None)
    status, outcome, took = deliver(app, order_created(order))
    assert (status, outcome) == (503, "retry")
    assert took < 1.8  # the budget, not the 2 s Klaviyo would have taken
    front.wait_idle()
    first = raw(klaviyo)
    assert set(first.values()) == {1} and first.keys() < placed(order).keys()  # the last one after the answer

    front.calm()
    assert deliver(app, order_created(order))[:2] == (204, "processed")
    assert raw(klaviyo) == placed(order) + first and recorded(klaviyo) == placed(order)


def test_slow_klaviyo_within_the_budget_is_waited_for(via_front: Callable[..., TestClient], front: KlaviyoFront,
                                                      ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed(ct)
    app = via_front({"event": {"timeBudgetSeconds": 1.2}})
    order = open_order()
    front.misbehave("POST", EVENTS, "slow", seconds=0.2, times=None)  # 0.8 s in all
    status, outcome, took = deliver(app, order_created(order))
    assert (status, outcome) == (204, "processed")
    assert took >= 0.8  # every slow answer was waited for
    assert raw(klaviyo) == placed(order)


# --- Klaviyo: refusals and conflicts --------------------------------------------------------------------------


def test_klaviyo_400_on_an_event_is_acknowledged_and_recorded(event_app: TestClient, ct: FakeCommercetools,
                                                              klaviyo: FakeKlaviyo) -> None:
    seed(ct)
    order = open_order()
    error = {"errors": [{"id": "e1", "status": 400, "code": "invalid", "title": "Invalid input.",
                         "detail": f"'{order['customerEmail']}' is not a valid value for value",
                         "source": {"pointer": "/data/attributes/value"}}]}
    klaviyo.fail_next("POST", EVENTS, 400, body=error)
    notification = order_created(order)
    response = event_app.post("/", json=pubsub(notification, "m-400"))
    assert (response.status_code, response.headers["x-outcome"]) == (202, "failed")
    assert [r.status for r in klaviyo.requests] == [400]  # not retried, nothing after it
    record = dead_letters(ct)[notification["id"]]
    assert record["messageId"] == notification["id"] and record["processors"] == ["OrderCreated"]
    assert record["reason"] == ("klaviyo 400: Invalid input.; code=invalid; field=/data/attributes/value; "
                                "detail='…' is not a valid value for value")
    assert record["error"]["detail"] == "'…' is not a valid value for value"
    assert record["notification"] == notification and record["attempts"] == 1
    assert order["customerEmail"] not in response.text + json.dumps(record["reason"])


def test_item_created_meanwhile_by_another_delivery_is_updated(
        via_front: Callable[..., TestClient], front: KlaviyoFront, ct: FakeCommercetools,
        klaviyo: FakeKlaviyo) -> None:
    """PATCH 404, then another delivery creates the item first: the create meets 409 and becomes an update."""
    seed(ct)
    app = via_front()
    product = sample.products()[2]
    item = f"/api/catalog-items/{catalog_id(product['id'])}"
    front.misbehave("POST", "/api/catalog-items", "twin")
    assert deliver(app, product_published(product["id"]))[:2] == (204, "processed")
    assert [(m, p, s) for m, p, s in front.seen if m != "GET"][:3] == [
        ("PATCH", item, 404), ("POST", "/api/catalog-items", 409), ("PATCH", item, 200)]
    assert list(klaviyo.items) == [catalog_id(product["id"])] and len(klaviyo.variants) == 3


def test_profile_identifier_taken_by_another_profile_is_acknowledged_and_recorded(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    """The customer's new email belongs to another Klaviyo profile: Klaviyo answers 409 duplicate_profile, which
    no redelivery can fix; it is acknowledged and recorded with the reason."""
    customer = sample.customers(1)[0]
    ct.add("customers", customer)
    ours = klaviyo.add_profile({"external_id": customer["id"], "email": "before@example.org"})
    other = klaviyo.add_profile({"email": customer["email"]})
    notification = message("customer", customer["id"], "CustomerFirstNameSet", firstName="Ada")
    response = event_app.post("/", json=pubsub(notification))
    assert (response.status_code, response.headers["x-outcome"]) == (202, "failed")
    record = dead_letters(ct)[notification["id"]]
    assert record["reason"].startswith("klaviyo 409: ") and "code=duplicate_profile" in record["reason"]
    assert record["error"]["code"] == "duplicate_profile" and record["messageType"] == "CustomerFirstNameSet"
    assert klaviyo.profiles[ours]["email"] == "before@example.org" and klaviyo.profiles[other] == {
        "email": customer["email"]}
    assert customer["email"] not in response.text + record["reason"]


# --- commercetools --------------------------------------------------------------------------------------------


def test_token_refused_in_the_middle_of_a_delivery_is_renewed_once(event_app: TestClient, ct: FakeCommercetools,
                                                                   klaviyo: FakeKlaviyo) -> None:
    seed(ct)
    order_id = sample.uid("order", 2)  # Complete
    ct.fail_next("GET", r"/products$", 401)  # after the order was read with the same token
    notification = message("order", order_id, "OrderStateChanged", orderState="Complete", oldOrderState="Open")
    assert deliver(event_app, notification)[:2] == (204, "processed")
    customer_id = ct.store["orders"][order_id]["customerId"]  # the customer is read (for their current email)
    assert [(r.method, r.path.rsplit("/", 1)[-1], r.status) for r in ct.requests] == [
        ("POST", "token", 200), ("GET", order_id, 200), ("GET", customer_id, 200), ("GET", "products", 401),
        ("POST", "token", 200), ("GET", "products", 200)]
    first, second = (r.headers["authorization"] for r in ct.requests if r.path.endswith("products"))
    assert first != second
    assert raw(klaviyo) == Counter({("Fulfilled Order", order_id): 1})


@pytest.mark.parametrize("notification, reason", [
    (message("payment", "gone-payment", "PaymentTransactionAdded",
             transaction={"id": "t-1", "type": "Refund", "state": "Success"}), "payment no longer exists"),
    (change("ResourceUpdated", "category", "gone-category"), "category no longer exists"),
    (change("ResourceUpdated", "customer", "gone-customer"), "customer no longer exists"),
    (message("order", "gone-order", "OrderStateChanged", orderState="Cancelled"), "order no longer exists"),
], ids=["payment", "category", "customer", "order"])
def test_resource_deleted_in_commercetools_is_ignored_with_a_log_line(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo, notification: dict[str, Any],
        reason: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    response = event_app.post("/", json=pubsub(notification))
    assert (response.status_code, response.headers["x-outcome"]) == (204, "ignored")
    assert reason in response.headers["x-outcome-reason"]
    assert [r.status for r in ct.requests if r.method == "GET"] == [404]
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    (line,) = [e for e in logged if e.get("outcome") == "ignored"]
    assert line["severity"] == "INFO" and reason in line["reason"]
    assert line["resource_id"] == notification["resource"]["id"] and line["message_id"]
    assert klaviyo.requests == [] and dead_letters(ct) == {}


@pytest.mark.parametrize("status", [500, 502])
def test_commercetools_server_errors_are_retried_then_redelivered(event_app: TestClient, ct: FakeCommercetools,
                                                                  klaviyo: FakeKlaviyo, status: int) -> None:
    seed(ct)
    payment_id = sample.uid("payment", 1)
    refunds = [t for t in ct.store["payments"][payment_id]["transactions"] if t["type"] == "Refund"]
    notification = message("payment", payment_id, "PaymentTransactionAdded", transaction=refunds[0])
    ct.fail_next("GET", r"/orders$", status, times=2)  # transient: retried within the delivery
    assert deliver(event_app, notification)[:2] == (204, "processed")
    ct.fail_next("GET", r"/orders$", status, times=4)  # as long as the transport tries: redelivered
    assert deliver(event_app, notification)[:2] == (503, "retry")
    assert deliver(event_app, notification)[:2] == (204, "processed")
    assert [r.status for r in ct.requests if r.path.endswith("/orders")] == [status] * 2 + [200] + [status] * 4 + [
        200]
    assert raw(klaviyo) == Counter({("Refunded Order", refunds[0]["id"]): 2})
    assert recorded(klaviyo) == Counter({("Refunded Order", refunds[0]["id"]): 1})
    assert dead_letters(ct) == {}


def test_commercetools_timeout_is_redelivered(configure: Callable[..., Settings], ct: FakeCommercetools,
                                              klaviyo: FakeKlaviyo) -> None:
    seed(ct)
    customer_id = sample.uid("customer", 1)
    ct.fail_next("GET", r"/customers/", 200, delay=1.5)  # answers, but after the budget
    notification = change("ResourceUpdated", "customer", customer_id, version=2)
    with TestClient(create_app(configure({"event": {"timeBudgetSeconds": 1}}))) as app:
        status, outcome, took = deliver(app, notification)
        assert (status, outcome) == (503, "retry") and took < 1.4
        assert klaviyo.requests == [] and dead_letters(ct) == {}
        assert deliver(app, notification)[:2] == (204, "processed")
    assert [p["external_id"] for p in klaviyo.profiles.values()] == [customer_id]


def test_dead_letter_that_cannot_be_written_in_time_is_redelivered(
        configure: Callable[..., Settings], ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    """Klaviyo refuses the profile (400) and commercetools is too slow to store the dead letter: acknowledging
    would lose the delivery, so it is answered 503; the redelivery records it."""
    customer = sample.customers(1)[0]
    ct.add("customers", customer)
    klaviyo.fail_next("POST", PROFILE_IMPORT, 400, times=2)
    ct.fail_next("*", r"/custom-objects", 200, delay=1.5, times=1)
    with TestClient(create_app(configure({"event": {"timeBudgetSeconds": 1}}))) as app:
        notification = customer_created(customer)
        assert deliver(app, notification)[:2] == (503, "retry")
        assert dead_letters(ct) == {}
        assert deliver(app, notification)[:2] == (202, "failed")
    assert list(dead_letters(ct)) == [notification["id"]]


# --- deliveries: repeated, out of order, malformed, huge --------------------------------------------------------


def test_every_kind_of_delivery_twice_writes_nothing_twice(configure: Callable[..., Settings],
                                                           ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed(ct)
    customer = sample.customers(4)[3]
    ct.add("customers", customer)
    order = open_order(4)
    payment_id = sample.uid("payment", 1)
    refund = next(t for t in ct.store["payments"][payment_id]["transactions"] if t["type"] == "Refund")
    product = sample.products()[1]
    entry = ct.store["inventory"][sample.uid("inventory", "WIDE-PANTS-M")]
    entry.update(version=3, quantityOnStock=7, availableQuantity=7)  # sold since the publication
    deliveries = [
        customer_created(customer),
        change("ResourceUpdated", "customer", customer["id"], version=2),
        order_created(order),
        message("order", sample.uid("order", 2), "OrderStateChanged", orderState="Complete"),
        message("payment", payment_id, "PaymentTransactionAdded", transaction=refund),
        message("category", sample.uid("category", "women"), "CategoryCreated"),
        product_published(product["id"]),
        change("ResourceUpdated", "inventory-entry", entry["id"], version=entry["version"],
               resourceUserProvidedIdentifiers={"sku": entry["sku"]}),
    ]
    with TestClient(create_app(configure(CHANNEL_CONFIG))) as app:
        for number, notification in enumerate(deliveries):
            for _ in range(2):  # Pub/Sub delivers at least once
                assert deliver(app, notification, f"m-{number}")[:2] == (204, "processed"), notification
    events = placed(order) + Counter({("Fulfilled Order", sample.uid("order", 2)): 1,
                                      ("Refunded Order", refund["id"]): 1})
    assert raw(klaviyo) == events + events  # each sent twice...
    assert recorded(klaviyo) == events  # ...kept once
    assert profile_owners(klaviyo) == persons(klaviyo, customer["id"])  # one profile each
    assert accepted(klaviyo, "POST", PROFILE_IMPORT) == 4
    assert list(klaviyo.categories) == [catalog_id(sample.uid("category", "women"))]
    assert list(klaviyo.items) == [catalog_id(product["id"])]
    assert sorted(klaviyo.variants) == [catalog_id("WIDE-PANTS-M"), catalog_id("WIDE-PANTS-S")]
    assert klaviyo.variants[catalog_id("WIDE-PANTS-M")]["attributes"]["inventory_quantity"] == 7
    assert dead_letters(ct) == {}


def test_customer_updates_out_of_order_leave_the_current_customer(event_app: TestClient, ct: FakeCommercetools,
                                                                   klaviyo: FakeKlaviyo) -> None:
    customer = sample.customers(1)[0]
    customer.update(version=5, firstName="Augusta", lastName="King")  # what commercetools holds now
    ct.add("customers", customer)
    newer = message("customer", customer["id"], "CustomerLastNameSet", lastName="King", resourceVersion=5)
    older = message("customer", customer["id"], "CustomerFirstNameSet", firstName="Ada", resourceVersion=4)
    assert deliver(event_app, newer)[:2] == (204, "processed")
    assert deliver(event_app, older)[:2] == (204, "processed")  # late: it must not bring "Ada" back
    (profile,) = klaviyo.profiles.values()
    assert (profile["first_name"], profile["last_name"]) == ("Augusta", "King")


def test_late_customer_created_does_not_bring_back_old_data(event_app: TestClient, ct: FakeCommercetools,
                                                            klaviyo: FakeKlaviyo) -> None:
    """CustomerCreated (version 1, with the customer as created) is redelivered after a later change was
    applied: Klaviyo must keep the current data."""
    created = sample.customers(1)[0]
    created["version"] = 1
    current = {**created, "version": 2, "firstName": "Augusta"}
    ct.add("customers", current)
    rename = message("customer", created["id"], "CustomerFirstNameSet", firstName="Augusta", resourceVersion=2)
    assert deliver(event_app, rename)[:2] == (204, "processed")
    assert deliver(event_app, customer_created(created))[:2] == (204, "processed")  # late
    (profile,) = klaviyo.profiles.values()
    assert profile["first_name"] == "Augusta"
    assert [r.body["data"]["attributes"]["first_name"] for r in klaviyo.requests
            if r.path == PROFILE_IMPORT] == ["Augusta", "Augusta"]


@pytest.mark.parametrize("body, reason", [
    (b"", "body is not JSON"),
    (b"\xff\xfe{\x00", "body is not JSON"),
    (b'"just a string"', "body is a JSON str"),
    (json.dumps({"message": "text"}).encode(), "'message' is not an object"),
    (json.dumps({"message": {"messageId": "m-7", "data": base64.b64encode(b"\xff\xfe").decode()}}).encode(),
     "does not decode to JSON"),
    (json.dumps({"Type": "Notification", "MessageId": "sns-9", "Message": "{not json"}).encode(),
     "SNS notification: 'Message' is not JSON"),
    (json.dumps(pubsub({"notificationType": "Message", "resource": {"typeId": "order", "id": "o-1"}},
                       "m-8")).encode(), "message has no type"),
], ids=["empty", "not-utf8", "string", "message-not-object", "data-not-utf8", "sns-not-json", "no-type"])
def test_more_malformed_deliveries_are_acknowledged_and_recorded(event_app: TestClient, ct: FakeCommercetools,
                                                                 klaviyo: FakeKlaviyo, body: bytes,
                                                                 reason: str) -> None:
    response = event_app.post("/", content=body, headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()["outcome"]) == (202, "failed")
    assert reason in response.json()["reason"]
    (record,) = dead_letters(ct).values()
    assert reason in record["reason"] and record["messageId"] and record["attempts"] == 1
    assert klaviyo.requests == []


def test_order_with_1000_lines_failing_half_way_is_redelivered_without_loss_or_duplicates(
        via_front: Callable[..., TestClient], front: KlaviyoFront, ct: FakeCommercetools,
        klaviyo: FakeKlaviyo) -> None:
    """1,001 events go in two bulk requests; the second fails on every attempt, so the delivery is redelivered:
    the first batch then reaches Klaviyo twice, the rest once, and Klaviyo keeps each event once."""
    seed(ct)
    app = via_front()
    order = open_order(lines=1000)
    notification = order_created(order)
    front.misbehave("POST", BULK_EVENTS, "refuse", status=500, after=1, times=4)  # the second request, 4 times
    assert deliver(app, notification, "m-big")[:2] == (503, "retry")
    assert [s for _, _, s in front.seen] == [202, 500, 500, 500, 500]
    first = raw(klaviyo)
    assert sum(first.values()) == 1000 and set(first.values()) == {1} and first.keys() < placed(order).keys()
    assert deliver(app, notification, "m-big")[:2] == (204, "processed")
    assert [(m, p, s) for m, p, s in front.seen[5:]] == [("POST", BULK_EVENTS, 202)] * 2
    assert raw(klaviyo) == placed(order) + first  # the first batch twice, the rest once
    assert recorded(klaviyo) == placed(order)
    assert dead_letters(ct) == {}


# --- concurrency: the event app under uvicorn on a real port --------------------------------------------------


@dataclass
class Workload:
    deliveries: list[dict[str, Any]]  # Pub/Sub envelopes
    events: Counter[tuple[str, str | None]]  # every event Klaviyo must keep, once
    customers: list[str]  # the external ids of the profiles Klaviyo must have
    products: list[dict[str, Any]]


def workload(ct: FakeCommercetools, customers: int = 70, orders: int = 70, state_changes: int = 30,
             publications: int = 30) -> Workload:
    """A realistic mix (the sample project seeded): new customers, new orders with 3 lines, orders completed,
    and the same three products published again and again (concurrent upserts of the same catalog objects)."""
    seed(ct)
    persons = people(customers)
    for person in persons:
        ct.add("customers", person)
    history = list(sample.orders(300 + state_changes, lines=3, n_customers=3 + customers))
    new_orders = history[100:100 + orders]
    completed = history[300:300 + state_changes]
    for order in new_orders:
        order["orderState"] = "Open"
    for order in completed:
        order["orderState"] = "Complete"
        ct.add("orders", order)
    products = sample.products()
    notifications = [
        *(customer_created(c) for c in persons),
        *(order_created(o) for o in new_orders),
        *(message("order", o["id"], "OrderStateChanged", orderState="Complete", oldOrderState="Open")
          for o in completed),
        *(product_published(products[i % len(products)]["id"]) for i in range(publications)),
    ]
    events = Counter[tuple[str, str | None]]()
    for order in new_orders:
        events += placed(order)
    events += Counter({("Fulfilled Order", o["id"]): 1 for o in completed})
    deliveries = [pubsub(n, f"pubsub-{i}") for i, n in enumerate(notifications)]
    deliveries.sort(key=lambda d: hash(d["message"]["messageId"]))  # interleaved kinds
    return Workload(deliveries, events, [c["id"] for c in persons], products)


def post_all(url: str, deliveries: list[dict[str, Any]], workers: int = 32) -> list[httpx.Response]:
    with httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_connections=workers)) as client, \
            ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda body: client.post("/", json=body), deliveries))


def assert_catalog(klaviyo: FakeKlaviyo, products: list[dict[str, Any]]) -> None:
    assert sorted(klaviyo.items) == sorted(catalog_id(p["id"]) for p in products)
    skus = [v["sku"] for p in products for v in [p["masterData"]["current"]["masterVariant"],
                                                 *p["masterData"]["current"]["variants"]]]
    assert sorted(klaviyo.variants) == sorted(catalog_id(s) for s in skus)


def test_200_concurrent_deliveries_are_all_processed_once(configure: Callable[..., Settings],
                                                          ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    work = workload(ct)
    assert len(work.deliveries) == 200
    with serve(configure()) as url:
        answers = post_all(url, work.deliveries)
    assert Counter((a.status_code, a.headers.get("x-outcome")) for a in answers) == {(204, "processed"): 200}
    assert raw(klaviyo) == work.events  # 310 events, each exactly once: no write repeated
    assert profile_owners(klaviyo) == persons(klaviyo, *work.customers)  # one profile each
    # Each profile written once: alone, or (under this load) in a profile bulk import job shared with others.
    in_jobs = [p for r in klaviyo.calls("POST", "/api/profile-bulk-import-jobs") if r.status == 202
               for p in r.body["data"]["attributes"]["profiles"]["data"]]
    assert accepted(klaviyo, "POST", PROFILE_IMPORT) + len(in_jobs) == len(work.customers)
    assert_catalog(klaviyo, work.products)
    assert len([r for r in ct.requests if r.path == "/oauth/token"]) == 1  # one token for all 32 threads
    assert dead_letters(ct) == {}


def test_concurrent_deliveries_renew_an_expired_token_once(configure: Callable[..., Settings],
                                                           ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    persons = people(32)
    for person in persons:
        ct.add("customers", person)
    updates = [pubsub(change("ResourceUpdated", "customer", p["id"], version=2)) for p in persons]
    with serve(configure()) as url:
        assert post_all(url, updates[:1])[0].status_code == 204  # a token is issued and used
        ct.expire_tokens()
        answers = post_all(url, updates)
    assert [a.status_code for a in answers] == [204] * 32
    assert len([r for r in ct.requests if r.path == "/oauth/token"]) == 2  # one renewal for all the 401s
    assert 1 <= len([r for r in ct.requests if r.status == 401]) <= 32
    assert sorted(p["external_id"] for p in klaviyo.profiles.values()) == sorted(p["id"] for p in persons)


def test_concurrent_deliveries_under_throttling_are_redelivered_until_all_are_done(
        configure: Callable[..., Settings], front: KlaviyoFront, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    """Pub/Sub's loop: whatever is not acknowledged comes again. Klaviyo throttles 60 requests with a Retry-After
    longer than a delivery's budget; in the end every event is kept once and nothing was dead-lettered."""
    work = workload(ct, customers=30, orders=30, state_changes=20, publications=20)
    front.misbehave("*", r"/api/.*", "refuse", times=60, after=20, status=429, headers={"Retry-After": "30"})
    pending, rounds, retried = work.deliveries, 0, 0
    with serve(configure(KLAVIYO_API_URL=front.url)) as url:
        while pending and rounds < 5:
            answers = post_all(url, pending)
            assert {a.status_code for a in answers} <= {204, 503}  # never acknowledged without the work done
            pending = [d for d, a in zip(pending, answers, strict=True) if a.status_code != 204]
            retried += len(pending)
            rounds += 1
    assert pending == [] and retried > 0
    assert recorded(klaviyo) == work.events
    assert set(raw(klaviyo)) == set(work.events)  # some sent more than once, none missing, none extra
    assert profile_owners(klaviyo) == persons(klaviyo, *work.customers)  # one profile each
    assert_catalog(klaviyo, work.products)
    assert dead_letters(ct) == {}
