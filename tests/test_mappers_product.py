"""Product and inventory mappers (commercetools → Klaviyo catalog), the version guard, and the product and
inventory processors against small in-memory fakes (no HTTP)."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import pytest

from shared.config import ProductSettings, Settings, load_settings
from shared.errors import ApiError, NotFound
from shared.klaviyo import Klaviyo, catalog_id
from shared.mappers.product import (
    bulk_job,
    bulk_jobs,
    category_ids,
    custom_metadata,
    inventory_update,
    item_create,
    item_update,
    price_amount,
    select_price,
    split_variants,
    variant_create,
    variant_inventory,
    variant_update,
)
from shared.messages import parse_notification
from shared.processors import Context, inventory, products
from shared.versions import GUARD, VersionGuard, guard_for
from tests.data import fixture
from tests.fakes.openapi import load_validator
from tests.test_config import BASE

NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
PRODUCT_ID = "9d5c1f0e-3b7a-4c2e-8f61-0a4b2c6d8e01"
WAREHOUSE = "7a1e6c2b-5d4f-4e3a-9b8c-1f2e3d4c5b01"
STORE = "7a1e6c2b-5d4f-4e3a-9b8c-1f2e3d4c5b02"
WOMEN, PANTS, JEANS = (f"c3a1b2d4-0000-4000-8000-{s}" for s in ("0000000women", "0000000pants", "00000000jean"))
FRONT = "https://images.example.com/jeans/slim-blue-front.jpg"
VALIDATOR = load_validator()


def settings(**changes: Any) -> Settings:
    base = replace(load_settings(BASE), preferred_locale="en-US", preferred_currency="EUR",
                   product_url_template="https://shop.example.com/{{productSlug}}/p",
                   product=ProductSettings(("ProductPublished",), ("ProductUnpublished",), WAREHOUSE))
    return replace(base, **changes)


def product() -> dict[str, Any]:
    return fixture("catalog_product")


def variant(sku: str | None) -> dict[str, Any]:
    current = product()["masterData"]["current"]
    return next(v for v in [current["masterVariant"], *current["variants"]] if v.get("sku") == sku)


def check(method: str, path: str, body: Any) -> None:
    """The request matches Klaviyo's OpenAPI request schema (skipped where the spec is absent)."""
    if VALIDATOR is not None:
        assert VALIDATOR.validate(method, path, body) == []


def categories(*ids: str) -> dict[str, Any]:
    return {"categories": {"data": [{"type": "catalog-category", "id": catalog_id(i)} for i in ids]}}


# --- items and variants ---------------------------------------------------------------------------------------

TITLE_JSON = '{"title_en-US":"Slim Fit Jeans","title_de-DE":"Slim-Fit-Jeans"}'
SLUG_JSON = '{"slug_en-US":"slim-fit-jeans","slug_de-DE":"slim-fit-jeans-damen"}'
MASTER_METADATA = {
    "title_json": TITLE_JSON,
    "slug_json": SLUG_JSON,
    "price_json": '{"price_EUR":69.95,"price_USD":99.0,"price_CHF":95.0,"price_DE":87.95,"price_US":97.5,'
                  '"price_CH":95.0}',
    "currency_json": '{"currency_DE":"EUR","currency_US":"USD","currency_CH":"CHF"}',
}
TEXTS = {"title": "Slim Fit Jeans", "description": "Stretch denim with a slim fit.",
         "url": "https://shop.example.com/slim-fit-jeans/p"}


def test_item_create_payload() -> None:
    data = item_create(product(), settings(), NOW)
    assert data == {
        "type": "catalog-item",
        "attributes": {
            "external_id": PRODUCT_ID, "integration_type": "$custom", "catalog_type": "$default", **TEXTS,
            "price": 69.95, "image_full_url": FRONT, "custom_metadata": MASTER_METADATA, "published": True,
        },
        "relationships": categories(WOMEN, PANTS, JEANS),
    }
    check("POST", "/api/catalog-items", {"data": data})


