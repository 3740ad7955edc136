"""Never delete what is not ours: a merchant's Klaviyo catalog fed by other sources (another commercetools project,
the merchant's own feed, another integration, leftovers of the reference plugin) survives the clean-up of a
products and a categories import, and `deleteAll`, unchanged; what we write carries our mark, and an unmarked object
of a product or category that still exists is adopted by its next upsert."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from job.service import JobService
from shared.ownership import CATEGORY_CONTAINER, PROJECT_KEY, RESOURCE_ID
from tests.builders import PROJECT
from tests.data import fixture
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo
from tests.test_job_support import CATEGORIES, PREFIX, PRODUCTS, job_config, seed_catalog

OTHER_PRODUCT = "5e0c0000-0000-4000-8000-0otherproject"
REFERENCE_LEFTOVER = "1eft0000-0000-4000-8000-000000000001"  # a product deleted before the migration
OTHER_CATEGORY = "5e0c0000-0000-4000-8000-0othercategory"


def item_of(item_id: str) -> dict[str, Any]:
    return {"item": {"data": {"type": "catalog-item", "id": item_id}}}


def prefill_with_others(klaviyo: FakeKlaviyo) -> None:
    """Objects of other sources, interleaved (page size 2) with what the imports will write."""
    other = {PROJECT_KEY: "another-project", RESOURCE_ID: OTHER_PRODUCT}
    klaviyo.add_catalog("item", PREFIX + OTHER_PRODUCT, {
        "external_id": OTHER_PRODUCT, "title": "Another store's shirt", "custom_metadata": other})
    klaviyo.add_catalog("variant", f"{PREFIX}OTHER-SKU-1", {
        "external_id": "OTHER-SKU-1", "sku": "OTHER-SKU-1", "custom_metadata": other}, item_of(PREFIX + OTHER_PRODUCT))
    klaviyo.add_catalog("item", f"{PREFIX}FEED-TSHIRT-1", {"external_id": "FEED-TSHIRT-1", "title": "Feed T-shirt",
                                                          "custom_metadata": {"brand": "Acme"}})
    klaviyo.add_catalog("variant", f"{PREFIX}FEED-TSHIRT-1-M", {"external_id": "FEED-TSHIRT-1-M",
                                                               "sku": "FEED-TSHIRT-1-M"},
                        item_of(f"{PREFIX}FEED-TSHIRT-1"))
    klaviyo.add_catalog("item", PREFIX + REFERENCE_LEFTOVER, {"external_id": REFERENCE_LEFTOVER, "title": "Gone"})
    klaviyo.add_catalog("item", "$shopify:::$default:::998877", {"external_id": "998877", "title": "Shopify"})
    klaviyo.add_catalog("category", PREFIX + OTHER_CATEGORY, {"external_id": OTHER_CATEGORY, "name": "Other > Shop"})
    klaviyo.add_catalog("category", f"{PREFIX}summer-sale", {"external_id": "summer-sale", "name": "Summer sale"})
    klaviyo.add_catalog("category", "$shopify:::$default:::55", {"external_id": "55", "name": "Shopify"})


def others(klaviyo: FakeKlaviyo) -> dict[str, dict[str, Any]]:
    ours_items = {PREFIX + fixture(name)["id"] for name in PRODUCTS}
    ours_categories = {PREFIX + fixture(name)["id"] for name in CATEGORIES}
    return copy.deepcopy({
        "items": {k: v for k, v in klaviyo.items.items() if k not in ours_items},
        "variants": {k: v for k, v in klaviyo.variants.items()
                     if v["relationships"].get("item", {}).get("data", {}).get("id") not in ours_items},
        "categories": {k: v for k, v in klaviyo.categories.items() if k not in ours_categories},
    })


def run(service: JobService, import_type: str, body: dict[str, Any]) -> dict[str, Any]:
    service.request(import_type, body)
    [summary] = service.run(types=(import_type,))
    assert summary["status"] == "completed", summary
    return summary


def test_a_catalog_of_other_sources_survives_imports_and_delete_all(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, services: Callable[..., JobService]) -> None:
    seed_catalog(ct)
    prefill_with_others(klaviyo)
    # Written by the reference plugin for products and categories that still exist: no mark yet.
    jeans, women = fixture("product_jeans")["id"], fixture("category_women")["id"]
    klaviyo.add_catalog("item", PREFIX + jeans, {"external_id": jeans, "title": "Old jeans"})
    klaviyo.add_catalog("category", PREFIX + women, {"external_id": women, "name": "Old women"})
    before = others(klaviyo)
    assert len(before["items"]) == 4 and len(before["variants"]) == 2 and len(before["categories"]) == 3
    service = services(job_config(pageSize=2))

    run(service, "categories", {})
    run(service, "products", {})

    assert others(klaviyo) == before
    ours = {PREFIX + fixture(name)["id"] for name in PRODUCTS}
    assert set(klaviyo.items) == set(before["items"]) | ours
    adopted = klaviyo.items[PREFIX + jeans]["attributes"]
    assert adopted["title"] == "Slim Jeans" and adopted["custom_metadata"][PROJECT_KEY] == PROJECT
    assert adopted["custom_metadata"][RESOURCE_ID] == jeans
    assert all(v["attributes"]["custom_metadata"][PROJECT_KEY] == PROJECT for k, v in klaviyo.variants.items()
               if k not in before["variants"])
    assert klaviyo.categories[PREFIX + women]["attributes"]["name"] == "Women"
    assert {o["key"] for o in ct.store["custom-objects"].values() if o["container"] == CATEGORY_CONTAINER} == {
        fixture(name)["id"] for name in CATEGORIES}

    # A second plain run after our products and categories are gone from commercetools removes ours only.
    for name in CATEGORIES:
        del ct.store["categories"][fixture(name)["id"]]
    for name in PRODUCTS:
        del ct.store["products"][fixture(name)["id"]]
    run(service, "categories", {})
    run(service, "products", {})
    assert others(klaviyo) == before
    assert klaviyo.items == before["items"] and klaviyo.variants == before["variants"]
    assert klaviyo.categories == before["categories"]


def test_delete_all_removes_ours_and_adopted_only(ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                                  services: Callable[..., JobService]) -> None:
    seed_catalog(ct)
    prefill_with_others(klaviyo)
    jeans = fixture("product_jeans")["id"]
    klaviyo.add_catalog("item", PREFIX + jeans, {"external_id": jeans, "title": "Old jeans"})
    service = services(job_config(pageSize=2))
    run(service, "categories", {})
    run(service, "products", {})  # adopts the jeans' item
    before = others(klaviyo)

    products = run(service, "products", {"deleteAll": True, "confirmDeletion": "products"})
    categories = run(service, "categories", {"deleteAll": True, "confirmDeletion": "categories"})

    assert others(klaviyo) == before
    assert klaviyo.items == before["items"] and klaviyo.variants == before["variants"]
    assert klaviyo.categories == before["categories"]
    assert products["counts"]["failed"] == 0 and categories["counts"]["failed"] == 0
    assert products["counts"]["read"] == len(PRODUCTS) and categories["counts"]["read"] == len(CATEGORIES)
    assert not [o for o in ct.store["custom-objects"].values() if o["container"] == CATEGORY_CONTAINER]


def test_delete_all_on_a_catalog_of_others_only_deletes_nothing(ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                                                services: Callable[..., JobService]) -> None:
    prefill_with_others(klaviyo)
    before = others(klaviyo)
    service = services(job_config(pageSize=2))

    run(service, "products", {"deleteAll": True, "confirmDeletion": "products"})
    run(service, "categories", {"deleteAll": True, "confirmDeletion": "categories"})

    assert others(klaviyo) == before and klaviyo.items == before["items"]
    assert not [r for r in klaviyo.requests if r.method != "GET"]
