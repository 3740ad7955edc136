"""End to end through the event app: order and payment messages become Klaviyo order events (Placed Order,
Ordered Product, Fulfilled / Cancelled / Refunded Order) exactly as Klaviyo's API expects, each recorded once
however often commercetools delivers the message."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from starlette.testclient import TestClient
from werkzeug import Request, Response

from event.app import create_app
from shared.config import Settings
from tests.builders import message, pubsub
from tests.data import fixture
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo

ORDER_ID = "9f2b6c1e-4d3a-4b8e-9a71-0c5d2e8f4a10"
CUSTOMER_ID = "e54d8233-be41-4ce1-ae2b-3b5e1e1d8a01"
EMAIL = "roberto.smith@example.com"
JEANS_ID = "a7b8c9d0-0000-4000-8000-00000000jean"
SHIRT_ID = "a7b8c9d0-0000-4000-8000-0000000shirt"
PAYMENT_ID = "b1c2d3e4-0000-4000-8000-00000payment1"
REFUND_1 = "e1e2e3e4-0000-4000-8000-00000refund1"
REFUND_2 = "e1e2e3e4-0000-4000-8000-00000refund2"
REFUND_3 = "e1e2e3e4-0000-4000-8000-00000refund3"
CREATED_AT = "2026-11-20T10:00:00.000Z"
LINE_IDS = ["0a1b2c3d-0000-4000-8000-00000000lin1", "0a1b2c3d-0000-4000-8000-00000000lin2",
            "0a1b2c3d-0000-4000-8000-00000000lin3"]
EVENTS_PATH = "/api/events"
PRODUCT_EXPAND = ["masterData.current.categories[*]", "masterData.current.categories[*].ancestors[*]"]
URL = "https://shop.example.com/products/"  # PRODUCT_URL_TEMPLATE in conftest, without {{productSlug}}

JEANS_PATHS = ["Women", "Women > Pants", "Women > Pants > Jeans"]
SHIRT_PATHS = ["Women", "Women > Tops", "Sale"]
CATEGORIES = ["Women", "Women > Pants", "Women > Pants > Jeans", "Women > Tops", "Sale"]  # each prefix once
ITEMS = [
    {"ProductID": JEANS_ID, "SKU": "JEANS-32-BLUE", "ProductName": "Slim Jeans", "Quantity": 2, "ItemPrice": 49.99,
     "RowTotal": 99.98, "ProductURL": URL + "slim-jeans", "ImageURL": "https://images.example.com/jeans-32-front.jpg",
     "Categories": JEANS_PATHS},
    {"ProductID": JEANS_ID, "SKU": "JEANS-34-BLUE", "ProductName": "Slim Jeans", "Quantity": 1, "ItemPrice": 44.99,
     "OriginalItemPrice": 49.99, "RowTotal": 44.99, "ProductURL": URL + "slim-jeans", "ImageURL": "https://images.example.com/jeans-34-front.jpg",
     "Categories": JEANS_PATHS},
    # No productSlug on the line: the product's published slug (not the staged `linen-shirt-new`); no image.
    {"ProductID": SHIRT_ID, "SKU": "SHIRT-M-WHITE", "ProductName": "Linen Shirt", "Quantity": 1, "ItemPrice": 19.9,
     "RowTotal": 19.9, "ProductURL": URL + "linen-shirt", "Categories": SHIRT_PATHS},
]
LOCATION = {"address1": "Hinterhaus, 12, Torstraße", "address2": "2. Hof", "city": "Berlin", "country": "DE",
            "region": "Berlin", "zip": "10119"}
PROFILE = {"data": {"type": "profile", "attributes": {"email": EMAIL, "external_id": CUSTOMER_ID}}}
ERASURE_READ = ("GET", f"/test-project/custom-objects/klaviyo-connector-erasures/{CUSTOMER_ID}")
CUSTOMER_READ = ("GET", f"/test-project/customers/{CUSTOMER_ID}")


@pytest.fixture
def settings(configure: Callable[..., Settings]) -> Settings:
    """The fixtures' orders are of November 2026, older than `event.backfillAfterHours` when the tests run: the
    age rule is off here, so that these events are fresh (tests/test_history.py covers the rule)."""
    return configure({"event": {"backfillAfterHours": 0}})


# --- helpers --------------------------------------------------------------------------------------------------


def metric(name: str) -> dict[str, Any]:
    return {"data": {"type": "metric", "attributes": {"name": name}}}


def stored(value: Any) -> Any:
    """A resource as commercetools stores it: references without the `obj` an expansion adds."""
    if isinstance(value, dict):
        return {k: stored(v) for k, v in value.items() if k != "obj"}
    if isinstance(value, list):
        return [stored(v) for v in value]
    return value


def seed_catalog(ct: FakeCommercetools) -> None:
    for name in ("category_women", "category_pants", "category_jeans", "e2e_category_tops", "e2e_category_sale"):
        ct.add("categories", fixture(name))
    for name in ("product_jeans", "product_shirt"):
        ct.add("products", stored(fixture(name)))


def payment_with(*transaction_ids: str) -> dict[str, Any]:
    """The payment fixture with only the named transactions (the charge is always first)."""
    payment = fixture("payment_refunds")
    payment["transactions"] = [t for t in payment["transactions"] if t["id"] in transaction_ids]
    return payment


def refund(transaction_id: str) -> dict[str, Any]:
    return next(t for t in fixture("payment_refunds")["transactions"] if t["id"] == transaction_id)


def post(app: TestClient, notification: dict[str, Any]) -> int:
    return app.post("/", json=pubsub(notification)).status_code


def sent(klaviyo: FakeKlaviyo) -> list[dict[str, Any]]:
    """The attributes of every create-event request Klaviyo accepted, in order (repeats included)."""
    return [r.body["data"]["attributes"] for r in klaviyo.requests
            if r.method == "POST" and r.path == EVENTS_PATH and r.status == 202]


def keys(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(metric name, unique_id) of each event."""
    return [(e["metric"]["data"]["attributes"]["name"], e["unique_id"]) for e in events]