def test_item_update_payload_has_no_create_only_attributes() -> None:
    data = item_update(product(), settings(), NOW)
    assert data == {
        "type": "catalog-item",
        "id": f"$custom:::$default:::{PRODUCT_ID}",
        "attributes": {**TEXTS, "price": 69.95, "image_full_url": FRONT, "custom_metadata": MASTER_METADATA,
                       "published": True},
        "relationships": categories(WOMEN, PANTS, JEANS),
    }
    check("PATCH", f"/api/catalog-items/{data['id']}", {"data": data})


def test_item_without_categories_images_description_or_template() -> None:
    p = product()
    current = p["masterData"]["current"]
    current["categories"], current["masterVariant"]["images"] = [], []
    del current["description"]
    s = settings(product_url_template="")
    create, update = item_create(p, s, NOW), item_update(p, s, NOW)
    assert "relationships" not in create and "image_full_url" not in create["attributes"]
    assert create["attributes"]["description"] == "" and create["attributes"]["url"] == ""
    assert update["relationships"] == {"categories": {"data": []}}  # unlinks categories removed in commercetools
    assert update["attributes"]["image_full_url"] is None  # clears a removed image
    check("POST", "/api/catalog-items", {"data": create})
    check("PATCH", f"/api/catalog-items/{update['id']}", {"data": update})


def test_item_uses_current_data_not_staged() -> None:
    assert item_create(product(), settings(), NOW)["attributes"]["title"] == "Slim Fit Jeans"


def test_variant_create_and_update_payloads() -> None:
    master = variant("JNS-SLIM-32-BLUE")
    attributes = {**TEXTS, "price": 69.95, "inventory_quantity": 0, "inventory_policy": 1, "image_full_url": FRONT,
                  "custom_metadata": MASTER_METADATA, "published": True}
    create = variant_create(product(), master, settings(), NOW)
    assert create == {
        "type": "catalog-variant",
        "attributes": {"external_id": "JNS-SLIM-32-BLUE", "sku": "JNS-SLIM-32-BLUE", "integration_type": "$custom",
                       "catalog_type": "$default", **attributes},
        "relationships": {"item": {"data": {"type": "catalog-item", "id": f"$custom:::$default:::{PRODUCT_ID}"}}},
    }
    update = variant_update(product(), master, settings(), NOW)
    assert update == {"type": "catalog-variant", "id": "$custom:::$default:::JNS-SLIM-32-BLUE",
                      "attributes": attributes}
    check("POST", "/api/catalog-variants", {"data": create})
    check("PATCH", f"/api/catalog-variants/{update['id']}", {"data": update})


def test_variant_without_images_high_precision_price_and_no_channel_stock() -> None:
    data = variant_update(product(), variant("JNS-SLIM-34-BLUE"), settings(), NOW)
    assert data["attributes"] == {
        **TEXTS, "price": 89.9499, "inventory_quantity": 5, "inventory_policy": 1,
        "image_full_url": FRONT,  # no image of its own: the product's first image
        "custom_metadata": {"title_json": TITLE_JSON, "slug_json": SLUG_JSON,
                            "price_json": '{"price_EUR":89.9499,"price_USD":95.0}'},
        "published": True,
    }


def test_untracked_variant_without_current_price() -> None:
    data = variant_create(product(), variant("JNS-SLIM-36-BLUE"), settings(), NOW)
    attributes = data["attributes"]
    assert attributes["price"] == 0  # only a future price and a customer-group price
    assert (attributes["inventory_quantity"], attributes["inventory_policy"]) == (0, 0)  # not tracked: not hidden
    assert attributes["image_full_url"] == "https://images.example.com/jeans/slim-blue-36.jpg"
    assert attributes["custom_metadata"] == {"title_json": TITLE_JSON, "slug_json": SLUG_JSON}
    check("POST", "/api/catalog-variants", {"data": data})


def test_variants_without_sku_are_left_out() -> None:
    with_sku, without_sku = split_variants(product())
    assert [v["sku"] for v in with_sku] == ["JNS-SLIM-32-BLUE", "JNS-SLIM-34-BLUE", "JNS-SLIM-36-BLUE"]
    assert [v["id"] for v in without_sku] == [3]
    sample = product()["masterData"]["current"]["variants"][1]
    with pytest.raises(ValueError, match="no SKU"):
        variant_create(product(), sample, settings(), NOW)


