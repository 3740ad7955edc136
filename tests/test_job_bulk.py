"""`shared.bulk` (event batches, bulk jobs and their polling, against the fake Klaviyo server) and
`shared.ratelimit` (Klaviyo's fixed windows, on a clock the test turns)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from shared.bulk import MAX_BYTES, MAX_EVENTS, KlaviyoBulk, event_batches, events_job_body
from shared.config import Settings
from shared.deadline import time_budget
from shared.errors import TransientError
from shared.klaviyo import Klaviyo
from shared.ratelimit import Limit, RateLimiter
from tests.fakes.klaviyo import FakeKlaviyo

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