def product_queries(ct: FakeCommercetools) -> list[tuple[str, dict[str, list[str]]]]:
    return [(r.path, {k: v for k, v in r.query.items() if k in ("where", "expand")})
            for r in ct.requests if r.method == "GET" and r.path.startswith("/test-project/products")]


def api_requests(ct: FakeCommercetools) -> list[tuple[str, str, int]]:
    return [(r.method, r.path, r.status) for r in ct.requests if r.path != "/oauth/token"]


def placed_properties(order: dict[str, Any]) -> dict[str, Any]:
    """Default configuration: every order field, then the custom fields at the root, then ours."""
    return {**order, **order["custom"]["fields"], "OrderId": ORDER_ID,
            "ItemNames": ["Slim Jeans", "Linen Shirt", "Gift wrapping"], "Categories": CATEGORIES, "Items": ITEMS}


def placed_order_events(order: dict[str, Any]) -> list[dict[str, Any]]:
    """What Klaviyo must receive for order_placed.json: Placed Order, then one Ordered Product per line item."""
    placed = {
        "properties": placed_properties(order),
        "time": CREATED_AT,
        "value": 174.37,
        "value_currency": "EUR",
        "unique_id": ORDER_ID,
        "metric": metric("Placed Order"),
        "profile": {"data": {"type": "profile", "attributes": {
            "email": EMAIL, "external_id": CUSTOMER_ID, "location": LOCATION}}},
    }
    products = [{
        "properties": {**line, **ITEMS[i], "OrderId": ORDER_ID},
        "time": CREATED_AT,
        "value": [99.98, 44.99, 19.9][i],
        "value_currency": "EUR",
        "unique_id": LINE_IDS[i],
        "metric": metric("Ordered Product"),
        "profile": PROFILE,
    } for i, line in enumerate(order["lineItems"])]
    return [placed, *products]