def test_product_projection_maps_like_the_product() -> None:
    p = product()
    projection = {"id": p["id"], **p["masterData"]["current"]}
    assert item_create(projection, settings(), NOW) == item_create(p, settings(), NOW)


# --- locales --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("locale", "title", "url"), [
    ("en-US", "Slim Fit Jeans", "https://shop.example.com/slim-fit-jeans/p"),
    ("de-DE", "Slim-Fit-Jeans", "https://shop.example.com/slim-fit-jeans-damen/p"),
    ("de", "Slim-Fit-Jeans", "https://shop.example.com/slim-fit-jeans-damen/p"),  # language → first de-* key
    ("de_AT", "Slim-Fit-Jeans", "https://shop.example.com/slim-fit-jeans-damen/p"),  # language fallback
    ("fr-FR", "Slim Fit Jeans", "https://shop.example.com/slim-fit-jeans/p"),  # none: the first value
    ("", "Slim Fit Jeans", "https://shop.example.com/slim-fit-jeans/p"),
])
def test_texts_follow_the_preferred_locale(locale: str, title: str, url: str) -> None:
    attributes = item_create(product(), settings(preferred_locale=locale), NOW)["attributes"]
    assert (attributes["title"], attributes["url"]) == (title, url)


# --- prices ---------------------------------------------------------------------------------------------------


def master_prices() -> list[dict[str, Any]]:
    return variant("JNS-SLIM-32-BLUE")["prices"]


def price_key(prices: list[dict[str, Any]], currency: str, now: datetime = NOW, **kw: Any) -> str | None:
    chosen = select_price(prices, currency, now, **kw)
    return chosen["key"] if chosen else None


def test_active_ranged_price_wins_the_earliest_starting() -> None:
    assert price_key(master_prices(), "EUR") == "eur-sale"
    later = datetime(2026, 12, 5, tzinfo=UTC)  # eur-sale over; eur-later-sale still running
    assert price_key(master_prices(), "EUR", later) == "eur-later-sale"


def test_regular_price_when_no_ranged_price_is_active() -> None:
    prices = [p for p in master_prices() if p["key"] != "eur-later-sale"]
    assert price_key(prices, "EUR", datetime(2026, 12, 5, tzinfo=UTC)) == "eur-regular"  # eur-sale is over


def test_future_expired_customer_group_and_channel_prices_are_excluded() -> None:
    keep = {"eur-future", "eur-expired", "eur-vip", "eur-store"}
    prices = [p for p in master_prices() if p["key"] in keep]
    assert select_price(prices, "EUR", NOW) is None
    assert price_amount(select_price(prices, "EUR", NOW)) == 0


def test_future_price_applies_once_it_starts() -> None:
    prices = [p for p in master_prices() if p["key"] == "eur-future"]
    assert price_key(prices, "EUR", datetime(2027, 1, 1, tzinfo=UTC)) == "eur-future"


def test_bounds_are_inclusive() -> None:
    prices = [p for p in master_prices() if p["key"] == "eur-sale"]
    assert price_key(prices, "EUR", datetime(2026, 11, 1, tzinfo=UTC)) == "eur-sale"
    assert price_key(prices, "EUR", datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)) == "eur-sale"


def test_currency_filter_and_country_preference() -> None:
    assert price_key(master_prices(), "USD") == "usd-regular"  # the country-less one before usd-us
    assert price_key(master_prices(), "CHF") == "chf-ch"  # only a country price: used
    assert price_key(master_prices(), "USD", country="US") == "usd-us"
    assert price_key(master_prices(), "GBP") is None
    assert price_key(master_prices(), "") == "eur-sale"  # no preferred currency: no filter


def test_item_price_in_the_preferred_currency_or_zero() -> None:
    assert item_create(product(), settings(preferred_currency="USD"), NOW)["attributes"]["price"] == 99.0
    assert item_create(product(), settings(preferred_currency="GBP"), NOW)["attributes"]["price"] == 0


def test_naive_now_is_utc() -> None:
    assert price_key(master_prices(), "EUR", datetime(2026, 11, 15, 12)) == "eur-sale"


