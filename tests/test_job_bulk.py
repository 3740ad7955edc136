"""`shared.bulk` (event batches, bulk jobs and their polling, against the fake Klaviyo server),
`shared.ratelimit` (Klaviyo's fixed windows, on a clock the test turns) and the runner's event pipeline (full
batches across pages, sent in the background, a page saved only once Klaviyo has all of its events)."""

from __future__ import annotations

import copy
import gc
import json
import math
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from job import runner
from job.importers.orders import sized_order_events
from job.service import JobService
from shared.bulk import MAX_BYTES, MAX_EVENTS, KlaviyoBulk, event_batches, events_job_body
from shared.config import Settings
from shared.deadline import time_budget
from shared.errors import ApiError, TransientError
from shared.http import RetryPolicy
from shared.klaviyo import Klaviyo
from shared.ratelimit import Limit, RateLimiter
from tests.data import fixture
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo
from tests.test_job_support import (
    event_keys,
    import_record,
    job_config,
    make_order,
    order_keys,
    seed_catalog,
)

EVENTS = "/api/event-bulk-create-jobs"

CATEGORY = {"type": "catalog-category", "attributes": {"external_id": "c-1", "name": "Women",
                                                       "integration_type": "$custom", "catalog_type": "$default"}}


@pytest.fixture
def client(settings: Settings) -> Iterator[Klaviyo]:
    klaviyo = Klaviyo(settings.klaviyo, user_agent=settings.user_agent)
    yield klaviyo
    klaviyo.close()


def event(n: int, size: int = 10) -> dict:
    return {"metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
            "profile": {"data": {"type": "profile", "attributes": {"email": f"p{n % 3}@example.com"}}},
            "properties": {"blob": "x" * size}, "unique_id": f"u-{n}", "time": "2026-01-01T00:00:00Z"}


