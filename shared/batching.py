"""Micro-batching for the event app: the Klaviyo writes of deliveries that arrive close together share one bulk
request, so a flash sale is bounded by Klaviyo's bulk limits (1,000 events a request) and not by its per-request
ones.

- Events go into an `event-bulk-create-job` (at most 1,000 events, ~4.5 MB). Klaviyo answers 202 with no job to
  look at: the request is validated whole and a refusal comes in the answer (4xx), so *accepted* means that 202.
  A refused batch is sent again event by event (create-event): the bad event's delivery is dead-lettered, the
  others succeed. A transient failure (429 beyond the budget, 5xx, timeout) fails every delivery of the batch
  with a transient error: each is answered 503 and delivered again, and unique_ids keep every event once.
- New or changed customers' profiles go into a `profile-bulk-import-job`. Its 202 means Klaviyo holds the job;
  failures are reported later in the job. The job is remembered in commercetools (`shared.pending_jobs`), the
  delivery is answered after that, and `_JobWatcher` polls the job:
  the profiles of a job that failed (some or all) are written again one by one through the delivery's own single
  path, and one that still fails permanently becomes a dead letter (replayable: a customer ResourceUpdated); then
  the job's record is forgotten. A job this process could not check (it stopped) is checked by the job
  application's next scheduled run (`job.pending`), which records its deliveries as dead letters if it failed.
- Stock updates (inventory messages) go into a `catalog-variant-bulk-update-job` (at most 100 variants), checked
  the same way: a variant the job failed on is written again alone (one Klaviyo does not have is then skipped,
  as without batching).
- Under light load (no other delivery in flight, nothing queued, the bulk quota untouched; for a variant, no bulk
  job of it open) `send_events`, `import_profile` and `update_variant` answer False and the caller writes as
  before, one request each.

A queue is flushed when it is full, when its oldest write waited `event.batch.maxWaitMs`, when every delivery in
flight is waiting on a batch (nobody else will join: at once while the operation's quota is untouched or
Klaviyo states no limit for it, else not more often than `maxWaitMs`), or when the earliest time budget in it
comes close; and only when its `Pacer` allows a request. A delivery waits at most until shortly before its own
time budget ends, then fails transiently (503), so a batch never holds a delivery past `event.timeBudgetSeconds`.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from shared import dead_letters, deadline, metrics, pending_jobs
from shared.bulk import (
    EVENTS_PATH,
    MAX_BYTES,
    MAX_CATALOG,
    MAX_EVENTS,
    catalog_job_body,
    event_size,
    events_job_body,
    profile_job_body,
)
from shared.commercetools import Commercetools
from shared.errors import ApiError, ConnectorError, TransientError
from shared.http import retry_after
from shared.klaviyo import Klaviyo
from shared.logs import current_message_id
from shared.ratelimit import LIMITS, Limit

log = logging.getLogger(__name__)

PROFILE_JOBS_PATH = "/api/profile-bulk-import-jobs"
VARIANT_JOBS_PATH = "/api/catalog-variant-bulk-update-jobs"
MAX_PROFILES_PER_JOB = 1000  # Klaviyo takes 10,000; a smaller job finishes sooner
ANSWER_MARGIN = 0.25  # a waiting delivery gives up this long before its budget ends (its answer must get out)
SEND_MARGIN = 0.5  # a batch's request must be done this long before the earliest budget in it ends
STATUS_LIMIT = Limit(10, 150)  # GET profile-bulk-import-jobs(/{id}): operations Klaviyo counts apart from POST
JOB_CHECK_BUDGET = 30.0  # seconds for one round of checking a job and writing its failed profiles again
JOB_RETRIES = 5  # rounds a profile failing transiently is written again before it is dead-lettered
CHECK_INTERVAL = 2.0  # seconds between two checks of the open profile import jobs


class Pacer:
    """When one more request of a Klaviyo operation may go: a token bucket that never spends more than
    `per_minute` in any minute (`capacity` at once, refilled with the rest over the minute) nor more than the
    operation's per-second limit in a second; `RateLimit-*` headers lower the tokens to what the
    account has left (other instances spend it too), and a 429's Retry-After stops requests until then.

    Pacing starts once Klaviyo has shown that it limits the operation: every answer of Klaviyo's but a 429 carries
    `RateLimit-*` headers, so that is its first answer (a queue sends one request at a time); a 429 arms it too.
    A server that states no limits (a stand-in, a proxy that strips them) is not paced."""

    def __init__(self, limit: Limit, capacity: int, per_minute: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """At most `capacity` requests at once after a quiet spell, and `per_minute` a minute in all (at most
        the operation's steady limit; less leaves room for the bulk import job and other clients)."""
        self.limit = limit
        self.capacity = capacity
        self._rate = (min(per_minute, limit.steady) - capacity) / 60.0
        self._tokens = float(self.capacity)
        self._clock = clock
        self._updated = clock()
        self._second, self._in_second = math.floor(self._updated), 0
        self._blocked_until = 0.0
        self.armed = False  # Klaviyo has stated limits for this operation
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if math.floor(now) != self._second:
            self._second, self._in_second = math.floor(now), 0

    def delay(self) -> float:
        """Seconds until a request may go (0: now)."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            waits = [self._blocked_until - now]
            if self.armed and self._tokens < 1:
                waits.append((1 - self._tokens) / self._rate)
            if self.armed and self._in_second >= self.limit.burst:
                waits.append(self._second + 1 - now)
            return max(0.0, *waits)

    def spend(self) -> None:
        with self._lock:
            self._refill(self._clock())
            if self.armed:
                self._tokens -= 1
            self._in_second += 1

    def untouched(self) -> bool:
        """No request spent recently (or no limit stated): the quota is as good as full."""
        with self._lock:
            self._refill(self._clock())
            return not self.armed or self._tokens >= self.capacity - 1

    def observe(self, limit: int, remaining: int, reset: float) -> None:
        self.armed = True
        if limit <= self.limit.burst:  # a burst window's count: the per-second limit covers it
            return
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._tokens = min(self._tokens, float(remaining))
            if remaining <= 0:
                self._blocked_until = max(self._blocked_until, now + reset)

    def block(self, seconds: float) -> None:
        self.armed = True
        with self._lock:
            now = self._clock()
            self._blocked_until = max(self._blocked_until, now + seconds)


@dataclass(eq=False)
class _Entry:
    """One delivery's writes in a queue."""

    items: list[Any]
    size: int
    deadline: float  # monotonic
    message_id: str | None
    single: Callable[[], Any] | None = None  # the delivery's own way to write them one by one
    replay: dict[str, Any] | None = None  # what a dead letter records for replay (a change notification)
    processor: str = ""  # the processor a dead letter names
    queued_at: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    error: ConnectorError | None = None
    abandoned: bool = False
    version: int | None = None  # of the resource the write comes from: which of two writes is newer


@dataclass
class _Open:
    """A catalog variant with bulk jobs open: Klaviyo runs jobs in no documented order, so when two of them were
    open at once the newest write is sent once more after the last one settled (see `Batcher._variants_settled`)."""

    jobs: int = 0
    overlapped: bool = False
    newest: _Entry | None = None


Send = Callable[[list[_Entry]], None]


class _Queue:
    def __init__(self, batcher: Batcher, name: str, pacer: Pacer, max_items: int, send: Send,
                 interval: float) -> None:
        self.batcher, self.name, self.pacer, self.max_items, self.send = batcher, name, pacer, max_items, send
        self.interval = interval  # the longest a write waits; under load, at least this long between two flushes
        self.last_flush = 0.0
        self.pending: list[_Entry] = []
        self.thread = threading.Thread(target=self._run, name=f"batch-{name}", daemon=True)

    def _ready(self, now: float) -> tuple[str | None, float]:
        """(why to flush now: full, waited, all-waiting, budget or closing; else None and the seconds until it
        may be time)."""
        b = self.batcher
        items = sum(len(e.items) for e in self.pending)
        size = sum(e.size for e in self.pending)
        waited = self.pending[0].queued_at + self.interval
        budget = min(e.deadline for e in self.pending) - SEND_MARGIN - 0.5
        due = min(waited, budget)
        if b.closed:
            return "closing", 0.0
        if items >= self.max_items or size >= MAX_BYTES:
            return "full", 0.0
        if now >= due:
            return ("waited" if now >= waited else "budget"), 0.0
        if b.waiting >= b.in_flight:  # nobody else will join: flush; with little quota, not more often than `interval`
            if now - self.last_flush >= self.interval or self.pacer.untouched():
                return "all-waiting", 0.0
            return None, min(due, self.last_flush + self.interval) - now
        return None, due - now

    def _take(self) -> list[_Entry]:
        taken: list[_Entry] = []
        items = size = 0
        while self.pending:
            entry = self.pending[0]
            if taken and (items + len(entry.items) > self.max_items or size + entry.size > MAX_BYTES):
                break
            taken.append(self.pending.pop(0))
            items, size = items + len(entry.items), size + entry.size
        return taken

    def _run(self) -> None:
        cond = self.batcher.cond
        while True:
            with cond:
                self.pending = [e for e in self.pending if not e.abandoned]
                if not self.pending:
                    if self.batcher.closed:
                        return
                    cond.wait()
                    continue
                reason, wait = self._ready(time.monotonic())
                if reason:
                    wait = self.pacer.delay()
                if not reason or wait > 0:
                    cond.wait(min(wait, 1.0) if wait > 0 else 1.0)
                    continue
                batch = self._take()
                self.last_flush = time.monotonic()
            metrics.batch_flushed(self.name, reason)
            self._flush(batch)

    def _flush(self, batch: list[_Entry]) -> None:
        budget = min(e.deadline for e in batch) - SEND_MARGIN - time.monotonic()
        try:
            with deadline.time_budget(max(budget, 0.0)):
                self.send(batch)
        except ConnectorError as exc:
            for entry in batch:
                entry.error = entry.error or exc
        except Exception as exc:  # a bug: the deliveries must still be answered (and delivered again)
            log.exception("batch %s failed unexpectedly", self.name)
            for entry in batch:
                entry.error = entry.error or TransientError(f"batch failed: {type(exc).__name__}")
        for entry in batch:
            entry.done.set()


class Batcher:
    """The event app's shared bulk requests: `send_events` and `import_profile` block the calling delivery until
    its writes were accepted (or raise as the single requests would); see the module docstring."""

    def __init__(self, klaviyo: Klaviyo, commercetools: Commercetools, *, max_wait: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.klaviyo, self.commercetools, self.max_wait = klaviyo, commercetools, max_wait
        self.cond = threading.Condition()
        self.in_flight = 0  # deliveries being handled (`delivery()`)
        self.waiting = 0  # of those, waiting on a batch
        self.closed = False
        # Events: up to 120 requests in a burst (a short sale at up to 10/s), 150 a minute (Klaviyo's limit).
        # Profile jobs: 100 in a burst, 130 a minute (the rest for the bulk import); job checks: 60 a minute.
        self.pacers = {"events-bulk": Pacer(LIMITS["events-bulk"], 120, 150, clock=clock),
                       "profile-bulk-import": Pacer(LIMITS["profile-bulk-import"], 100, 130, clock=clock),
                       "profile-job-status": Pacer(STATUS_LIMIT, 20, 60, clock=clock),
                       "catalog-bulk": Pacer(LIMITS["catalog-bulk"], 300, 600, clock=clock),
                       "catalog-job-status": Pacer(LIMITS["catalog-job-status"], 100, 300, clock=clock)}
        # A queue's oldest write waits at most its interval, `max_wait` (profiles: 2 × max_wait: a profile job
        # costs a check too, and the delivery's events do not wait for it).
        self.events = _Queue(self, "events", self.pacers["events-bulk"], MAX_EVENTS, self._send_events, max_wait)
        self.profiles = _Queue(self, "profiles", self.pacers["profile-bulk-import"], MAX_PROFILES_PER_JOB,
                               self._send_profiles, 2 * max_wait)
        self.variants = _Queue(self, "variants", self.pacers["catalog-bulk"], MAX_CATALOG, self._send_variants,
                               max_wait)
        self._open: dict[str, _Open] = {}  # catalog variants with bulk jobs open, by variant id
        self.watcher = _JobWatcher(self)
        client = getattr(getattr(klaviyo, "_http", None), "_client", None)
        if isinstance(client, httpx.Client):
            client.event_hooks["response"].append(self._observe)
        for thread in (self.events.thread, self.profiles.thread, self.variants.thread, self.watcher.thread):
            thread.start()

    # --- the deliveries' side -------------------------------------------------------------------------------

    @contextmanager
    def delivery(self) -> Iterator[None]:
        """Around the handling of one delivery: counts it in flight."""
        with self.cond:
            self.in_flight += 1
        try:
            yield
        finally:
            with self.cond:
                self.in_flight -= 1
                self.cond.notify_all()

    def send_events(self, events: list[dict[str, Any]]) -> bool:
        """Send these events in a shared bulk request and wait until it was accepted; False under light load
        (the caller sends them itself)."""
        return self._submit(self.events, events, sum(event_size(e) for e in events), None)

    def import_profile(self, attributes: dict[str, Any], single: Callable[[], Any]) -> bool:
        """Import this profile in a shared profile bulk import job and wait for its 202; False under light load.
        `single` writes it one by one, should the job fail on it."""
        replay = {"notificationType": "ResourceUpdated", "version": 0,
                  "resource": {"typeId": "customer", "id": attributes.get("external_id")}}
        return self._submit(self.profiles, [attributes], event_size(attributes), single, replay,
                            "CustomerResourceUpdated")

    def update_variant(self, data: dict[str, Any], single: Callable[[], Any], replay: dict[str, Any],
                       processor: str = "InventoryResourceUpdated", version: int | None = None) -> bool:
        """Update this catalog variant (`data`: a catalog-variant update) in a shared catalog variant bulk update
        job and wait for its 202; False under light load. `single` writes it alone, should the job fail on it;
        `replay` is the notification a dead letter keeps; `version` that of the resource `data` comes from."""
        return self.update_variants([(data, single)], replay, processor, version)

    def update_variants(self, updates: list[tuple[dict[str, Any], Callable[[], Any]]], replay: dict[str, Any],
                        processor: str, version: int | None = None) -> bool:
        """`update_variant` for several variants of one delivery (a product's), waited for together."""
        return self._submit_all(self.variants, [([data], event_size(data), single) for data, single in updates],
                                replay, processor, version)

    def _light(self, queue: _Queue, entries: list[_Entry]) -> bool:
        """Light load: the writes may go alone. Never for a variant with a bulk job open: the job could land
        after the single write, and its re-send (`_variants_settled`) would too."""
        if queue is self.variants and any(e.items[0]["id"] in self._open for e in entries):
            return False
        return self.in_flight <= 1 and not queue.pending and queue.pacer.untouched()

    def _submit(self, queue: _Queue, items: list[Any], size: int, single: Callable[[], Any] | None = None,
                replay: dict[str, Any] | None = None, processor: str = "") -> bool:
        return self._submit_all(queue, [(items, size, single)], replay, processor)

    def _submit_all(self, queue: _Queue, writes: list[tuple[list[Any], int, Callable[[], Any] | None]],
                    replay: dict[str, Any] | None, processor: str, version: int | None = None) -> bool:
        """Queue one delivery's writes (each: its items, their size, its single way) and wait until every one
        was accepted; the first error of one is raised."""
        left = deadline.remaining()
        now = time.monotonic()
        end = now + (left if math.isfinite(left) else 60.0)
        message_id = current_message_id()
        entries = [_Entry(items, size, end, message_id, single, replay, processor, version=version)
                   for items, size, single in writes]
        with self.cond:
            if self.closed or self._light(queue, entries):
                return False
            queue.pending.extend(entries)
            self.waiting += 1
            self.cond.notify_all()
        try:
            for entry in entries:
                if not entry.done.wait(max(0.0, entry.deadline - ANSWER_MARGIN - time.monotonic())):
                    with self.cond:
                        for other in entries:
                            other.abandoned = other.abandoned or not other.done.is_set()
                    raise TransientError(f"Klaviyo {queue.name} batch not sent within the time budget")
        finally:
            with self.cond:
                self.waiting -= 1
                self.cond.notify_all()
        for entry in entries:
            if entry.error is not None:
                raise entry.error
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued, check the profile jobs still open (up to `timeout`), stop the threads."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.events.thread.join(timeout)
        self.profiles.thread.join(timeout)
        self.variants.thread.join(timeout)
        self.watcher.stop(timeout)

    # --- Klaviyo's side ----------------------------------------------------------------------------------------

    def _observe(self, response: httpx.Response) -> None:
        request = response.request
        path = request.url.path
        if path == EVENTS_PATH:
            key = "events-bulk"
        elif path.startswith(PROFILE_JOBS_PATH):
            key = "profile-bulk-import" if request.method == "POST" else "profile-job-status"
        elif path.startswith(VARIANT_JOBS_PATH):
            key = "catalog-bulk" if request.method == "POST" else "catalog-job-status"
        else:
            return
        pacer, headers = self.pacers[key], response.headers
        if response.status_code == 429:
            wait = retry_after(headers.get("Retry-After"))
            if wait:
                pacer.block(wait)
            return
        try:
            pacer.observe(int(headers["RateLimit-Limit"]), int(headers["RateLimit-Remaining"]),
                          float(headers["RateLimit-Reset"]))
        except (KeyError, ValueError):
            return

    def _send_events(self, batch: list[_Entry]) -> None:
        events = [event for entry in batch for event in entry.items]
        self.pacers["events-bulk"].spend()
        try:
            self.klaviyo.request("POST", EVENTS_PATH, body=events_job_body(events))
        except ApiError as exc:
            if exc.transient or len(events) == 1:
                raise
            log.warning("Klaviyo refused an event batch; sending its events one by one",
                        extra={"events": len(events), "deliveries": len(batch), "error": exc.describe()})
            for entry in batch:
                try:
                    for event in entry.items:
                        self.klaviyo.create_event(event)
                except ConnectorError as single:
                    entry.error = single

    def _send_profiles(self, batch: list[_Entry]) -> None:
        self._bulk_job(batch, "profile-bulk-import", PROFILE_JOBS_PATH,
                       profile_job_body([entry.items[0] for entry in batch]), "profiles")

    def _send_variants(self, batch: list[_Entry]) -> None:
        """One job per distinct variant set: a second update of a variant in the same flush goes in a next job
        (after the first), so that the later stock wins."""
        while batch:
            seen: set[str] = set()
            job: list[_Entry] = []
            rest: list[_Entry] = []
            for entry in batch:
                (rest if entry.items[0]["id"] in seen else job).append(entry)
                seen.add(entry.items[0]["id"])
            self._variant_job(job)
            batch = rest

    def _variant_job(self, job: list[_Entry]) -> None:
        self._bulk_job(job, "catalog-bulk", VARIANT_JOBS_PATH,
                       catalog_job_body("variant", "update", [e.items[0] for e in job]), "variants")

    def _bulk_job(self, batch: list[_Entry], pacer: str, path: str, body: dict[str, Any], kind: str) -> None:
        """One bulk job for the batch's writes (a job refused as invalid: each written alone). The job is
        remembered in commercetools (`shared.pending_jobs`) before its deliveries are answered: should this
        process stop before it checked the job, the job application's next scheduled run checks it."""
        self.pacers[pacer].spend()
        try:
            answer = self.klaviyo.request("POST", path, body=body)
        except ApiError as exc:
            if exc.transient:
                raise
            log.warning("Klaviyo refused a bulk job; writing its writes one by one",
                        extra={"kind": kind, "writes": len(batch), "error": exc.describe()})
            for entry in batch:
                try:
                    if entry.single is not None:
                        entry.single()
                except ConnectorError as single:
                    entry.error = single
            return
        job_id = answer["data"]["id"]
        job_type = "profiles" if kind == "profiles" else "catalog-variant-bulk-update"
        deliveries = [{"messageId": _dead_letter_id(e), "notification": e.replay, "processors": [e.processor]}
                      for e in batch]
        key = pending_jobs.remember_batch(self.commercetools, f"{job_type}:{job_id}", deliveries, f"{kind} bulk job")
        if kind == "variants":
            self._variants_opened(batch)
        self.watcher.add(job_id, batch, kind, key)

    def _variants_opened(self, entries: list[_Entry]) -> None:
        with self.cond:
            for entry in entries:
                opened = self._open.setdefault(entry.items[0]["id"], _Open())
                opened.jobs += 1
                opened.overlapped = opened.overlapped or opened.jobs > 1
                if opened.newest is None or _newer(entry, opened.newest):
                    opened.newest = entry

    def _variants_settled(self, entries: list[_Entry]) -> None:
        """A variant job's writes are all in Klaviyo (or dead letters). For a variant whose last open job this was,
        and that had two jobs open at once (Klaviyo may have run the older last), the newest write goes once more
        in a next job, with no delivery waiting on it (a failure there is handled as any job write's)."""
        again = []
        with self.cond:
            for entry in entries:
                variant_id = entry.items[0]["id"]
                opened = self._open.get(variant_id)
                if opened is None:
                    continue
                opened.jobs -= 1
                if opened.jobs > 0:
                    continue
                del self._open[variant_id]
                if opened.overlapped and opened.newest is not None and not self.closed:
                    newest = opened.newest
                    # Its original queue time: it is no newer than what was queued after it.
                    again.append(_Entry(newest.items, newest.size, time.monotonic() + JOB_CHECK_BUDGET,
                                        newest.message_id, newest.single, newest.replay, newest.processor,
                                        queued_at=newest.queued_at, version=newest.version))
            if again:
                log.info("variants had two bulk jobs open at once; writing their newest data once more",
                         extra={"variants": len(again)})
                self.variants.pending.extend(again)
                self.cond.notify_all()


def _newer(entry: _Entry, than: _Entry) -> bool:
    """Whether `entry`'s write is newer than `than`'s: by their resource's versions when both come from one kind of
    resource (a stock update, a product) with versions, else by the order they were queued in (as single writes:
    the last wins)."""
    if entry.processor == than.processor and entry.version is not None and than.version is not None \
            and entry.version != than.version:
        return entry.version > than.version
    return entry.queued_at >= than.queued_at


def _dead_letter_id(entry: _Entry) -> str:
    """The message id a dead letter of this write is recorded under."""
    resource = (entry.replay or {}).get("resource") or {}
    return entry.message_id or f"{resource.get('typeId')}-{resource.get('id')}-bulk-job"


class _NoListing(Exception):
    """No profile job among those due: nothing to list."""


@dataclass(eq=False)
class _Job:
    job_id: str
    entries: list[_Entry]
    next_check: float
    kind: str  # "profiles" | "variants"
    key: str  # its record in commercetools (`shared.pending_jobs`), forgotten once every write is settled
    unsettled: int = 0  # writes the job failed on that are not yet written again or dead-lettered


class _JobWatcher:
    """Checks the profile bulk import jobs the batcher created, and writes again the profiles of a job that
    failed on some (see the module docstring)."""

    def __init__(self, batcher: Batcher) -> None:
        self.batcher = batcher
        self.jobs: list[_Job] = []
        self.retries: list[tuple[_Entry, int, float, _Job]] = []  # (entry, attempts, next try, its job): transient
        self.cond = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="batch-job-watcher", daemon=True)

    def add(self, job_id: str, entries: list[_Entry], kind: str, key: str) -> None:
        with self.cond:
            self.jobs.append(_Job(job_id, entries, time.monotonic() + CHECK_INTERVAL, kind, key))
            self.cond.notify_all()

    def pending(self) -> int:
        with self.cond:
            return len(self.jobs) + len(self.retries)

    def stop(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        with self.cond:
            self.stopping = True
            for job in self.jobs:
                job.next_check = min(job.next_check, time.monotonic())
            self.cond.notify_all()
        self.thread.join(max(0.0, end - time.monotonic()))
        with self.cond:
            if self.jobs or self.retries:
                log.warning("stopped with bulk jobs not checked; the job application's next scheduled run checks them",
                          extra={"jobs": [j.job_id for j in self.jobs], "profiles_to_retry": len(self.retries)})

    def _run(self) -> None:
        while True:
            with self.cond:
                if self.stopping and not self.jobs and not self.retries:
                    return
                now = time.monotonic()
                # One round checks every open job (one listing for all), at most every CHECK_INTERVAL.
                due = list(self.jobs) if any(j.next_check <= now for j in self.jobs) else []
                retry = [r for r in self.retries if r[2] <= now]
                if not due and not retry:
                    times = [j.next_check for j in self.jobs] + [r[2] for r in self.retries]
                    self.cond.wait(min(times) - now if times else None)
                    continue
                self.retries = [r for r in self.retries if r[2] > now]
            for entry, attempts, _, job in retry:
                self._write_again(entry, attempts, job)
            if due:
                self._check(due)

    def _request(self, path: str, params: dict[str, str] | None = None) -> Any:
        pacer = self.batcher.pacers["catalog-job-status" if path.startswith(VARIANT_JOBS_PATH)
                                    else "profile-job-status"]
        wait = pacer.delay()
        if wait > 0:
            time.sleep(min(wait, 1.0))
        pacer.spend()
        with deadline.time_budget(JOB_CHECK_BUDGET):
            return self.batcher.klaviyo.request("GET", path, params=params)

    def _check(self, due: list[_Job]) -> None:
        """One request lists the account's 100 newest profile import jobs (ours are among them, unless the
        account creates many others): their states; a job not in that page is read alone."""
        states: dict[str, dict[str, Any]] = {}
        try:
            if not any(job.kind == "profiles" for job in due):
                raise _NoListing
            listing = self._request(PROFILE_JOBS_PATH, {
                "sort": "-created_at", "page[size]": "100",
                "fields[profile-bulk-import-job]": "status,failed_count,completed_count,total_count"})
            states = {d.get("id"): d.get("attributes") or {} for d in (listing or {}).get("data") or []}
        except _NoListing:
            pass
        except ApiError as exc:
            log.info("could not list profile import jobs; reading them one by one", extra={"error": exc.describe()})
        for job in due:
            attributes = states.get(job.job_id)
            if attributes is None:
                try:
                    base = PROFILE_JOBS_PATH if job.kind == "profiles" else VARIANT_JOBS_PATH
                    body = self._request(f"{base}/{job.job_id}")
                    attributes = (body or {}).get("data", {}).get("attributes") or {}
                except ApiError as exc:
                    if exc.transient:
                        self._later(job)
                        continue
                    attributes = {}  # the job is gone (expired?): write its profiles again, to be sure
            self._settle(job, attributes)

    def _settle(self, job: _Job, attributes: dict[str, Any]) -> None:
        status = attributes.get("status")
        if status in ("queued", "processing"):
            self._later(job)
            return
        with self.cond:
            self.jobs.remove(job)
        if status == "complete" and not int(attributes.get("failed_count") or 0):
            self._forget(job)
            return
        failed = self._failed_entries(job, attributes) if status == "complete" else job.entries
        log.warning("Klaviyo bulk job failed on some of its writes; writing them again one by one",
                    extra={"job_id": job.job_id, "status": status, "failed": attributes.get("failed_count"),
                           "kind": job.kind, "writes": len(job.entries), "written_again": len(failed)})
        job.unsettled = len(failed)
        if not failed:
            self._forget(job)
        for entry in failed:
            self._write_again(entry, 0, job)

    def _forget(self, job: _Job) -> None:
        """Every write of the job is in Klaviyo or a dead letter: its record is no longer needed. Should this fail,
        the scheduled run finds the job done and forgets it then."""
        if job.kind == "variants":
            self.batcher._variants_settled(job.entries)
        try:
            pending_jobs.forget(self.batcher.commercetools, job.key)
        except ConnectorError as exc:
            log.warning("could not forget a checked bulk job; the next job run will", extra={"error": str(exc)})

    def _settled(self, job: _Job) -> None:
        with self.cond:
            job.unsettled -= 1
            done = job.unsettled == 0
        if done:
            self._forget(job)

    def _failed_entries(self, job: _Job, attributes: dict[str, Any]) -> list[_Entry]:
        """The entries the job's errors point at (`/data/attributes/<profiles|variants>/data/<index>`: a profile
        job's import errors, a catalog job's `errors`); all of them when the errors cannot be read or do not
        account for every failure."""
        failed = int(attributes.get("failed_count") or 0)
        indexes: set[int] = set()
        if job.kind == "profiles":
            try:
                body = self._request(f"{PROFILE_JOBS_PATH}/{job.job_id}/import-errors",
                                     {"fields[import-error]": "code,title,detail,source", "page[size]": "100"})
            except ApiError:
                return job.entries
            errors = [e.get("attributes") or {} for e in (body or {}).get("data") or []]
        else:
            errors = [e for e in attributes.get("errors") or [] if isinstance(e, dict)]
        for error in errors:
            pointer = str((error.get("source") or {}).get("pointer") or "")
            found = re.match(rf"/data/attributes/{job.kind}/data/(\d+)(?:/|$)", pointer)
            if found and int(found.group(1)) < len(job.entries):
                indexes.add(int(found.group(1)))
        if len(indexes) < failed:
            return job.entries
        return [job.entries[i] for i in sorted(indexes)]

    def _later(self, job: _Job) -> None:
        with self.cond:
            job.next_check = time.monotonic() + (0.0 if self.stopping else CHECK_INTERVAL)

    def _write_again(self, entry: _Entry, attempts: int, job: _Job) -> None:
        try:
            with deadline.time_budget(JOB_CHECK_BUDGET):
                if entry.single is not None:
                    entry.single()
            self._settled(job)
            return
        except ConnectorError as exc:
            error = exc
        if error.transient and attempts + 1 < JOB_RETRIES and not self.stopping:
            with self.cond:
                self.retries.append((entry, attempts + 1, time.monotonic() + 2.0 ** attempts * 5, job))
                self.cond.notify_all()
            return
        message_id = _dead_letter_id(entry)
        detail = error.describe() if isinstance(error, ApiError) else error.reason
        reason = f"a Klaviyo bulk job failed on this write, and writing it alone failed: {detail}"
        try:
            dead_letters.record(self.batcher.commercetools, message_id=message_id, reason=reason,
                                processors=[entry.processor], error=error, notification=entry.replay)
            log.error("a write from a Klaviyo bulk job failed; recorded as a dead letter",
                      extra={"dead_letter_key": dead_letters.key_for(message_id)})
        except ConnectorError as exc:
            # The job's record stays: the scheduled run checks the job and records its deliveries then.
            log.error("a write from a Klaviyo bulk job failed and could not be recorded as a dead letter",
                      extra={"record_error": str(exc), "message_id": message_id})
            return
        self._settled(job)
