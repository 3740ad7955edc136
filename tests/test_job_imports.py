"""Bulk imports end to end: commercetools and Klaviyo are local HTTP servers (Klaviyo's requests are checked
against the klaviyo-api SDK models), the job service reads pages, sends them and checkpoints, as the scheduler
would run it."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from event.app import create_app as create_event_app
from job.requests import BadRequest
from job.service import JobService
from shared.config import Settings
from tests.builders import message, pubsub
from tests.data import fixture
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo
from tests.test_job_support import (
    CATEGORIES,
    PREFIX,
    PRODUCTS,
    ct_queries,
    event_keys,
    import_record,
    job_config,
    make_customer,
    make_order,
    order_keys,
    seed_catalog,
    seed_klaviyo,
    seed_ours,
    stored,
)

PAYMENT_REFUNDS = [("Refunded Order", "e1e2e3e4-0000-4000-8000-00000refund1"),
                   ("Refunded Order", "e1e2e3e4-0000-4000-8000-00000refund2")]
PRODUCT_ITEMS = {PREFIX + fixture(name)["id"] for name in PRODUCTS}
PRODUCT_SKUS = {"JEANS-32-BLUE", "JEANS-34-BLUE", "SHIRT-M-WHITE"}


def realtime(settings: Settings, *notifications: dict[str, Any]) -> None:
    """Deliver notifications through the event app, as commercetools would."""
    with TestClient(create_event_app(settings)) as app:
        for notification in notifications:
            assert app.post("/", json=pubsub(notification)).status_code == 204


def catalog_state(klaviyo: FakeKlaviyo) -> dict[str, Any]:
    return copy.deepcopy({"items": klaviyo.items, "variants": klaviyo.variants, "categories": klaviyo.categories})


def job_types(klaviyo: FakeKlaviyo, since: int = 0) -> list[str]:
    """The bulk job endpoints Klaviyo was asked to create jobs on, in order."""
    return [r.path.removeprefix("/api/") for r in klaviyo.requests[since:]
            if r.method == "POST" and r.path.endswith("-jobs")]


# --- orders -----------------------------------------------------------------------------------------------------


def test_orders_import_sends_every_event_of_every_order_once(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, services: Callable[..., JobService]) -> None:
    seed_catalog(ct)
    ct.add("payments", fixture("payment_refunds"))
    orders = [make_order(1, payments=True), make_order(2, state="Complete", customer_id="c-2"),
              make_order(3, state="Cancelled")]
    for order in orders:
        ct.add("orders", order)
    no_identity = ct.add("orders", stored(fixture("order_no_identity")))  # id sorts after the others
    service = services(job_config(pageSize=2))

    service.request("orders", {})
    [summary] = service.run()

    expected = [key for order in orders for key in order_keys(order)] + PAYMENT_REFUNDS
    assert event_keys(klaviyo.events) == Counter(expected) and len(set(expected)) == len(expected)
    assert summary["status"] == "completed"
    assert summary["counts"] == {"read": 4, "sent": len(expected), "skipped": 1, "failed": 0}
    assert summary["errors"] == [] and summary["lastError"] is None
    # pages of 2 by id, each after the last one read; one events request per page that has events
    assert ct_queries(ct, "orders") == [
        {"limit": ["2"], "withTotal": ["false"], "sort": ["id asc"], "expand": ["paymentInfo.payments[*]"]},
        {"limit": ["2"], "withTotal": ["false"], "where": [f'id > "{orders[1]["id"]}"'], "sort": ["id asc"],
         "expand": ["paymentInfo.payments[*]"]},
        {"limit": ["2"], "withTotal": ["false"], "where": [f'id > "{no_identity["id"]}"'], "sort": ["id asc"],
         "expand": ["paymentInfo.payments[*]"]},  # a full page may not be the last
    ]
    assert job_types(klaviyo) == ["event-bulk-create-jobs", "event-bulk-create-jobs"]
    assert no_identity["id"] > orders[-1]["id"]
    assert import_record(ct, "orders")["checkpoint"] == {"lastId": no_identity["id"]}


def test_an_order_that_cannot_be_mapped_is_counted_and_named_and_the_others_are_sent(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, services: Callable[..., JobService]) -> None:
    good, bad, other = make_order(1), make_order(2), make_order(3)
    del bad["totalPrice"]  # no order looks like this; a mapper must not stop the import over it
    for order in (good, bad, other):
        ct.add("orders", order, check_shape=order is not bad)
    service = services(job_config(pageSize=3))
    service.request("orders", {})

    [summary] = service.run()

    assert event_keys(klaviyo.events) == Counter(order_keys(good) + order_keys(other))
    assert summary["status"] == "completed"
    assert summary["counts"] == {"read": 3, "sent": len(order_keys(good) + order_keys(other)), "skipped": 0,
                                 "failed": 1}
    assert summary["errors"] == [f"order {bad['id']}: not sent, it cannot be mapped (KeyError: no field totalPrice)"]


def test_bulk_and_realtime_send_the_same_order_events(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, settings: Settings,
        services: Callable[..., JobService]) -> None:
    seed_catalog(ct)
    order = make_order(7, customer_id="e54d8233-be41-4ce1-ae2b-3b5e1e1d8a01")
    ct.add("orders", order)
    realtime(settings, message("order", order["id"], "OrderCreated", order=order))
    live = copy.deepcopy(klaviyo.events)
    assert sorted(event_keys(live)) == sorted(order_keys(order))
    klaviyo.events.clear()

    service = services()
    service.request("orders", {"ids": [order["id"]]})
    service.run()

    def by_key(events: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
        return {(e["metric"]["data"]["attributes"]["name"], e["unique_id"]): e for e in events}

    assert by_key(klaviyo.events) == by_key(live)  # every attribute: profile, properties, time, value, unique_id


# --- customers --------------------------------------------------------------------------------------------------


def test_customers_import_upserts_profiles_in_pages_like_realtime(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, settings: Settings,
        services: Callable[..., JobService]) -> None:
    customers = [make_customer(n) for n in range(1, 5)]
    for customer in customers:
        ct.add("customers", customer)
    # commercetools requires a customer's email; the import must still skip one without it, not stop
    no_email = ct.add("customers", make_customer(5, email=None), check_shape=False)
    realtime(settings, *(message("customer", c["id"], "CustomerCreated", customer=c) for c in customers))
    live = sorted(klaviyo.profiles.values(), key=lambda p: p["external_id"])
    assert len(live) == 4
    klaviyo.profiles.clear()

    service = services(job_config(pageSize=2))
    service.request("customers", {})
    [summary] = service.run()

    assert sorted(klaviyo.profiles.values(), key=lambda p: p["external_id"]) == live
    assert summary["counts"] == {"read": 5, "sent": 4, "skipped": 1, "failed": 0}
    jobs = [r.body["data"]["attributes"]["profiles"]["data"] for r in klaviyo.calls("POST", "profile-bulk-import")]
    assert [[p["attributes"]["external_id"] for p in job] for job in jobs] == [
        [customers[0]["id"], customers[1]["id"]], [customers[2]["id"], customers[3]["id"]]]  # no_email skipped
    assert {q["limit"][0] for q in ct_queries(ct, "customers")} == {"2"}
    assert no_email["id"] not in {p["external_id"] for p in klaviyo.profiles.values()}


# --- categories -------------------------------------------------------------------------------------------------


def test_categories_import_upserts_like_realtime_and_removes_ours_that_are_gone(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, settings: Settings,
        services: Callable[..., JobService]) -> None:
    for name in CATEGORIES:
        ct.add("categories", fixture(name))
    realtime(settings, *(message("category", fixture(n)["id"], "CategoryCreated", category=fixture(n))
                         for n in CATEGORIES))
    live = catalog_state(klaviyo)["categories"]
    assert len(live) == len(CATEGORIES)
    klaviyo.categories.clear()
    # Before ours: three of ours that commercetools no longer has (they fill the first reconcile pages, so
    # deleting them moves the rest up), and one of another integration, never touched.
    for n in range(3):
        seed_ours(klaviyo, ct, "category", f"{PREFIX}gone-{n}", {"external_id": f"gone-{n}", "name": f"Gone {n}"})
    seed_klaviyo(klaviyo, "category", "$shopify:::$default:::77", {"external_id": "77", "name": "Shopify"})
    service = services(job_config(pageSize=2))

    service.request("categories", {})
    [summary] = service.run()

    assert catalog_state(klaviyo)["categories"] == {
        **live, "$shopify:::$default:::77": {"attributes": {"external_id": "77", "name": "Shopify"},
                                             "relationships": {}}}
    assert summary["status"] == "completed"
    assert summary["counts"] == {"read": 5, "sent": 5 + 3, "skipped": 0, "failed": 0}
    assert all(r.query.get("page[size]") == "2" for r in klaviyo.calls("GET", "^/api/catalog-categories$")
               if "filter" not in r.query)


def test_a_filtered_categories_import_deletes_nothing(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, services: Callable[..., JobService]) -> None:
    for name in CATEGORIES:
        ct.add("categories", fixture(name))
    seed_ours(klaviyo, ct, "category", f"{PREFIX}gone", {"external_id": "gone", "name": "Gone"})
    jeans = fixture("category_jeans")["id"]
    service = services()

    service.request("categories", {"ids": [jeans]})
    [summary] = service.run()

    assert set(klaviyo.categories) == {f"{PREFIX}gone", PREFIX + jeans}
    assert summary["counts"]["read"] == 1 and summary["status"] == "completed"


# --- products ---------------------------------------------------------------------------------------------------


def test_products_import_writes_the_catalog_like_realtime_and_removes_what_is_gone(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, settings: Settings,
        services: Callable[..., JobService]) -> None:
    seed_catalog(ct)
    realtime(settings, *(message("product", fixture(n)["id"], "ProductPublished", resourceVersion=fixture(n)["version"])
                         for n in PRODUCTS))
    live = catalog_state(klaviyo)
    assert set(live["items"]) == PRODUCT_ITEMS and set(live["variants"]) == {PREFIX + s for s in PRODUCT_SKUS}
    klaviyo.items.clear()
    klaviyo.variants.clear()
    # In Klaviyo from earlier: a variant whose SKU the jeans no longer have, and an item (with a variant) of a
    # product that commercetools no longer publishes.
    jeans = PREFIX + fixture("product_jeans")["id"]
    seed_klaviyo(klaviyo, "item", jeans, {"external_id": fixture("product_jeans")["id"], "title": "Old"})
    seed_klaviyo(klaviyo, "variant", f"{PREFIX}JEANS-30-BLUE", {"external_id": "JEANS-30-BLUE", "sku": "JEANS-30-BLUE"},
                 {"item": {"data": {"type": "catalog-item", "id": jeans}}})
    unpublished = copy.deepcopy(stored(fixture("product_shirt")))
    unpublished.update(id="a7b8c9d0-0000-4000-8000-0000000unpub", key="unpublished")
    unpublished["masterData"]["published"] = False
    ct.add("products", unpublished)
    seed_ours(klaviyo, ct, "item", PREFIX + unpublished["id"], {"external_id": unpublished["id"], "title": "Unpub"})
    seed_klaviyo(klaviyo, "variant", f"{PREFIX}UNPUB-1", {"external_id": "UNPUB-1", "sku": "UNPUB-1"},
                 {"item": {"data": {"type": "catalog-item", "id": PREFIX + unpublished["id"]}}})
    service = services(job_config(pageSize=1))

    service.request("products", {})
    [summary] = service.run()

    state = catalog_state(klaviyo)
    assert set(state["items"]) == set(live["items"]) and set(state["variants"]) == set(live["variants"])
    assert {k: v["attributes"] for k, v in state["items"].items()} == \
        {k: v["attributes"] for k, v in live["items"].items()}
    assert {k: v["attributes"] for k, v in state["variants"].items()} == \
        {k: v["attributes"] for k, v in live["variants"].items()}
    assert summary["status"] == "completed" and summary["counts"]["failed"] == 0
    assert summary["errors"] == []
    # published products only, a page at a time
    assert all(q["where"][0] == "masterData(published = true)" and q["limit"] == ["1"]
               for q in ct_queries(ct, "products") if "sort" in q)


# --- filters ----------------------------------------------------------------------------------------------------


FILTER_ORDERS = [  # n, createdAt, lastModifiedAt
    (1, "2026-01-10T00:00:00.000Z", "2026-03-01T00:00:00.000Z"),
    (2, "2026-01-20T00:00:00.000Z", "2026-02-01T00:00:00.000Z"),
    (3, "2026-02-10T00:00:00.000Z", "2026-02-11T00:00:00.000Z"),
    (4, "2026-02-20T00:00:00.000Z", "2026-04-01T00:00:00.000Z"),
]


@pytest.mark.parametrize(("body", "numbers", "where"), [
    ({"ids": ["0rde0000-0000-4000-8000-000000000003", "0rde0000-0000-4000-8000-000000000001"]}, {1, 3},
     ['id in ("0rde0000-0000-4000-8000-000000000001", "0rde0000-0000-4000-8000-000000000003")']),
    ({"startId": "0rde0000-0000-4000-8000-000000000003"}, {3, 4},
     ['id >= "0rde0000-0000-4000-8000-000000000003"']),
    ({"createdFrom": "2026-01-15T00:00:00Z", "createdTo": "2026-02-15T00:00:00+00:00"}, {2, 3},
     ['createdAt >= "2026-01-15T00:00:00.000Z"', 'createdAt <= "2026-02-15T00:00:00.000Z"']),
    ({"modifiedFrom": "2026-02-05T00:00:00Z", "modifiedTo": "2026-03-01T00:00:00Z"}, {1, 3},
     ['lastModifiedAt >= "2026-02-05T00:00:00.000Z"', 'lastModifiedAt <= "2026-03-01T00:00:00.000Z"']),
    ({"createdFrom": "2026-02-01T01:00:00+01:00"}, {3, 4}, ['createdAt >= "2026-02-01T00:00:00.000Z"']),
])
def test_filters_choose_the_orders(ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                   services: Callable[..., JobService], body: dict[str, Any],
                                   numbers: set[int], where: list[str]) -> None:
    for n, created, modified in FILTER_ORDERS:
        ct.add("orders", make_order(n, created=created, modified=modified))
    service = services(job_config(pageSize=500))

    service.request("orders", body)
    [summary] = service.run()

    placed = {uid for metric, uid in event_keys(klaviyo.events) if metric == "Placed Order"}
    assert placed == {make_order(n)["id"] for n in numbers}
    assert summary["counts"]["read"] == len(numbers)
    assert [q["where"] for q in ct_queries(ct, "orders")] == [where]
    assert summary["request"] == import_record(ct, "orders")["request"]


def test_an_ids_request_reads_its_ids_a_page_at_a_time(ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                                       services: Callable[..., JobService]) -> None:
    orders = [make_order(n) for n in range(1, 6)]
    for order in orders:
        ct.add("orders", order)
    wanted = [orders[4]["id"], "missing-order", orders[0]["id"], orders[2]["id"], orders[0]["id"]]
    service = services(job_config(pageSize=2))

    service.request("orders", {"ids": wanted})
    [summary] = service.run()

    assert [(q["where"], q["limit"]) for q in ct_queries(ct, "orders")] == [
        ([f'id in ("{orders[0]["id"]}", "{orders[2]["id"]}")'], ["2"]),
        ([f'id in ("{orders[4]["id"]}", "missing-order")'], ["2"]),
    ]
    assert event_keys(klaviyo.events) == Counter(k for o in (orders[0], orders[2], orders[4]) for k in order_keys(o))
    assert summary["status"] == "completed" and summary["counts"]["read"] == 3


@pytest.mark.parametrize(("import_type", "body", "problem"), [
    ("orders", {"createdFrom": "yesterday"}, "ISO 8601"),
    ("orders", {"createdFrom": "2026-01-01T00:00:00"}, "time zone"),
    ("orders", {"createdFrom": "2026-02-01T00:00:00Z", "createdTo": "2026-01-01T00:00:00Z"}, "after"),
    ("categories", {"createdFrom": "2026-01-01T00:00:00Z"}, "does not apply"),
    ("orders", {"ids": "abc"}, "list of ids"),
    ("orders", {"ids": ['x") or (id is defined']}, "list of ids"),
    ("orders", {"startId": "a b"}, "not an id"),
    ("orders", {"limit": 3}, "unknown field"),
    ("orders", ["ids"], "JSON object"),
    ("orders", {"deleteAll": True, "confirmDeletion": "orders"}, "categories and products only"),
    ("categories", {"deleteAll": True}, '"confirmDeletion": "categories"'),
    ("products", {"deleteAll": True, "confirmDeletion": "categories"}, '"confirmDeletion": "products"'),
    ("products", {"deleteAll": True, "confirmDeletion": "products", "ids": ["a"]}, "cannot be combined"),
])
def test_bad_requests_are_refused_and_record_nothing(ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                                     services: Callable[..., JobService], import_type: str,
                                                     body: Any, problem: str) -> None:
    service = services()
    with pytest.raises(BadRequest, match=problem.replace("(", r"\(")):
        service.request(import_type, body)
    assert import_record(ct, import_type) is None
    assert klaviyo.requests == []


# --- deleteAll --------------------------------------------------------------------------------------------------


def test_delete_all_categories_deletes_ours_only(ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                                 services: Callable[..., JobService]) -> None:
    # Another integration's categories first: whole pages with nothing of ours must not end the deletion.
    for n in range(3):
        seed_klaviyo(klaviyo, "category", f"$shopify:::$default:::{n}", {"external_id": str(n), "name": "S"})
    for n in range(5):
        seed_ours(klaviyo, ct, "category", f"{PREFIX}ours-{n}", {"external_id": f"ours-{n}", "name": "Ours"})
    ct.add("categories", fixture("category_women"))  # deleteAll does not look at commercetools
    service = services(job_config(pageSize=2))

    service.request("categories", {"deleteAll": True, "confirmDeletion": "categories"})
    [summary] = service.run()

    assert set(klaviyo.categories) == {f"$shopify:::$default:::{n}" for n in range(3)}
    assert summary["status"] == "completed"
    assert summary["counts"] == {"read": 5, "sent": 5, "skipped": 0, "failed": 0}
    assert ct_queries(ct, "categories") == []
    assert set(job_types(klaviyo)) == {"catalog-category-bulk-delete-jobs"}


def test_delete_all_products_deletes_variants_then_items(ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                                         services: Callable[..., JobService]) -> None:
    for n in range(3):
        item = f"{PREFIX}p{n}"
        seed_ours(klaviyo, ct, "item", item, {"external_id": f"p{n}", "title": "P"})
        for v in range(2):
            seed_ours(klaviyo, ct, "variant", f"{PREFIX}p{n}-v{v}", {"external_id": f"p{n}-v{v}", "sku": f"p{n}-v{v}"},
                      {"item": {"data": {"type": "catalog-item", "id": item}}}, product_id=f"p{n}")
    seed_klaviyo(klaviyo, "item", "$shopify:::$default:::9", {"external_id": "9", "title": "S"})
    service = services(job_config(pageSize=4))

    service.request("products", {"deleteAll": True, "confirmDeletion": "products"})
    [summary] = service.run()

    assert klaviyo.variants == {} and set(klaviyo.items) == {"$shopify:::$default:::9"}
    # one page of items (the page size is 4): their variants, then the items
    assert job_types(klaviyo) == ["catalog-variant-bulk-delete-jobs", "catalog-item-bulk-delete-jobs"]
    assert summary["counts"] == {"read": 3, "sent": 9, "skipped": 0, "failed": 0}


# --- re-runs ----------------------------------------------------------------------------------------------------


def test_a_second_import_of_everything_creates_no_duplicates_and_no_errors(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, services: Callable[..., JobService]) -> None:
    seed_catalog(ct)
    ct.add("payments", fixture("payment_refunds"))
    for customer in (make_customer(1), fixture("customer")):
        ct.add("customers", customer)
    orders = [make_order(1, payments=True), make_order(2, customer_id=fixture("customer")["id"],
                                                       email=fixture("customer")["email"])]
    for order in orders:
        ct.add("orders", order)
    service = services(job_config(pageSize=2))

    service.request("all", {})
    first = service.run()
    klaviyo.settle()  # the events jobs create their profiles
    after_first = (catalog_state(klaviyo), copy.deepcopy(klaviyo.profiles), event_keys(klaviyo.recorded_events()))
    sent_first = len(klaviyo.requests)
    service.request("all", {})
    second = service.run()
    klaviyo.settle()

    assert [s["status"] for s in first] == [s["status"] for s in second] == ["completed"] * 4
    assert all(s["counts"]["failed"] == 0 and not s["errors"] for s in first + second)
    assert (catalog_state(klaviyo)["categories"].keys(), catalog_state(klaviyo)["items"].keys(),
            catalog_state(klaviyo)["variants"].keys()) == (after_first[0]["categories"].keys(),
                                                           after_first[0]["items"].keys(),
                                                           after_first[0]["variants"].keys())
    # the two customers, and the guest of order 1 (Klaviyo makes a profile of every event's profile)
    assert klaviyo.profiles.keys() == after_first[1].keys() and len(klaviyo.profiles) == 3
    assert event_keys(klaviyo.recorded_events()) == after_first[2]
    assert all(n == 1 for n in after_first[2].values())
    # the second run updates what the first created
    assert not any(kind.endswith("-create-jobs") and "catalog" in kind for kind in job_types(klaviyo, sent_first))
    assert [r.status for r in klaviyo.requests if r.status >= 400] == []


# --- paging -----------------------------------------------------------------------------------------------------


def test_every_read_and_write_is_one_page(ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                          services: Callable[..., JobService]) -> None:
    for n in range(1, 8):
        ct.add("customers", make_customer(n))
    service = services(job_config(pageSize=3))

    service.request("customers", {})
    service.run()

    assert [q["limit"] for q in ct_queries(ct, "customers")] == [["3"]] * 3
    sizes = [len(r.body["data"]["attributes"]["profiles"]["data"]) for r in klaviyo.calls("POST", "profile-bulk")]
    assert sizes == [3, 3, 1]
    assert len(klaviyo.profiles) == 7
    # one checkpoint per page (after the lock was taken), each holding the last id read
    saves = [r.body["value"] for r in ct.find_requests("POST", "custom-objects$")]
    assert [s["checkpoint"].get("lastId") for s in saves[2:]] == [make_customer(n)["id"] for n in (3, 6, 7)]