def fail_events_after_the_first(klaviyo: FakeKlaviyo, server: HTTPServer, status: int, times: int,
                                headers: dict[str, str] | None = None) -> None:
    """Once Klaviyo has accepted one event, answer the next `times` create-event requests with `status`.

    The fault is queued before the accepted request is answered, so the connector's very next request meets it.
    """
    armed: list[bool] = []

    def handler(request: Request) -> Response:
        target = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or request.full_path
        answer, out_headers, payload = klaviyo.handle(request.method, target, request.headers.items(),
                                                      request.get_data(), base_url=request.host_url.rstrip("/"))
        if request.path == EVENTS_PATH and answer == 202 and not armed:
            armed.append(True)
            klaviyo.fail_next("POST", EVENTS_PATH, status, times=times, headers=headers)
        return Response(payload, status=answer, headers=out_headers)

    server.clear_all_handlers()
    server.expect_request(re.compile(".*")).respond_with_handler(handler)


# --- Placed Order + Ordered Product ---------------------------------------------------------------------------


@pytest.mark.parametrize("message_type", ["OrderCreated", "OrderImported"])
def test_order_with_three_lines_and_a_custom_line_item(event_app: TestClient, ct: FakeCommercetools,
                                                       klaviyo: FakeKlaviyo, message_type: str) -> None:
    seed_catalog(ct)
    ct.add("customers", fixture("customer"))
    order = fixture("order_placed")
    assert post(event_app, message("order", ORDER_ID, message_type, order=order)) == 204

    # The order came with the message: the reads are the customer's erasure record (an imported order: the
    # customer, for their current email; one who exists was never erased), then the products of all lines, in
    # one query.
    first = CUSTOMER_READ if message_type == "OrderImported" else ERASURE_READ
    assert [(m, p) for m, p, _ in api_requests(ct)] == [first, ("GET", "/test-project/products")]
    assert product_queries(ct) == [("/test-project/products", {
        "where": [f'id in ("{JEANS_ID}", "{SHIRT_ID}")'], "expand": PRODUCT_EXPAND})]
    expected = placed_order_events(order)
    if message_type == "OrderImported":  # history: no flow fires, and the profile gets no old address
        expected = [{**event, "profile": PROFILE, "backfill": True} for event in expected]
    # Exactly these requests, in this order: Placed Order first, then the lines.
    assert [(r.method, r.path, r.body) for r in klaviyo.requests] == [
        ("POST", EVENTS_PATH, {"data": {"type": "event", "attributes": event}}) for event in expected]
    assert keys(klaviyo.recorded_events()) == [("Placed Order", ORDER_ID), *(("Ordered Product", i) for i in LINE_IDS)]


def test_payload_not_included_fetches_the_order(event_app: TestClient, ct: FakeCommercetools,
                                                klaviyo: FakeKlaviyo) -> None:
    seed_catalog(ct)
    ct.add("orders", fixture("order_placed"))
    notification = message("order", ORDER_ID, "OrderCreated",
                           payloadNotIncluded={"reason": "Payload too large", "payloadType": "OrderCreated"})
    assert post(event_app, notification) == 204
    assert [(m, p) for m, p, _ in api_requests(ct)] == [
        ("GET", f"/test-project/orders/{ORDER_ID}"), ERASURE_READ, ("GET", "/test-project/products")]
    assert sent(klaviyo) == placed_order_events(fixture("order_placed"))


def test_order_customer_set_fetches_the_order(event_app: TestClient, ct: FakeCommercetools,
                                              klaviyo: FakeKlaviyo) -> None:
    seed_catalog(ct)
    ct.add("orders", fixture("order_placed"))
    notification = message("order", ORDER_ID, "OrderCustomerSet",
                           customer={"typeId": "customer", "id": CUSTOMER_ID})
    assert post(event_app, notification) == 204
    assert [(m, p) for m, p, _ in api_requests(ct)] == [
        ("GET", f"/test-project/orders/{ORDER_ID}"), ERASURE_READ, ("GET", "/test-project/products")]
    assert sent(klaviyo) == placed_order_events(fixture("order_placed"))