# --- custom metadata ------------------------------------------------------------------------------------------


def test_custom_metadata_names_only_explicit_countries() -> None:
    metadata = custom_metadata(product(), variant("JNS-SLIM-32-BLUE"), settings(), NOW)
    assert json.loads(metadata["title_json"]) == {"title_en-US": "Slim Fit Jeans", "title_de-DE": "Slim-Fit-Jeans"}
    assert json.loads(metadata["slug_json"]) == {"slug_en-US": "slim-fit-jeans", "slug_de-DE": "slim-fit-jeans-damen"}
    assert json.loads(metadata["price_json"]) == {"price_EUR": 69.95, "price_USD": 99.0, "price_CHF": 95.0,
                                                  "price_DE": 87.95, "price_US": 97.5, "price_CH": 95.0}
    assert json.loads(metadata["currency_json"]) == {"currency_DE": "EUR", "currency_US": "USD",
                                                     "currency_CH": "CHF"}
    assert all(isinstance(v, str) for v in metadata.values())  # Klaviyo's custom_metadata is flat


def test_country_with_two_currencies_prefers_the_preferred_one() -> None:
    prices = [{"value": {"currencyCode": "CHF", "centAmount": 1000, "fractionDigits": 2}, "country": "CH"},
              {"value": {"currencyCode": "EUR", "centAmount": 900, "fractionDigits": 2}, "country": "CH"}]
    v = {"sku": "X", "prices": prices}
    for currency, expected in (("EUR", ("EUR", 9.0)), ("USD", ("CHF", 10.0))):
        metadata = custom_metadata(product(), v, settings(preferred_currency=currency), NOW)
        assert json.loads(metadata["currency_json"])["currency_CH"] == expected[0]
        assert json.loads(metadata["price_json"])["price_CH"] == expected[1]


# --- inventory ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("channel", "quantity"), [
    (WAREHOUSE, 0),  # 0 in the configured channel stays 0 (the reference fell back to 42)
    (STORE, 7),
    ("", 42),  # no channel: the channel-less quantity
    ("unknown-channel", 42),  # not stocked in that channel: the channel-less quantity
])
def test_variant_inventory_channel_rules(channel: str, quantity: int) -> None:
    assert variant_inventory(variant("JNS-SLIM-32-BLUE"), channel) == quantity


def test_variant_inventory_edge_cases() -> None:
    assert variant_inventory(variant("JNS-SLIM-36-BLUE"), "") is None  # not tracked
    only_channels = {"availability": {"channels": {STORE: {"availableQuantity": 3}}}}
    assert variant_inventory(only_channels, "") == 0
    assert variant_inventory(only_channels, STORE) == 3


@pytest.mark.parametrize(("name", "channel", "quantity"), [
    ("catalog_inventory_entry_zero", WAREHOUSE, 0),  # 0 in the configured channel is sent
    ("catalog_inventory_entry_other_channel", WAREHOUSE, None),  # another channel
    ("catalog_inventory_entry", WAREHOUSE, None),  # channel-less while a channel is configured
    ("catalog_inventory_entry", "", 42),
    ("catalog_inventory_entry_zero", "", None),  # a supply channel while none is configured
    ("catalog_inventory_entry_other_channel", STORE, 7),  # availableQuantity, not quantityOnStock (9)
])
def test_inventory_entry_channel_rules(name: str, channel: str, quantity: int | None) -> None:
    assert variant_inventory(fixture(name), channel) == quantity


def test_inventory_update_payload_keeps_zero() -> None:
    data = inventory_update(fixture("catalog_inventory_entry_zero"), settings())
    assert data == {"type": "catalog-variant", "id": "$custom:::$default:::JNS-SLIM-32-BLUE",
                    "attributes": {"inventory_quantity": 0, "inventory_policy": 1}}
    check("PATCH", f"/api/catalog-variants/{data['id']}", {"data": data})
    assert inventory_update(fixture("catalog_inventory_entry_other_channel"), settings()) is None
    entry = fixture("catalog_inventory_entry_zero")
    del entry["sku"]
    assert inventory_update(entry, settings()) is None


