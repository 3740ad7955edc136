"""History fires no flows: bulk-imported events, events of `OrderImported` and events older than
`event.backfillAfterHours` (a late delivery, a dead-letter replay) carry `backfill: true`, which Klaviyo records
without triggering flows (the stand-in keeps which events would have triggered one); fresh events do not carry
it. History's profiles carry identifiers only: an old billing address never becomes the profile's location."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from event.app import create_app
from job.service import JobService
from shared.config import ConfigError, Settings
from tests.builders import message, pubsub
from tests.conftest import Cli
from tests.data import fixture
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo
from tests.test_job_support import make_order, seed_catalog

ORDER_ID = "9f2b6c1e-4d3a-4b8e-9a71-0c5d2e8f4a10"
CUSTOMER_ID = "e54d8233-be41-4ce1-ae2b-3b5e1e1d8a01"
IDENTIFIERS = {"email": "roberto.smith@example.com", "external_id": CUSTOMER_ID}
KEYS = ["Placed Order", "Ordered Product", "Ordered Product", "Ordered Product"]


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def order_at(created: datetime) -> dict[str, Any]:
    order = fixture("order_placed")
    order["createdAt"] = order["lastModifiedAt"] = iso(created)
    return order


def events(klaviyo: FakeKlaviyo) -> list[dict[str, Any]]:
    return klaviyo.recorded_events()


def metrics(found: list[dict[str, Any]]) -> list[str]:
    return [e["metric"]["data"]["attributes"]["name"] for e in found]


def profile(event: dict[str, Any]) -> dict[str, Any]:
    return event["profile"]["data"]["attributes"]


def deliver(app: TestClient, notification: dict[str, Any]) -> int:
    return app.post("/", json=pubsub(notification)).status_code


# --- realtime -------------------------------------------------------------------------------------------------


def test_a_fresh_order_fires_flows_and_brings_its_address(event_app: TestClient, ct: FakeCommercetools,
                                                          klaviyo: FakeKlaviyo) -> None:
    seed_catalog(ct)
    order = order_at(datetime.now(UTC) - timedelta(minutes=5))
    assert deliver(event_app, message("order", ORDER_ID, "OrderCreated", order=order)) == 204
    sent = events(klaviyo)
    assert metrics(sent) == KEYS and all("backfill" not in e for e in sent)
    assert metrics(klaviyo.flow_triggers()) == KEYS  # live flows keep working
    assert profile(sent[0])["location"]["city"] == "Berlin"


def test_an_order_older_than_the_age_rule_is_history(event_app: TestClient, ct: FakeCommercetools,
                                                     klaviyo: FakeKlaviyo) -> None:
    seed_catalog(ct)
    ct.add("customers", fixture("customer"))  # history names the customer as they are now
    order = order_at(datetime.now(UTC) - timedelta(hours=25))  # default: 24 hours
    assert deliver(event_app, message("order", ORDER_ID, "OrderCreated", order=order)) == 204
    sent = events(klaviyo)
    assert metrics(sent) == KEYS and [e["backfill"] for e in sent] == [True] * 4
    assert klaviyo.flow_triggers() == []
    assert [profile(e) for e in sent] == [IDENTIFIERS] * 4  # no location from an old billing address


def test_an_imported_order_is_history_however_recent(event_app: TestClient, ct: FakeCommercetools,
                                                     klaviyo: FakeKlaviyo) -> None:
    seed_catalog(ct)
    order = order_at(datetime.now(UTC))
    assert deliver(event_app, message("order", ORDER_ID, "OrderImported", order=order)) == 204
    assert metrics(events(klaviyo)) == KEYS and klaviyo.flow_triggers() == []
    # the request bodies themselves: `backfill` in each create-event request (checked against Klaviyo's spec)
    assert [r.body["data"]["attributes"]["backfill"] for r in klaviyo.calls("POST", "^/api/events$")] == [True] * 4


def test_zero_switches_the_age_rule_off(configure: Callable[..., Settings], ct: FakeCommercetools,
                                        klaviyo: FakeKlaviyo) -> None:
    seed_catalog(ct)
    order = order_at(datetime.now(UTC) - timedelta(days=400))
    with TestClient(create_app(configure({"event": {"backfillAfterHours": 0}}))) as app:
        assert deliver(app, message("order", ORDER_ID, "OrderCreated", order=order)) == 204
    assert metrics(klaviyo.flow_triggers()) == KEYS


def test_a_late_state_change_and_refund_are_history(configure: Callable[..., Settings], ct: FakeCommercetools,
                                                    klaviyo: FakeKlaviyo) -> None:
    seed_catalog(ct)
    order = fixture("order_placed")
    order["orderState"] = "Complete"
    ct.add("orders", order)
    week_ago = iso(datetime.now(UTC) - timedelta(days=7))
    hour_ago = iso(datetime.now(UTC) - timedelta(hours=1))
    with TestClient(create_app(configure({"event": {"backfillAfterHours": 2}}))) as app:
        assert deliver(app, message("order", ORDER_ID, "OrderStateChanged", orderState="Complete",
                                    createdAt=week_ago)) == 204
        assert deliver(app, message("order", ORDER_ID, "OrderStateChanged", orderState="Cancelled",
                                    createdAt=hour_ago)) == 204
    assert [(metrics([e])[0], e.get("backfill")) for e in events(klaviyo)] == [
        ("Fulfilled Order", True), ("Cancelled Order", None)]
    assert metrics(klaviyo.flow_triggers()) == ["Cancelled Order"]


def test_a_dead_letter_replay_of_last_weeks_order_fires_no_flow(event_app: TestClient, ct: FakeCommercetools,
                                                                klaviyo: FakeKlaviyo, cli: Cli) -> None:
    seed_catalog(ct)
    order = order_at(datetime.now(UTC) - timedelta(days=7))
    notification = message("order", ORDER_ID, "OrderCreated", order=order)
    klaviyo.fail_next("POST", "^/api/events$", 400)
    assert deliver(event_app, notification) == 202  # refused for good: a dead letter
    code, out, _ = cli("dead-letters", "replay", "--id", notification["id"])
    assert code == 0 and "processed" in out
    assert metrics(events(klaviyo)) == KEYS
    assert klaviyo.flow_triggers() == []


# --- bulk -----------------------------------------------------------------------------------------------------


def test_every_event_of_the_bulk_import_is_history(ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                                   services: Callable[..., JobService]) -> None:
    seed_catalog(ct)
    ct.add("payments", fixture("payment_refunds"))
    now = iso(datetime.now(UTC))  # even an order of a minute ago: an import is history by nature
    for order in (make_order(1, payments=True, customer_id=CUSTOMER_ID), make_order(2, state="Complete"),
                  make_order(3, state="Cancelled", created=now)):
        ct.add("orders", order)
    service = services()
    service.request("orders", {})
    [summary] = service.run()
    assert summary["status"] == "completed"
    sent = events(klaviyo)
    assert len(sent) == 4 + 2 + 4 + 1 + 4 + 1  # placed + lines, refunds, state events
    assert all(e["backfill"] is True for e in sent)
    assert klaviyo.flow_triggers() == []
    assert all(set(profile(e)) <= {"email", "external_id"} for e in sent)  # no location from old addresses
    bodies = [r.body for r in klaviyo.calls("POST", "^/api/event-bulk-create-jobs$")]
    assert bodies and all(event["attributes"]["backfill"] is True for body in bodies
                          for group in body["data"]["attributes"]["events-bulk-create"]["data"]
                          for event in group["attributes"]["events"]["data"])


# --- configuration --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-1, "24", True])
def test_backfill_after_hours_is_validated(configure: Callable[..., Settings], value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        configure({"event": {"backfillAfterHours": value}})
    assert "event.backfillAfterHours" in str(info.value)


def test_backfill_after_hours_default_and_zero(configure: Callable[..., Settings]) -> None:
    assert configure().backfill_after_hours == 24
    assert configure({"event": {"backfillAfterHours": 0}}).backfill_after_hours == 0
    assert configure({"event": {"backfillAfterHours": 0.5}}).backfill_after_hours == 0.5
