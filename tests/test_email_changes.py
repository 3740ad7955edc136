"""An order placed before its customer changed their email does not set the old email back.

Klaviyo finds an event's profile by external id (the customer id) and replaces its email with the event's. So the
events of a registered customer's order carry the customer's current email, read from commercetools (in batches per
page in the bulk import, one read per realtime delivery), not the order's copy, except a fresh `OrderCreated`,
whose email is current by definition and costs no extra read. A customer gone from commercetools without an
erasure record gets events with the external id only; guest orders keep their email."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from event.app import create_app
from job.service import JobService
from shared.config import Settings
from tests.builders import message, pubsub
from tests.data import fixture
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo
from tests.test_job_support import make_order, seed_catalog

CUSTOMER_ID = "e54d8233-be41-4ce1-ae2b-3b5e1e1d8a01"
GONE_ID = "e54d8233-0000-4000-8000-0000000000ne"  # deleted with customer.deletion.enabled false: no record
ORDER_ID = "9f2b6c1e-4d3a-4b8e-9a71-0c5d2e8f4a10"
PAYMENT_ID = "b1c2d3e4-0000-4000-8000-00000payment1"
REFUND_ID = "e1e2e3e4-0000-4000-8000-00000refund1"
OLD = "roberto.smith@example.com"  # the orders' copy
NEW = "roberto.new@example.com"
GUEST = "guest@example.com"
ERASURES = "/test-project/custom-objects/klaviyo-connector-erasures"


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def deliver(app: TestClient, notification: dict[str, Any]) -> tuple[int, str]:
    response = app.post("/", json=pubsub(notification))
    return response.status_code, response.headers.get("x-outcome", "")


def event_profiles(klaviyo: FakeKlaviyo) -> list[dict[str, Any]]:
    return [e["profile"]["data"]["attributes"] for e in klaviyo.recorded_events()]


def theirs(klaviyo: FakeKlaviyo) -> list[dict[str, Any]]:
    """Every profile holding the customer's id or either of their emails, once every accepted job ran."""
    klaviyo.settle()
    return [p for p in klaviyo.profiles.values()
            if p.get("external_id") == CUSTOMER_ID or str(p.get("email", "")).lower() in (OLD, NEW)]


def seed_customer(ct: FakeCommercetools) -> None:
    """The customer as commercetools has them now: their email changed since their orders were placed."""
    ct.add("customers", {**fixture("customer"), "email": NEW})


# --- bulk -----------------------------------------------------------------------------------------------------


def test_bulk_order_import_keeps_the_customers_current_email(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, services: Callable[..., JobService]) -> None:
    seed_catalog(ct)
    seed_customer(ct)
    ct.add("payments", fixture("payment_refunds"))
    service = services({"job": {"pageSize": 2}})
    service.request("customers", {})
    assert service.run(types=("customers",))[0]["status"] == "completed"
    [imported_profile] = theirs(klaviyo)
    assert imported_profile["email"] == NEW and imported_profile["phone_number"]

    # Pages of two (sorted by id): [theirs, theirs], [guest, a customer gone without an erasure record].
    for order in (make_order(1, customer_id=CUSTOMER_ID, email=OLD, state="Complete", payments=True),
                  make_order(2, customer_id=CUSTOMER_ID, email=OLD.upper()),
                  make_order(3, email=GUEST),
                  make_order(4, customer_id=GONE_ID, email="gone@example.com")):
        ct.add("orders", order)
    before = len(ct.requests)
    service.request("orders", {})
    [summary] = service.run(types=("orders",))
    assert summary["status"] == "completed" and summary["counts"]["skipped"] == 0

    [profile] = theirs(klaviyo)  # the reproduction: the only profile had the old email afterwards
    assert (profile["email"], profile["phone_number"]) == (NEW, imported_profile["phone_number"])
    profiles = event_profiles(klaviyo)
    assert len(profiles) == (4 + 1 + 2) + 4 + 4 + 4  # order 1: placed + lines, its state, its refunds
    assert profiles.count({"email": NEW, "external_id": CUSTOMER_ID}) == 11
    assert profiles.count({"email": GUEST}) == 4  # a guest order keeps its email
    assert profiles.count({"external_id": GONE_ID}) == 4  # gone, not erased: the external id only
    assert not any(p.get("email") == "gone@example.com" for p in klaviyo.profiles.values())

    requests = ct.requests[before:]
    customer_queries = [r.query["where"] for r in requests if r.path == "/test-project/customers"]
    assert customer_queries == [[f'id in ("{CUSTOMER_ID}")'], [f'id in ("{GONE_ID}")']]  # one per page
    erasure_queries = [r.query["where"][0] for r in requests if r.path == ERASURES]
    # The first page's customers exist, so were never erased: only the second page looks up erasure records.
    assert len(erasure_queries) == 1 and GONE_ID in erasure_queries[0] and CUSTOMER_ID not in erasure_queries[0]
    assert not [r for r in requests if r.path.startswith("/test-project/customers/")]  # no read per order


# --- realtime -------------------------------------------------------------------------------------------------