def test_event_batches_hold_at_most_1000_events_and_4_5_mb() -> None:
    small = [event(n) for n in range(2 * MAX_EVENTS + 5)]
    assert [len(b) for b in event_batches(small)] == [MAX_EVENTS, MAX_EVENTS, 5]
    big = [event(n, size=MAX_BYTES // 3) for n in range(7)]
    batches = list(event_batches(big))
    assert [len(b) for b in batches] == [2, 2, 2, 1]
    assert all(len(json.dumps(b)) <= MAX_BYTES for b in batches)
    assert [e for b in batches for e in b] == big  # nothing lost, order kept


def test_events_are_grouped_under_their_profile_and_klaviyo_takes_them(client: Klaviyo,
                                                                       klaviyo: FakeKlaviyo) -> None:
    events = [event(n) for n in range(7)]
    result = KlaviyoBulk(client).send_events(events)

    assert result.sent == 7 and result.failed == []
    [request] = klaviyo.calls("POST", "/api/event-bulk-create-jobs")
    groups = request.body["data"]["attributes"]["events-bulk-create"]["data"]
    assert [g["attributes"]["profile"]["data"]["attributes"]["email"] for g in groups] == [
        "p0@example.com", "p1@example.com", "p2@example.com"]
    assert sorted(e["unique_id"] for e in klaviyo.events) == sorted(e["unique_id"] for e in events)
    assert events_job_body(events) == request.body


def test_wait_polls_until_klaviyo_has_done_the_jobs(client: Klaviyo, klaviyo: FakeKlaviyo) -> None:
    klaviyo.job_polls_until_complete = 2  # "processing" twice, then "complete"
    slept: list[float] = []
    bulk = KlaviyoBulk(client, poll_interval=0.5, sleep=slept.append)

    jobs = [bulk.catalog_job("category", "create", [CATEGORY])]
    result = bulk.wait(jobs)

    assert (result.completed, result.failed, result.errors) == (1, 0, [])
    assert slept == [0.5, 0.75]  # growing intervals between polls
    assert len(klaviyo.calls("GET", "/api/catalog-category-bulk-create-jobs/")) == 3


def test_wait_stops_as_transient_when_the_budget_cannot_cover_the_next_poll(client: Klaviyo,
                                                                            klaviyo: FakeKlaviyo) -> None:
    klaviyo.job_polls_until_complete = 5
    slept: list[float] = []
    bulk = KlaviyoBulk(client, poll_interval=30.0, sleep=slept.append)
    jobs = [bulk.catalog_job("category", "create", [CATEGORY])]

    with time_budget(20.0), pytest.raises(TransientError, match="still processing"):
        bulk.wait(jobs)
    assert slept == []


def test_a_failed_element_of_a_catalog_job_is_counted_and_named(client: Klaviyo, klaviyo: FakeKlaviyo) -> None:
    bulk = KlaviyoBulk(client)
    bulk.wait([bulk.catalog_job("category", "create", [CATEGORY])])
    result = bulk.wait([bulk.catalog_job("category", "create", [CATEGORY])])  # exists already
    assert (result.completed, result.failed) == (0, 1)
    [error] = result.errors
    assert error.endswith(": A catalog category with id '…' already exists. (at /data/attributes/categories/data/0"
                          "/attributes)")


# --- rate limits ------------------------------------------------------------------------------------------------


class Clock:
    """Time that moves only when the limiter sleeps."""

    def __init__(self, start: float) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def test_the_burst_limit_waits_for_the_next_second() -> None:
    clock = Clock(1_000_020.25)
    limiter = RateLimiter({"k": Limit(burst=3, steady=100)}, clock=clock, sleep=clock.sleep)
    assert [limiter.acquire("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("k") == pytest.approx(0.75)  # until 1_000_021.0
    assert clock.slept == [0.75]
    assert [limiter.acquire("k") for _ in range(2)] == [0.0, 0.0]


def test_the_steady_limit_waits_for_the_next_minute() -> None:
    clock = Clock(6_000_000.0)  # the start of a minute
    limiter = RateLimiter({"k": Limit(burst=10, steady=25)}, clock=clock, sleep=clock.sleep)
    waits = [limiter.acquire("k") for _ in range(26)]
    assert sum(waits[:25]) == pytest.approx(2.0)  # 10 + 10 + 5 in three seconds
    assert clock.now == pytest.approx(6_000_060.0)  # the 26th waited for the next minute
    assert waits[25] == pytest.approx(58.0)


def test_limits_are_kept_per_key_and_unknown_keys_never_wait() -> None:
    clock = Clock(1_000.5)
    limiter = RateLimiter({"a": Limit(1, 10), "b": Limit(1, 10)}, clock=clock, sleep=clock.sleep)
    assert (limiter.acquire("a"), limiter.acquire("b"), limiter.acquire("other")) == (0.0, 0.0, 0.0)
    assert limiter.acquire("a") == pytest.approx(0.5)


def test_klaviyo_headers_move_the_steady_window_onto_klaviyos() -> None:
    clock = Clock(6_000_030.0)  # half-way through a local minute
    limiter = RateLimiter({"k": Limit(burst=10, steady=20)}, clock=clock, sleep=clock.sleep)
    limiter.acquire("k")
    # Klaviyo: 18 of 20 used in its window, which resets in 5 s (so its minute started 55 s ago)
    limiter.observe("k", 20, 2, 5)
    assert [limiter.acquire("k") for _ in range(2)] == [0.0, 0.0]
    assert limiter.acquire("k") == pytest.approx(5.0)  # Klaviyo's window, not the local one (30 s to go)
    assert [limiter.acquire("k") for _ in range(9)] == [0.0] * 9  # a new minute: the burst limit again


def test_headers_of_a_burst_window_and_retry_after_hold_the_key() -> None:
    clock = Clock(1_000.0)
    limiter = RateLimiter({"k": Limit(burst=3, steady=100)}, clock=clock, sleep=clock.sleep)
    limiter.observe("k", 3, 0, 1)  # the burst window is full (another client)
    assert limiter.acquire("k") == pytest.approx(1.0)
    limiter.block("k", 7.5)  # a 429 with Retry-After: 7.5
    assert limiter.acquire("k") == pytest.approx(7.5)
    limiter.observe("unknown", 3, 0, 1)
    limiter.block("unknown", 9)
    assert limiter.acquire("unknown") == 0.0


class SharedClock:
    """One simulated time for Klaviyo's windows (the fake's clock) and for the limiter, `offset` seconds apart:
    the two sides' windows do not start together. Only the limiter's waits move it on."""

    def __init__(self, start: float, offset: float) -> None:
        self.now, self.offset = start, offset

    def klaviyo(self) -> float:
        return self.now

    def local(self) -> float:
        return self.now + self.offset

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_stand_in_enforces_both_windows_of_event_bulk_create_jobs_with_retry_after(
        klaviyo_server: HTTPServer, settings: Settings) -> None:
    clock = SharedClock(6_000_000.0, 0.0)  # the start of one of the fake's minutes
    klaviyo_server.clear()
    fake = FakeKlaviyo(klaviyo_server, clock=clock.klaviyo)
    fake.enforce_rate_limits = True
    client = Klaviyo(settings.klaviyo, user_agent="test", policy=RetryPolicy(max_attempts=1))
    body = events_job_body([event(1)])
    statuses, retry = [], []
    try:
        for second in range(16):
            clock.now = 6_000_000.0 + second
            for _ in range(11):  # one more than the burst allows
                try:
                    client.request("POST", EVENTS, body=body)
                    statuses.append(202)
                except ApiError as exc:
                    statuses.append(exc.status)
                    retry.append(exc.retry_after)
    finally:
        client.close()
    per_second = [statuses[i:i + 11] for i in range(0, len(statuses), 11)]
    assert per_second[0] == [202] * 10 + [429]  # burst: 10 a second, then Retry-After: 1
    assert retry[0] == 1.0
    assert sum(s.count(202) for s in per_second) == 150  # steady: 150 in the minute
    assert per_second[14] == [202] * 10 + [429] and per_second[15] == [429] * 11
    assert retry[-1] == 60 - 15  # until the minute's end
    assert fake.throttled == 16 + 10


def test_the_limiter_follows_klaviyos_windows_and_gets_no_429(klaviyo_server: HTTPServer,
                                                              settings: Settings) -> None:
    """Klaviyo's minute has 40 s to go, the local one 5 s: on the local clock alone, the next local minute would
    send 150 more into Klaviyo's (200 > 150). Klaviyo's rate-limit headers move the local window onto its own,
    and no request is refused."""
    clock = SharedClock(6_000_020.0, 35.0)
    klaviyo_server.clear()
    fake = FakeKlaviyo(klaviyo_server, clock=clock.klaviyo)
    fake.enforce_rate_limits = True
    client = Klaviyo(settings.klaviyo, user_agent="test", policy=RetryPolicy(max_attempts=1))
    bulk = KlaviyoBulk(client, RateLimiter(clock=clock.local, sleep=clock.sleep))
    arrived = []
    try:
        for n in range(400):
            assert bulk.send_events([event(n)]).sent == 1
            arrived.append(clock.now)  # no time passes during a request: it came now
    finally:
        client.close()
    assert fake.throttled == 0 and len(fake.events) == 400
    per_minute = Counter(math.floor(t / 60) for t in arrived)
    assert sorted(per_minute.values()) == [100, 150, 150]  # Klaviyo's windows, each used to the full


# --- sizes ------------------------------------------------------------------------------------------------------


def test_the_size_bounds_of_order_events_hold(settings: Settings) -> None:
    products = {p["id"]: p for p in (fixture("product_jeans"), fixture("product_shirt"))}
    order = fixture("order_placed")
    order["lineItems"][0]["name"]["en-US"] = "Jeans \u00e9t\u00e9 \u2603 \"quoted\" \\ back\nslash"
    order["orderState"] = "Complete"
    events, sizes = sized_order_events(order, products, settings)
    assert len(events) == len(sizes) == 5
    for one, size in zip(events, sizes, strict=True):
        exact = len(json.dumps(one, ensure_ascii=False, separators=(",", ":")).encode())
        assert exact <= size <= 2 * exact
    assert [len(b) for b in event_batches(events)] == [5]


# --- the runner's event pipeline ---------------------------------------------------------------------------------


def seed_orders(ct: FakeCommercetools, count: int, state: str = "Open") -> list[dict[str, Any]]:
    orders = [make_order(n, state=state) for n in range(1, count + 1)]
    for order in orders:
        ct.add("orders", order)
    return orders


def events_before(orders: list[dict[str, Any]], last_id: str | None) -> Counter[tuple[str, str]]:
    return Counter(k for o in orders if last_id is not None and o["id"] <= last_id for k in order_keys(o))


def test_events_fill_batches_of_1000_across_pages_and_a_page_is_saved_once_klaviyo_has_its_events(
        ct: FakeCommercetools, klaviyo_server: HTTPServer, services: Callable[..., JobService]) -> None:
    klaviyo_server.clear()
    klaviyo = FakeKlaviyo(klaviyo_server)
    seed_catalog(ct)
    orders = seed_orders(ct, 750)  # 4 events each: pages of 250 orders hold 1,000 events
    service = services(job_config(pageSize=300))
    service.request("orders", {})
    checked: list[dict[str, Any]] = []

    def every_event_of_the_saved_pages_is_in_klaviyo(record: Any, _elapsed: float) -> None:
        assert event_keys(klaviyo.events) >= events_before(orders, record.checkpoint.get("lastId"))
        checked.append(copy.deepcopy(record.checkpoint))

    [summary] = service.run(progress=every_event_of_the_saved_pages_is_in_klaviyo)

    assert summary["status"] == "completed"
    assert summary["counts"] == {"read": 750, "sent": 3000, "skipped": 0, "failed": 0}
    batches = [sum(len(g["attributes"]["events"]["data"]) for g in r.body["data"]["attributes"]["events-bulk-create"]
                   ["data"]) for r in klaviyo.calls("POST", EVENTS)]
    # full batches across pages (of 1,000 events, or fewer when the next would take the body over 4.5 MB; orders
    # differ a little in size, so byte-bound batches differ by a few events)
    full = batches[:-1]
    assert sum(batches) == 3000 and min(full) > 850 and max(full) - min(full) <= 5 and batches[-1] <= min(full)
    assert event_keys(klaviyo.events) == events_before(orders, orders[-1]["id"])  # each once
    assert [c["lastId"] for c in checked] == [orders[299]["id"], orders[599]["id"], orders[749]["id"]]
    assert import_record(ct, "orders")["checkpoint"] == {"lastId": orders[-1]["id"]}
    klaviyo.assert_valid()


def test_a_transient_failure_in_the_pipeline_saves_no_page_whose_events_are_not_all_in_klaviyo(
        ct: FakeCommercetools, klaviyo_server: HTTPServer, services: Callable[..., JobService]) -> None:
    klaviyo_server.clear()
    klaviyo = FakeKlaviyo(klaviyo_server)
    seed_catalog(ct)
    orders = seed_orders(ct, 1200)
    service = services(job_config(pageSize=300))
    service.request("orders", {})

    def saved_pages_are_in_klaviyo(record: Any, _elapsed: float) -> None:
        assert event_keys(klaviyo.events) >= events_before(orders, record.checkpoint.get("lastId"))

    # The third events request fails, and so does every retry of it (whatever the pipeline's timing).
    klaviyo.fail_next("POST", EVENTS, 503, times=RetryPolicy().max_attempts, after=2)
    [paused] = service.run(progress=saved_pages_are_in_klaviyo)

    assert paused["status"] == "running" and "klaviyo 503" in paused["lastError"]
    stored = import_record(ct, "orders")
    last_id = stored["checkpoint"]["lastId"]
    assert last_id in {orders[299]["id"], orders[599]["id"], orders[899]["id"]}
    assert event_keys(klaviyo.events) >= events_before(orders, last_id)  # the saved pages are all in Klaviyo
    assert stored["counts"]["read"] == orders.index(next(o for o in orders if o["id"] == last_id)) + 1

    [done] = service.run()

    assert done["status"] == "completed" and done["counts"]["read"] == 1200
    assert event_keys(klaviyo.recorded_events()) == events_before(orders, orders[-1]["id"])  # nothing skipped


def test_event_imports_collect_cycles_less_often_and_give_the_settings_back() -> None:
    before = gc.get_threshold()
    with runner._fewer_collections():
        with runner._fewer_collections():
            assert gc.get_threshold()[0] == max(before[0], runner.YOUNG_COLLECTION_EVERY)
        assert gc.get_threshold()[0] == max(before[0], runner.YOUNG_COLLECTION_EVERY)
    assert gc.get_threshold() == before


@pytest.mark.parametrize(("text", "status"), [
    ("x" * 102_400, 202),  # Klaviyo's limit (100 KB), just
    ("x" * 102_401, 400),
    ("é" * 51_201, 400),  # in octets, not characters
    ('say "x" ' * 12_801, 400),  # escaped quotes cut the text into short runs: found by walking the events
    ('say "x" ' * 100, 202),
])
def test_the_stand_in_still_refuses_an_event_string_over_100_kb(text: str, status: int) -> None:
    """The stand-in checks event strings without walking the events when the body text shows none can be long."""
    fake = FakeKlaviyo(validate=False, revision="*")
    events = [event(1), {**event(2), "properties": {"note": text}}, event(3)]
    body = json.dumps(events_job_body(events), ensure_ascii=False).encode()
    answer, _headers, _payload = fake.handle("POST", EVENTS, {"Authorization": "Klaviyo-API-Key pk_x",
                                                              "revision": "2025-01-15"}, body)
    assert answer == status
    assert len(fake.events) == (3 if status == 202 else 0)