# --- categories -----------------------------------------------------------------------------------------------


def test_category_ids_include_ancestors_once() -> None:
    assert category_ids(product()) == [WOMEN, PANTS, JEANS]


def test_category_ids_without_expansion() -> None:
    p = product()
    p["masterData"]["current"] = p["masterData"]["staged"]  # references only
    assert category_ids(p) == [JEANS, WOMEN]


# --- bulk jobs ------------------------------------------------------------------------------------------------


def test_bulk_job_bodies_use_the_single_call_data() -> None:
    create, update = item_create(product(), settings(), NOW), item_update(product(), settings(), NOW)
    body = bulk_job("item", "create", [create])
    assert body == {"data": {"type": "catalog-item-bulk-create-job", "attributes": {"items": {"data": [create]}}}}
    check("POST", "/api/catalog-item-bulk-create-jobs", body)
    check("POST", "/api/catalog-item-bulk-update-jobs", bulk_job("item", "update", [update]))
    delete = bulk_job("item", "delete", [update])
    assert delete["data"]["attributes"]["items"]["data"] == [{"type": "catalog-item", "id": update["id"]}]
    check("POST", "/api/catalog-item-bulk-delete-jobs", delete)
    variants = [variant_create(product(), v, settings(), NOW) for v in split_variants(product())[0]]
    check("POST", "/api/catalog-variant-bulk-create-jobs", bulk_job("variant", "create", variants))
    updates = [variant_update(product(), v, settings(), NOW) for v in split_variants(product())[0]]
    check("POST", "/api/catalog-variant-bulk-update-jobs", bulk_job("variant", "update", updates))
    gone = bulk_job("variant", "delete", [updates[0], "$custom:::$default:::OLD"])
    assert gone["data"]["attributes"]["variants"]["data"] == [
        {"type": "catalog-variant", "id": "$custom:::$default:::JNS-SLIM-32-BLUE"},
        {"type": "catalog-variant", "id": "$custom:::$default:::OLD"}]
    check("POST", "/api/catalog-variant-bulk-delete-jobs", gone)


def test_bulk_jobs_hold_at_most_100() -> None:
    data = [{"type": "catalog-variant", "id": f"id-{i}", "attributes": {}} for i in range(250)]
    jobs = bulk_jobs("variant", "update", data)
    assert [len(j["data"]["attributes"]["variants"]["data"]) for j in jobs] == [100, 100, 50]
    assert [d for j in jobs for d in j["data"]["attributes"]["variants"]["data"]] == data
    assert bulk_jobs("variant", "update", []) == []
    with pytest.raises(ValueError):
        bulk_job("variant", "update", data[:101])
    with pytest.raises(ValueError):
        bulk_job("variant", "create", ["an-id"])
    with pytest.raises(ValueError):
        bulk_job("product", "create", data[:1])


# --- version guard --------------------------------------------------------------------------------------------


def test_version_guard() -> None:
    guard = VersionGuard(max_entries=2)
    assert not guard.is_stale("product", "a", 5)  # nothing known
    guard.applied("product", "a", 7)
    assert guard.is_stale("product", "a", 6)
    assert not guard.is_stale("product", "a", 7)  # a redelivery of what was applied
    assert not guard.is_stale("product", "a", None)
    assert not guard.is_stale("inventory-entry", "a", 1)  # per resource type
    guard.applied("product", "a", 3)  # lower: the highest is kept
    assert guard.last("product", "a") == 7
    guard.applied("product", "b", 1)
    guard.is_stale("product", "a", 1)  # touches a: b is now the least recently used
    guard.applied("product", "c", 1)
    assert guard.last("product", "b") is None and guard.last("product", "a") == 7
    guard.clear()
    assert guard.last("product", "a") is None
    with pytest.raises(ValueError):
        VersionGuard(max_entries=0)


def test_version_guard_reason_and_context_guard() -> None:
    guard = VersionGuard()
    guard.applied("product", "a", 7)
    assert guard.stale_reason("product", "a", 6) == "product version 6 is older than version 7, already applied"
    assert guard.stale_reason("product", "a", 8) is None

    class WithGuard:
        versions = guard

    assert guard_for(WithGuard()) is guard
    assert guard_for(object()) is GUARD


