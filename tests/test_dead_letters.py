"""Dead letters: recorded by the event app, listed, replayed and purged with `python -m job dead-letters`, and
retried by the scheduled run when switched on."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from job.app import create_app as create_job_app
from shared.config import Settings
from shared.dead_letters import CONTAINER
from tests.builders import change, message, pubsub
from tests.conftest import Cli
from tests.data import fixture
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo

CUSTOMER_ID = "e54d8233-be41-4ce1-ae2b-3b5e1e1d8a01"
INVALID = {"errors": [{"id": "e1", "status": 400, "code": "invalid", "title": "Invalid input.",
                       "detail": "Invalid value", "source": {"pointer": "/data/attributes/email"}}]}
DUPLICATE = {"errors": [{"id": "e2", "status": 409, "code": "duplicate_profile", "title": "Conflict.",
                         "detail": "A profile already exists with one of these identifiers.",
                         "meta": {"duplicate_profile_id": "01KPROFILE"}}]}


@pytest.fixture(autouse=True)
def customer_in_commercetools(ct: FakeCommercetools) -> None:
    """The customer the messages are about exists: customer writes are based on the current customer."""
    ct.add("customers", fixture("customer"))


def records(ct: FakeCommercetools) -> dict[str, dict[str, Any]]:
    return {o["key"]: o["value"] for o in ct.store["custom-objects"].values() if o["container"] == CONTAINER}


def fail_once(event_app: TestClient, klaviyo: FakeKlaviyo, notification: dict[str, Any],
              body: dict[str, Any] = INVALID, status: int = 400) -> None:
    klaviyo.fail_next("POST", r"/api/profile-import", status, body=body)
    assert event_app.post("/", json=pubsub(notification)).status_code == 202


def imports(klaviyo: FakeKlaviyo) -> list[int | None]:
    return [r.status for r in klaviyo.requests if r.path == "/api/profile-import"]


def test_list_replay_success_removes_the_record(event_app: TestClient, ct: FakeCommercetools,
                                               klaviyo: FakeKlaviyo, cli: Cli) -> None:
    notification = message("customer", CUSTOMER_ID, "CustomerCreated", customer=fixture("customer"))
    fail_once(event_app, klaviyo, notification)
    code, out, _ = cli("dead-letters", "list")
    assert code == 0
    assert notification["id"] in out and "CustomerCreated" in out and f"customer {CUSTOMER_ID}" in out
    assert "klaviyo 400" in out and "roberto" not in out.lower()

    code, out, _ = cli("dead-letters", "replay", "--id", notification["id"])
    assert code == 0
    assert f"{notification['id']}: processed" in out
    assert records(ct) == {}
    assert imports(klaviyo) == [400, 201]  # refused, then created by the replay
    assert [p["external_id"] for p in klaviyo.profiles.values()] == [CUSTOMER_ID]


def test_replay_failure_updates_the_record(event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                           cli: Cli) -> None:
    notification = message("customer", CUSTOMER_ID, "CustomerCreated", customer=fixture("customer"))
    fail_once(event_app, klaviyo, notification)
    first = records(ct)[notification["id"]]
    klaviyo.fail_next("POST", r"/api/profile-import", 400, body=INVALID)
    code, out, _ = cli("dead-letters", "replay", "--all")
    assert code == 1
    assert f"{notification['id']}: failed" in out and "0 of 1 replayed" in out
    record = records(ct)[notification["id"]]
    assert record["attempts"] == 2 and record["firstSeen"] == first["firstSeen"]
    assert record["notification"] == notification  # still replayable


def test_malformed_delivery_is_not_replayable(event_app: TestClient, ct: FakeCommercetools, cli: Cli) -> None:
    assert event_app.post("/", content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 202
    code, out, _ = cli("dead-letters", "replay", "--all")
    assert code == 1 and "not replayable" in out
    assert len(records(ct)) == 1


def test_replay_of_a_record_too_large_to_keep_the_message_fetches_the_resource(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo, cli: Cli) -> None:
    ct.add("customers", fixture("customer"))
    notification = change("ResourceUpdated", "customer", CUSTOMER_ID)
    fail_once(event_app, klaviyo, notification)
    key = next(iter(records(ct)))
    stored = next(o for o in ct.store["custom-objects"].values() if o["key"] == key)
    del stored["value"]["notification"]  # as for a message over the custom object size limit
    code, out, _ = cli("dead-letters", "replay", "--id", key)
    assert code == 0 and f"{key}: processed" in out
    assert [p["external_id"] for p in klaviyo.profiles.values()] == [CUSTOMER_ID]


def test_unknown_key_is_an_error(cli: Cli, ct: FakeCommercetools) -> None:
    code, _, err = cli("dead-letters", "replay", "--id", "no-such-key")
    assert code == 2 and "no-such-key" in err


def test_list_since_and_purge_before(event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                     cli: Cli) -> None:
    old = message("customer", CUSTOMER_ID, "CustomerCreated", customer=fixture("customer"))
    new = message("customer", CUSTOMER_ID, "CustomerCreated", customer=fixture("customer"))
    fail_once(event_app, klaviyo, old)
    fail_once(event_app, klaviyo, new)
    for obj in ct.store["custom-objects"].values():
        if obj["key"] == old["id"]:
            obj["value"]["firstSeen"] = obj["value"]["lastSeen"] = "2026-01-01T00:00:00+00:00"
    code, out, _ = cli("dead-letters", "list", "--since", "2026-06-01T00:00:00Z")
    assert new["id"] in out and old["id"] not in out
    code, out, _ = cli("dead-letters", "purge", "--before", "2026-06-01T00:00:00Z")
    assert code == 0 and "1 dead letters deleted" in out
    assert list(records(ct)) == [new["id"]]


def test_scheduled_run_retries_possibly_transient_records_when_switched_on(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo,
        configure: Callable[..., Settings]) -> None:
    conflict = message("customer", CUSTOMER_ID, "CustomerCreated", customer=fixture("customer"))
    fail_once(event_app, klaviyo, conflict, DUPLICATE, 409)  # a conflict may pass later
    invalid = message("customer", CUSTOMER_ID, "CustomerCreated", customer=fixture("customer"))
    fail_once(event_app, klaviyo, invalid)  # an invalid body will not
    assert records(ct)[conflict["id"]]["possiblyTransient"] is True
    assert records(ct)[invalid["id"]]["possiblyTransient"] is False

    with TestClient(create_job_app(configure())) as job:  # default: off
        assert "deadLetters" not in job.post("/").json()
    assert len(records(ct)) == 2

    with TestClient(create_job_app(configure({"deadLetters": {"retryOnSchedule": True}}))) as job:
        summary = job.post("/").json()
    assert summary["deadLetters"] == [{"key": conflict["id"], "outcome": "processed"}]
    assert list(records(ct)) == [invalid["id"]]


def test_records_hold_no_personal_data_outside_the_message(event_app: TestClient, ct: FakeCommercetools,
                                                           klaviyo: FakeKlaviyo) -> None:
    echo = {"errors": [{"id": "e1", "status": 400, "code": "invalid", "title": "Invalid email",
                        "detail": "'roberto.smith@example.com' is not a valid email for +447700900123",
                        "source": {"pointer": "/data/attributes/email"}}]}
    notification = message("customer", CUSTOMER_ID, "CustomerCreated", customer=fixture("customer"))
    fail_once(event_app, klaviyo, notification, echo)
    record = dict(records(ct)[notification["id"]])
    record.pop("notification")  # the message itself is kept, in the merchant's own project, to replay it
    text = json.dumps(record)
    assert "roberto" not in text and "447700900123" not in text