def test_high_precision_money_is_sent_in_major_units(event_app: TestClient, ct: FakeCommercetools,
                                                     klaviyo: FakeKlaviyo) -> None:
    seed_catalog(ct)
    order = fixture("order_high_precision")
    assert post(event_app, message("order", order["id"], "OrderCreated", order=order)) == 204
    placed, line = sent(klaviyo)
    item = {"ProductID": SHIRT_ID, "SKU": "SHIRT-M-WHITE", "ProductName": "Linen Shirt", "Quantity": 3,
            "ItemPrice": 370 / 3, "OriginalItemPrice": 123.45, "RowTotal": 370, "ProductURL": URL + "linen-shirt",
            "Categories": SHIRT_PATHS}
    assert placed["metric"] == metric("Placed Order")
    assert (placed["value"], placed["value_currency"], placed["time"]) == (370, "JPY", "2026-11-21T08:30:00.000Z")
    assert placed["profile"] == {"data": {"type": "profile", "attributes": {
        "email": "hana.sato@example.com", "location": {"city": "Tokyo", "country": "JP"}}}}  # no customer id
    assert placed["properties"]["Items"] == [item]
    assert placed["properties"]["ItemNames"] == ["Linen Shirt"]
    assert line["metric"] == metric("Ordered Product")
    assert (line["value"], line["value_currency"]) == (370, "JPY")
    assert line["unique_id"] == order["lineItems"][0]["id"]
    assert {k: line["properties"][k] for k in item} == item
    assert line["profile"] == {"data": {"type": "profile", "attributes": {"email": "hana.sato@example.com"}}}


def test_order_without_email_or_customer_sends_nothing(event_app: TestClient, ct: FakeCommercetools,
                                                       klaviyo: FakeKlaviyo) -> None:
    seed_catalog(ct)
    order = fixture("order_no_identity")
    assert post(event_app, message("order", order["id"], "OrderCreated", order=order)) == 204
    assert klaviyo.requests == []
    assert api_requests(ct) == []  # decided before reading the products


def test_order_not_in_a_placed_state_sends_nothing(event_app: TestClient, ct: FakeCommercetools,
                                                   klaviyo: FakeKlaviyo) -> None:
    seed_catalog(ct)
    order = fixture("order_placed")
    order["orderState"] = "Confirmed"  # order.states.created.placedOrder is [Open]
    assert post(event_app, message("order", ORDER_ID, "OrderImported", order=order)) == 204
    assert klaviyo.requests == []


@pytest.mark.parametrize("notification", [
    message("order", ORDER_ID, "OrderCustomerSet", customer={"typeId": "customer", "id": CUSTOMER_ID}),
    message("order", ORDER_ID, "OrderCreated",
            payloadNotIncluded={"reason": "Payload too large", "payloadType": "OrderCreated"}),
    message("order", ORDER_ID, "OrderStateChanged", orderState="Complete", oldOrderState="Open"),
], ids=["OrderCustomerSet", "payloadNotIncluded", "OrderStateChanged"])
def test_order_gone_from_commercetools_is_ignored(event_app: TestClient, ct: FakeCommercetools,
                                                  klaviyo: FakeKlaviyo, notification: dict[str, Any]) -> None:
    seed_catalog(ct)
    assert post(event_app, notification) == 204
    assert api_requests(ct) == [("GET", f"/test-project/orders/{ORDER_ID}", 404)]
    assert klaviyo.requests == []


def test_redelivered_order_created_is_recorded_once(event_app: TestClient, ct: FakeCommercetools,
                                                    klaviyo: FakeKlaviyo) -> None:
    seed_catalog(ct)
    notification = message("order", ORDER_ID, "OrderCreated", order=fixture("order_placed"))
    assert post(event_app, notification) == 204
    assert post(event_app, notification) == 204  # Pub/Sub delivers at least once
    assert len(sent(klaviyo)) == 8
    assert klaviyo.recorded_events() == placed_order_events(fixture("order_placed"))


