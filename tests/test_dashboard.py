"""What the dashboard shows must be right: ItemPrice is the unit price paid, filters that embed data are escaped,
and realtime writes through Klaviyo bulk jobs are checked (a failed job is never answered 204)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from event.app import create_app
from job.app import create_app as create_job_app
from job.service import JobService
from shared.config import Settings
from shared.dead_letters import CONTAINER as DEAD_LETTERS
from shared.klaviyo import catalog_id
from shared.pending_jobs import CONTAINER as PENDING
from tests.builders import message, pubsub
from tests.data import fixture
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo
from tests.test_event_catalog import CONFIG, ITEM, published, seed, stored_product
from tests.test_job_support import PREFIX, job_config, seed_catalog, stored


def records(ct: FakeCommercetools, container: str) -> dict[str, dict[str, Any]]:
    return {o["key"]: o["value"] for o in ct.store.get("custom-objects", {}).values() if o["container"] == container}


# --- ItemPrice ------------------------------------------------------------------------------------------------


def test_item_price_is_the_unit_price_paid_after_discounts(event_app: TestClient, ct: FakeCommercetools,
                                                           klaviyo: FakeKlaviyo) -> None:
    seed_catalog(ct)
    order = fixture("order_placed")
    line = order["lineItems"][0]  # 2 × 49.99 listed; a cart discount brings each to 40.00
    line["discountedPricePerQuantity"] = [{"quantity": 2, "discountedPrice": {
        "value": {"type": "centPrecision", "currencyCode": "EUR", "centAmount": 4000, "fractionDigits": 2},
        "includedDiscounts": []}}]
    line["totalPrice"] = {"type": "centPrecision", "currencyCode": "EUR", "centAmount": 8000, "fractionDigits": 2}
    assert event_app.post("/", json=pubsub(message("order", order["id"], "OrderCreated", order=order))
                          ).status_code == 204

    [placed] = [e for e in klaviyo.events if e["metric"]["data"]["attributes"]["name"] == "Placed Order"]
    products = [e for e in klaviyo.events if e["metric"]["data"]["attributes"]["name"] == "Ordered Product"]
    entries = placed["properties"]["Items"] + [e["properties"] for e in products]
    assert len(entries) == 2 * len(order["lineItems"])
    for entry in entries:
        assert entry["ItemPrice"] * entry["Quantity"] == pytest.approx(entry["RowTotal"], abs=1e-9)
    first = placed["properties"]["Items"][0]
    assert (first["ItemPrice"], first["OriginalItemPrice"], first["RowTotal"]) == (40.0, 49.99, 80.0)
    undiscounted = placed["properties"]["Items"][2]
    assert undiscounted["ItemPrice"] == 19.9 and "OriginalItemPrice" not in undiscounted


# --- filters --------------------------------------------------------------------------------------------------


ODD_SKUS = ['BOLT-3/4"', "PIPE\\1/2", 'NUT-"M8"\\X', "WASHER 10'"]


def odd_product() -> dict[str, Any]:
    product = copy.deepcopy(stored(fixture("product_shirt")))
    product.update(id="b0170000-0000-4000-8000-000000000b01", key="bolts")
    for data in (product["masterData"]["current"], product["masterData"]["staged"]):
        master = data["masterVariant"]
        master["sku"] = ODD_SKUS[0]
        data["variants"] = [{**copy.deepcopy(master), "id": n + 2, "sku": sku} for n, sku in enumerate(ODD_SKUS[1:])]
    return product


def test_skus_with_quotes_and_backslashes_do_not_fail_a_products_import(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, services: Callable[..., JobService]) -> None:
    ct.add("products", odd_product())
    service = services(job_config())
    for _run in range(2):  # the second run finds them all (the filter matched) and updates them
        service.request("products", {})
        [summary] = service.run()
        assert summary["status"] == "completed" and summary["counts"]["failed"] == 0, summary
        assert summary["errors"] == []
    assert set(klaviyo.variants) == {catalog_id(s) for s in ODD_SKUS}
    assert not [r for r in klaviyo.requests if r.status == 409 or (r.status or 0) >= 400]
    assert all(job["failed_count"] == 0 for job in klaviyo.jobs.values())
    filters = [r.query["filter"] for r in klaviyo.calls("GET", r"^/api/catalog-variants$")]
    assert filters and all('BOLT-3/4\\"' in f for f in filters)


@pytest.mark.parametrize("text", ['any(ids,["$custom:::$default:::BOLT-3/4""])',
                                  'any(ids,["$custom:::$default:::PIPE\\1"])',
                                  'any(ids,["unterminated])', "equals(sku,'a'b')"])
def test_the_stand_in_refuses_a_malformed_filter_with_400(klaviyo: FakeKlaviyo, text: str) -> None:
    status, _headers, _body = klaviyo.handle("GET", f"/api/catalog-variants?filter={text}", {
        "Authorization": "Klaviyo-API-Key pk_test", "revision": klaviyo.revision or "2026-07-15"}, b"")
    assert status == 400
    klaviyo.errors.clear()  # refused on purpose


# --- realtime bulk jobs ---------------------------------------------------------------------------------------


def many_variants(count: int = 24) -> dict[str, Any]:
    """The catalog product with `count` SKUs: more variant writes than one delivery sends one by one."""
    product = stored_product()
    for data in (product["masterData"]["current"], product["masterData"]["staged"]):
        template = data["masterVariant"]
        data["variants"] = [{**copy.deepcopy(template), "id": n + 2, "sku": f"MANY-{n:02d}"} for n in range(count)]
    return product


def another_source_has(klaviyo: FakeKlaviyo, sku: str) -> None:
    """The same SKU, written by another source under its own item: Klaviyo's create job fails on it."""
    klaviyo.add_catalog("item", f"{PREFIX}FEED-1", {"external_id": "FEED-1", "title": "Feed"})
    klaviyo.add_catalog("variant", catalog_id(sku), {"external_id": sku, "sku": sku},
                        {"item": {"data": {"type": "catalog-item", "id": f"{PREFIX}FEED-1"}}})


