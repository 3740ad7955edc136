"""The connector's Prometheus metrics: every definition in one place, and the small functions that move them.

Each process serves its own registry at `GET /metrics` (the apps run one uvicorn process, no workers; Cloud Run
scales by instances, and each instance is scraped on its own). Label values are bounded names only: outcomes,
processor names, import types, Klaviyo metric names (set by configuration), API operations (the first path
segment of a request, never an id) and status classes. Nothing personal ever becomes a label.
"""

from __future__ import annotations

import collections
import re
import threading
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from shared.times import instant

PREFIX = "klaviyo_connector"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the text format every Prometheus version (and GMP) reads
LAG_WINDOW_SECONDS = 60.0
_OPERATION = re.compile(r"[a-z][a-z0-9-]{0,63}")

DELIVERIES = Counter(
    f"{PREFIX}_deliveries", "Subscription deliveries handled, by outcome and processor (a delivery handled by "
    "several processors counts once for each; 'none' when no processor took it).", ["outcome", "processor"])
DELIVERY_SECONDS = Histogram(
    f"{PREFIX}_delivery_duration_seconds", "Time from receiving a delivery to answering it.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0))
OLDEST_MESSAGE_AGE = Gauge(
    f"{PREFIX}_oldest_message_age_seconds", "Age (now minus its createdAt) at arrival of the oldest message "
    f"delivered in the last {LAG_WINDOW_SECONDS:.0f} seconds: how far behind realtime the connector is "
    "(0 when none arrived).")
EVENTS_SENT = Counter(
    f"{PREFIX}_events_sent", "Events Klaviyo accepted, by Klaviyo metric name (realtime and bulk).", ["metric"])
API_REQUESTS = Counter(
    f"{PREFIX}_api_requests", "HTTP requests to Klaviyo and commercetools (every attempt, retries included), by "
    "service, operation and status class (2xx, 3xx, 4xx, 429, 5xx, error: no answer).",
    ["service", "operation", "status_class"])
RATE_LIMITED = Counter(
    f"{PREFIX}_rate_limited", "Requests answered 429 (rate limited), by service and operation.",
    ["service", "operation"])
DEAD_LETTERS_RECORDED = Counter(
    f"{PREFIX}_dead_letters_recorded", "Deliveries recorded as dead letters (a repeated failure counts again).")
DEAD_LETTERS_REPLAYED = Counter(
    f"{PREFIX}_dead_letters_replayed", "Dead letters replayed, by outcome (processed and ignored remove the "
    "record).", ["outcome"])
BATCH_FLUSHES = Counter(
    f"{PREFIX}_batch_flushes", "Klaviyo bulk requests the event app's micro-batcher sent, by queue (events, "
    "profiles, variants) and why it sent then: full, waited (its oldest write waited event.batch.maxWaitMs), "
    "all-waiting (every delivery in flight waits on a batch), budget (a delivery's time budget), closing.",
    ["queue", "reason"])
IMPORT_READ = Counter(f"{PREFIX}_import_records_read", "Records read from commercetools by bulk imports.",
                      ["import_type"])
IMPORT_SENT = Counter(f"{PREFIX}_import_records_sent", "Records (profiles, catalog objects, events) bulk imports "
                      "sent to Klaviyo and Klaviyo accepted.", ["import_type"])
IMPORT_FAILED = Counter(f"{PREFIX}_import_records_failed", "Records bulk imports could not map or Klaviyo refused.",
                        ["import_type"])


def exposition() -> bytes:
    """The registry in the Prometheus text format (served at `GET /metrics`)."""
    return generate_latest(REGISTRY)


# --- deliveries -----------------------------------------------------------------------------------------------


def delivery(outcome: str, processors: Iterable[str], seconds: float) -> None:
    for processor in list(processors) or ["none"]:
        DELIVERIES.labels(outcome, processor).inc()
    DELIVERY_SECONDS.observe(seconds)


class _Lag:
    """The greatest message age per second of arrival, for the last minute (memory bounded by the window)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_second: dict[int, float] = {}

    def seen(self, age: float, now: float) -> None:
        second = int(now)
        with self._lock:
            if age > self._by_second.get(second, -1.0):
                self._by_second[second] = age
            if len(self._by_second) > LAG_WINDOW_SECONDS + 2:
                self._forget(now)

    def oldest(self, now: float | None = None) -> float:
        now = time.time() if now is None else now
        with self._lock:
            self._forget(now)
            return max(self._by_second.values(), default=0.0)

    def _forget(self, now: float) -> None:
        for second in [s for s in self._by_second if s < now - LAG_WINDOW_SECONDS]:
            del self._by_second[second]


_lag = _Lag()
OLDEST_MESSAGE_AGE.set_function(_lag.oldest)


def message_seen(payload: dict[str, Any]) -> None:
    """Note the age of a delivered notification, from its `createdAt` (messages) or `modifiedAt` (changes)."""
    stamp = payload.get("createdAt") or payload.get("modifiedAt")
    created = instant(stamp)
    if created is None:
        return
    now = time.time()
    _lag.seen(max(0.0, now - created.timestamp()), now)


# --- HTTP requests --------------------------------------------------------------------------------------------


def operation(path: str, skip: int = 1) -> str:
    """A bounded operation name from a request path: the path segment after `skip` leading ones
    (`/api/profile-import` → `profile-import`, `/{projectKey}/orders/{id}` → `orders`); `other` when it is not
    a plain lower-case name."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    name = parts[skip] if len(parts) > skip else ""
    return name if _OPERATION.fullmatch(name) else "other"


def status_class(status: int | None) -> str:
    if status is None:
        return "error"
    if status == 429:
        return "429"
    return f"{status // 100}xx"


def api_request(service: str, operation_name: str, status: int | None) -> None:
    API_REQUESTS.labels(service, operation_name, status_class(status)).inc()
    if status == 429:
        RATE_LIMITED.labels(service, operation_name).inc()


def events_accepted(path: str, body: Any) -> None:
    """Count the events of a request Klaviyo accepted (`/api/events` or an event bulk create job)."""
    try:
        data = body["data"]
        if path == "/api/events":
            EVENTS_SENT.labels(_metric_name(data["attributes"])).inc()
        elif path == "/api/event-bulk-create-jobs":
            names = collections.Counter(_metric_name(event["attributes"])
                                        for entry in data["attributes"]["events-bulk-create"]["data"]
                                        for event in entry["attributes"]["events"]["data"])
            for name, count in names.items():
                EVENTS_SENT.labels(name).inc(count)
    except (KeyError, TypeError):
        return


def _metric_name(attributes: dict[str, Any]) -> str:
    name = attributes["metric"]["data"]["attributes"]["name"]
    return name[:100] if isinstance(name, str) else "other"


def batch_flushed(queue: str, reason: str) -> None:
    BATCH_FLUSHES.labels(queue, reason).inc()


# --- dead letters and imports ---------------------------------------------------------------------------------


def dead_letter_recorded() -> None:
    DEAD_LETTERS_RECORDED.inc()


def dead_letter_replayed(outcome: str) -> None:
    DEAD_LETTERS_REPLAYED.labels(outcome.replace(" ", "_")).inc()


def import_progress(import_type: str, before: dict[str, int], after: dict[str, int]) -> None:
    """Count what an import did between two checkpoints (`counts` of its record before and after)."""
    for counter, name in ((IMPORT_READ, "read"), (IMPORT_SENT, "sent"), (IMPORT_FAILED, "failed")):
        done = after.get(name, 0) - before.get(name, 0)
        if done > 0:
            counter.labels(import_type).inc(done)
