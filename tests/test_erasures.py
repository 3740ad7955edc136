"""Erased means erased: after a customer's deletion (customer.deletion.enabled) an erasure record (customer id and
a keyed hash of the email, never the email) stops every later profile write and event about them, in realtime,
bulk and dead-letter replay, guest orders with the erased email included; the dead letters holding their data
are removed at deletion time; operators list and remove records with `python -m job erasures`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from event.app import create_app
from job.service import JobService
from shared.config import Settings
from shared.dead_letters import CONTAINER as DEAD_LETTERS
from tests.builders import change, message, pubsub
from tests.conftest import Cli
from tests.data import fixture
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo
from tests.test_job_support import make_customer, make_order, seed_catalog

CUSTOMER_ID = "e54d8233-be41-4ce1-ae2b-3b5e1e1d8a01"
ORDER_ID = "9f2b6c1e-4d3a-4b8e-9a71-0c5d2e8f4a10"
PAYMENT_ID = "b1c2d3e4-0000-4000-8000-00000payment1"
EMAIL = "roberto.smith@example.com"
CONTAINER = "klaviyo-connector-erasures"  # as README documents them
KEY_CONTAINER = "klaviyo-connector-keys"


def container(ct: FakeCommercetools, name: str) -> dict[str, dict[str, Any]]:
    return {o["key"]: o["value"] for o in ct.store["custom-objects"].values() if o["container"] == name}


def deliver(app: TestClient, notification: dict[str, Any]) -> tuple[int, str, str]:
    response = app.post("/", json=pubsub(notification))
    return response.status_code, response.headers.get("x-outcome", ""), response.headers.get("x-outcome-reason", "")


def assert_no_profile_of_them(klaviyo: FakeKlaviyo) -> None:
    """The erased person has no profile in Klaviyo, once every accepted job is processed: events carry the email
    and the customer id, and Klaviyo creates a profile from every event's profile."""
    klaviyo.settle()
    theirs = [p for p in klaviyo.profiles.values()
              if str(p.get("email", "")).lower() == EMAIL or p.get("external_id") == CUSTOMER_ID]
    assert theirs == []


def metrics(klaviyo: FakeKlaviyo) -> list[str]:
    return [e["metric"]["data"]["attributes"]["name"] for e in klaviyo.recorded_events()]


