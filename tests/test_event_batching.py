"""Micro-batching in the event app (shared/batching.py) and the product cache (shared/product_cache.py), on real
local HTTP servers. Assertions are on counts and outcomes, never on timing (except that a delivery is answered
within its time budget)."""

from __future__ import annotations

import copy
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from demo import sample
from shared.batching import Batcher, Pacer
from shared.commercetools import Commercetools
from shared.config import Settings
from shared.deadline import time_budget
from shared.errors import ApiError, TransientError
from shared.klaviyo import Klaviyo, catalog_id
from shared.logs import message_context
from shared.pending_jobs import CONTAINER as PENDING
from shared.processors.orders import fetch_products
from shared.product_cache import ProductCache
from shared.ratelimit import Limit
from tests.builders import message, pubsub
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo
from tests.test_faults_event import (
    dead_letters,
    key,
    open_order,
    order_created,
    placed,
    product_published,
    recorded,
    seed,
    serve,
)
from tests.test_job_support import ROOT, make_customer, process_env
from tests.test_startup import free_port

BULK = "/api/event-bulk-create-jobs"
BATCHED = {"event": {"batch": {"maxWaitMs": 200}}}


def orders(n: int) -> list[dict[str, Any]]:
    return [open_order(10 + i) for i in range(n)]


def bulk_requests(klaviyo: FakeKlaviyo) -> list[list[tuple[str, str | None]]]:
    """The events of each accepted event bulk request, by (metric, unique_id)."""
    return [[key({**e["attributes"], "metric": e["attributes"]["metric"]})
             for group in r.body["data"]["attributes"]["events-bulk-create"]["data"]
             for e in group["attributes"]["events"]["data"]]
            for r in klaviyo.calls("POST", BULK) if r.status == 202]


def post_each(url: str, deliveries: list[dict[str, Any]], after: Callable[[int, httpx.Response], None] | None = None,
              in_flight: int = 32) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=in_flight)
    with httpx.Client(base_url=url, timeout=30, limits=limits) as client, ThreadPoolExecutor(in_flight) as pool:
        def post(item: tuple[int, dict[str, Any]]) -> httpx.Response:
            response = client.post("/", json=item[1])
            if after is not None:
                after(item[0], response)
            return response
        return list(pool.map(post, enumerate(deliveries)))