def test_a_failed_variant_job_is_a_dead_letter_with_klaviyos_reason(
        configure: Callable[..., Settings], ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed(ct, many_variants())
    another_source_has(klaviyo, "MANY-07")
    with TestClient(create_app(configure(CONFIG, PREFERRED_CURRENCY="EUR"))) as app:
        response = app.post("/", json=pubsub(published()))
    assert response.status_code == 202 and response.headers["x-outcome"] == "failed"
    [record] = records(ct, DEAD_LETTERS).values()
    assert "variant writes of product" in record["reason"] and "already exists" in record["reason"]
    assert record["processors"] == ["ProductPublished"] and record["notification"]["type"] == "ProductPublished"
    assert any(r.path.startswith("/api/catalog-variant-bulk-create-jobs/") for r in klaviyo.calls("GET"))
    assert ITEM in klaviyo.items


def test_jobs_still_processing_are_checked_by_the_next_scheduled_run(
        configure: Callable[..., Settings], ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed(ct, many_variants())
    another_source_has(klaviyo, "MANY-07")
    klaviyo.job_polls_until_complete = 1_000  # Klaviyo is slow today
    config = {**CONFIG, "event": {"timeBudgetSeconds": 3}}
    with TestClient(create_app(configure(config, PREFERRED_CURRENCY="EUR"))) as app:
        response = app.post("/", json=pubsub(published()))
    assert response.status_code == 204  # accepted by Klaviyo; its outcome is checked later
    [pending] = records(ct, PENDING).values()
    assert pending["jobs"] and pending["notification"]["type"] == "ProductPublished"
    assert records(ct, DEAD_LETTERS) == {}

    with TestClient(create_job_app(configure(config))) as job:
        assert job.post("/").json()["pendingJobs"][0]["outcome"] == "processing"
        for klaviyo_job in klaviyo.jobs.values():
            klaviyo_job["polls_left"] = 0  # Klaviyo is done
        summary = job.post("/").json()
    assert [r["outcome"] for r in summary["pendingJobs"]] == ["dead letter"]
    assert records(ct, PENDING) == {}
    [record] = records(ct, DEAD_LETTERS).values()
    assert "already exists" in record["reason"] and record["notification"]["type"] == "ProductPublished"


def test_jobs_that_succeed_are_answered_204_and_leave_nothing_behind(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed(ct, many_variants())
    response = event_app.post("/", json=pubsub(published()))
    assert response.status_code == 204
    assert len([v for v in klaviyo.variants if v.startswith(f"{PREFIX}MANY-")]) == 24
    assert records(ct, PENDING) == {} and records(ct, DEAD_LETTERS) == {}
