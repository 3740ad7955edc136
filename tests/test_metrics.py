"""`GET /metrics`: the Prometheus text format on both applications (and the single-port one), with counters that
move as deliveries, dead letters and imports happen, and label values that never carry personal data.

The registry is per process and the tests share one, so each test compares scrapes before and after; the message
age gauge is checked on a fresh `python -m event` process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from connector.app import create_app as create_connector_app
from job.app import create_app as create_job_app
from job.service import JobService
from shared.config import Settings
from shared.metrics import _Lag
from tests.builders import change, message, pubsub
from tests.conftest import Cli
from tests.data import fixture
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo
from tests.test_job_support import job_config, make_order
from tests.test_startup import ROOT, free_port

CUSTOMER_ID = "e54d8233-be41-4ce1-ae2b-3b5e1e1d8a01"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
INVALID = {"errors": [{"id": "e1", "status": 400, "code": "invalid", "title": "Invalid input.",
                       "detail": "Invalid value", "source": {"pointer": "/data/attributes/email"}}]}


def scrape(client: Any) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def customer_created() -> dict[str, Any]:
    return message("customer", CUSTOMER_ID, "CustomerCreated", customer=fixture("customer"))


def test_event_app_serves_prometheus_text_with_every_metric(event_app: TestClient) -> None:
    text = event_app.get("/metrics").text
    for name in ("deliveries", "events_sent", "api_requests", "rate_limited", "dead_letters_recorded",
                 "dead_letters_replayed", "import_records_read", "import_records_sent", "import_records_failed"):
        assert f"# TYPE klaviyo_connector_{name}_total counter" in text
    assert "# TYPE klaviyo_connector_delivery_duration_seconds histogram" in text
    assert "# TYPE klaviyo_connector_oldest_message_age_seconds gauge" in text


def test_deliveries_count_by_outcome_and_processor(event_app: TestClient, ct: FakeCommercetools,
                                                   klaviyo: FakeKlaviyo) -> None:
    ct.add("customers", fixture("customer"))
    before = scrape(event_app)

    assert event_app.post("/", json=pubsub(customer_created())).status_code == 204  # processed
    ignored = message("customer", CUSTOMER_ID, "CustomerEmailVerified")
    assert event_app.post("/", json=pubsub(ignored)).status_code == 204  # no processor for it
    klaviyo.fail_next("POST", r"/api/profile-import", 400, body=INVALID)
    assert event_app.post("/", json=pubsub(customer_created())).status_code == 202  # failed: a dead letter
    assert event_app.post("/", json={"message": {"messageId": "42", "data": "%%%"}}).status_code == 202

    after = scrape(event_app)
    deliveries = "klaviyo_connector_deliveries_total"
    assert moved(before, after, deliveries, outcome="processed", processor="CustomerCreated") == 1
    assert moved(before, after, deliveries, outcome="ignored", processor="none") == 1
    assert moved(before, after, deliveries, outcome="failed", processor="CustomerCreated") == 1
    assert moved(before, after, deliveries, outcome="failed", processor="none") == 1  # malformed
    assert moved(before, after, "klaviyo_connector_dead_letters_recorded_total") == 2
    assert moved(before, after, "klaviyo_connector_delivery_duration_seconds_count") == 4
    requests = "klaviyo_connector_api_requests_total"
    assert moved(before, after, requests, service="klaviyo", operation="profile-import", status_class="2xx") == 1
    assert moved(before, after, requests, service="klaviyo", operation="profile-import", status_class="4xx") == 1
    # the dead letters: looked up (404, none yet) and written
    assert moved(before, after, requests, service="commercetools", operation="custom-objects",
                 status_class="4xx") == 2
    assert moved(before, after, requests, service="commercetools", operation="custom-objects",
                 status_class="2xx") == 2
    assert len(klaviyo.profiles) == 1


def test_transient_failures_count_as_retry_with_their_5xx_and_429(event_app: TestClient, ct: FakeCommercetools,
                                                                  klaviyo: FakeKlaviyo) -> None:
    ct.add("customers", fixture("customer"))
    before = scrape(event_app)

    klaviyo.fail_next("POST", r"/api/profile-import", 429, headers={"Retry-After": "30"})
    assert event_app.post("/", json=pubsub(customer_created())).status_code == 503  # longer than the budget
    klaviyo.fail_next("POST", r"/api/profile-import", 503, times=4)
    assert event_app.post("/", json=pubsub(customer_created())).status_code == 503  # every attempt refused

    after = scrape(event_app)
    assert moved(before, after, "klaviyo_connector_deliveries_total", outcome="retry",
                 processor="CustomerCreated") == 2
    requests = "klaviyo_connector_api_requests_total"
    assert moved(before, after, requests, service="klaviyo", operation="profile-import", status_class="5xx") == 4
    assert moved(before, after, requests, service="klaviyo", operation="profile-import", status_class="429") == 1
    assert moved(before, after, "klaviyo_connector_rate_limited_total", service="klaviyo",
                 operation="profile-import") == 1
    assert moved(before, after, "klaviyo_connector_dead_letters_recorded_total") == 0


def test_dead_letter_replays_are_counted_by_outcome(event_app: TestClient, ct: FakeCommercetools,
                                                    klaviyo: FakeKlaviyo, cli: Cli) -> None:
    ct.add("customers", fixture("customer"))
    klaviyo.fail_next("POST", r"/api/profile-import", 400, body=INVALID)
    assert event_app.post("/", json=pubsub(customer_created())).status_code == 202
    before = scrape(event_app)

    code, _out, _err = cli("dead-letters", "replay", "--all")

    assert code == 0
    after = scrape(event_app)
    assert moved(before, after, "klaviyo_connector_dead_letters_replayed_total", outcome="processed") == 1
    assert moved(before, after, "klaviyo_connector_dead_letters_recorded_total") == 0


def test_labels_carry_no_personal_data(event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    customer = fixture("customer")
    notification = customer_created()
    event_app.post("/", json=pubsub(notification, message_id="pubsub-77"))
    klaviyo.fail_next("POST", r"/api/profile-import", 400, body=INVALID)
    event_app.post("/", json=pubsub(customer_created()))
    ct.add("orders", make_order(1))
    event_app.post("/", json=pubsub(message("order", make_order(1)["id"], "OrderCreated", order=make_order(1))))

    labels = {v for (name, pairs) in scrape(event_app) if name.startswith("klaviyo_connector_") for _k, v in pairs}

    personal = [customer["email"], customer["id"], customer.get("firstName"), customer.get("lastName"),
                notification["id"], "pubsub-77", make_order(1)["id"], make_order(1).get("customerEmail")]
    for text in filter(None, personal):
        assert not any(text in label for label in labels), text
    assert not any("@" in label or "/" in label for label in labels)


def test_job_app_counts_import_records_and_events_sent(ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                                       configure: Callable[..., Settings],
                                                       services: Callable[..., JobService]) -> None:
    orders = [make_order(n) for n in range(1, 4)]
    for order in orders:
        ct.add("orders", order)
    services().request("orders", {})  # as `python -m job request orders` does; the scheduler's run imports it
    with TestClient(create_job_app(configure(job_config(pageSize=2)))) as client:
        before = scrape(client)
        summary = client.post("/").json()
        after = scrape(client)

    assert [(s["type"], s["status"]) for s in summary["imports"]] == [("orders", "completed")]
    lines = sum(len(o["lineItems"]) for o in orders)
    assert moved(before, after, "klaviyo_connector_import_records_read_total", import_type="orders") == 3
    assert moved(before, after, "klaviyo_connector_import_records_sent_total", import_type="orders") == 3 + lines
    assert moved(before, after, "klaviyo_connector_import_records_failed_total", import_type="orders") == 0
    assert moved(before, after, "klaviyo_connector_events_sent_total", metric="Placed Order") == 3
    assert moved(before, after, "klaviyo_connector_events_sent_total", metric="Ordered Product") == lines
    assert moved(before, after, "klaviyo_connector_api_requests_total", service="klaviyo",
                 operation="event-bulk-create-jobs", status_class="2xx") >= 1
    assert moved(before, after, "klaviyo_connector_api_requests_total", service="commercetools",
                 operation="orders", status_class="2xx") >= 2
    assert moved(before, after, "klaviyo_connector_api_requests_total", service="commercetools",
                 operation="token", status_class="2xx") >= 1


def test_single_port_app_serves_one_metrics_route(ct: FakeCommercetools, configure: Callable[..., Settings]) -> None:
    app = create_connector_app(configure())
    assert [r.path for r in app.routes].count("/metrics") == 1
    with TestClient(app) as client:
        before = scrape(client)
        ignored = change("ResourceCreated", "subscription", str(uuid.uuid4()))
        assert client.post("/", json=pubsub(ignored)).status_code == 204
        after = scrape(client)
    assert moved(before, after, "klaviyo_connector_deliveries_total", outcome="ignored", processor="none") == 1


def test_oldest_message_age_shows_how_far_behind_a_fresh_process_is(env: dict[str, str]) -> None:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "event"], cwd=ROOT,
                               env={"PATH": os.environ["PATH"], **env, "PORT": str(port), "LOG_LEVEL": "WARNING"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, timeout=10)
    try:
        give_up = time.monotonic() + 15
        while True:
            try:
                fresh = scrape(client)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < give_up, "the app did not start"
                time.sleep(0.1)
        assert value(fresh, "klaviyo_connector_oldest_message_age_seconds") == 0  # nothing seen yet

        def deliver(age: float) -> None:
            created = (datetime.now(UTC) - timedelta(seconds=age)).isoformat(timespec="milliseconds")
            ignored = message("customer", CUSTOMER_ID, "CustomerEmailVerified", createdAt=created)
            assert client.post("/", json=pubsub(ignored)).status_code == 204

        deliver(600)
        deliver(5)  # a newer one does not hide the older one
        age = value(scrape(client), "klaviyo_connector_oldest_message_age_seconds")
        assert 600 <= age < 660
    finally:
        client.close()
        process.terminate()
        process.communicate(timeout=10)


def test_message_age_window_forgets_after_a_minute() -> None:
    lag = _Lag()
    lag.seen(300.0, now=1_000.0)
    lag.seen(20.0, now=1_030.0)
    assert lag.oldest(now=1_031.0) == 300.0
    assert lag.oldest(now=1_062.0) == 20.0  # the 300 s one arrived more than a minute ago
    assert lag.oldest(now=1_100.0) == 0.0