def test_version_guard_is_thread_safe() -> None:
    guard = VersionGuard(max_entries=50)

    def work(offset: int) -> None:
        for i in range(2000):
            guard.applied("product", str(i % 70), i + offset)
            guard.is_stale("product", str(i % 70), i)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(guard.last("product", str(i)) is not None for i in range(70)) == 50


# --- processors (in-memory fakes, no HTTP) --------------------------------------------------------------------


class FakeKlaviyo(Klaviyo):
    """Catalog items and variants in memory; real `upsert_catalog` / `delete_catalog` logic over `request`."""

    def __init__(self, page_size: int = 100) -> None:  # no transport
        self.items: set[str] = set()
        self.variants: dict[str, str] = {}  # variant id → item id
        self.calls: list[tuple[str, str]] = []
        self.page_size = page_size

    def request(self, method: str, path: str, *, body: Any = None, params: Any = None,
                safe_to_retry: bool = True) -> Any:
        path = unquote(path)
        check(method, path, body)
        self.calls.append((method, path))
        parts = path.split("/")
        kind, object_id = parts[2], (parts[3] if len(parts) > 3 else None)
        if method == "GET" and path.endswith("/variants"):
            return self._variants_page(object_id or "", params or {})
        if kind.endswith("-jobs"):
            return {"data": {"type": kind[:-1], "id": f"job-{len(self.calls)}"}}
        store = self.variants if kind == "catalog-variants" else self.items
        if method == "POST":
            new_id = catalog_id(body["data"]["attributes"]["external_id"])
            if new_id in store:
                raise ApiError("klaviyo", 409, "Conflict")
            if kind == "catalog-variants":
                item = body["data"]["relationships"]["item"]["data"]["id"]
                if item not in self.items:
                    raise ApiError("klaviyo", 400, "item does not exist")
                self.variants[new_id] = item
            else:
                self.items.add(new_id)
            return {"data": {"id": new_id}}
        if object_id not in store:
            raise NotFound("klaviyo", 404, "Not Found")
        if method == "DELETE":
            if isinstance(store, dict):
                del store[object_id]
            else:
                store.discard(object_id)
            return None
        return {"data": {"id": object_id}}

    def _variants_page(self, item_id: str, params: dict[str, str]) -> dict[str, Any]:
        if item_id not in self.items:
            raise NotFound("klaviyo", 404, "Not Found")
        ids = sorted(v for v, item in self.variants.items() if item == item_id)
        start = int(params.get("page[cursor]", 0))
        page = ids[start:start + self.page_size]
        more = start + self.page_size < len(ids)
        next_link = f"https://a.klaviyo.com/api/catalog-items/x/variants?page%5Bcursor%5D={start + self.page_size}"
        return {"data": [{"type": "catalog-variant", "id": v} for v in page],
                "links": {"next": next_link if more else None}}

    def writes(self) -> list[tuple[str, str]]:
        return [c for c in self.calls if c[0] != "GET"]


class FakeCommercetools:
    def __init__(self, *resources: dict[str, Any]) -> None:
        self.resources = {r["id"]: r for r in resources}
        self.reads: list[tuple[str, str, tuple[str, ...]]] = []

    def find(self, resource: str, resource_id: str, expand: Any = ()) -> dict[str, Any] | None:
        self.reads.append((resource, resource_id, tuple(expand)))
        return self.resources.get(resource_id)


@pytest.fixture(autouse=True)
def _forget_versions() -> Any:
    GUARD.clear()
    yield
    GUARD.clear()


def context(*resources: dict[str, Any], klaviyo: FakeKlaviyo | None = None) -> Context:
    return Context(settings(), FakeCommercetools(*resources), klaviyo or FakeKlaviyo())  # type: ignore[arg-type]


def run(processors: tuple, name: str, notification: dict[str, Any], ctx: Context) -> str | None:
    parsed = parse_notification(notification)
    (processor,) = [p for p in processors if p.accepts(parsed, ctx.settings)]
    assert processor.name == name
    return processor.run(parsed, ctx)