def state_changed(ct: FakeCommercetools) -> dict[str, Any]:
    ct.add("orders", {**fixture("order_placed"), "orderState": "Complete"})
    return message("order", ORDER_ID, "OrderStateChanged", orderState="Complete", oldOrderState="Open",
                   createdAt=iso(datetime.now(UTC)))


def refunded(ct: FakeCommercetools) -> dict[str, Any]:
    ct.add("orders", fixture("order_placed"))
    ct.add("payments", fixture("payment_refunds"))
    return message("payment", PAYMENT_ID, "PaymentTransactionAdded", createdAt=iso(datetime.now(UTC)),
                   transaction={"id": REFUND_ID, "type": "Refund", "state": "Success"})


def imported(ct: FakeCommercetools) -> dict[str, Any]:
    return message("order", ORDER_ID, "OrderImported", order=fixture("order_placed"))


def late_created(ct: FakeCommercetools) -> dict[str, Any]:
    """A week-old OrderCreated (a late delivery, a dead-letter replay): history, older than the email."""
    order = {**fixture("order_placed"), "createdAt": iso(datetime.now(UTC) - timedelta(days=7))}
    return message("order", ORDER_ID, "OrderCreated", order=order)


@pytest.mark.parametrize("notification", [state_changed, refunded, imported, late_created])
def test_realtime_events_about_an_older_order_keep_the_current_email(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo,
        notification: Callable[[FakeCommercetools], dict[str, Any]]) -> None:
    seed_catalog(ct)
    seed_customer(ct)
    assert deliver(event_app, message("customer", CUSTOMER_ID, "CustomerCreated")) == (204, "processed")
    assert [p["email"] for p in theirs(klaviyo)] == [NEW]

    sent = notification(ct)
    before = len(ct.requests)
    assert deliver(event_app, sent) == (204, "processed")
    [profile] = theirs(klaviyo)
    assert profile["email"] == NEW
    assert event_profiles(klaviyo) and all(p == {"email": NEW, "external_id": CUSTOMER_ID}
                                           for p in event_profiles(klaviyo))
    # One customer read; a customer who exists was never erased, so no erasure read.
    reads = [r.path for r in ct.requests[before:] if r.path != "/oauth/token"]
    assert reads.count(f"/test-project/customers/{CUSTOMER_ID}") == 1
    assert not [p for p in reads if p.startswith(ERASURES)]


def test_a_fresh_order_created_reads_no_customer(event_app: TestClient, ct: FakeCommercetools,
                                                 klaviyo: FakeKlaviyo) -> None:
    seed_catalog(ct)
    seed_customer(ct)
    order = {**fixture("order_placed"), "customerEmail": NEW, "createdAt": iso(datetime.now(UTC))}
    before = len(ct.requests)
    assert deliver(event_app, message("order", ORDER_ID, "OrderCreated", order=order)) == (204, "processed")
    reads = [r.path for r in ct.requests[before:] if r.path != "/oauth/token"]
    assert reads == [f"{ERASURES}/{CUSTOMER_ID}", "/test-project/products"]  # as before: no customer read
    assert {p["email"] for p in event_profiles(klaviyo)} == {NEW}


def test_a_guest_orders_state_change_keeps_its_email(event_app: TestClient, ct: FakeCommercetools,
                                                     klaviyo: FakeKlaviyo) -> None:
    seed_catalog(ct)
    seed_customer(ct)
    guest = {**fixture("order_placed"), "orderState": "Complete", "customerEmail": GUEST}
    del guest["customerId"]
    ct.add("orders", guest)
    before = len(ct.requests)
    notification = message("order", ORDER_ID, "OrderStateChanged", orderState="Complete", oldOrderState="Open")
    assert deliver(event_app, notification) == (204, "processed")
    assert event_profiles(klaviyo) == [{"email": GUEST}]
    reads = [r.path for r in ct.requests[before:] if r.path != "/oauth/token"]
    assert not [p for p in reads if p.startswith("/test-project/customers")]
    assert reads.count(ERASURES) == 1  # the erasure look-up by the email's hash, as before


def test_a_customer_deleted_without_erasure_gets_the_external_id_only(
        configure: Callable[..., Settings], ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed_catalog(ct)
    klaviyo.add_profile({"email": NEW, "external_id": CUSTOMER_ID})
    with TestClient(create_app(configure({"customer": {"deletion": {"enabled": False}}}))) as app:
        assert deliver(app, message("customer", CUSTOMER_ID, "CustomerDeleted")) == (204, "ignored")
        before = len(ct.requests)
        assert deliver(app, state_changed(ct)) == (204, "processed")
    assert event_profiles(klaviyo) == [{"external_id": CUSTOMER_ID}]
    assert [p["email"] for p in theirs(klaviyo)] == [NEW]
    reads = [r.path for r in ct.requests[before:] if r.path != "/oauth/token"]
    assert reads[:3] == [f"/test-project/orders/{ORDER_ID}", f"/test-project/customers/{CUSTOMER_ID}",
                         f"{ERASURES}/{CUSTOMER_ID}"]  # gone: the erasure record is looked up too