def test_concurrent_deliveries_share_bulk_requests_and_each_is_answered_after_its_events_were_accepted(
        configure: Callable[..., Settings], ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed(ct)
    batch = orders(40)
    missing_at_answer: list[int] = []

    def check(index: int, response: httpx.Response) -> None:  # at the moment the answer arrives
        kept = Counter(key(e) for e in list(klaviyo.events))
        if response.status_code == 204 and any(kept[k] == 0 for k in placed(batch[index])):
            missing_at_answer.append(index)

    with serve(configure(BATCHED)) as url:
        answers = post_each(url, [pubsub(order_created(o), f"m-{i}") for i, o in enumerate(batch)], check)
    assert [a.status_code for a in answers] == [204] * 40
    assert missing_at_answer == []
    expected = sum((placed(o) for o in batch), Counter())
    assert Counter(key(e) for e in klaviyo.events) == expected  # every event exactly once
    shared = [r for r in bulk_requests(klaviyo) if len({u for m, u in r if m == "Placed Order"}) >= 2]
    assert shared, "no bulk request carried the events of two deliveries"
    assert len(klaviyo.calls("POST", BULK)) + len(klaviyo.calls("POST", "/api/events")) < 40 * 4


def test_more_deliveries_in_flight_than_worker_threads_still_flush_when_every_handled_one_waits(
        configure: Callable[..., Settings], ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed(ct)
    batch = orders(60)  # more than the app's 40 worker threads: 20 wait for a thread, not for a batch
    before = {reason: flushes("events", reason) for reason in ("all-waiting", "waited", "budget")}
    with serve(configure({"event": {"batch": {"maxWaitMs": 1000}}})) as url:
        answers = post_each(url, [pubsub(order_created(o), f"t-{i}") for i, o in enumerate(batch)], in_flight=60)
    assert [a.status_code for a in answers] == [204] * 60
    # Deliveries still waiting for a thread cannot join a batch: counting them as in flight held every flush
    # until its oldest write had waited maxWaitMs.
    assert flushes("events", "waited") - before["waited"] == 0
    assert flushes("events", "budget") - before["budget"] == 0
    assert flushes("events", "all-waiting") - before["all-waiting"] >= 1


def test_a_batch_failing_transiently_answers_its_deliveries_503_and_they_succeed_when_delivered_again(
        configure: Callable[..., Settings], ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed(ct)
    batch = orders(30)
    deliveries = [pubsub(order_created(o), f"m-{i}") for i, o in enumerate(batch)]
    # Every attempt (the transport tries 4 times) of the first requests fails: at least one batch fails whole.
    klaviyo.fail_next("POST", r"/api/event-bulk-create-jobs|/api/events", 503, times=12)
    with serve(configure(BATCHED)) as url:
        first = post_each(url, deliveries)
        pending = [d for d, a in zip(deliveries, first, strict=True) if a.status_code != 204]
        statuses = {a.status_code for a in first}
        for _round in range(5):  # Pub/Sub delivers again what was not acknowledged
            if not pending:
                break
            answers = post_each(url, pending)
            statuses |= {a.status_code for a in answers}
            pending = [d for d, a in zip(pending, answers, strict=True) if a.status_code != 204]
    assert 503 in {a.status_code for a in first} and statuses == {204, 503}
    assert pending == []
    assert recorded(klaviyo) == sum((placed(o) for o in batch), Counter())  # each event kept once
    assert dead_letters(ct) == {}


def stock_update(entry: dict[str, Any]) -> dict[str, Any]:
    return {"notificationType": "ResourceUpdated", "projectKey": "test-project",
            "resource": {"typeId": "inventory-entry", "id": entry["id"]},
            "resourceUserProvidedIdentifiers": {"sku": entry["sku"]}, "version": entry["version"],
            "oldVersion": entry["version"] - 1, "modifiedAt": "2026-11-27T10:00:00.000Z"}


def test_concurrent_stock_updates_share_catalog_variant_update_jobs_and_a_variant_klaviyo_lacks_is_skipped(
        configure: Callable[..., Settings], ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed(ct)
    entries = list(ct.store["inventory"].values())
    config = {**BATCHED, "product": {"inventory": {"useChannelInventory": entries[0]["supplyChannel"]["id"]}}}
    with serve(configure(config)) as url:
        products = sorted(ct.store["products"])
        assert [a.status_code for a in post_each(url, [pubsub(product_published(p)) for p in products[:1]])] \
            == [204]
        for position, entry in enumerate(entries):
            entry.update(version=entry["version"] + 1, availableQuantity=10 + position, quantityOnStock=10 + position)
        answers = post_each(url, [pubsub(stock_update(e), f"s-{i}") for i, e in enumerate(entries)])
    assert [a.status_code for a in answers] == [204] * len(entries)
    published = {sku for sku in (v.removeprefix("$custom:::$default:::") for v in klaviyo.variants)}
    for position, entry in enumerate(entries):
        variant = klaviyo.variants.get(f"$custom:::$default:::{entry['sku']}")
        if entry["sku"] in published:
            assert variant is not None and variant["attributes"]["inventory_quantity"] == 10 + position
    assert published != {e["sku"] for e in entries}  # some SKUs are not in Klaviyo: their updates were skipped
    jobs = [r for r in klaviyo.calls("POST", "/api/catalog-variant-bulk-update-jobs") if r.status == 202]
    assert any(len(r.body["data"]["attributes"]["variants"]["data"]) >= 2 for r in jobs)
    assert dead_letters(ct) == {}
    # The variants a job failed on (Klaviyo lacks them) were tried alone once more, the others not (but for the
    # first delivery, which may have found the app idle and gone alone).
    alone = [r.path.rsplit(":::", 1)[-1] for r in klaviyo.calls("PATCH", r"/api/catalog-variants/.*")]
    assert len([sku for sku in alone if sku in published]) <= 1
    assert {e["sku"] for e in entries} - published <= set(alone)


def product_copies(ct: FakeCommercetools, n: int) -> list[dict[str, Any]]:
    """`n` more published products like the sample's first (3 variants), each with SKUs of its own."""
    copies = []
    for index in range(n):
        product = copy.deepcopy(sample.products()[0])
        product.update(id=str(uuid.UUID(int=index + 1)), key=f"copy-{index}")
        current = product["masterData"]["current"]
        for variant in [current["masterVariant"], *current["variants"]]:
            variant["sku"] = f"{variant['sku']}-C{index}"
            variant["key"] = f"{variant.get('key') or 'v'}-c{index}"
        ct.add("products", product)
        copies.append(product)
    return copies


def test_concurrent_product_publications_share_catalog_variant_update_jobs(
        configure: Callable[..., Settings], ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    seed(ct)
    products = product_copies(ct, 8)
    with serve(configure(BATCHED)) as url:
        first = post_each(url, [pubsub(product_published(p["id"], p["version"]), f"p-{i}")
                                for i, p in enumerate(products)])
        assert [a.status_code for a in first] == [204] * len(products)  # items and variants created
        created = len(klaviyo.calls("POST", "/api/catalog-variants"))
        for product in products:  # a sale starts: every price changes
            product["version"] += 1
            current = product["masterData"]["current"]
            for variant in [current["masterVariant"], *current["variants"]]:
                variant["prices"][0]["value"]["centAmount"] -= 1000
        answers = post_each(url, [pubsub(product_published(p["id"], p["version"]), f"q-{i}")
                                  for i, p in enumerate(products)])
    assert [a.status_code for a in answers] == [204] * len(products)
    jobs = [r for r in klaviyo.calls("POST", "/api/catalog-variant-bulk-update-jobs") if r.status == 202]
    assert any(len(r.body["data"]["attributes"]["variants"]["data"]) >= 6 for r in jobs)  # two products or more
    for product in products:
        current = product["masterData"]["current"]
        for variant in [current["masterVariant"], *current["variants"]]:
            stored = klaviyo.variants[catalog_id(variant["sku"])]["attributes"]
            assert stored["price"] == variant["prices"][0]["value"]["centAmount"] / 100
    assert len(klaviyo.calls("POST", "/api/catalog-variants")) == created  # known SKUs were not created again
    assert dead_letters(ct) == {}


# --- the batcher on its own (its deliveries counted in flight as the app does) --------------------------------


@pytest.fixture
def clients(settings: Settings) -> Iterator[tuple[Klaviyo, Commercetools]]:
    klaviyo = Klaviyo(settings.klaviyo, user_agent="test")
    ct = Commercetools(settings.commercetools, user_agent="test")
    yield klaviyo, ct
    klaviyo.close()
    ct.close()


def event(n: int, email: str = "someone@example.com") -> dict[str, Any]:
    return {"profile": {"data": {"type": "profile", "attributes": {"email": email}}},
            "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
            "properties": {"n": n}, "unique_id": f"u-{n}", "time": "2026-11-27T10:00:00+00:00", "backfill": False}


def run_deliveries(batcher: Batcher, work: list[Callable[[], Any]], budget: float = 8.0) -> list[Any]:
    """Run each callable as one delivery in flight, all at once; returns what each returned or raised."""
    results: list[Any] = [None] * len(work)
    start = threading.Barrier(len(work))

    def one(index: int) -> None:
        with batcher.delivery(), message_context(f"msg-{index}"), time_budget(budget):
            start.wait()
            try:
                results[index] = work[index]()
            except Exception as exc:  # noqa: BLE001 - the outcome is what the test looks at
                results[index] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_one_bad_event_in_a_batch_fails_only_its_delivery(clients: tuple[Klaviyo, Commercetools],
                                                          klaviyo: FakeKlaviyo) -> None:
    client, ct = clients
    batcher = Batcher(client, ct, max_wait=0.2)
    bad = {**event(3), "properties": {"n": "x" * 110_000}}  # a string over Klaviyo's 100 KB
    work = [lambda: batcher.send_events([event(1), event(2)]), lambda: batcher.send_events([bad, event(4)]),
            lambda: batcher.send_events([event(5)])]
    results = run_deliveries(batcher, work)
    batcher.close()
    assert results[0] is True and results[2] is True
    assert isinstance(results[1], ApiError) and results[1].status == 400 and not results[1].transient
    assert [r.status for r in klaviyo.calls("POST", BULK)] == [400]  # one shared request, refused whole...
    kept = {e["unique_id"] for e in klaviyo.recorded_events()}
    assert kept == {"u-1", "u-2", "u-5"}  # ...then sent again one by one: the bad delivery's events are not kept
    assert all(e.get("backfill") is False for e in klaviyo.events)  # attributes the batcher does not know pass
    klaviyo.errors.clear()  # the refused event was meant to be invalid


def test_a_batch_never_holds_a_delivery_past_its_time_budget(clients: tuple[Klaviyo, Commercetools],
                                                             klaviyo: FakeKlaviyo) -> None:
    client, ct = clients
    batcher = Batcher(client, ct, max_wait=0.2)
    batcher.pacers["events-bulk"].block(60)  # Klaviyo said: no bulk request for a minute
    began = time.monotonic()
    results = run_deliveries(batcher, [lambda: batcher.send_events([event(1)]),
                                       lambda: batcher.send_events([event(2)])], budget=1.0)
    elapsed = time.monotonic() - began
    assert all(isinstance(r, TransientError) for r in results)  # answered 503, to be delivered again
    assert elapsed < 1.0
    assert klaviyo.calls("POST", BULK) == []
    batcher.closed = True  # stop without flushing the abandoned writes


def flushes(queue: str, reason: str) -> float:
    return REGISTRY.get_sample_value("klaviyo_connector_batch_flushes_total",
                                     {"queue": queue, "reason": reason}) or 0.0


def test_flushes_are_counted_by_why_they_went_all_waiting_when_nobody_else_can_join_else_after_max_wait(
        clients: tuple[Klaviyo, Commercetools], klaviyo: FakeKlaviyo) -> None:
    client, ct = clients
    before = {reason: flushes("events", reason) for reason in ("all-waiting", "waited")}
    batcher = Batcher(client, ct, max_wait=5.0)  # far longer than the test: only "all waiting" can send
    results = run_deliveries(batcher, [lambda: batcher.send_events([event(1)]),
                                       lambda: batcher.send_events([event(2), event(3)]),
                                       lambda: batcher.send_events([event(4)])], budget=20.0)
    batcher.close()
    assert results == [True, True, True]
    assert [len(r) for r in bulk_requests(klaviyo)] == [4]  # one request, sent once the third delivery waited
    assert flushes("events", "all-waiting") - before["all-waiting"] == 1

    busy = threading.Event()  # a delivery in flight that waits on no batch (a product publish, say)
    batcher = Batcher(client, ct, max_wait=0.2)

    def write() -> bool:
        try:
            return batcher.send_events([event(5)])
        finally:
            busy.set()

    results = run_deliveries(batcher, [lambda: busy.wait(10), write], budget=20.0)
    batcher.close()
    assert results == [True, True]
    assert [len(r) for r in bulk_requests(klaviyo)] == [4, 1]
    assert flushes("events", "waited") - before["waited"] == 1
    assert flushes("events", "all-waiting") - before["all-waiting"] == 1


def two_deliveries(batcher: Batcher, first: int, budget: float) -> list[Any]:
    return run_deliveries(batcher, [lambda: batcher.send_events([event(first)]),
                                    lambda: batcher.send_events([event(first + 1)])], budget=budget)


def test_while_klaviyo_states_no_limit_every_delivery_waiting_is_flushed_at_once(
        clients: tuple[Klaviyo, Commercetools], klaviyo: FakeKlaviyo) -> None:
    client, ct = clients
    before = {reason: flushes("events", reason) for reason in ("all-waiting", "budget")}
    batcher = Batcher(client, ct, max_wait=5.0)
    # With one all-waiting flush per max_wait (5 s), the later rounds would wait until their 3-second budget
    # comes close and go as "budget" flushes.
    results = [two_deliveries(batcher, 10 * n, budget=3.0) for n in range(4)]
    batcher.close()
    assert results == [[True, True]] * 4
    assert [len(r) for r in bulk_requests(klaviyo)] == [2, 2, 2, 2]
    assert flushes("events", "all-waiting") - before["all-waiting"] == 4
    assert flushes("events", "budget") - before["budget"] == 0
    assert not batcher.pacers["events-bulk"].armed  # the stand-in sent no RateLimit-* headers


def test_once_klaviyo_states_its_limits_all_waiting_flushes_are_spaced_by_max_wait_when_the_quota_is_in_use(
        clients: tuple[Klaviyo, Commercetools], klaviyo: FakeKlaviyo) -> None:
    klaviyo.enforce_rate_limits = True  # answers carry RateLimit-* headers, as Klaviyo's do
    client, ct = clients
    batcher = Batcher(client, ct, max_wait=1.0)
    pacer = batcher.pacers["events-bulk"]
    took = []
    for n in range(4):
        began = time.monotonic()
        assert two_deliveries(batcher, 10 * n, budget=8.0) == [True, True]
        took.append(time.monotonic() - began)
    batcher.close()
    assert pacer.armed
    assert [len(r) for r in bulk_requests(klaviyo)] == [2, 2, 2, 2]
    # The first answer armed the pacer with its full quota; two more flushes went at once while the quota was
    # untouched (at most one token spent); the fourth waited max_wait after the third.
    assert took[3] >= 0.8
    assert klaviyo.throttled == 0


def test_a_pacer_paces_an_operation_only_once_klaviyo_stated_limits_for_it() -> None:
    now = [1000.0]
    pacer = Pacer(Limit(10, 150), 120, 150, clock=lambda: now[0])
    for _ in range(30):  # no limit stated: nothing held back, whatever was spent
        assert pacer.delay() == 0.0 and pacer.untouched()
        pacer.spend()
    pacer.observe(150, 2, 40)  # the steady window: 2 requests left in it
    assert pacer.armed and not pacer.untouched()
    now[0] += 1.0
    for _ in range(2):
        assert pacer.delay() == 0.0
        pacer.spend()
    assert pacer.delay() > 0.0  # the account's quota is spent
    other = Pacer(Limit(10, 150), 120, 150, clock=lambda: now[0])
    other.block(5)  # a 429 with Retry-After: 5
    assert other.armed and other.delay() == 5.0


def new_stock(client: Klaviyo, batcher: Batcher, sku: str, quantity: int, version: int) -> Callable[[], bool]:
    data = {"type": "catalog-variant", "id": catalog_id(sku), "attributes": {"inventory_quantity": quantity}}
    replay = {"notificationType": "ResourceUpdated", "resource": {"typeId": "inventory-entry", "id": sku}}

    def single() -> None:
        client.request("PATCH", f"/api/catalog-variants/{catalog_id(sku)}", body={"data": data})

    return lambda: batcher.update_variant(data, single, replay, version=version)


def run_resent(klaviyo: FakeKlaviyo, batcher: Batcher) -> int:
    """Wait (15 s at most) until the batcher sends a job again once the held ones were checked, run what it sent,
    close the batcher; how many jobs ran."""
    end = time.monotonic() + 15
    while klaviyo.held_catalog_jobs() == 0 and time.monotonic() < end:
        time.sleep(0.05)
    ran = klaviyo.run_catalog_jobs()
    batcher.close()
    return ran


def test_stock_sent_in_two_jobs_that_klaviyo_runs_newest_first_ends_with_the_newest_stock(
        clients: tuple[Klaviyo, Commercetools], klaviyo: FakeKlaviyo, ct: FakeCommercetools) -> None:
    client, ct_client = clients
    for sku in ("HOT-1", "COLD-1"):
        klaviyo.variants[catalog_id(sku)] = {"attributes": {"external_id": sku, "inventory_quantity": 9},
                                             "relationships": {}}
    klaviyo.hold_catalog_jobs = True  # jobs run only when the test says, and here newest first
    batcher = Batcher(client, ct_client, max_wait=0.2)
    assert run_deliveries(batcher, [new_stock(client, batcher, "HOT-1", 5, 2),
                                    new_stock(client, batcher, "COLD-1", 7, 2)]) == [True, True]
    assert run_deliveries(batcher, [new_stock(client, batcher, "HOT-1", 4, 3),
                                    lambda: batcher.send_events([event(1)])]) == [True, True]
    assert klaviyo.run_catalog_jobs(newest_first=True) == 2
    assert klaviyo.variants[catalog_id("HOT-1")]["attributes"]["inventory_quantity"] == 5  # the older ran last
    assert run_resent(klaviyo, batcher) == 1  # the watcher checks both jobs, sends HOT-1's newest stock again
    assert klaviyo.variants[catalog_id("HOT-1")]["attributes"]["inventory_quantity"] == 4
    assert klaviyo.variants[catalog_id("COLD-1")]["attributes"]["inventory_quantity"] == 7
    again = klaviyo.calls("POST", "/api/catalog-variant-bulk-update-jobs")[-1].body
    assert [v["id"] for v in again["data"]["attributes"]["variants"]["data"]] == [catalog_id("HOT-1")]
    assert batcher.watcher.pending() == 0


def two_held_stock_jobs(clients: tuple[Klaviyo, Commercetools], klaviyo: FakeKlaviyo, first: tuple[int, int],
                        second: tuple[int, int]) -> Batcher:
    """A batcher that sent two bulk jobs, held by the stand-in, for variant HOT-1's stock: (quantity, inventory
    version) of each, in that order (each delivery beside another, so neither goes alone)."""
    client, ct_client = clients
    klaviyo.variants[catalog_id("HOT-1")] = {"attributes": {"external_id": "HOT-1"}, "relationships": {}}
    klaviyo.hold_catalog_jobs = True
    batcher = Batcher(client, ct_client, max_wait=0.2)
    for n, (quantity, version) in enumerate((first, second)):
        assert run_deliveries(batcher, [new_stock(client, batcher, "HOT-1", quantity, version),
                                        lambda n=n: batcher.send_events([event(n)])]) == [True, True]
    return batcher


def test_of_two_overlapping_stock_jobs_the_higher_inventory_version_is_sent_again_whatever_the_queue_order(
        clients: tuple[Klaviyo, Commercetools], klaviyo: FakeKlaviyo, ct: FakeCommercetools) -> None:
    # Two deliveries read the entry at versions 3 then 2 and queued in the other order (a slow read, say).
    batcher = two_held_stock_jobs(clients, klaviyo, (4, 3), (5, 2))
    assert klaviyo.run_catalog_jobs() == 2  # in the order sent: version 2 lands last
    assert klaviyo.variants[catalog_id("HOT-1")]["attributes"]["inventory_quantity"] == 5
    assert run_resent(klaviyo, batcher) == 1
    assert klaviyo.variants[catalog_id("HOT-1")]["attributes"]["inventory_quantity"] == 4  # version 3's


def test_a_variant_with_bulk_jobs_open_is_not_written_alone_under_light_load(
        clients: tuple[Klaviyo, Commercetools], klaviyo: FakeKlaviyo, ct: FakeCommercetools) -> None:
    batcher = two_held_stock_jobs(clients, klaviyo, (5, 2), (4, 3))
    client = clients[0]
    # The sale is over: one delivery in flight, which would go alone, at once, before the two jobs run.
    assert run_deliveries(batcher, [new_stock(client, batcher, "HOT-1", 3, 4)]) == [True]
    assert klaviyo.calls("PATCH", r"/api/catalog-variants/.*") == []
    assert klaviyo.run_catalog_jobs() == 3  # in the order sent
    assert run_resent(klaviyo, batcher) == 1
    assert klaviyo.variants[catalog_id("HOT-1")]["attributes"]["inventory_quantity"] == 3  # version 4's


def test_a_profile_the_import_job_fails_on_is_written_alone_and_dead_lettered_if_that_fails(
        clients: tuple[Klaviyo, Commercetools], klaviyo: FakeKlaviyo, ct: FakeCommercetools) -> None:
    client, ct_client = clients
    klaviyo.add_profile({"external_id": "c-1", "email": "old@example.com"})
    klaviyo.add_profile({"email": "taken@example.com"})
    batcher = Batcher(client, ct_client, max_wait=0.2)
    singles: list[str] = []

    def single(attributes: dict[str, Any]) -> Callable[[], None]:
        def write() -> None:
            singles.append(attributes["external_id"])
            client.upsert_profile(attributes, client.find_profile_id(external_id=attributes["external_id"]))
        return write

    good = {"external_id": "c-2", "email": "new@example.com"}
    clash = {"external_id": "c-1", "email": "taken@example.com"}  # another profile has this email: 409
    results = run_deliveries(batcher, [lambda: batcher.import_profile(good, single(good)),
                                       lambda: batcher.import_profile(clash, single(clash))])
    assert results == [True, True]  # answered once the job was accepted (202)
    batcher.close()  # checks the job: it failed on one profile
    assert len(klaviyo.calls("POST", "/api/profile-bulk-import-jobs")) == 1
    assert singles == ["c-1"]  # the failed profile written again alone, the other not
    assert {p.get("external_id") for p in klaviyo.profiles.values()} >= {"c-1", "c-2"}
    letters = dead_letters(ct)
    assert list(letters) == ["msg-1"]
    assert letters["msg-1"]["notification"]["resource"] == {"typeId": "customer", "id": "c-1"}
    # The job was remembered in commercetools until every write of it was settled, then forgotten.
    assert not [o for o in ct.store["custom-objects"].values() if o["container"] == PENDING]
    assert [r.method for r in ct.requests if PENDING in r.path or (r.body or {}).get("container") == PENDING] == [
        "POST", "DELETE"]


# --- the product cache ----------------------------------------------------------------------------------------


def test_product_cache_reads_each_product_once_until_it_expires_and_keeps_at_most_its_bound(
        settings: Settings, ct: FakeCommercetools) -> None:
    seed(ct)
    ids = sorted(ct.store["products"])[:3]
    now = [0.0]
    cache = ProductCache(60, 2, clock=lambda: now[0])
    client = Commercetools(settings.commercetools, user_agent="test")

    def reads() -> int:
        return len([r for r in ct.requests if r.path.endswith("/products")])

    def fetch(missing: list[str]) -> dict[str, dict[str, Any]]:
        return fetch_products(client, missing)

    assert set(cache.get_many(ids[:2], fetch)) == set(ids[:2]) and reads() == 1
    assert set(cache.get_many(ids[:2], fetch)) == set(ids[:2]) and reads() == 1  # cached
    now[0] = 61
    assert set(cache.get_many(ids[:1], fetch)) == set(ids[:1]) and reads() == 2  # expired: read again
    cache.get_many(ids[2:], fetch)  # a third product: the least recently used one goes
    assert len(cache) == 2 and reads() == 3
    cache.get_many(ids[:1], fetch)
    assert reads() == 3  # still cached (used recently)
    cache.get_many(ids[1:2], fetch)
    assert reads() == 4  # it was dropped
    client.close()


# --- a bulk job the event app could not check ------------------------------------------------------------------


def test_a_profile_job_the_event_app_could_not_check_is_checked_by_the_next_scheduled_job_run(
        env: dict[str, str], ct: FakeCommercetools, klaviyo: FakeKlaviyo, services: Callable[..., Any]) -> None:
    """Each profile bulk job is remembered in commercetools before its deliveries are answered: the event app
    killed before it checked the job (SIGKILL, right after the answers), the job application's scheduled run checks
    it, and since the job failed on a profile, its deliveries become dead letters (nothing lost)."""
    good, clash = make_customer(1), make_customer(2, email="taken@example.com")
    for customer in (good, clash):
        ct.add("customers", customer)
    klaviyo.add_profile({"external_id": clash["id"], "email": "old@example.com"})
    klaviyo.add_profile({"email": "taken@example.com"})  # another profile has the email: the job fails on it
    notifications = [message("customer", c["id"], "CustomerCreated", customer=c) for c in (good, clash)]
    # Should the app look at the job before it is killed, Klaviyo cannot tell it (whatever the timing).
    klaviyo.fail_next("GET", r"/api/profile-bulk-import-jobs.*", 503, times=10_000)
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "event"], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=process_env(env, PORT=str(port), LOG_LEVEL="WARNING"))
    try:
        url = f"http://127.0.0.1:{port}"
        give_up = time.monotonic() + 20
        while True:
            try:
                httpx.get(url + "/health", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < give_up, "the event app did not start"
                time.sleep(0.1)
        answers = post_each(url, [pubsub(n) for n in notifications])
        process.kill()  # before its first look at the job (2 s after it was created)
    finally:
        process.kill()
        process.wait(10)
    assert [a.status_code for a in answers] == [204, 204]
    klaviyo.clear_faults()
    assert len(klaviyo.calls("POST", "/api/profile-bulk-import-jobs")) == 1  # the two profiles in one job
    [remembered] = [o["value"] for o in ct.store["custom-objects"].values() if o["container"] == PENDING]
    assert sorted(d["messageId"] for d in remembered["deliveries"]) == sorted(n["id"] for n in notifications)

    summary = services().scheduled_run()
    assert [c["outcome"] for c in summary["pendingJobs"]] == ["dead letter"]
    letters = dead_letters(ct)
    assert sorted(letters) == sorted(n["id"] for n in notifications)
    assert all(letter["notification"]["resource"]["typeId"] == "customer" for letter in letters.values())
    assert not [o for o in ct.store["custom-objects"].values() if o["container"] == PENDING]  # forgotten