ITEM = f"$custom:::$default:::{PRODUCT_ID}"
V32, V34, V36 = (f"$custom:::$default:::JNS-SLIM-{n}-BLUE" for n in (32, 34, 36))


def test_product_published_new_item_then_variants_in_order() -> None:
    ctx = context(product())
    assert run(products.PROCESSORS, "ProductPublished", fixture("catalog_message_product_published"), ctx) is None
    assert ctx.commercetools.reads == [("products", PRODUCT_ID, ("masterData.current.categories[*].ancestors[*]",))]
    assert ctx.klaviyo.calls == [
        ("PATCH", f"/api/catalog-items/{ITEM}"), ("POST", "/api/catalog-items"),  # 404 → create
        ("GET", f"/api/catalog-items/{ITEM}/variants"),
        ("POST", "/api/catalog-variants"), ("POST", "/api/catalog-variants"), ("POST", "/api/catalog-variants"),
    ]
    assert set(ctx.klaviyo.variants) == {V32, V34, V36}  # the SKU-less variant is skipped
    assert GUARD.last("product", PRODUCT_ID) == 12


def test_product_published_updates_and_deletes_gone_variants() -> None:
    klaviyo = FakeKlaviyo(page_size=1)  # several pages: all are read
    klaviyo.items.add(ITEM)
    klaviyo.variants.update({V32: ITEM, catalog_id("OLD-SKU"): ITEM})
    ctx = context(product(), klaviyo=klaviyo)
    assert run(products.PROCESSORS, "ProductPublished", fixture("catalog_message_product_published"), ctx) is None
    assert klaviyo.writes() == [
        ("PATCH", f"/api/catalog-items/{ITEM}"),
        ("DELETE", "/api/catalog-variants/$custom:::$default:::OLD-SKU"),
        ("PATCH", f"/api/catalog-variants/{V32}"), ("POST", "/api/catalog-variants"),
        ("POST", "/api/catalog-variants"),
    ]
    assert set(klaviyo.variants) == {V32, V34, V36}


def test_product_with_many_variants_sends_bulk_jobs() -> None:
    p = product()
    current = p["masterData"]["current"]
    template = current["variants"][0]
    current["variants"] = [{**template, "id": i + 2, "sku": f"SKU-{i}"} for i in range(30)]
    klaviyo = FakeKlaviyo()
    klaviyo.items.add(ITEM)
    klaviyo.variants.update({catalog_id("SKU-0"): ITEM} | {catalog_id(f"OLD-{i}"): ITEM for i in range(25)})
    run(products.PROCESSORS, "ProductPublished", fixture("catalog_message_product_published"),
        context(p, klaviyo=klaviyo))
    assert klaviyo.writes() == [
        ("PATCH", f"/api/catalog-items/{ITEM}"),
        ("POST", "/api/catalog-variant-bulk-delete-jobs"),
        ("POST", "/api/catalog-variant-bulk-update-jobs"),
        ("POST", "/api/catalog-variant-bulk-create-jobs"),
    ]


def test_product_published_ignored_when_gone_unpublished_or_stale() -> None:
    message = fixture("catalog_message_product_published")
    assert run(products.PROCESSORS, "ProductPublished", message, context()) == \
        "product no longer exists in commercetools"
    unpublished = product()
    unpublished["masterData"]["published"] = False
    ctx = context(unpublished)
    assert "no longer published" in run(products.PROCESSORS, "ProductPublished", message, ctx)
    assert ctx.klaviyo.calls == []
    GUARD.applied("product", PRODUCT_ID, 13)
    ctx = context(product())
    assert "older than version 13" in run(products.PROCESSORS, "ProductPublished", message, ctx)
    assert ctx.commercetools.reads == [] and ctx.klaviyo.calls == []