@pytest.mark.parametrize("status, times, headers", [
    (429, 1, {"Retry-After": "30"}),  # longer than the time budget: not waited for
    (500, 4, None),  # every attempt the transport makes
], ids=["429", "500"])
def test_klaviyo_failing_half_way_asks_for_redelivery_without_duplicates(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo, klaviyo_server: HTTPServer,
        status: int, times: int, headers: dict[str, str] | None) -> None:
    seed_catalog(ct)
    notification = message("order", ORDER_ID, "OrderCreated", order=fixture("order_placed"))
    fail_events_after_the_first(klaviyo, klaviyo_server, status, times, headers)
    assert post(event_app, notification) == 503
    assert klaviyo.faults_pending == 0
    assert [r.status for r in klaviyo.requests] == [202, *[status] * times]
    assert keys(sent(klaviyo)) == [("Placed Order", ORDER_ID)]

    assert post(event_app, notification) == 204  # the redelivery sends every event again
    assert keys(sent(klaviyo)) == [("Placed Order", ORDER_ID), ("Placed Order", ORDER_ID),
                                   *(("Ordered Product", i) for i in LINE_IDS)]
    assert klaviyo.recorded_events() == placed_order_events(fixture("order_placed"))  # Placed Order once


def test_order_with_500_lines(event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed_catalog(ct)
    jeans, shirt = (stored(fixture(name)) for name in ("product_jeans", "product_shirt"))
    product_ids = []
    for n in range(100):  # as many distinct products as one query may ask for
        product = copy.deepcopy(jeans if n % 2 == 0 else shirt)
        product.update(id=f"b0b0b0b0-0000-4000-8000-{n:012d}", key=f"product-{n}")
        product["masterData"]["current"]["slug"] = {"en-US": f"product-{n}"}
        product_ids.append(ct.add("products", product)["id"])
    order = fixture("order_placed")
    templates = order["lineItems"]
    lines = []
    for i in range(500):
        n = i % 100
        line = copy.deepcopy(templates[0] if n % 2 == 0 else templates[2])
        line.pop("productSlug", None)  # the URL must then come from the product read from commercetools
        line.update(id=f"0a1b2c3d-0000-4000-8000-{i:012d}", productId=product_ids[n])
        line["variant"]["sku"] = f"SKU-{i:03d}"
        lines.append(line)
    order["lineItems"] = lines
    order["totalPrice"]["centAmount"] = sum(line["totalPrice"]["centAmount"] for line in lines) + 450
    body = json.dumps(pubsub(message("order", ORDER_ID, "OrderCreated", order=order))).encode()
    assert len(body) > 1_048_576

    response = event_app.post("/", content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 204
    assert product_queries(ct) == [("/test-project/products", {
        "where": [f"id in ({', '.join(json.dumps(i) for i in sorted(product_ids))})"], "expand": PRODUCT_EXPAND})]
    events = klaviyo.recorded_events()
    assert keys(events) == [("Placed Order", ORDER_ID), *(("Ordered Product", line["id"]) for line in lines)]
    placed = events[0]
    assert placed["value"] == order["totalPrice"]["centAmount"] / 100
    items = placed["properties"]["Items"]
    assert [item["SKU"] for item in items] == [f"SKU-{i:03d}" for i in range(500)]
    assert [item["ProductURL"] for item in items] == [f"{URL}product-{i % 100}" for i in range(500)]
    assert [item["Categories"] for item in items] == [JEANS_PATHS if i % 2 == 0 else SHIRT_PATHS
                                                      for i in range(500)]
    assert [e["value"] for e in events[1:]] == [99.98 if i % 2 == 0 else 19.9 for i in range(500)]
    # 501 events fit a delivery's time budget only in bulk requests (1,000 events each), not one by one
    assert [(r.method, r.path) for r in klaviyo.requests] == [("POST", "/api/event-bulk-create-jobs")]


# --- Fulfilled / Cancelled Order ------------------------------------------------------------------------------


def test_confirmed_then_complete_is_one_fulfilled_order_and_a_later_cancel_counts(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed_catalog(ct)
    ct.add("customers", fixture("customer"))
    ct.add("orders", fixture("order_placed"))
    times = {"Confirmed": "2026-11-21T09:00:00.000Z", "Complete": "2026-11-22T09:00:00.000Z",
             "Cancelled": "2026-11-23T09:00:00.000Z"}
    old = "Open"
    for state, at in times.items():
        ct.store["orders"][ORDER_ID]["orderState"] = state
        notification = message("order", ORDER_ID, "OrderStateChanged", orderState=state, oldOrderState=old,
                               createdAt=at)
        assert post(event_app, notification) == 204
        old = state

    assert keys(sent(klaviyo)) == [("Fulfilled Order", ORDER_ID), ("Fulfilled Order", ORDER_ID),
                                   ("Cancelled Order", ORDER_ID)]
    recorded = klaviyo.recorded_events()
    assert keys(recorded) == [("Fulfilled Order", ORDER_ID), ("Cancelled Order", ORDER_ID)]
    fulfilled, cancelled = recorded
    assert fulfilled["time"] == times["Confirmed"] and cancelled["time"] == times["Cancelled"]
    for event in recorded:
        assert (event["value"], event["value_currency"], event["profile"]) == (174.37, "EUR", PROFILE)
        properties = event["properties"]
        assert (properties["OrderId"], properties["Items"], properties["Categories"]) == (ORDER_ID, ITEMS, CATEGORIES)
    assert cancelled["properties"]["orderState"] == "Cancelled"  # the order as read when the state changed
    # The products are read once: the event app's product cache serves the later messages. The customer is read
    # for their current email (one who exists was never erased: no erasure read).
    assert [(m, p) for m, p, _ in api_requests(ct)] == [
        ("GET", f"/test-project/orders/{ORDER_ID}"), CUSTOMER_READ, ("GET", "/test-project/products"),
        ("GET", f"/test-project/orders/{ORDER_ID}"), CUSTOMER_READ, ("GET", f"/test-project/orders/{ORDER_ID}"),
        CUSTOMER_READ]


def test_state_change_to_an_unreported_state_sends_nothing(event_app: TestClient, ct: FakeCommercetools,
                                                           klaviyo: FakeKlaviyo) -> None:
    seed_catalog(ct)
    ct.add("orders", fixture("order_placed"))
    notification = message("order", ORDER_ID, "OrderStateChanged", orderState="Open", oldOrderState="Confirmed")
    assert post(event_app, notification) == 204
    assert klaviyo.requests == [] and api_requests(ct) == []


# --- Refunded Order -------------------------------------------------------------------------------------------


def test_two_partial_refunds_are_each_recorded_once(event_app: TestClient, ct: FakeCommercetools,
                                                    klaviyo: FakeKlaviyo) -> None:
    seed_catalog(ct)
    ct.add("customers", fixture("customer"))
    ct.add("orders", fixture("order_placed"))
    ct.add("payments", payment_with("e1e2e3e4-0000-4000-8000-0000000charge"))
    first = message("payment", PAYMENT_ID, "PaymentTransactionAdded", transaction=refund(REFUND_1),
                    createdAt="2026-11-22T09:00:01.000Z")
    ct.store["payments"][PAYMENT_ID]["transactions"].append(refund(REFUND_1))
    assert post(event_app, first) == 204
    ct.store["payments"][PAYMENT_ID]["transactions"].append(refund(REFUND_2))
    assert post(event_app, message("payment", PAYMENT_ID, "PaymentTransactionAdded",
                                   transaction=refund(REFUND_2), createdAt="2026-11-23T09:00:01.000Z")) == 204
    assert post(event_app, first) == 204  # redelivered

    order = fixture("order_placed")
    expected = [{
        "properties": {**placed_properties(order), "TransactionId": transaction, "RefundedTotal": total},
        "time": at,
        "value": value,
        "value_currency": "EUR",
        "unique_id": transaction,
        "metric": metric("Refunded Order"),
        "profile": PROFILE,
    } for transaction, value, total, at in [(REFUND_1, 19.9, 19.9, "2026-11-22T09:00:00.000Z"),
                                            (REFUND_2, 44.99, 64.89, "2026-11-23T09:00:00.000Z")]]
    assert klaviyo.recorded_events() == expected
    assert keys(sent(klaviyo)) == [("Refunded Order", REFUND_1), ("Refunded Order", REFUND_2),
                                   ("Refunded Order", REFUND_1)]
    order_reads = [r.query for r in ct.requests if r.path == "/test-project/orders"]
    assert [(q["where"], q["expand"]) for q in order_reads] == [
        ([f'paymentInfo(payments(id="{PAYMENT_ID}"))'], ["paymentInfo.payments[*]"])] * 3


def test_refund_from_initial_to_success_is_recorded_once(event_app: TestClient, ct: FakeCommercetools,
                                                         klaviyo: FakeKlaviyo) -> None:
    seed_catalog(ct)
    ct.add("orders", fixture("order_placed"))
    ct.add("payments", fixture("payment_refunds"))  # the charge and two refunds done
    third = {"id": REFUND_3, "timestamp": "2026-11-24T09:00:00.000Z", "type": "Refund",
             "amount": {"type": "centPrecision", "currencyCode": "EUR", "centAmount": 1000, "fractionDigits": 2},
             "interactionId": "re_3", "state": "Initial"}
    ct.store["payments"][PAYMENT_ID]["transactions"].append(copy.deepcopy(third))
    assert post(event_app, message("payment", PAYMENT_ID, "PaymentTransactionAdded", transaction=third)) == 204
    for state in ("Pending", "Success"):
        ct.store["payments"][PAYMENT_ID]["transactions"][-1]["state"] = state
        notification = message("payment", PAYMENT_ID, "PaymentTransactionStateChanged", transactionId=REFUND_3,
                               state=state)
        assert post(event_app, notification) == 204

    assert keys(sent(klaviyo)) == [("Refunded Order", REFUND_3)] * 3  # each message is about this refund only
    (recorded,) = klaviyo.recorded_events()
    assert (recorded["value"], recorded["value_currency"], recorded["time"]) == (10, "EUR", third["timestamp"])
    assert recorded["properties"]["OrderId"] == ORDER_ID
    assert recorded["properties"]["TransactionId"] == REFUND_3
    assert recorded["properties"]["RefundedTotal"] == 74.89  # 19.90 + 44.99 earlier, and this one


def test_charge_transaction_sends_nothing(event_app: TestClient, ct: FakeCommercetools,
                                          klaviyo: FakeKlaviyo) -> None:
    seed_catalog(ct)
    ct.add("orders", fixture("order_placed"))
    ct.add("payments", fixture("payment_refunds"))
    charge = fixture("payment_refunds")["transactions"][0]
    assert post(event_app, message("payment", PAYMENT_ID, "PaymentTransactionAdded", transaction=charge)) == 204
    notification = message("payment", PAYMENT_ID, "PaymentTransactionStateChanged", transactionId=charge["id"],
                           state="Success")  # names no type: the payment read tells it is a Charge
    assert post(event_app, notification) == 204
    assert klaviyo.requests == []


# --- routing --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, notification", [
    ("OrderCreated", message("order", ORDER_ID, "OrderCreated", order=fixture("order_placed"))),
    ("OrderStateChanged", message("order", ORDER_ID, "OrderStateChanged", orderState="Complete",
                                  oldOrderState="Open")),
    ("OrderRefunded", message("payment", PAYMENT_ID, "PaymentTransactionAdded", transaction=refund(REFUND_1))),
])
def test_disabled_processors_do_nothing(configure: Callable[..., Settings], ct: FakeCommercetools,
                                        klaviyo: FakeKlaviyo, name: str, notification: dict[str, Any]) -> None:
    seed_catalog(ct)
    ct.add("orders", fixture("order_placed"))
    ct.add("payments", fixture("payment_refunds"))  # everything an enabled processor would need
    with TestClient(create_app(configure({"disabledEvents": [name]}))) as app:
        assert post(app, notification) == 204
    assert klaviyo.requests == [] and api_requests(ct) == []
    with TestClient(create_app(configure())) as app:  # the control: enabled, the same delivery sends
        assert post(app, notification) == 204
    assert sent(klaviyo)
