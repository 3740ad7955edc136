"""Faults on the realtime path: every delivery gets the answer that loses nothing and duplicates nothing."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from event.app import create_app
from shared.config import Settings
from shared.dead_letters import CONTAINER
from tests.builders import change, message, pubsub
from tests.data import fixture
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo

CUSTOMER_ID = "e54d8233-be41-4ce1-ae2b-3b5e1e1d8a01"
IMPORT = r"^/api/profile-import$"


@pytest.fixture(autouse=True)
def customer_in_commercetools(ct: FakeCommercetools) -> None:
    """The customer the messages are about exists: customer writes are based on the current customer."""
    ct.add("customers", fixture("customer"))


def created() -> dict[str, Any]:
    return message("customer", CUSTOMER_ID, "CustomerCreated", customer=fixture("customer"))


def imports(klaviyo: FakeKlaviyo) -> list[bool]:
    """For each profile-import request in order: True when it was an injected failure."""
    return [r.injected for r in klaviyo.requests if r.path == "/api/profile-import"]


def dead_letter(ct: FakeCommercetools, key: str) -> dict[str, Any] | None:
    obj = ct.get_custom_object(CONTAINER, key)
    return obj["value"] if obj else None


def test_klaviyo_429_with_retry_after_is_waited_out(event_app: TestClient, klaviyo: FakeKlaviyo) -> None:
    klaviyo.fail_next("POST", IMPORT, 429, headers={"Retry-After": "1"})
    began = time.monotonic()
    assert event_app.post("/", json=pubsub(created())).status_code == 204
    assert time.monotonic() - began >= 1.0
    assert imports(klaviyo) == [True, False]  # one refused, one accepted: no duplicate
    assert len(klaviyo.profiles) == 1


def test_klaviyo_429_longer_than_the_budget_asks_for_redelivery(event_app: TestClient, ct: FakeCommercetools,
                                                               klaviyo: FakeKlaviyo) -> None:
    klaviyo.fail_next("POST", IMPORT, 429, headers={"Retry-After": "30"})
    began = time.monotonic()
    response = event_app.post("/", json=pubsub(created()))
    assert response.status_code == 503
    assert time.monotonic() - began < 5  # it did not sleep 30 s against the 10 s ack deadline
    assert imports(klaviyo) == [True]
    assert ct.store.get("custom-objects", {}) == {}  # transient: no dead letter
    assert event_app.post("/", json=pubsub(created())).status_code == 204  # the redelivery succeeds
    assert imports(klaviyo) == [True, False]


def test_klaviyo_500_is_retried_with_backoff(event_app: TestClient, klaviyo: FakeKlaviyo) -> None:
    klaviyo.fail_next("POST", IMPORT, 500, times=2)
    assert event_app.post("/", json=pubsub(created())).status_code == 204
    assert imports(klaviyo) == [True, True, False]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_klaviyo_server_errors_that_persist_ask_for_redelivery(event_app: TestClient, klaviyo: FakeKlaviyo,
                                                               status: int) -> None:
    klaviyo.fail_next("POST", IMPORT, status, times=10)
    assert event_app.post("/", json=pubsub(created())).status_code == 503
    assert imports(klaviyo) == [True] * 4  # bounded attempts


def test_klaviyo_400_is_acknowledged_and_recorded(event_app: TestClient, ct: FakeCommercetools,
                                                  klaviyo: FakeKlaviyo) -> None:
    error = {"errors": [{"id": "e1", "status": 400, "code": "invalid", "title": "Invalid input.",
                         "detail": "The email 'roberto.smith@example.com' is not valid",
                         "source": {"pointer": "/data/attributes/email"}}]}
    klaviyo.fail_next("POST", IMPORT, 400, body=error)
    notification = created()
    response = event_app.post("/", json=pubsub(notification))
    assert response.status_code == 202
    assert imports(klaviyo) == [True]  # not retried
    record = dead_letter(ct, notification["id"])
    assert record is not None
    assert record["messageId"] == notification["id"]
    assert record["processors"] == ["CustomerCreated"]
    assert record["error"] == {"service": "klaviyo", "status": 400, "code": "invalid",
                               "detail": "The email '…' is not valid", "pointer": "/data/attributes/email"}
    assert record["resource"] == {"typeId": "customer", "id": CUSTOMER_ID}
    assert record["messageType"] == "CustomerCreated"
    assert record["notification"] == notification  # enough to replay it
    assert record["attempts"] == 1
    assert "roberto" not in response.text


def test_refused_phone_number_is_dropped_and_the_profile_sent(event_app: TestClient, klaviyo: FakeKlaviyo) -> None:
    error = {"errors": [{"id": "e1", "status": 400, "code": "invalid", "title": "Invalid phone number",
                         "detail": "Invalid phone number format",
                         "source": {"pointer": "/data/attributes/phone_number"}}]}
    klaviyo.fail_next("POST", IMPORT, 400, body=error)
    assert event_app.post("/", json=pubsub(created())).status_code == 204
    sent = [r.body["data"]["attributes"] for r in klaviyo.requests if r.path == "/api/profile-import"]
    assert "phone_number" in sent[0] and "phone_number" not in sent[1]


def test_commercetools_503_is_retried_then_asks_for_redelivery(event_app: TestClient, ct: FakeCommercetools,
                                                               klaviyo: FakeKlaviyo) -> None:
    ct.add("customers", fixture("customer"))
    ct.fail_next("GET", r"/customers/", 503, times=1)
    assert event_app.post("/", json=pubsub(change("ResourceUpdated", "customer", CUSTOMER_ID))).status_code == 204
    ct.fail_next("GET", r"/customers/", 503, times=10)
    assert event_app.post("/", json=pubsub(change("ResourceUpdated", "customer", CUSTOMER_ID))).status_code == 503
    assert imports(klaviyo) == [False]


def test_expired_commercetools_token_is_renewed_once(event_app: TestClient, ct: FakeCommercetools,
                                                     klaviyo: FakeKlaviyo) -> None:
    ct.add("customers", fixture("customer"))
    assert event_app.post("/", json=pubsub(change("ResourceUpdated", "customer", CUSTOMER_ID))).status_code == 204
    ct.expire_tokens()
    assert event_app.post("/", json=pubsub(change("ResourceUpdated", "customer", CUSTOMER_ID))).status_code == 204
    assert [r.path for r in ct.requests].count("/oauth/token") == 2
    assert imports(klaviyo) == [False, False]


def test_timeout_asks_for_redelivery(configure: Callable[..., Settings], klaviyo: FakeKlaviyo) -> None:
    klaviyo.fail_next("POST", IMPORT, 200, delay=3.0)  # answers only after the budget
    with TestClient(create_app(configure({"event": {"timeBudgetSeconds": 1.5}}))) as app:
        began = time.monotonic()
        assert app.post("/", json=pubsub(created())).status_code == 503
        assert time.monotonic() - began < 2.5


@pytest.mark.parametrize("body, reason", [
    (b"not json at all", "body is not JSON"),
    (b"[1, 2]", "body is a JSON list"),
    (json.dumps({"message": {"messageId": "m-1"}}).encode(), "'message.data' is missing"),
    (json.dumps({"message": {"messageId": "m-2", "data": "%%%not base64%%%"}}).encode(), "not valid base64"),
    (json.dumps(pubsub(b"\x00\x01 not json", "m-3")).encode(), "does not decode to JSON"),
    (json.dumps(pubsub([1, 2], "m-4")).encode(), "notification is a JSON list"),
    (json.dumps(pubsub({"notificationType": "Message", "resource": {"typeId": "order"}}, "m-5")).encode(),
     "no resource"),
    (json.dumps(pubsub({"notificationType": "Surprise"}, "m-6")).encode(), "unknown notificationType"),
])
def test_malformed_deliveries_are_acknowledged_and_recorded(event_app: TestClient, ct: FakeCommercetools,
                                                            klaviyo: FakeKlaviyo, body: bytes, reason: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    response = event_app.post("/", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 202
    assert reason in response.json()["reason"]
    records = list(ct.store.get("custom-objects", {}).values())
    assert len(records) == 1 and reason in records[0]["value"]["reason"]
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    failure = [entry for entry in logged if entry["severity"] == "ERROR"]
    assert failure and reason in failure[-1]["reason"] and failure[-1]["message_id"]
    assert "Traceback" not in "".join(str(e) for e in logged)
    assert klaviyo.requests == []


def test_failure_that_cannot_be_recorded_asks_for_redelivery(event_app: TestClient, ct: FakeCommercetools,
                                                             klaviyo: FakeKlaviyo) -> None:
    klaviyo.fail_next("POST", IMPORT, 400)
    ct.fail_next("*", r"/custom-objects", 503, times=20)
    assert event_app.post("/", json=pubsub(created())).status_code == 503


def test_redelivered_failure_counts_attempts(event_app: TestClient, ct: FakeCommercetools,
                                             klaviyo: FakeKlaviyo) -> None:
    envelope = {"message": {"messageId": "m-9", "data": base64.b64encode(b"{broken").decode()}}
    assert event_app.post("/", json=envelope).status_code == 202
    assert event_app.post("/", json=envelope).status_code == 202
    assert dead_letter(ct, "m-9")["attempts"] == 2