def test_product_unpublished_deletes_variants_then_item() -> None:
    klaviyo = FakeKlaviyo()
    klaviyo.items.add(ITEM)
    klaviyo.variants.update({V32: ITEM, V34: ITEM})
    unpublished = product()
    unpublished["masterData"]["published"] = False
    ctx = context(unpublished, klaviyo=klaviyo)
    assert run(products.PROCESSORS, "ProductUnpublished", fixture("catalog_message_product_unpublished"),
               ctx) is None
    assert klaviyo.writes() == [("DELETE", f"/api/catalog-variants/{V32}"),
                                ("DELETE", f"/api/catalog-variants/{V34}"), ("DELETE", f"/api/catalog-items/{ITEM}")]
    assert GUARD.last("product", PRODUCT_ID) == 13
    assert run(products.PROCESSORS, "ProductUnpublished", fixture("catalog_message_product_unpublished"),
               context(unpublished)) == "item was not in Klaviyo"


def test_late_unpublish_of_a_republished_product_is_skipped() -> None:
    klaviyo = FakeKlaviyo()
    klaviyo.items.add(ITEM)
    republished = product()
    republished["version"] = 20
    message = fixture("catalog_message_product_unpublished")
    assert "published again" in run(products.PROCESSORS, "ProductUnpublished", message,
                                    context(republished, klaviyo=klaviyo))
    GUARD.applied("product", PRODUCT_ID, 20)  # and with this process's memory, no read at all
    ctx = context(republished, klaviyo=klaviyo)
    assert "older than version 20" in run(products.PROCESSORS, "ProductUnpublished", message, ctx)
    assert klaviyo.writes() == [] and ctx.commercetools.reads == []


def test_product_resource_deleted_is_always_handled() -> None:
    klaviyo = FakeKlaviyo()
    klaviyo.items.add(ITEM)
    klaviyo.variants[V36] = ITEM
    ctx = replace(context(klaviyo=klaviyo), settings=settings(
        product=ProductSettings(("ProductPublished",), (), "")))  # nothing configured as "deleted"
    assert run(products.PROCESSORS, "ProductResourceDeleted", fixture("catalog_change_product_deleted"),
               ctx) is None
    assert klaviyo.writes() == [("DELETE", f"/api/catalog-variants/{V36}"), ("DELETE", f"/api/catalog-items/{ITEM}")]
    assert run(products.PROCESSORS, "ProductResourceDeleted", fixture("catalog_change_product_deleted"),
               context()) == "item was not in Klaviyo"


def test_inventory_update_sends_zero_stock() -> None:
    klaviyo = FakeKlaviyo()
    klaviyo.variants[V32] = ITEM
    entry = fixture("catalog_inventory_entry_zero")
    ctx = context(entry, klaviyo=klaviyo)
    assert run(inventory.PROCESSORS, "InventoryResourceUpdated", fixture("catalog_change_inventory_updated"),
               ctx) is None
    assert ctx.commercetools.reads == [("inventory", entry["id"], ())]
    assert klaviyo.calls == [("PATCH", f"/api/catalog-variants/{V32}")]
    assert GUARD.last("inventory-entry", entry["id"]) == 7


def test_inventory_update_ignored_cases() -> None:
    notification = fixture("catalog_change_inventory_updated")
    entry = fixture("catalog_inventory_entry_zero")
    assert "not in Klaviyo yet" in run(inventory.PROCESSORS, "InventoryResourceUpdated", notification,
                                       context(entry))  # PATCH 404: never created from stock alone
    other = {**fixture("catalog_inventory_entry_other_channel"), "id": entry["id"]}
    ctx = context(other)
    assert "not in the channel" in run(inventory.PROCESSORS, "InventoryResourceUpdated", notification, ctx)
    assert ctx.klaviyo.calls == []
    no_channel = replace(context(entry), settings=settings(product=ProductSettings((), (), "")))
    assert "names none" in run(inventory.PROCESSORS, "InventoryResourceUpdated", notification, no_channel)
    assert "no longer exists" in run(inventory.PROCESSORS, "InventoryResourceUpdated", notification, context())
    GUARD.applied("inventory-entry", entry["id"], 8)
    assert "older than version 8" in run(inventory.PROCESSORS, "InventoryResourceUpdated", notification,
                                         context(entry))


def test_inventory_without_sku_is_not_accepted() -> None:
    notification = fixture("catalog_change_inventory_updated")
    del notification["resourceUserProvidedIdentifiers"]
    parsed = parse_notification(notification)
    assert not any(p.accepts(parsed, settings()) for p in inventory.PROCESSORS)
