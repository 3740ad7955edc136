"""The commercetools data of the tests and the demo has the shape of the real API: checked with the models of the
`commercetools` SDK (see `tests.fakes.commercetools_sdk`), and the check itself rejects wrong shapes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from demo import sample
from tests import builders
from tests.data import FIXTURES, fixture
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.commercetools_sdk import check_model, check_notification, check_resource

#: Each fixture file → the resource it is (notifications are told by their notificationType).
FIXTURE_RESOURCES = {
    "catalog_inventory_entry": "inventory",
    "catalog_inventory_entry_other_channel": "inventory",
    "catalog_inventory_entry_zero": "inventory",
    "catalog_product": "products",
    "category_jeans": "categories",
    "category_pants": "categories",
    "category_women": "categories",
    "customer": "customers",
    "e2e_category_sale": "categories",
    "e2e_category_tops": "categories",
    "order_high_precision": "orders",
    "order_no_identity": "orders",
    "order_placed": "orders",
    "payment_refunds": "payments",
    "product_jeans": "products",
    "product_shirt": "products",
}
FIXTURE_NAMES = sorted(p.stem for p in Path(FIXTURES).glob("*.json"))


def problems(name: str) -> list[str]:
    data = fixture(name)
    if isinstance(data, dict) and "notificationType" in data:
        return check_notification(data)
    return check_resource(FIXTURE_RESOURCES[name], data)


def test_every_fixture_is_classified() -> None:
    notifications = {n for n in FIXTURE_NAMES if "notificationType" in fixture(n)}
    assert set(FIXTURE_NAMES) == set(FIXTURE_RESOURCES) | notifications
    assert len(notifications) == 4


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_has_the_shape_of_the_api(name: str) -> None:
    assert problems(name) == []


@pytest.mark.parametrize("resource", sorted(sample.project()))
def test_demo_project_has_the_shape_of_the_api(resource: str) -> None:
    objects = sample.project()[resource]
    assert objects
    assert {o["id"]: check_resource(resource, o) for o in objects} == {o["id"]: [] for o in objects}


def test_demo_order_history_has_the_shape_of_the_api() -> None:
    for order in sample.orders(12, lines=4):
        assert check_resource("orders", order) == [], order["id"]


def test_notification_builders_have_the_shape_of_the_api() -> None:
    order = fixture("order_placed")
    assert check_notification(builders.message("order", order["id"], "OrderCreated", order=order)) == []
    assert check_notification(builders.message("customer", "c-1", "CustomerCreated",
                                               customer=fixture("customer"))) == []
    for kind in ("ResourceCreated", "ResourceUpdated", "ResourceDeleted"):
        assert check_notification(builders.change(kind, "product", "p-1")) == [], kind


# --- the check rejects what the real API would never return ----------------------------------------------------


def test_check_reports_unknown_fields_the_sdk_drops() -> None:
    customer = fixture("customer")
    customer["emial"] = "x@example.com"
    customer["addresses"][0]["stret"] = "Main"
    assert sorted(check_resource("customers", customer)) == [
        "addresses[0]: unknown field 'stret' (the SDK's model dropped it)",
        "body: unknown field 'emial' (the SDK's model dropped it)",
    ]
    order = fixture("order_placed")
    order["lineItems"][1]["price"]["value"]["cents"] = 1
    assert check_resource("orders", order) == ["lineItems[1].price.value.cents: Unknown field."]  # marshmallow's


def test_check_reports_missing_required_fields() -> None:
    order = fixture("order_placed")
    del order["totalPrice"]
    del order["lineItems"][0]["quantity"]
    assert sorted(check_resource("orders", order)) == [
        "body: missing required 'totalPrice'", "lineItems[0]: missing required 'quantity'"]
    customer = fixture("customer")
    customer["email"] = None
    assert check_resource("customers", customer) == ["body: missing required 'email'"]


def test_check_reports_wrong_types() -> None:
    order = fixture("order_placed")
    order["totalPrice"]["centAmount"] = "17437"  # marshmallow coerces it; the round trip sees it changed type
    order["lineItems"][0]["quantity"] = 1.5
    assert sorted(check_resource("orders", order)) == [
        "lineItems[0].quantity: expected an integer, got 1.5",
        "totalPrice.centAmount: expected number, got string ('17437')",
    ]
    category = fixture("category_women")
    category["name"] = "Women"  # a LocalizedString is an object
    assert check_resource("categories", category) == ["name: Not a valid mapping type."]
    customer = fixture("customer")
    customer["isEmailVerified"] = "maybe"
    assert check_resource("customers", customer) == ["isEmailVerified: Not a valid boolean."]
    customer = fixture("customer")
    customer["isEmailVerified"] = "true"  # coerced by marshmallow, caught by the round trip
    assert check_resource("customers", customer) == ["isEmailVerified: expected boolean, got string ('true')"]


def test_check_of_notifications() -> None:
    message = fixture("catalog_message_product_published")
    assert check_notification({**message, "type": "NoSuchThing"}) == [
        "type: the commercetools SDK knows no message 'NoSuchThing'"]
    assert check_notification({**message, "sequenceNumbr": 2}) == [
        "body: unknown field 'sequenceNumbr' (the SDK's model dropped it)"]
    assert check_notification({"notificationType": "Other"}) == [
        "notificationType: 'Other' is not a delivery the connector subscribes to"]
    change = fixture("catalog_change_product_deleted")
    del change["resource"]
    assert check_notification(change) == ["body: missing required 'resource'"]
    assert check_model("Customer", []) == ["body: expected an object, got list"]


# --- the stand-in checks what tests seed ------------------------------------------------------------------------


def test_stand_in_refuses_seeded_resources_of_the_wrong_shape() -> None:
    fake = FakeCommercetools(check_shapes=True)
    fake.add("customers", fixture("customer"))
    wrong: dict[str, Any] = copy.deepcopy(fixture("customer"))
    wrong["id"] = "c-wrong"
    wrong["emial"] = wrong.pop("email")
    with pytest.raises(ValueError, match=r"customers c-wrong is not shaped like the commercetools API: .*"
                                         r"unknown field 'emial'.*missing required 'email'"):
        fake.add("customers", wrong)
    assert fake.get("customers", "c-wrong") is None
    fake.add("customers", wrong, check_shape=False)  # on purpose, for a test of the connector's defences
    assert fake.get("customers", "c-wrong") is not None
    assert FakeCommercetools().add("customers", {"email": "no-shape-check@example.com"})
