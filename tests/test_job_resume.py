"""Imports that stop and go on: time budget, a killed process, racing runners, leases, stop requests, Klaviyo
throttling and failures. Whatever happens, Klaviyo ends with exactly the expected events, each once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from job.__main__ import main
from job.app import create_app
from job.service import JobService
from job.state import Busy, ImportStore
from shared.config import Settings
from shared.http import RetryPolicy
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo
from tests.test_job_support import (
    PREFIX,
    ROOT,
    ct_queries,
    event_keys,
    import_record,
    job_config,
    make_customer,
    make_order,
    order_keys,
    process_env,
    run_until_done,
    seed_catalog,
    seed_klaviyo,
)

ORDERS_PAGE = r"^/test-project/orders$"
EVENTS = "/api/event-bulk-create-jobs"
STATES = ("Open", "Complete", "Cancelled", "Confirmed")


def seed_orders(ct: FakeCommercetools, count: int) -> list[dict[str, Any]]:
    orders = [make_order(n, state=STATES[n % len(STATES)]) for n in range(1, count + 1)]
    for order in orders:
        ct.add("orders", order)
    return orders


def expected(orders: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    keys = [key for order in orders for key in order_keys(order)]
    assert len(set(keys)) == len(keys)
    return Counter(keys)


# --- time budget ------------------------------------------------------------------------------------------------


def test_runs_stopped_by_the_time_budget_resume_and_send_each_event_once(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, services: Callable[..., JobService]) -> None:
    orders = seed_orders(ct, 5)
    # Every page read takes at least the whole budget, so each run stops after the page it started.
    ct.fail_next("GET", ORDERS_PAGE, 200, delay=0.1, times=1000)
    service = services(job_config(pageSize=1))
    service.request("orders", {})

    runs = run_until_done(service, "orders", budget_seconds=0.1)

    summaries = [s for run in runs for s in run]
    assert len(summaries) > 1
    assert [s["status"] for s in summaries] == ["running"] * (len(summaries) - 1) + ["completed"]
    assert not any(s["running"] for s in summaries)  # the lock is given back at each stop
    assert event_keys(klaviyo.events) == expected(orders)  # every request Klaviyo got: none twice
    assert summaries[-1]["counts"] == {"read": 5, "sent": sum(expected(orders).values()), "skipped": 0, "failed": 0}
    # each run went on from the last saved page
    wheres = [q.get("where", []) for q in ct_queries(ct, "orders")]
    assert wheres == [[]] + [[f'id > "{o["id"]}"'] for o in orders]


# --- a killed process -------------------------------------------------------------------------------------------


def test_a_killed_sync_is_taken_over_by_the_next_sync_within_a_lease_and_each_event_is_recorded_once(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    orders = seed_orders(ct, 10)
    page_seconds, lease_seconds = 0.15, 2
    ct.fail_next("GET", ORDERS_PAGE, 200, delay=page_seconds, times=1000)  # slow enough to be killed half-way
    config = job_config(pageSize=1, leaseSeconds=lease_seconds)
    with (tmp_path / "sync.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "job", "sync", "orders"], cwd=ROOT,
                                   env=process_env(env, config),
                                   stdout=subprocess.DEVNULL, stderr=log)
        try:
            give_up = time.monotonic() + 30
            while len(klaviyo.calls("POST", EVENTS)) < 3 and process.poll() is None and time.monotonic() < give_up:
                time.sleep(0.01)
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait(10)
    killed_at = time.monotonic()
    assert process.returncode == -signal.SIGKILL, (tmp_path / "sync.log").read_text()[-2000:]
    dead_owner = import_record(ct, "orders")["lease"]["owner"]
    # The next sync, started at once, waits for the dead runner's lease to run out and takes the import over.
    taken_over: list[float] = []

    def watch() -> None:
        while time.monotonic() < killed_at + 30:
            lease = (import_record(ct, "orders") or {}).get("lease") or {}
            if lease.get("owner") not in (None, dead_owner):
                taken_over.append(time.monotonic())
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    for name, value in {**env, "NODE_CONFIG": json.dumps(config)}.items():
        monkeypatch.setenv(name, value)
    assert main(["sync", "orders"]) == 0
    watcher.join()

    err = capsys.readouterr().err
    assert f"orders: runner {dead_owner} until " in err and "waiting for it" in err  # whose lock, until when
    assert taken_over and taken_over[0] - killed_at <= lease_seconds + page_seconds + 0.5
    assert event_keys(klaviyo.recorded_events()) == expected(orders)  # Klaviyo keeps each once
    twice = {key for key, n in event_keys(klaviyo.events).items() if n > 1}
    by_order = {key: order["id"] for order in orders for key in order_keys(order)}
    assert len({by_order[key] for key in twice}) <= 1  # only the page under way when killed went again
    assert all(n <= 2 for n in event_keys(klaviyo.events).values())
    done = import_record(ct, "orders")
    assert done["status"] == "completed" and done["counts"]["read"] == len(orders)
    wheres = [q.get("where") for q in ct_queries(ct, "orders") if q.get("limit") != ["0"]]  # not the counts
    assert wheres.count(None) == 1  # the first page was read once: the new sync went on, it did not start over


def test_a_live_runner_keeps_its_lease_through_a_page_slower_than_the_lease(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, services: Callable[..., JobService]) -> None:
    orders = seed_orders(ct, 2)
    lease_seconds = 1.5
    service = services(job_config(pageSize=1, leaseSeconds=lease_seconds))
    other = services(job_config(pageSize=1, leaseSeconds=lease_seconds))
    service.request("orders", {})
    ct.fail_next("GET", ORDERS_PAGE, 200, delay=2.5 * lease_seconds, times=1)  # the first page: 3.75 s
    seen: list[tuple[float, bool, list[dict[str, Any]]]] = []
    results: list[list[dict[str, Any]]] = []
    runner = threading.Thread(target=lambda: results.append(service.run(types=("orders",))))
    runner.start()
    time.sleep(0.2)
    while runner.is_alive():
        record = service.store.get("orders")
        if record.status == "running":  # another runner finds the lease live all along, and cannot take it
            seen.append((time.monotonic(), record.lease_live(), other.run(types=("orders",))))
        time.sleep(0.1)
    runner.join()

    assert all(live and taken == [] for _at, live, taken in seen)
    assert seen[-1][0] - seen[0][0] > 1.5 * lease_seconds  # watched through more than a lease's time
    [[summary]] = results
    assert summary["status"] == "completed" and summary["counts"]["read"] == 2
    assert event_keys(klaviyo.events) == expected(orders)  # the page was sent once, by its runner


# --- locks ------------------------------------------------------------------------------------------------------


def test_two_runners_racing_for_one_import_one_wins(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, services: Callable[..., JobService]) -> None:
    orders = seed_orders(ct, 4)
    first, second = services(job_config(pageSize=2)), services(job_config(pageSize=2))
    first.request("orders", {})
    # Hold both lock writes back a moment, so that both runners read the request before either takes it.
    ct.fail_next("POST", "custom-objects$", 200, delay=0.3, times=2)
    results: dict[str, list[dict[str, Any]]] = {}
    threads = [threading.Thread(target=lambda s=s, n=n: results.__setitem__(n, s.run()))
               for n, s in (("first", first), ("second", second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(len(r) for r in results.values()) == [0, 1]
    [winner] = [r[0] for r in results.values() if r]
    assert winner["status"] == "completed"
    assert event_keys(klaviyo.events) == expected(orders)
    assert len(ct_queries(ct, "orders")) == 3  # one runner read the pages


def test_a_write_from_an_outdated_read_is_refused(ct: FakeCommercetools, services: Callable[..., JobService]) -> None:
    service = services()
    service.request("orders", {})
    store = service.store
    outdated = store.get("orders")
    assert store.acquire("orders", "runner-a") is not None
    assert store.acquire("orders", "runner-b") is None  # a live lease of another runner
    with pytest.raises(Busy):
        store.save(outdated, "runner-b")
    assert import_record(ct, "orders")["lease"]["owner"] == "runner-a"


def test_an_expired_lease_is_taken_over_from_its_checkpoint_and_a_live_one_is_not(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, services: Callable[..., JobService]) -> None:
    orders = seed_orders(ct, 4)
    service = services(job_config(pageSize=2))
    service.request("orders", {})
    live = ImportStore(service.context.commercetools, lease_seconds=600)
    record = live.acquire("orders", "busy-runner")
    record.checkpoint, record.counts["read"] = {"lastId": orders[1]["id"]}, 2
    live.save(record, "busy-runner")

    assert service.run() == []  # someone holds it
    assert klaviyo.requests == [] and [s["running"] for s in service.status()] == [True]

    dead = ImportStore(service.context.commercetools, lease_seconds=-1)  # its lease has run out
    dead.save(live.get("orders"), "dead-runner")
    [summary] = service.run()

    assert summary["status"] == "completed" and summary["counts"]["read"] == 4
    assert event_keys(klaviyo.events) == expected(orders[2:])  # from the checkpoint on
    assert ct_queries(ct, "orders")[0]["where"] == [f'id > "{orders[1]["id"]}"']


def test_a_runner_whose_lease_ran_out_never_overwrites_a_new_request(
        ct: FakeCommercetools, services: Callable[..., JobService]) -> None:
    service = services()
    service.request("orders", {})
    slow = ImportStore(service.context.commercetools, lease_seconds=-1)
    mine = slow.acquire("orders", "slow-runner")
    service.request("orders", {"ids": ["only-this"]})  # allowed: the lease ran out

    mine.checkpoint = {"lastId": "zzz"}
    with pytest.raises(Busy):
        slow.save(mine, "slow-runner")
    stored = import_record(ct, "orders")
    assert stored["status"] == "requested" and stored["request"] == {"ids": ["only-this"]}
    assert "checkpoint" not in stored or stored["checkpoint"] == {}


def test_the_same_request_resumes_an_unfinished_import_and_another_starts_over(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, services: Callable[..., JobService]) -> None:
    orders = seed_orders(ct, 3)
    service = services(job_config(pageSize=1))
    service.request("orders", {})
    ct.fail_next("GET", ORDERS_PAGE, 200, delay=0.1, times=1)
    service.run(budget_seconds=0.1, types=("orders",))  # one page (it takes the whole budget), then it stops
    assert import_record(ct, "orders")["checkpoint"] == {"lastId": orders[0]["id"]}

    [resumed] = service.request("orders", {})
    assert resumed.checkpoint == {"lastId": orders[0]["id"]} and resumed.status == "running"
    [other] = service.request("orders", {"startId": orders[0]["id"]})
    assert other.checkpoint == {} and other.status == "requested"


# --- stop -------------------------------------------------------------------------------------------------------


def test_a_stop_request_ends_the_run_after_the_page_under_way(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, services: Callable[..., JobService]) -> None:
    orders = seed_orders(ct, 5)
    service = services(job_config(pageSize=1))
    other = services(job_config(pageSize=1))  # the stop comes from elsewhere (the API, the CLI)
    service.request("orders", {})
    stopped: list[Any] = []

    def stop_after_first_page(record: Any, _elapsed: float) -> None:
        if not stopped:
            stopped.extend(other.stop("orders"))

    [summary] = service.run(progress=stop_after_first_page)

    assert [r.status for r in stopped] == ["cancelled"]
    assert summary["status"] == "cancelled" and not summary["running"]
    assert event_keys(klaviyo.events) == expected(orders[:2])  # the page under way was finished, no more
    assert service.run() == []  # nothing left to do
    assert other.stop("orders") == []


# --- Klaviyo throttling and failures ----------------------------------------------------------------------------


def test_klaviyo_429_and_5xx_are_retried_within_the_run(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, services: Callable[..., JobService]) -> None:
    orders = seed_orders(ct, 2)
    klaviyo.fail_next("POST", EVENTS, 429, headers={"Retry-After": "0"})
    klaviyo.fail_next("POST", EVENTS, 503)
    service = services(job_config(pageSize=5))
    service.request("orders", {})

    [summary] = service.run()

    assert [r.status for r in klaviyo.calls("POST", EVENTS)] == [429, 503, 202]
    assert summary["status"] == "completed" and summary["errors"] == []
    assert event_keys(klaviyo.events) == expected(orders)


def test_a_page_klaviyo_keeps_refusing_is_sent_again_by_the_next_run(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, services: Callable[..., JobService]) -> None:
    orders = seed_orders(ct, 3)
    service = services(job_config(pageSize=1))
    service.request("orders", {})

    def throttle_the_second_page(_record: Any, _elapsed: float) -> None:
        if klaviyo.faults_pending == 0 and len(klaviyo.calls("POST", EVENTS)) == 1:
            klaviyo.fail_next("POST", EVENTS, 429, headers={"Retry-After": "0"}, times=RetryPolicy().max_attempts)

    [paused] = service.run(progress=throttle_the_second_page)

    assert paused["status"] == "running" and not paused["running"]
    assert "klaviyo 429" in paused["lastError"] and len(paused["errors"]) == 1
    stored = import_record(ct, "orders")
    assert stored["checkpoint"] == {"lastId": orders[0]["id"]}  # the refused page is not passed over
    assert stored["counts"]["read"] == 1 and event_keys(klaviyo.events) == expected(orders[:1])

    assert klaviyo.faults_pending == 0  # every attempt was throttled; now Klaviyo takes requests again
    [done] = service.run()

    assert done["status"] == "completed" and done["counts"]["read"] == 3
    assert event_keys(klaviyo.events) == expected(orders)


def test_a_throttled_catalog_job_is_sent_again_within_the_run(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, services: Callable[..., JobService]) -> None:
    seed_catalog(ct)
    klaviyo.fail_next("POST", "/api/catalog-category-bulk-create-jobs", 429, headers={"Retry-After": "0"})
    service = services(job_config(pageSize=10))
    service.request("categories", {})

    [done] = service.run()

    assert done["status"] == "completed" and done["errors"] == [] and len(klaviyo.categories) == 5
    assert [r.status for r in klaviyo.calls("POST", "/api/catalog-category-bulk-create-jobs")] == [429, 202]


def test_a_catalog_job_klaviyo_fails_with_503_is_created_again_by_the_next_run(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, services: Callable[..., JobService]) -> None:
    seed_catalog(ct)
    klaviyo.fail_next("POST", "/api/catalog-category-bulk-create-jobs", 503)
    service = services(job_config(pageSize=10))
    service.request("categories", {})

    [paused] = service.run()
    assert paused["status"] == "running" and "klaviyo 503" in paused["lastError"]
    assert klaviyo.categories == {}
    [done] = service.run()

    assert done["status"] == "completed" and done["counts"]["failed"] == 0
    assert len(klaviyo.categories) == 5
    assert [r.status for r in klaviyo.calls("POST", "/api/catalog-category-bulk-create-jobs")] == [503, 202]


def test_a_refused_event_batch_is_sent_event_by_event_and_a_refused_event_is_counted_and_named(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, services: Callable[..., JobService]) -> None:
    [order] = seed_orders(ct, 1)
    klaviyo.fail_next("POST", EVENTS, 400)  # the whole batch
    klaviyo.fail_next("POST", "/api/events", 400)  # then its first event, alone
    service = services()
    service.request("orders", {})

    [summary] = service.run()

    placed = ("Placed Order", order["id"])
    assert event_keys(klaviyo.events) == expected([order]) - Counter([placed])
    assert summary["status"] == "completed"
    assert summary["counts"] == {"read": 1, "sent": len(order_keys(order)) - 1, "skipped": 0, "failed": 1}
    [error] = summary["errors"]
    assert error.startswith(f"event {order['id']}: klaviyo 400: ")
    assert order["customerEmail"] not in error


# --- failures Klaviyo reports in bulk jobs ----------------------------------------------------------------------


def test_profile_import_failures_are_counted_and_named_in_the_status(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, configure: Callable[..., Settings]) -> None:
    ok, split = make_customer(1), make_customer(2)
    for customer in (ok, split):
        ct.add("customers", customer)
    # Klaviyo has two profiles for the second customer: one by email, one by external id. It cannot merge them.
    klaviyo.add_profile({"email": split["email"]})
    klaviyo.add_profile({"external_id": split["id"]})
    settings = configure(job_config(pageSize=10), BULK_API_TOKEN="s3cret-token")

    with TestClient(create_app(settings)) as app:
        headers = {"Authorization": "Bearer s3cret-token"}
        assert app.post("/sync/customers", headers=headers).status_code == 202
        status = wait_for(app, headers, "customers")

    assert status["status"] == "completed"
    assert status["counts"] == {"read": 2, "sent": 1, "skipped": 0, "failed": 1}
    [error] = status["errors"]
    assert error.startswith("profiles job ") and error.endswith(
        ": A profile already exists with one of these identifiers. (at /data/attributes/profiles/data/1)")
    assert status["lastError"] == error
    [lookup] = klaviyo.calls("GET", "import-errors")
    assert "original_payload" not in lookup.query["fields[import-error]"]  # no personal data asked for
    assert split["email"] not in json.dumps(status)


def test_catalog_job_failures_are_counted_and_named_in_the_status(
        ct: FakeCommercetools, klaviyo: FakeKlaviyo, services: Callable[..., JobService]) -> None:
    seed_catalog(ct)
    jeans = "a7b8c9d0-0000-4000-8000-00000000jean"
    seed_klaviyo(klaviyo, "item", PREFIX + jeans, {"external_id": jeans, "title": "Slim Jeans"})
    # Klaviyo's listing lags behind: the item created a moment ago (by realtime) is not listed yet.
    klaviyo.fail_next("GET", "/api/catalog-items", 200, body={"data": [], "links": {"next": None}})
    service = services(job_config(pageSize=1))
    service.request("products", {})

    [summary] = service.run()

    assert summary["status"] == "completed"
    assert summary["counts"]["failed"] == 1
    [error] = summary["errors"]
    assert error.startswith("catalog-item-bulk-create job ")
    assert error.endswith(": A catalog item with id '…' already exists. (at /data/attributes/items/data/0/attributes)")
    assert [s["lastError"] for s in service.status()] == [error]
    assert len(klaviyo.variants) == 3  # the variants of both products are there


def wait_for(app: TestClient, headers: dict[str, str], import_type: str) -> dict[str, Any]:
    """GET /sync/status until the import is no longer active (the routes run imports in the background)."""
    give_up = time.monotonic() + 20
    while True:
        response = app.get("/sync/status", headers=headers)
        assert response.status_code == 200
        [status] = [s for s in response.json()["imports"] if s["type"] == import_type]
        if status["status"] not in ("requested", "running") or time.monotonic() > give_up:
            return status
        time.sleep(0.02)