@pytest.fixture
def apps(configure: Callable[..., Settings]) -> Iterator[Callable[..., TestClient]]:
    """Event app instances (each its own process state), closed afterwards."""
    clients: list[TestClient] = []

    def make(config: dict[str, Any] | None = None) -> TestClient:
        client = TestClient(create_app(configure({"event": {"backfillAfterHours": 0}, **(config or {})})))
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def seed(ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> str:
    """The customer (in commercetools and Klaviyo), an old order of theirs with a refunded payment."""
    seed_catalog(ct)
    ct.add("customers", fixture("customer"))
    order = fixture("order_placed")
    order["orderState"] = "Complete"
    ct.add("orders", order)
    ct.add("payments", fixture("payment_refunds"))
    return klaviyo.add_profile({"email": EMAIL, "external_id": CUSTOMER_ID})


def erase(app: TestClient, ct: FakeCommercetools, notification_type: str = "CustomerDeleted") -> None:
    ct.store["customers"].pop(CUSTOMER_ID)
    notification = message("customer", CUSTOMER_ID, "CustomerDeleted") if notification_type == "CustomerDeleted" \
        else change("ResourceDeleted", "customer", CUSTOMER_ID, version=9)
    assert deliver(app, notification)[:2] == (204, "processed")


# --- realtime -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("deletion", ["CustomerDeleted", "ResourceDeleted"])
def test_nothing_about_an_erased_customer_reaches_klaviyo(apps: Callable[..., TestClient], ct: FakeCommercetools,
                                                          klaviyo: FakeKlaviyo, deletion: str) -> None:
    seed(ct, klaviyo)
    app = apps()
    erase(app, ct, deletion)
    assert klaviyo.profiles == {} and len(klaviyo.deletions) == 1

    (record,) = container(ct, CONTAINER).values()
    assert record["customerId"] == CUSTOMER_ID and re.fullmatch(r"[0-9a-f]{64}", record["emailHash"])
    everything = json.dumps(list(o for o in ct.store["custom-objects"].values()))
    assert "roberto" not in everything.lower()  # never the email in clear

    later = [
        message("order", ORDER_ID, "OrderStateChanged", orderState="Complete", oldOrderState="Open"),
        message("payment", PAYMENT_ID, "PaymentTransactionAdded",
                transaction={"id": "e1e2e3e4-0000-4000-8000-00000refund1", "type": "Refund", "state": "Success"}),
        message("order", ORDER_ID, "OrderCreated", order=fixture("order_placed")),  # a late delivery
        message("customer", CUSTOMER_ID, "CustomerCreated", customer=fixture("customer")),  # late
        change("ResourceUpdated", "customer", CUSTOMER_ID, version=3),
    ]
    fresh = apps()  # another instance, which never saw the deletion
    for notification in later:
        status, outcome, reason = deliver(fresh, notification)
        assert (status, outcome) == (204, "ignored")
        assert "erased" in reason or "no longer exists" in reason
        assert EMAIL not in reason
    assert klaviyo.recorded_events() == [] and klaviyo.profiles == {}
    assert_no_profile_of_them(klaviyo)
    assert [r.path for r in klaviyo.requests if r.method == "POST"] == ["/api/data-privacy-deletion-jobs"]


def test_a_guest_order_with_the_erased_email_is_skipped(apps: Callable[..., TestClient], ct: FakeCommercetools,
                                                        klaviyo: FakeKlaviyo) -> None:
    seed(ct, klaviyo)
    erase(apps(), ct)
    guest = fixture("order_placed")
    guest.update(id="9f2b6c1e-0000-4000-8000-00000000gst1", customerEmail="Roberto.Smith@Example.COM")
    del guest["customerId"]
    other = fixture("order_placed")
    other.update(id="9f2b6c1e-0000-4000-8000-00000000gst2", customerEmail="someone.else@example.com")
    del other["customerId"]
    app = apps()  # another instance: it reads the same hash key
    status, outcome, reason = deliver(app, message("order", guest["id"], "OrderCreated", order=guest))
    assert (status, outcome) == (204, "ignored") and "erased" in reason
    assert deliver(app, message("order", other["id"], "OrderCreated", order=other))[:2] == (204, "processed")
    assert {e["profile"]["data"]["attributes"]["email"] for e in klaviyo.recorded_events()} == {
        "someone.else@example.com"}
    assert_no_profile_of_them(klaviyo)
    assert [p["email"] for p in klaviyo.profiles.values()] == ["someone.else@example.com"]
    assert len(container(ct, KEY_CONTAINER)) == 1  # one key for every instance


def test_one_extra_read_per_order_delivery(apps: Callable[..., TestClient], ct: FakeCommercetools,
                                           klaviyo: FakeKlaviyo) -> None:
    seed(ct, klaviyo)
    app = apps()
    order = fixture("order_placed")
    order["id"] = "9f2b6c1e-0000-4000-8000-0000000fresh"
    before = len(ct.requests)
    assert deliver(app, message("order", order["id"], "OrderCreated", order=order))[:2] == (204, "processed")
    reads = [r.path for r in ct.requests[before:] if r.path != "/oauth/token"]
    assert reads == [f"/test-project/custom-objects/{CONTAINER}/{CUSTOMER_ID}", "/test-project/products"]


def test_dead_letters_holding_the_customers_data_are_removed_at_deletion(
        apps: Callable[..., TestClient], ct: FakeCommercetools, klaviyo: FakeKlaviyo, cli: Cli) -> None:
    seed(ct, klaviyo)
    app = apps()
    theirs = message("order", ORDER_ID, "OrderCreated", order=fixture("order_placed"))
    someone = json.loads(json.dumps(fixture("order_placed")).replace(EMAIL, "someone.else@example.com"))
    someone["id"] = "9f2b6c1e-0000-4000-8000-00000someone"
    del someone["customerId"]
    others = message("order", someone["id"], "OrderCreated", order=someone)
    refund = message("payment", PAYMENT_ID, "PaymentTransactionAdded",  # names neither the customer nor the email
                     transaction={"id": "e1e2e3e4-0000-4000-8000-00000refund1", "type": "Refund", "state": "Success"})
    for notification in (theirs, others, refund):
        klaviyo.fail_next("POST", "^/api/events$", 400)
        assert deliver(app, notification)[:2] == (202, "failed")
    assert set(container(ct, DEAD_LETTERS)) == {theirs["id"], others["id"], refund["id"]}

    erase(app, ct)
    assert set(container(ct, DEAD_LETTERS)) == {others["id"], refund["id"]}

    code, out, _ = cli("dead-letters", "replay", "--all")  # the refund is skipped: its order's customer is erased
    assert code == 0 and f"{refund['id']}: ignored" in out and f"{others['id']}: processed" in out
    assert {e["profile"]["data"]["attributes"]["email"] for e in klaviyo.recorded_events()} == {
        "someone.else@example.com"}
    assert_no_profile_of_them(klaviyo)


def test_deletion_switched_off_keeps_no_record(apps: Callable[..., TestClient], ct: FakeCommercetools,
                                               klaviyo: FakeKlaviyo) -> None:
    seed(ct, klaviyo)
    app = apps({"customer": {"deletion": {"enabled": False}}})
    ct.store["customers"].pop(CUSTOMER_ID)
    assert deliver(app, message("customer", CUSTOMER_ID, "CustomerDeleted"))[:2] == (204, "ignored")
    assert container(ct, CONTAINER) == {} and klaviyo.deletions == []


# --- bulk -----------------------------------------------------------------------------------------------------


def test_bulk_imports_skip_erased_customers_and_count_them(
        apps: Callable[..., TestClient], ct: FakeCommercetools, klaviyo: FakeKlaviyo,
        services: Callable[..., JobService]) -> None:
    seed(ct, klaviyo)
    erase(apps(), ct)
    ct.store["orders"].clear()
    theirs = make_order(1, customer_id=CUSTOMER_ID, email=EMAIL)
    guest = make_order(2, email="ROBERTO.SMITH@example.com")  # their email, without a customer
    kept = [make_order(n) for n in range(3, 7)]
    for order in (theirs, guest, *kept):
        ct.add("orders", order)
    service = services({"job": {"pageSize": 3}})
    service.request("orders", {})
    [summary] = service.run()
    assert summary["status"] == "completed"
    assert summary["counts"]["skipped"] == 2 and summary["counts"]["erased"] == 2
    assert {e["profile"]["data"]["attributes"]["email"] for e in klaviyo.recorded_events()} == {
        o["customerEmail"] for o in kept}
    assert_no_profile_of_them(klaviyo)
    assert sorted(p["email"] for p in klaviyo.profiles.values()) == sorted(o["customerEmail"] for o in kept)
    erasure_queries = ct.find_requests("GET", rf"^/test-project/custom-objects/{CONTAINER}$")
    assert len(erasure_queries) == 2  # one per page of orders

    # A customer erased while a customers import runs (still on a page read before): skipped too.
    survivor = make_customer(1)
    ct.add("customers", survivor)
    ct.add("customers", {**fixture("customer"), "id": CUSTOMER_ID})  # as read before the deletion
    service.request("customers", {})
    [summary] = service.run(types=("customers",))
    assert summary["counts"]["erased"] == 1 and summary["counts"]["skipped"] == 1
    assert_no_profile_of_them(klaviyo)
    assert [p["external_id"] for p in klaviyo.profiles.values() if p.get("external_id")] == [survivor["id"]]


# --- operator -------------------------------------------------------------------------------------------------


def test_operators_list_and_remove_erasure_records(apps: Callable[..., TestClient], ct: FakeCommercetools,
                                                   klaviyo: FakeKlaviyo, cli: Cli) -> None:
    seed(ct, klaviyo)
    erase(apps(), ct)
    code, out, _ = cli("erasures", "list")
    (record,) = container(ct, CONTAINER).values()
    assert code == 0 and CUSTOMER_ID in out and record["emailHash"] in out and "roberto" not in out.lower()
    code, _, err = cli("erasures", "remove", "--id", "no-such-customer")
    assert code == 2 and "no-such-customer" in err
    code, out, _ = cli("erasures", "remove", "--id", CUSTOMER_ID)
    assert code == 0 and f"{CUSTOMER_ID}: removed" in out
    assert container(ct, CONTAINER) == {}
    assert cli("erasures", "list")[1].strip() == "no erasure records"
