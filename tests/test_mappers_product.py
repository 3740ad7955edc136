"""Product and inventory mappers (commercetools → Klaviyo catalog) and the version guard: pure functions, no HTTP.

The product and inventory processors are tested end to end through the event app in `test_event_catalog.py`."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.bulk import catalog_job_body
from shared.config import ProductSettings, Settings, load_settings
from shared.context import build_context, close_context
from shared.klaviyo import catalog_id
from shared.mappers.product import (
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
from shared.versions import VersionGuard
from tests.data import fixture
from tests.fakes.klaviyo_sdk import load_validator
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
    """The request matches the klaviyo-api SDK's request model."""
    assert VALIDATOR.validate(method, path, body) == []


def categories(*ids: str) -> dict[str, Any]:
    return {"categories": {"data": [{"type": "catalog-category", "id": catalog_id(i)} for i in ids]}}


# --- items and variants ---------------------------------------------------------------------------------------

TITLE_JSON = '{"title_en-US":"Slim Fit Jeans","title_de-DE":"Slim-Fit-Jeans"}'
SLUG_JSON = '{"slug_en-US":"slim-fit-jeans","slug_de-DE":"slim-fit-jeans-damen"}'
MARK = {"commercetools_project_key": "shop", "commercetools_id": PRODUCT_ID}  # ours, for this project
MASTER_METADATA = {
    "title_json": TITLE_JSON,
    "slug_json": SLUG_JSON,
    **MARK,
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
        "custom_metadata": {"title_json": TITLE_JSON, "slug_json": SLUG_JSON, **MARK,
                            "price_json": '{"price_EUR":89.9499,"price_USD":95.0}'},
        "published": True,
    }


def test_untracked_variant_without_current_price() -> None:
    data = variant_create(product(), variant("JNS-SLIM-36-BLUE"), settings(), NOW)
    attributes = data["attributes"]
    assert attributes["price"] == 0  # only a future price and a customer-group price
    assert (attributes["inventory_quantity"], attributes["inventory_policy"]) == (0, 0)  # not tracked: not hidden
    assert attributes["image_full_url"] == "https://images.example.com/jeans/slim-blue-36.jpg"
    assert attributes["custom_metadata"] == {"title_json": TITLE_JSON, "slug_json": SLUG_JSON, **MARK}
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
    body = catalog_job_body("item", "create", [create])
    assert body == {"data": {"type": "catalog-item-bulk-create-job", "attributes": {"items": {"data": [create]}}}}
    check("POST", "/api/catalog-item-bulk-create-jobs", body)
    check("POST", "/api/catalog-item-bulk-update-jobs", catalog_job_body("item", "update", [update]))
    delete = catalog_job_body("item", "delete", [update])
    assert delete["data"]["attributes"]["items"]["data"] == [{"type": "catalog-item", "id": update["id"]}]
    check("POST", "/api/catalog-item-bulk-delete-jobs", delete)
    variants = [variant_create(product(), v, settings(), NOW) for v in split_variants(product())[0]]
    check("POST", "/api/catalog-variant-bulk-create-jobs", catalog_job_body("variant", "create", variants))
    updates = [variant_update(product(), v, settings(), NOW) for v in split_variants(product())[0]]
    check("POST", "/api/catalog-variant-bulk-update-jobs", catalog_job_body("variant", "update", updates))
    gone = catalog_job_body("variant", "delete", [updates[0], {"id": "$custom:::$default:::OLD"}])
    assert gone["data"]["attributes"]["variants"]["data"] == [
        {"type": "catalog-variant", "id": "$custom:::$default:::JNS-SLIM-32-BLUE"},
        {"type": "catalog-variant", "id": "$custom:::$default:::OLD"}]
    check("POST", "/api/catalog-variant-bulk-delete-jobs", gone)


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


def test_version_guard_stale_reason() -> None:
    guard = VersionGuard()
    guard.applied("product", "a", 7)
    assert guard.stale_reason("product", "a", 6) == "product version 6 is older than version 7, already applied"
    assert guard.stale_reason("product", "a", 8) is None
    assert guard.stale_reason("product", "a", None) is None


def test_each_context_has_its_own_version_guard() -> None:
    first, second = build_context(settings()), build_context(settings())
    try:
        assert isinstance(first.versions, VersionGuard) and first.versions is not second.versions
        first.versions.applied("product", "a", 7)
        assert first.versions.last("product", "a") == 7
        assert second.versions.last("product", "a") is None  # one app instance's memory, not the process's
    finally:
        close_context(first)
        close_context(second)


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
