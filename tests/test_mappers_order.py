"""Order mappers: commercetools order (+ products, payments) in, Klaviyo create-event attributes out."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

import pytest

from shared.config import PropertyFilter, Settings, load_settings
from shared.mappers import order as order_mapper
from shared.mappers.order import (
    fit_properties,
    item_names,
    items,
    order_categories,
    order_profile,
    order_state_event,
    ordered_products,
    placed_order,
    placed_order_events,
    product_categories,
    product_ids,
    refunded_order,
    refunded_total,
    state_metric,
)
from tests.data import fixture

ENV = {
    "CT_API_URL": "https://api.europe-west1.gcp.commercetools.com",
    "CT_AUTH_URL": "https://auth.europe-west1.gcp.commercetools.com",
    "CT_PROJECT_ID": "shop",
    "CT_API_CLIENT": json.dumps({"clientId": "client-id-1", "secret": "very-secret-value"}),
    "KLAVIYO_AUTH_KEY": "pk_secret_key_123",
    "PREFERRED_LOCALE": "en-US",
    "PRODUCT_URL_TEMPLATE": "https://shop.example.com/p/{{productSlug}}",
}
SETTINGS = load_settings(ENV)
NO_FILTER = PropertyFilter()

ORDER_ID = "9f2b6c1e-4d3a-4b8e-9a71-0c5d2e8f4a10"
CUSTOMER_ID = "e54d8233-be41-4ce1-ae2b-3b5e1e1d8a01"
EMAIL = "roberto.smith@example.com"
JEANS_ID = "a7b8c9d0-0000-4000-8000-00000000jean"
SHIRT_ID = "a7b8c9d0-0000-4000-8000-0000000shirt"
PAYMENT_ID = "b1c2d3e4-0000-4000-8000-00000payment1"
REFUND_1 = "e1e2e3e4-0000-4000-8000-00000refund1"
REFUND_2 = "e1e2e3e4-0000-4000-8000-00000refund2"
CREATED_AT = "2026-11-20T10:00:00.000Z"

JEANS_PATHS = ["Women", "Women > Pants", "Women > Pants > Jeans"]
SHIRT_PATHS = ["Women", "Women > Tops", "Sale"]
ITEMS = [
    {"ProductID": JEANS_ID, "SKU": "JEANS-32-BLUE", "ProductName": "Slim Jeans", "Quantity": 2, "ItemPrice": 49.99,
     "RowTotal": 99.98, "ProductURL": "https://shop.example.com/p/slim-jeans",
     "ImageURL": "https://images.example.com/jeans-32-front.jpg", "Categories": JEANS_PATHS},
    {"ProductID": JEANS_ID, "SKU": "JEANS-34-BLUE", "ProductName": "Slim Jeans", "Quantity": 1, "ItemPrice": 44.99,
     "OriginalItemPrice": 49.99, "RowTotal": 44.99, "ProductURL": "https://shop.example.com/p/slim-jeans",
     "ImageURL": "https://images.example.com/jeans-34-front.jpg", "Categories": JEANS_PATHS},
    # No productSlug on the line: the product's current slug; no image: no ImageURL.
    {"ProductID": SHIRT_ID, "SKU": "SHIRT-M-WHITE", "ProductName": "Linen Shirt", "Quantity": 1, "ItemPrice": 19.9,
     "RowTotal": 19.9, "ProductURL": "https://shop.example.com/p/linen-shirt", "Categories": SHIRT_PATHS},
]
LOCATION = {"address1": "Hinterhaus, 12, Torstraße", "address2": "2. Hof", "city": "Berlin", "country": "DE",
            "region": "Berlin", "zip": "10119"}
PROFILE = {"data": {"type": "profile", "attributes": {"email": EMAIL, "external_id": CUSTOMER_ID}}}


def metric(name: str) -> dict[str, Any]:
    return {"data": {"type": "metric", "attributes": {"name": name}}}


def products() -> dict[str, dict[str, Any]]:
    return {JEANS_ID: fixture("product_jeans"), SHIRT_ID: fixture("product_shirt")}


def with_filters(order_rules: PropertyFilter = NO_FILTER, custom_rules: PropertyFilter = NO_FILTER) -> Settings:
    return replace(SETTINGS, order=replace(SETTINGS.order, properties=order_rules, custom_fields=custom_rules))


def paid_order(*payments: dict[str, Any]) -> dict[str, Any]:
    """The order as `orders?where=paymentInfo(payments(id=...))&expand=paymentInfo.payments[*]` returns it."""
    order = fixture("order_placed")
    payments = payments or (fixture("payment_refunds"),)
    order["paymentInfo"]["payments"] = [{"typeId": "payment", "id": p["id"], "obj": p} for p in payments]
    return order


# --- Placed Order -------------------------------------------------------------------------------------------


def test_placed_order_exact_payload_with_include_exclude_map() -> None:
    settings = with_filters(
        PropertyFilter(include=("id", "orderNumber", "orderState", "customerEmail", "totalPrice", "paymentInfo",
                                "missing"),
                       exclude=("customerEmail",), rename={"id": "orderId"}),
        PropertyFilter(include=("includedField", "ignoredField", "isGift", "loyaltyPoints", "giftMessage"),
                       exclude=("ignoredField",), rename={"includedField": "includedFieldAfterMap"}),
    )
    assert placed_order(paid_order(), products(), settings) == {
        "properties": {
            "orderId": ORDER_ID,
            "orderNumber": "DE-100042",
            "orderState": "Open",
            "totalPrice": {"type": "centPrecision", "currencyCode": "EUR", "centAmount": 17437, "fractionDigits": 2},
            "paymentInfo": {"payments": [{"typeId": "payment", "id": PAYMENT_ID}]},  # expansion removed
            "includedFieldAfterMap": "kept",
            "isGift": False,  # falsy custom-field values survive (the reference dropped them)
            "loyaltyPoints": 0,
            "giftMessage": "",
            "OrderId": ORDER_ID,
            "ItemNames": ["Slim Jeans", "Linen Shirt", "Gift wrapping"],
            "Categories": ["Women", "Women > Pants", "Women > Pants > Jeans", "Women > Tops", "Sale"],
            "Items": ITEMS,
        },
        "time": CREATED_AT,
        "value": 174.37,
        "value_currency": "EUR",
        "unique_id": ORDER_ID,
        "metric": metric("Placed Order"),
        "profile": {"data": {"type": "profile", "attributes": {
            "email": EMAIL, "external_id": CUSTOMER_ID, "location": LOCATION}}},
    }


def test_placed_order_without_rules_keeps_every_order_field_like_the_reference() -> None:
    order = fixture("order_placed")
    properties = placed_order(order, products(), SETTINGS)["properties"]
    assert {k: properties[k] for k in order if k != "custom"} == {k: v for k, v in order.items() if k != "custom"}
    assert properties["custom"] == order["custom"]  # the raw `custom` field too, as the reference sent it
    assert properties["lineItems"] == order["lineItems"]  # raw lines next to Items unless excluded
    assert {k: properties[k] for k in order["custom"]["fields"]} == order["custom"]["fields"]
    assert properties["Items"] == ITEMS
    assert set(properties) == {*order, *order["custom"]["fields"], "OrderId", "ItemNames", "Categories", "Items"}


def test_custom_fields_shadow_order_fields_and_our_properties_win() -> None:
    order = fixture("order_placed")
    order["custom"]["fields"].update({"orderNumber": "from-custom", "Items": "from-custom"})
    properties = placed_order(order, products(), SETTINGS)["properties"]
    assert properties["orderNumber"] == "from-custom"
    assert properties["Items"] == ITEMS


def test_item_names_include_custom_line_items_and_follow_the_locale() -> None:
    order = fixture("order_placed")
    assert item_names(order, "en-US") == ["Slim Jeans", "Linen Shirt", "Gift wrapping"]
    assert item_names(order, "de-DE") == ["Schmale Jeans", "Leinenhemd", "Geschenkverpackung"]


def test_categories_are_unique_prefix_paths_in_line_order() -> None:
    order = fixture("order_placed")
    assert product_ids(order) == [JEANS_ID, SHIRT_ID]
    reversed_products = dict(reversed(list(products().items())))
    assert order_categories(order, reversed_products, "en-US") == [
        "Women", "Women > Pants", "Women > Pants > Jeans", "Women > Tops", "Sale"]
    assert order_categories(order, products(), "de-DE")[:3] == ["Damen", "Damen > Hosen", "Damen > Hosen > Jeans"]


def test_unexpanded_or_missing_products_and_categories_cost_only_their_data() -> None:
    shirt = fixture("product_shirt")
    del shirt["masterData"]["current"]["categories"][0]["obj"]
    assert product_categories(shirt, "en-US") == ["Sale"]
    assert product_categories(None, "en-US") == []
    order = fixture("order_placed")
    no_products = items(order, {}, SETTINGS)
    assert no_products[0]["Categories"] == [] and no_products[0]["ProductURL"].endswith("/slim-jeans")
    assert "ProductURL" not in no_products[2]  # neither line nor product slug


def test_no_product_url_without_template() -> None:
    settings = replace(SETTINGS, product_url_template="")
    assert all("ProductURL" not in entry for entry in items(fixture("order_placed"), products(), settings))


def test_high_precision_and_fraction_digits() -> None:
    order = fixture("order_high_precision")
    event = placed_order(order, {}, SETTINGS)
    assert (event["value"], event["value_currency"]) == (370.0, "JPY")  # fractionDigits 0
    assert event["properties"]["Items"] == [
        {"ProductID": SHIRT_ID, "SKU": "SHIRT-M-WHITE", "ProductName": "Linen Shirt", "Quantity": 3,
         "ItemPrice": 370 / 3, "OriginalItemPrice": 123.45, "RowTotal": 370.0, "ProductURL": "https://shop.example.com/p/linen-shirt",
         "Categories": []}]
    assert event["profile"] == {"data": {"type": "profile", "attributes": {
        "email": "hana.sato@example.com", "location": {"city": "Tokyo", "country": "JP"}}}}
    order["totalPrice"] = {"type": "highPrecision", "currencyCode": "EUR", "centAmount": 1235,
                           "preciseAmount": 123456, "fractionDigits": 4}
    assert placed_order(order, {}, SETTINGS)["value"] == 12.3456


# --- profile ------------------------------------------------------------------------------------------------


def test_order_profile() -> None:
    order = fixture("order_placed")
    assert order_profile(order) == PROFILE
    assert order_profile(order, with_location=True)["data"]["attributes"]["location"] == LOCATION
    del order["billingAddress"]
    assert order_profile(order, with_location=True) == PROFILE
    del order["customerEmail"]
    assert order_profile(order) == {"data": {"type": "profile", "attributes": {"external_id": CUSTOMER_ID}}}
    assert order_profile(fixture("order_no_identity"), with_location=True) is None


def test_order_without_email_or_customer_gives_no_events() -> None:
    order = fixture("order_no_identity")
    assert placed_order_events(order, {}, SETTINGS) == []
    with pytest.raises(ValueError):
        placed_order(order, {}, SETTINGS)


# --- Ordered Product ----------------------------------------------------------------------------------------


def test_ordered_products_one_per_line_item() -> None:
    order = fixture("order_placed")
    events = ordered_products(order, products(), SETTINGS)
    assert [e["unique_id"] for e in events] == [line["id"] for line in order["lineItems"]]
    assert [e["value"] for e in events] == [99.98, 44.99, 19.9]
    shirt_line = order["lineItems"][2]
    assert events[2] == {
        "properties": {**shirt_line, **ITEMS[2], "OrderId": ORDER_ID},
        "time": CREATED_AT,
        "value": 19.9,
        "value_currency": "EUR",
        "unique_id": shirt_line["id"],
        "metric": metric("Ordered Product"),
        "profile": PROFILE,  # no location
    }
    first = events[0]["properties"]
    assert {k: first[k] for k in ("ProductName", "SKU", "ImageURL", "ProductURL", "Quantity", "Categories")} == {
        "ProductName": "Slim Jeans", "SKU": "JEANS-32-BLUE", "ImageURL": "https://images.example.com/jeans-32-front.jpg",
        "ProductURL": "https://shop.example.com/p/slim-jeans", "Quantity": 2, "Categories": JEANS_PATHS}


def test_placed_order_events_placed_first_then_products() -> None:
    events = placed_order_events(fixture("order_placed"), products(), SETTINGS)
    assert [e["metric"]["data"]["attributes"]["name"] for e in events] == ["Placed Order"] + ["Ordered Product"] * 3
    assert all(e["time"] == CREATED_AT for e in events)


def test_mappers_are_pure_and_deterministic() -> None:
    order, catalogue = paid_order(), products()
    before = copy.deepcopy((order, catalogue))
    first = placed_order_events(order, catalogue, SETTINGS)
    assert (order, catalogue) == before
    assert placed_order_events(copy.deepcopy(order), copy.deepcopy(catalogue), SETTINGS) == first
    first[0]["properties"]["lineItems"][0]["quantity"] = 99  # the payload shares nothing with the input
    assert order["lineItems"][0]["quantity"] == 2
    json.dumps(first)


# --- Fulfilled / Cancelled Order ----------------------------------------------------------------------------


def test_state_metric() -> None:
    assert state_metric("Confirmed", SETTINGS) == "Fulfilled Order"
    assert state_metric("Complete", SETTINGS) == "Fulfilled Order"
    assert state_metric("Cancelled", SETTINGS) == "Cancelled Order"
    assert state_metric("Open", SETTINGS) is None
    assert state_metric(None, SETTINGS) is None


def test_order_state_event() -> None:
    order = fixture("order_placed")
    order["orderState"] = "Complete"
    event = order_state_event(order, products(), "Fulfilled Order", "2026-11-24T15:30:00.000Z", SETTINGS)
    assert {k: v for k, v in event.items() if k != "properties"} == {
        "time": "2026-11-24T15:30:00.000Z",  # the message's time, not lastModifiedAt
        "value": 174.37,
        "value_currency": "EUR",
        "unique_id": ORDER_ID,
        "metric": metric("Fulfilled Order"),
        "profile": PROFILE,
    }
    assert event["properties"] == placed_order(order, products(), SETTINGS)["properties"]


# --- Refunded Order -----------------------------------------------------------------------------------------


def refund(payment: dict[str, Any], transaction_id: str) -> dict[str, Any]:
    return next(t for t in payment["transactions"] if t["id"] == transaction_id)


def test_refunded_order_exact_envelope_per_transaction() -> None:
    payment = fixture("payment_refunds")
    order = paid_order(payment)
    event = refunded_order(order, refund(payment, REFUND_1), products(), SETTINGS, "2026-11-22T09:00:02.000Z")
    assert {k: v for k, v in event.items() if k != "properties"} == {
        "time": "2026-11-22T09:00:00.000Z",  # the transaction's timestamp
        "value": 19.9,
        "value_currency": "EUR",
        "unique_id": REFUND_1,
        "metric": metric("Refunded Order"),
        "profile": PROFILE,
    }
    assert event["properties"] == {**placed_order(order, products(), SETTINGS)["properties"],
                                   "TransactionId": REFUND_1, "RefundedTotal": 19.9}
    second = refunded_order(order, refund(payment, REFUND_2), products(), SETTINGS, "ignored")
    assert (second["unique_id"], second["value"], second["properties"]["RefundedTotal"]) == (REFUND_2, 44.99, 64.89)


def test_refunded_total_counts_only_earlier_success_refunds_plus_this_one() -> None:
    payment = fixture("payment_refunds")
    pending = {"id": "e1e2e3e4-0000-4000-8000-00000refund3", "type": "Refund", "state": "Pending",
               "amount": {"type": "centPrecision", "currencyCode": "EUR", "centAmount": 1000, "fractionDigits": 2}}
    failed = {**pending, "id": "e1e2e3e4-0000-4000-8000-00000refund4", "state": "Failure"}
    payment["transactions"] += [failed, pending]
    order = paid_order(payment)
    # The first refund's total stays 19.90 even once the second exists: the same in realtime and in bulk.
    assert refunded_total(order, refund(payment, REFUND_1)) == 19.9
    assert refunded_total(order, refund(payment, REFUND_2)) == 64.89
    # Not yet Success, no timestamp (so after the others by position): counted once, as this refund.
    assert refunded_total(order, pending) == 74.89
    event = refunded_order(order, pending, products(), SETTINGS, "2026-11-25T08:00:00.000Z")
    assert (event["time"], event["value"], event["unique_id"]) == ("2026-11-25T08:00:00.000Z", 10.0, pending["id"])
    # A refund the order's payments do not list yet (read at another instant) comes after every listed one.
    unlisted = {**pending, "id": "e1e2e3e4-0000-4000-8000-00000refund5", "state": "Initial"}
    assert refunded_total(order, unlisted) == 74.89


def test_refunded_total_across_payments_and_currencies() -> None:
    first = fixture("payment_refunds")
    second = fixture("payment_refunds")
    second["id"] = "b1c2d3e4-0000-4000-8000-00000payment2"
    second["transactions"] = [
        {"id": "e1e2e3e4-0000-4000-8000-0000000p2r1", "timestamp": "2026-11-21T09:00:00.000Z", "type": "Refund",
         "state": "Success",
         "amount": {"type": "centPrecision", "currencyCode": "EUR", "centAmount": 500, "fractionDigits": 2}},
        {"id": "e1e2e3e4-0000-4000-8000-0000000p2r2", "timestamp": "2026-11-21T10:00:00.000Z", "type": "Refund",
         "state": "Success",
         "amount": {"type": "centPrecision", "currencyCode": "USD", "centAmount": 700, "fractionDigits": 2}},
    ]
    order = paid_order(first, second)
    # Earlier by timestamp though listed in a later payment; the USD refund is not added to EUR.
    assert refunded_total(order, refund(first, REFUND_1)) == 24.9
    assert refunded_total(order, refund(first, REFUND_2)) == 69.89
    # Without expanded payments only this refund is known.
    assert refunded_total(fixture("order_placed"), refund(first, REFUND_2)) == 44.99


# --- size guard ---------------------------------------------------------------------------------------------


def test_strings_are_cut_to_klaviyos_limit() -> None:
    long = "é" * 60_000  # 120,000 bytes
    fitted = fit_properties({"note": long, "nested": {"list": [long]}, "ok": "short"}, "order-1")
    assert len(fitted["note"].encode()) == 100_000 and fitted["note"] == "é" * 50_000
    assert fitted["nested"]["list"][0] == fitted["note"]
    assert fitted["ok"] == "short"


def test_at_most_400_properties_and_ours_are_kept(caplog: pytest.LogCaptureFixture) -> None:
    properties = {f"field{i}": i for i in range(450)}
    properties.update({"OrderId": "o-1", "Items": [], "ItemNames": [], "Categories": []})
    fitted = fit_properties(properties, "o-1")
    assert len(fitted) == 400
    assert {"OrderId", "Items", "ItemNames", "Categories", "field0", "field395"} <= set(fitted)
    assert "field396" not in fitted
    assert "field449" in caplog.text and "o-1" in caplog.text


def test_oversized_properties_drop_the_largest_others_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(order_mapper, "MAX_PROPERTIES_BYTES", 1_000)
    properties = {"lineItems": ["x" * 800], "shippingAddress": "y" * 300, "small": 1, "Items": ["z" * 600]}
    assert fit_properties(properties, "o-1") == {"shippingAddress": "y" * 300, "small": 1, "Items": ["z" * 600]}
