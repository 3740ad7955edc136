"""End to end through the event app: product and inventory deliveries reach Klaviyo's catalog exactly as its API
expects, in the order it needs (an item before its variants), and redeliveries converge without duplicates.

The product (tests/fixtures/catalog_product.json) has two locales, EUR/USD/CHF prices including a future-dated,
an expired, a customer-group and a channel price, a variant without SKU, a variant without images, categories
with ancestors and stock of 0 in the warehouse channel the connector is configured with.

Prices depend on the time of the run (the processors price with the real clock): the expected payloads are
built with the pure mappers at the same moment, and the prices the fixture's dates fix are also asserted
literally (`eur_item_price`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.testclient import TestClient

from event.app import create_app
from shared.config import Settings
from shared.dead_letters import CONTAINER
from shared.klaviyo import catalog_id
from shared.mappers.product import item_create, item_update, split_variants, variant_create, variant_update
from tests.builders import change, pubsub
from tests.data import fixture
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo

PRODUCT_ID = "9d5c1f0e-3b7a-4c2e-8f61-0a4b2c6d8e01"
WAREHOUSE = "7a1e6c2b-5d4f-4e3a-9b8c-1f2e3d4c5b01"
WOMEN, PANTS, JEANS = (f"c3a1b2d4-0000-4000-8000-{s}" for s in ("0000000women", "0000000pants", "00000000jean"))
ENTRY_ZERO = "a3c5e7f9-1b2d-4f6a-8c0e-000000000002"  # JNS-SLIM-32-BLUE, 0 in the warehouse channel
ENTRY_PLAIN = "a3c5e7f9-1b2d-4f6a-8c0e-000000000001"  # JNS-SLIM-32-BLUE, 42, no channel
ENTRY_STORE = "a3c5e7f9-1b2d-4f6a-8c0e-000000000003"  # JNS-SLIM-32-BLUE, 7, the store channel
FRONT = "https://images.example.com/jeans/slim-blue-front.jpg"
ITEM = catalog_id(PRODUCT_ID)
SKUS = ["JNS-SLIM-32-BLUE", "JNS-SLIM-34-BLUE", "JNS-SLIM-36-BLUE"]  # the SKU-less sample variant is left out
V32, V34, V36 = (catalog_id(s) for s in SKUS)
EXPAND = ["masterData.current.categories[*].ancestors[*]"]
CONFIG = {"product": {"inventory": {"useChannelInventory": WAREHOUSE}}}
PRODUCT_PATH = f"/test-project/products/{PRODUCT_ID}"
ITEM_PATH = f"/api/catalog-items/{ITEM}"
VARIANTS_OF_ITEM = f"/api/catalog-items/{ITEM}/variants"


@pytest.fixture
def settings(configure: Callable[..., Settings]) -> Settings:
    """What `event_app` runs with: EUR first, stock from the warehouse channel (PREFERRED_LOCALE is en-US)."""
    return configure(CONFIG, PREFERRED_CURRENCY="EUR")


# --- helpers --------------------------------------------------------------------------------------------------


def post(app: TestClient, notification: dict[str, Any]) -> tuple[int, str | None]:
    """Deliver the notification as Pub/Sub does: (HTTP status, outcome: processed / ignored / retry / failed)."""
    response = app.post("/", json=pubsub(notification))
    return response.status_code, response.headers.get("x-outcome")


def reason(response: Any) -> str:
    return response.headers.get("x-outcome-reason", "")


def calls(klaviyo: FakeKlaviyo, since: int = 0) -> list[tuple[str, str, int | None]]:
    """(method, path, status answered) of every Klaviyo request, in order."""
    return [(r.method, r.path, r.status) for r in klaviyo.requests[since:]]


def bodies(klaviyo: FakeKlaviyo, since: int = 0) -> list[Any]:
    return [r.body for r in klaviyo.requests[since:] if r.method in ("POST", "PATCH")]


def ct_reads(ct: FakeCommercetools) -> list[tuple[str, list[str] | None]]:
    return [(r.path, r.query.get("expand")) for r in ct.requests if r.method == "GET"]


def stored_product(**changes: Any) -> dict[str, Any]:
    """The catalog product as commercetools stores it: category references without `obj` (the fake expands)."""
    product = fixture("catalog_product")
    for data in (product["masterData"]["current"], product["masterData"]["staged"]):
        for reference in data["categories"]:
            reference.pop("obj", None)
    product.update(changes)
    return product


def seed(ct: FakeCommercetools, product: dict[str, Any] | None = None) -> None:
    for name in ("category_women", "category_pants", "category_jeans"):
        ct.add("categories", fixture(name))
    ct.add("products", product or stored_product())


def published(version: int = 12) -> dict[str, Any]:
    notification = fixture("catalog_message_product_published")
    notification["resourceVersion"] = notification["productProjection"]["version"] = version
    notification["id"] = f"0c1d2e3f-4a5b-4c6d-8e7f-{version:012d}"
    return notification


def unpublished(version: int = 13) -> dict[str, Any]:
    notification = fixture("catalog_message_product_unpublished")
    notification["resourceVersion"] = version
    notification["id"] = f"0c1d2e3f-4a5b-4c6d-8e7f-1{version:011d}"
    return notification


def inventory_changed(entry_id: str, version: int, sku: str = "JNS-SLIM-32-BLUE") -> dict[str, Any]:
    return change("ResourceUpdated", "inventory-entry", entry_id, version=version,
                  resourceUserProvidedIdentifiers={"sku": sku})


def eur_item_price(now: datetime) -> float:
    """The master variant's EUR price by the fixture's dates: the earliest-starting active sale, never the
    expired (59.95), customer-group (49.95) or channel (84.95) price, the future price once it starts."""
    if now <= datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC):
        return 69.95  # eur-sale (eur-later-sale, 74.95, also runs but starts later)
    if now <= datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC):
        return 74.95  # eur-later-sale
    return 79.95  # eur-future (from 2027-01-01, no end)


def expanded_product() -> dict[str, Any]:
    """What the connector reads back: the stored product with categories and ancestors expanded."""
    return fixture("catalog_product")


def attrs(klaviyo: FakeKlaviyo, kind: str, cid: str) -> dict[str, Any]:
    store = klaviyo.items if kind == "item" else klaviyo.variants
    return store[cid]["attributes"]


# --- ProductPublished -----------------------------------------------------------------------------------------


def test_published_new_product_creates_the_item_then_its_variants(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo, settings: Settings) -> None:
    seed(ct)
    now = datetime.now(UTC)
    assert post(event_app, published()) == (204, "processed")

    assert ct_reads(ct) == [(PRODUCT_PATH, EXPAND)]  # categories with their ancestors
    assert calls(klaviyo) == [
        ("PATCH", ITEM_PATH, 404),  # not in Klaviyo yet
        ("POST", "/api/catalog-items", 201),  # the item exists before any variant is sent
        ("GET", VARIANTS_OF_ITEM, 200),
        ("POST", "/api/catalog-variants", 201),
        ("POST", "/api/catalog-variants", 201),
        ("POST", "/api/catalog-variants", 201),
    ]
    listing = klaviyo.requests[2]
    assert listing.query == {"fields[catalog-variant]": "id", "page[size]": "100"}

    product = expanded_product()
    with_sku, _ = split_variants(product)
    assert bodies(klaviyo) == [
        {"data": item_update(product, settings, now)},
        {"data": item_create(product, settings, now)},
        *({"data": variant_create(product, v, settings, now)} for v in with_sku),
    ]

    # Literal values, so a mapper bug shows here too.
    item = bodies(klaviyo)[1]["data"]
    assert item["relationships"] == {"categories": {"data": [
        {"type": "catalog-category", "id": catalog_id(c)} for c in (WOMEN, PANTS, JEANS)]}}  # ancestors first
    attributes = item["attributes"]
    assert {k: attributes[k] for k in ("external_id", "title", "description", "url", "image_full_url", "price")} \
        == {"external_id": PRODUCT_ID, "title": "Slim Fit Jeans",  # current data, not the staged "(draft)"
            "description": "Stretch denim with a slim fit.",
            "url": "https://shop.example.com/products/slim-fit-jeans", "image_full_url": FRONT,
            "price": eur_item_price(now)}
    metadata = attributes["custom_metadata"]
    assert json.loads(metadata["title_json"]) == {"title_en-US": "Slim Fit Jeans", "title_de-DE": "Slim-Fit-Jeans"}
    assert json.loads(metadata["slug_json"]) == {"slug_en-US": "slim-fit-jeans", "slug_de-DE": "slim-fit-jeans-damen"}
    prices = json.loads(metadata["price_json"])
    assert prices == {"price_EUR": eur_item_price(now), "price_USD": 99.0, "price_CHF": 95.0, "price_DE": 87.95,
                      "price_US": 97.5, "price_CH": 95.0}
    assert json.loads(metadata["currency_json"]) == {"currency_DE": "EUR", "currency_US": "USD",
                                                     "currency_CH": "CHF"}

    variants = [b["data"] for b in bodies(klaviyo)[2:]]
    assert [v["attributes"]["sku"] for v in variants] == SKUS
    assert all(v["relationships"] == {"item": {"data": {"type": "catalog-item", "id": ITEM}}} for v in variants)
    v32, v34, v36 = (v["attributes"] for v in variants)
    assert (v32["inventory_quantity"], v32["inventory_policy"]) == (0, 1)  # 0 in the warehouse: sent, tracked
    assert (v34["price"], v34["inventory_quantity"], v34["image_full_url"]) == (89.9499, 5, FRONT)  # no images
    assert (v36["inventory_quantity"], v36["inventory_policy"]) == (0, 0)  # commercetools tracks no stock
    assert v36["image_full_url"] == "https://images.example.com/jeans/slim-blue-36.jpg"
    if now < datetime(2027, 1, 1, tzinfo=UTC):
        assert v36["price"] == 0  # only a future-dated and a customer-group price
        assert "price_json" not in v36["custom_metadata"]

    assert list(klaviyo.items) == [ITEM]
    assert list(klaviyo.variants) == [V32, V34, V36]
    assert attrs(klaviyo, "variant", V32)["inventory_quantity"] == 0


def test_redelivered_publication_updates_without_duplicates(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo, settings: Settings) -> None:
    seed(ct)
    assert post(event_app, published()) == (204, "processed")
    first = len(klaviyo.requests)
    now = datetime.now(UTC)
    assert post(event_app, published()) == (204, "processed")  # the same delivery again
    assert calls(klaviyo, first) == [
        ("PATCH", ITEM_PATH, 200),
        ("GET", VARIANTS_OF_ITEM, 200),
        ("PATCH", f"/api/catalog-variants/{V32}", 200),
        ("PATCH", f"/api/catalog-variants/{V34}", 200),
        ("PATCH", f"/api/catalog-variants/{V36}", 200),
    ]
    product = expanded_product()
    with_sku, _ = split_variants(product)
    assert bodies(klaviyo, first) == [{"data": item_update(product, settings, now)},
                                      *({"data": variant_update(product, v, settings, now)} for v in with_sku)]
    assert list(klaviyo.items) == [ITEM] and list(klaviyo.variants) == [V32, V34, V36]


def test_publication_deletes_variants_whose_sku_is_gone(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed(ct)
    assert post(event_app, published()) == (204, "processed")
    product = ct.store["products"][PRODUCT_ID]
    current = product["masterData"]["current"]
    size_38 = {**current["variants"][2], "id": 5, "sku": "JNS-SLIM-38-BLUE", "key": "jns-slim-38-blue"}
    current["variants"] = [current["variants"][0], size_38]  # 36 removed, 38 added
    product["version"] = 13
    first = len(klaviyo.requests)

    assert post(event_app, published(13)) == (204, "processed")
    assert calls(klaviyo, first) == [
        ("PATCH", ITEM_PATH, 200),
        ("GET", VARIANTS_OF_ITEM, 200),
        ("DELETE", f"/api/catalog-variants/{V36}", 204),  # deletes first
        ("PATCH", f"/api/catalog-variants/{V32}", 200),
        ("PATCH", f"/api/catalog-variants/{V34}", 200),
        ("POST", "/api/catalog-variants", 201),  # a new SKU is created (no PATCH 404 first)
    ]
    assert bodies(klaviyo, first)[-1]["data"]["attributes"]["external_id"] == "JNS-SLIM-38-BLUE"
    assert list(klaviyo.variants) == [V32, V34, catalog_id("JNS-SLIM-38-BLUE")]


def test_many_variant_writes_go_as_bulk_jobs_after_reading_every_page(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed(ct)
    assert post(event_app, published()) == (204, "processed")  # item and its 3 variants
    old = [f"OLD-{i:03d}" for i in range(120)]  # variants of SKUs the product no longer has: two pages
    for sku in old:
        klaviyo.variants[catalog_id(sku)] = {
            "attributes": {"external_id": sku, "sku": sku, "title": sku, "description": "", "url": "", "price": 0},
            "relationships": {"item": {"data": {"type": "catalog-item", "id": ITEM}}}}
    first = len(klaviyo.requests)

    assert post(event_app, published()) == (204, "processed")
    made = calls(klaviyo, first)
    assert made[:6] == [
        ("PATCH", ITEM_PATH, 200),
        ("GET", VARIANTS_OF_ITEM, 200),
        ("GET", VARIANTS_OF_ITEM, 200),  # the second page, by the cursor of `links.next`
        ("POST", "/api/catalog-variant-bulk-delete-jobs", 202),
        ("POST", "/api/catalog-variant-bulk-delete-jobs", 202),  # 100 per job
        ("POST", "/api/catalog-variant-bulk-update-jobs", 202),
    ]
    # then each job is awaited (its outcome decides the answer)
    assert [(m, p.rsplit("/", 1)[0], status) for m, p, status in made[6:]] == [
        ("GET", "/api/catalog-variant-bulk-delete-jobs", 200), ("GET", "/api/catalog-variant-bulk-delete-jobs", 200),
        ("GET", "/api/catalog-variant-bulk-update-jobs", 200)]
    jobs = bodies(klaviyo, first)[1:]
    deleted = [e["id"] for job in jobs[:2] for e in job["data"]["attributes"]["variants"]["data"]]
    assert deleted == [catalog_id(s) for s in old]
    assert [e["id"] for e in jobs[2]["data"]["attributes"]["variants"]["data"]] == [V32, V34, V36]
    assert list(klaviyo.variants) == [V32, V34, V36]
    assert all(job["failed_count"] == 0 for job in klaviyo.jobs.values())


def test_publication_of_a_product_gone_from_commercetools_is_ignored(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    response = event_app.post("/", json=pubsub(published()))
    assert (response.status_code, response.headers["x-outcome"]) == (204, "ignored")  # commercetools: 404
    assert reason(response) == "product no longer exists in commercetools"
    assert [(r.path, r.status) for r in ct.requests if r.method == "GET"] == [(PRODUCT_PATH, 404)]
    assert klaviyo.requests == []
    assert ct.store["custom-objects"] == {}  # not a failure


def test_publication_of_a_product_unpublished_since_is_ignored(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    product = stored_product(version=13)
    product["masterData"]["published"] = False
    seed(ct, product)
    assert post(event_app, published()) == (204, "ignored")
    assert klaviyo.requests == []


# --- ProductUnpublished and ResourceDeleted ---------------------------------------------------------------------


def test_unpublished_deletes_the_variants_then_the_item(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed(ct)
    assert post(event_app, published()) == (204, "processed")
    ct.store["products"][PRODUCT_ID]["masterData"]["published"] = False
    ct.store["products"][PRODUCT_ID]["version"] = 13
    first, reads = len(klaviyo.requests), len(ct_reads(ct))

    assert post(event_app, unpublished()) == (204, "processed")
    assert ct_reads(ct)[reads:] == [(PRODUCT_PATH, None)]  # is it published again? no
    assert calls(klaviyo, first) == [
        ("GET", VARIANTS_OF_ITEM, 200),
        ("DELETE", f"/api/catalog-variants/{V32}", 204),
        ("DELETE", f"/api/catalog-variants/{V34}", 204),
        ("DELETE", f"/api/catalog-variants/{V36}", 204),
        ("DELETE", ITEM_PATH, 204),  # the item last, once its variants are gone
    ]
    assert klaviyo.items == {} and klaviyo.variants == {}

    again = len(klaviyo.requests)
    response = event_app.post("/", json=pubsub(unpublished()))  # redelivered: nothing left in Klaviyo
    assert (response.status_code, response.headers["x-outcome"]) == (204, "ignored")
    assert reason(response) == "item was not in Klaviyo"
    assert calls(klaviyo, again) == [("GET", VARIANTS_OF_ITEM, 404), ("DELETE", ITEM_PATH, 404)]
    assert ct.store["custom-objects"] == {}


def test_late_unpublish_of_a_republished_product_keeps_it(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed(ct)
    assert post(event_app, published()) == (204, "processed")
    ct.store["products"][PRODUCT_ID]["version"] = 14  # unpublished (13), then published again (14)
    first = len(klaviyo.requests)
    assert post(event_app, unpublished(13)) == (204, "ignored")
    assert calls(klaviyo, first) == []
    assert list(klaviyo.items) == [ITEM] and len(klaviyo.variants) == 3


@pytest.mark.parametrize("deleted_messages", [
    None,  # the default: product.messages.deleted = [ProductUnpublished]
    [],
    ["ProductUnpublished", "ResourceDeleted"],  # the reference's test configuration: still handled once
])
def test_product_resource_deleted_is_always_handled(
        configure: Callable[..., Settings], ct: FakeCommercetools, klaviyo: FakeKlaviyo,
        deleted_messages: list[str] | None) -> None:
    config: dict[str, Any] = {"product": {"inventory": {"useChannelInventory": WAREHOUSE}}}
    if deleted_messages is not None:
        config["product"]["messages"] = {"deleted": deleted_messages}
    seed(ct)
    with TestClient(create_app(configure(config, PREFERRED_CURRENCY="EUR"))) as app:
        assert post(app, published()) == (204, "processed")
        del ct.store["products"][PRODUCT_ID]
        first = len(klaviyo.requests)
        notification = fixture("catalog_change_product_deleted")
        assert post(app, notification) == (204, "processed")
        assert calls(klaviyo, first) == [
            ("GET", VARIANTS_OF_ITEM, 200),
            ("DELETE", f"/api/catalog-variants/{V32}", 204),
            ("DELETE", f"/api/catalog-variants/{V34}", 204),
            ("DELETE", f"/api/catalog-variants/{V36}", 204),
            ("DELETE", ITEM_PATH, 204),
        ]
        assert klaviyo.items == {} and klaviyo.variants == {}
        again = len(klaviyo.requests)
        assert post(app, notification) == (204, "ignored")  # redelivered: already gone
        assert calls(klaviyo, again) == [("GET", VARIANTS_OF_ITEM, 404), ("DELETE", ITEM_PATH, 404)]
    assert [r.path for r in ct.requests if r.method == "GET"] == [PRODUCT_PATH]  # a deletion reads nothing


# --- out of order ---------------------------------------------------------------------------------------------


def test_stale_product_notifications_after_a_newer_one_are_skipped(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed(ct)
    assert post(event_app, published(12)) == (204, "processed")
    first, reads = len(klaviyo.requests), len(ct_reads(ct))

    assert post(event_app, unpublished(11)) == (204, "ignored")  # older than the publication applied
    assert list(klaviyo.items) == [ITEM] and len(klaviyo.variants) == 3

    ct.store["products"][PRODUCT_ID]["masterData"]["published"] = False
    ct.store["products"][PRODUCT_ID]["version"] = 13
    assert post(event_app, unpublished(13)) == (204, "processed")  # the real, newer unpublish
    assert klaviyo.items == {} and klaviyo.variants == {}
    removal = calls(klaviyo, first)
    assert removal[-1] == ("DELETE", ITEM_PATH, 204)
    assert ct_reads(ct)[reads:] == [(PRODUCT_PATH, None)]  # the stale one was skipped before any read

    ct.store["products"][PRODUCT_ID]["masterData"]["published"] = True  # what a late read could see
    later = len(klaviyo.requests)
    assert post(event_app, published(12)) == (204, "ignored")  # a redelivery of the older publication
    assert klaviyo.requests[later:] == []
    assert ct_reads(ct)[reads + 1:] == []
    assert klaviyo.items == {}


def test_stale_inventory_notification_after_a_newer_one_is_skipped(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed(ct)
    assert post(event_app, published()) == (204, "processed")
    entry = fixture("catalog_inventory_entry_zero")
    entry.update(version=8, quantityOnStock=3, availableQuantity=3)
    ct.add("inventory", entry)
    first = len(klaviyo.requests)
    assert post(event_app, inventory_changed(ENTRY_ZERO, 8)) == (204, "processed")
    assert post(event_app, inventory_changed(ENTRY_ZERO, 7)) == (204, "ignored")  # late: 7 is older than 8
    assert calls(klaviyo, first) == [("PATCH", f"/api/catalog-variants/{V32}", 200)]
    assert [r.path for r in ct.requests if r.method == "GET"][-1] == f"/test-project/inventory/{ENTRY_ZERO}"
    assert len([r for r in ct.requests if "/inventory/" in r.path]) == 1  # the stale one read nothing
    assert attrs(klaviyo, "variant", V32)["inventory_quantity"] == 3


# --- inventory ------------------------------------------------------------------------------------------------


def test_inventory_zero_in_the_channel_is_sent(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    product = stored_product()
    product["masterData"]["current"]["masterVariant"]["availability"]["channels"][WAREHOUSE]["availableQuantity"] = 4
    seed(ct, product)
    assert post(event_app, published()) == (204, "processed")
    assert attrs(klaviyo, "variant", V32)["inventory_quantity"] == 4
    ct.add("inventory", fixture("catalog_inventory_entry_zero"))  # sold out since
    first = len(klaviyo.requests)

    assert post(event_app, fixture("catalog_change_inventory_updated")) == (204, "processed")
    assert [(r.path, r.query) for r in ct.requests if r.method == "GET"][-1] == (
        f"/test-project/inventory/{ENTRY_ZERO}", {})
    assert calls(klaviyo, first) == [("PATCH", f"/api/catalog-variants/{V32}", 200)]
    assert bodies(klaviyo, first) == [{"data": {"type": "catalog-variant", "id": V32, "attributes": {
        "inventory_quantity": 0, "inventory_policy": 1}}}]
    assert attrs(klaviyo, "variant", V32)["inventory_quantity"] == 0


def test_inventory_of_a_variant_not_in_klaviyo_creates_nothing(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    ct.add("inventory", fixture("catalog_inventory_entry_zero"))
    assert post(event_app, fixture("catalog_change_inventory_updated")) == (204, "ignored")
    assert calls(klaviyo) == [("PATCH", f"/api/catalog-variants/{V32}", 404)]  # no POST
    assert klaviyo.variants == {}
    assert ct.store["custom-objects"] == {}


@pytest.mark.parametrize("entry_name, entry_id, channel", [
    ("catalog_inventory_entry_other_channel", ENTRY_STORE, WAREHOUSE),  # another channel
    ("catalog_inventory_entry", ENTRY_PLAIN, WAREHOUSE),  # channel-less, while a channel is configured
    ("catalog_inventory_entry_zero", ENTRY_ZERO, ""),  # a supply channel, while none is configured
])
def test_inventory_of_another_channel_is_ignored(
        configure: Callable[..., Settings], ct: FakeCommercetools, klaviyo: FakeKlaviyo, entry_name: str,
        entry_id: str, channel: str) -> None:
    seed(ct)
    config = {"product": {"inventory": {"useChannelInventory": channel}}}
    with TestClient(create_app(configure(config, PREFERRED_CURRENCY="EUR"))) as app:
        assert post(app, published()) == (204, "processed")
        before = attrs(klaviyo, "variant", V32)["inventory_quantity"]
        entry = ct.add("inventory", fixture(entry_name))
        first = len(klaviyo.requests)
        assert post(app, inventory_changed(entry_id, entry["version"])) == (204, "ignored")
    assert [r.path for r in ct.requests if r.method == "GET"][-1] == f"/test-project/inventory/{entry_id}"
    assert klaviyo.requests[first:] == []
    assert attrs(klaviyo, "variant", V32)["inventory_quantity"] == before


def test_inventory_entry_gone_from_commercetools_is_ignored(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    assert post(event_app, fixture("catalog_change_inventory_updated")) == (204, "ignored")
    assert klaviyo.requests == []


# --- disabled processors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, notification", [
    ("ProductPublished", fixture("catalog_message_product_published")),
    ("ProductUnpublished", fixture("catalog_message_product_unpublished")),
    ("ProductResourceDeleted", fixture("catalog_change_product_deleted")),
    ("InventoryResourceUpdated", fixture("catalog_change_inventory_updated")),
])
def test_disabled_catalog_processors_do_nothing(
        configure: Callable[..., Settings], ct: FakeCommercetools, klaviyo: FakeKlaviyo, name: str,
        notification: dict[str, Any]) -> None:
    seed(ct)
    ct.add("inventory", fixture("catalog_inventory_entry_zero"))
    with TestClient(create_app(configure({**CONFIG, "disabledEvents": [name]}, PREFERRED_CURRENCY="EUR"))) as app:
        response = app.post("/", json=pubsub(notification))
    assert (response.status_code, response.headers["x-outcome"]) == (204, "ignored")
    assert "disabled by disabledEvents" in reason(response)
    assert klaviyo.requests == [] and [r for r in ct.requests if r.path != "/oauth/token"] == []


def test_only_the_disabled_processor_is_off(configure: Callable[..., Settings], ct: FakeCommercetools,
                                            klaviyo: FakeKlaviyo) -> None:
    seed(ct)
    config = {**CONFIG, "disabledEvents": ["ProductUnpublished", "InventoryResourceUpdated"]}
    with TestClient(create_app(configure(config, PREFERRED_CURRENCY="EUR"))) as app:
        assert post(app, published()) == (204, "processed")
    assert list(klaviyo.items) == [ITEM] and len(klaviyo.variants) == 3


# --- faults ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status, headers", [
    (429, {"Retry-After": "30"}),  # longer than the delivery's time budget: not waited out
    (500, None),  # a create is not repeated blindly within the delivery
])
def test_klaviyo_failing_a_variant_create_asks_for_redelivery_which_completes(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo, status: int,
        headers: dict[str, str] | None) -> None:
    seed(ct)
    klaviyo.fail_next("POST", r"/api/catalog-variants", status, headers=headers)
    began = time.monotonic()
    assert post(event_app, published()) == (503, "retry")
    assert calls(klaviyo) == [
        ("PATCH", ITEM_PATH, 404),
        ("POST", "/api/catalog-items", 201),
        ("GET", VARIANTS_OF_ITEM, 200),
        ("POST", "/api/catalog-variants", status),
    ]
    assert time.monotonic() - began < 5
    assert ct.store["custom-objects"] == {}  # transient: no dead letter
    first = len(klaviyo.requests)

    assert post(event_app, published()) == (204, "processed")  # the redelivery
    assert calls(klaviyo, first) == [
        ("PATCH", ITEM_PATH, 200),
        ("GET", VARIANTS_OF_ITEM, 200),
        ("POST", "/api/catalog-variants", 201),
        ("POST", "/api/catalog-variants", 201),
        ("POST", "/api/catalog-variants", 201),
    ]
    assert list(klaviyo.items) == [ITEM] and list(klaviyo.variants) == [V32, V34, V36]


def test_klaviyo_500_on_a_variant_update_is_retried_then_asks_for_redelivery(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed(ct)
    assert post(event_app, published()) == (204, "processed")
    klaviyo.fail_next("PATCH", re.escape(f"/api/catalog-variants/{V34}"), 500, times=1)
    first = len(klaviyo.requests)
    assert post(event_app, published()) == (204, "processed")  # a 500 on an update: retried in the delivery
    assert [s for m, p, s in calls(klaviyo, first) if p.endswith(V34)] == [500, 200]

    klaviyo.fail_next("PATCH", re.escape(f"/api/catalog-variants/{V34}"), 500, times=4)
    second = len(klaviyo.requests)
    assert post(event_app, published()) == (503, "retry")  # persists: bounded attempts, then redelivery
    assert [s for m, p, s in calls(klaviyo, second) if p.endswith(V34)] == [500] * 4
    assert ct.store["custom-objects"] == {}
    third = len(klaviyo.requests)
    assert post(event_app, published()) == (204, "processed")  # the redelivery completes
    assert [s for m, p, s in calls(klaviyo, third) if m != "GET"] == [200] * 4


def test_klaviyo_refusing_the_item_is_recorded_as_a_dead_letter(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed(ct)
    error = {"errors": [{"id": "e1", "status": 400, "code": "invalid", "title": "Invalid input.",
                         "detail": "'price' must be a number", "source": {"pointer": "/data/attributes/price"}}]}
    klaviyo.fail_next("PATCH", re.escape(ITEM_PATH), 400, body=error)
    notification = published()
    response = event_app.post("/", json=pubsub(notification))
    assert (response.status_code, response.headers["x-outcome"]) == (202, "failed")
    assert calls(klaviyo) == [("PATCH", ITEM_PATH, 400)]  # no variant without its item
    record = ct.get_custom_object(CONTAINER, notification["id"])["value"]
    assert record["processors"] == ["ProductPublished"]
    assert record["error"]["status"] == 400 and record["error"]["pointer"] == "/data/attributes/price"
    assert record["notification"] == notification


def test_commercetools_unavailable_asks_for_redelivery(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed(ct)
    ct.fail_next("GET", r"/products/", 503, times=10)
    assert post(event_app, published()) == (503, "retry")
    assert klaviyo.requests == []
