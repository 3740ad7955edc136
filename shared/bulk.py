"""Sending at bulk speed: event batches, profile import jobs and catalog jobs, paced to Klaviyo's limits.

Payloads come from the same mappers as the realtime path, so a bulk import and a realtime message about the
same order send the same events with the same unique_ids.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from shared import deadline
from shared.errors import ApiError, PermanentError, TransientError, redact
from shared.http import retry_after
from shared.klaviyo import Klaviyo
from shared.ratelimit import RateLimiter

log = logging.getLogger(__name__)

EVENTS_PATH = "/api/event-bulk-create-jobs"
MAX_EVENTS = 1000  # per event-bulk-create-job request
MAX_CATALOG = 100  # per catalog bulk job
MAX_PROFILES = 10_000  # per profile bulk import job
MAX_BYTES = 4_500_000  # Klaviyo accepts 5 MB per request; leave room for the envelope
MAX_JOB_ERRORS = 20  # error messages kept per job
CONFIRM_SECONDS = 60.0  # how long subscription jobs may take to show on the profiles
PLURAL = {"item": "items", "variant": "variants", "category": "categories"}


@dataclass
class BatchResult:
    sent: int = 0
    failed: list[str] = field(default_factory=list)  # one reason per event that could not be sent
    failed_at: list[int] = field(default_factory=list)  # where those events were in the list sent


@dataclass
class JobResult:
    completed: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class BulkJobFailed(PermanentError):
    """Klaviyo finished a bulk job with failures (the reason quotes Klaviyo's, redacted): it will not pass by
    itself, so the delivery is recorded as a dead letter for replay."""


class BulkSender(Protocol):
    def send_events(self, events: list[dict[str, Any]], sizes: list[int] | None = None) -> BatchResult: ...
    def catalog_job(self, kind: str, action: str, data: list[dict[str, Any]]) -> str: ...
    def profile_job(self, profiles: list[dict[str, Any]]) -> str: ...
    def wait(self, jobs: Iterable[str]) -> JobResult: ...
    def subscription_job(self, path: str, body: dict[str, Any]) -> None: ...
    def confirm_subscriptions(self, expected: dict[str, dict[str, str]]) -> set[str]: ...


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def event_batches(events: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Batches of at most 1,000 events and ~4.5 MB each."""
    for _start, batch in _sized_batches(events):
        yield batch


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # as httpx encodes a body


def event_size(event: dict[str, Any]) -> int:
    """An upper bound of the octets the event adds to an events-bulk-create body: the event as JSON (UTF-8,
    compact, as httpx sends it; the profile counted although events of one profile share it) and the
    `{"type":"event","attributes":...}` around it."""
    text = _COMPACT.encode(event)
    return (len(text) if text.isascii() else len(text.encode())) + 32


def full_batch(sizes: list[int]) -> int:
    """How many of these events (by their `sizes`) make a full batch: 1,000, or as many as 4.5 MB holds when
    the next would not fit. 0: not enough for one yet."""
    total = 0
    for count, size in enumerate(sizes):
        total += size + 32
        if count and total > MAX_BYTES:
            return count
        if count + 1 == MAX_EVENTS:
            return MAX_EVENTS
    return 0


def _sized_batches(events: list[dict[str, Any]], sizes: list[int] | None = None,
                   ) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """(index of the first event, batch): at most 1,000 events and 4.5 MB. `sizes` bound the events' sizes as
    JSON (without the 32 octets around each); events without are measured."""
    batch: list[dict[str, Any]] = []
    size = first = 0
    for index, event in enumerate(events):
        size_of_event = sizes[index] + 32 if sizes is not None else event_size(event)
        if batch and (len(batch) >= MAX_EVENTS or size + size_of_event > MAX_BYTES):
            yield first, batch
            batch, size, first = [], 0, index
        batch.append(event)
        size += size_of_event
    if batch:
        yield first, batch


def events_job_body(events: list[dict[str, Any]]) -> dict[str, Any]:
    """An event-bulk-create-job: events grouped under their profile, in the order they came."""
    groups: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    keys: dict[int, str] = {}  # by profile object: the events of one order share theirs
    for event in events:
        profile = event["profile"]
        key = keys.get(id(profile))
        if key is None:
            key = keys[id(profile)] = json.dumps(profile, sort_keys=True)
        attributes = {k: v for k, v in event.items() if k != "profile"}
        groups.setdefault(key, (profile, []))[1].append({"type": "event", "attributes": attributes})
    return {"data": {"type": "event-bulk-create-job", "attributes": {"events-bulk-create": {"data": [
        {"type": "event-bulk-create", "attributes": {"profile": profile, "events": {"data": entries}}}
        for profile, entries in groups.values()
    ]}}}}


def catalog_job_body(kind: str, action: str, data: list[dict[str, Any]]) -> dict[str, Any]:
    if action == "delete":
        data = [{"type": f"catalog-{kind}", "id": d["id"]} for d in data]
    return {"data": {"type": f"catalog-{kind}-bulk-{action}-job",
                     "attributes": {PLURAL[kind]: {"data": data}}}}


def profile_job_body(profiles: list[dict[str, Any]]) -> dict[str, Any]:
    return {"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": [
        {"type": "profile", "attributes": attributes} for attributes in profiles]}}}}


def _job_path(job_type: str) -> str:
    return "/api/profile-bulk-import-jobs" if job_type == "profiles" else f"/api/{job_type}-jobs"


def limiter_key(method: str, path: str) -> str | None:
    """The `RateLimiter` key of a Klaviyo request of the bulk import (None: not one of them)."""
    if path == EVENTS_PATH:
        return "events-bulk"
    if path.startswith("/api/profile-bulk-import-jobs"):
        return "profile-bulk-import"
    if path.startswith("/api/profile-subscription-bulk-"):
        return "subscription-bulk"
    if path.startswith("/api/catalog-") and "-bulk-" in path:
        return "catalog-bulk" if method == "POST" else "catalog-job-status"
    return None


class KlaviyoBulk:
    def __init__(self, klaviyo: Klaviyo, limiter: RateLimiter | None = None, *,
                 poll_interval: float = 1.0, sleep: Callable[[float], None] = time.sleep) -> None:
        self._klaviyo = klaviyo
        self._limiter = limiter or RateLimiter()
        self._poll_interval = poll_interval
        self._sleep = sleep
        # Klaviyo's rate-limit headers and Retry-After keep the limiter on Klaviyo's windows. The client returns
        # bodies only, so its httpx client tells us of every answer.
        client = getattr(getattr(klaviyo, "_http", None), "_client", None)
        if isinstance(client, httpx.Client):
            client.event_hooks["response"].append(self._observe)

    def _observe(self, response: httpx.Response) -> None:
        key = limiter_key(response.request.method, response.request.url.path)
        if key is None:
            return
        headers = response.headers
        if response.status_code == 429:
            wait = retry_after(headers.get("Retry-After"))
            if wait:
                self._limiter.block(key, wait)
            return
        try:
            limit, remaining = int(headers["RateLimit-Limit"]), int(headers["RateLimit-Remaining"])
            reset = float(headers["RateLimit-Reset"])
        except (KeyError, ValueError):
            return
        self._limiter.observe(key, limit, remaining, reset)

    def send_events(self, events: list[dict[str, Any]], sizes: list[int] | None = None) -> BatchResult:
        """Send events in bulk (`sizes`, when known: bounds of their sizes as JSON); a batch Klaviyo refuses is
        sent again event by event, to keep the good ones."""
        result = BatchResult()
        for start, batch in _sized_batches(events, sizes):
            self._limiter.acquire("events-bulk")
            try:
                self._klaviyo.request("POST", EVENTS_PATH, body=events_job_body(batch))
                result.sent += len(batch)
            except ApiError as exc:
                if exc.transient:
                    raise
                log.warning("Klaviyo refused an event batch; sending its events one by one",
                            extra={"events": len(batch), "error": exc.describe()})
                for index, event in enumerate(batch, start):
                    try:
                        self._klaviyo.create_event(event)
                        result.sent += 1
                    except ApiError as single:
                        if single.transient:
                            raise
                        result.failed.append(f"event {event.get('unique_id')}: {single.describe()}")
                        result.failed_at.append(index)
        return result

    def catalog_job(self, kind: str, action: str, data: list[dict[str, Any]]) -> str:
        self._limiter.acquire("catalog-bulk")
        body = self._klaviyo.request("POST", f"/api/catalog-{kind}-bulk-{action}-jobs",
                                     body=catalog_job_body(kind, action, data), safe_to_retry=False)
        return f"catalog-{kind}-bulk-{action}:{body['data']['id']}"

    def profile_job(self, profiles: list[dict[str, Any]]) -> str:
        """A profile bulk import job; it upserts (by email and external id), so a repeated request is harmless."""
        self._limiter.acquire("profile-bulk-import")
        body = self._klaviyo.request("POST", "/api/profile-bulk-import-jobs", body=profile_job_body(profiles))
        return f"profiles:{body['data']['id']}"

    def subscription_job(self, path: str, body: dict[str, Any]) -> None:
        """A profile subscription bulk create / delete job. Klaviyo answers 202 without a job to poll: the outcome
        is read back from the profiles (`confirm_subscriptions`). Safe to repeat."""
        self._limiter.acquire("subscription-bulk")
        self._klaviyo.request("POST", path, body=body)

    def confirm_subscriptions(self, expected: dict[str, dict[str, str]]) -> set[str]:
        """The emails (lower case) whose profiles show the expected consent per channel (`{"email": "SUBSCRIBED"}`).

        The profiles are read back (100 a request, with their subscriptions) until every one shows it, for at most
        `CONFIRM_SECONDS` (and never past the time budget): what is still missing then has failed, or is so late
        that the caller should treat it as failed (sending it again is harmless).
        """
        pending = {email.lower(): states for email, states in expected.items()}
        confirmed: set[str] = set()
        interval, waited = self._poll_interval, 0.0
        while pending:
            for chunk in chunks(sorted(pending), 100):
                emails = ",".join(json.dumps(email) for email in chunk)
                self._limiter.acquire("profiles-read")
                page = self._klaviyo.request("GET", "/api/profiles", params={
                    "filter": f"any(email,[{emails}])", "additional-fields[profile]": "subscriptions",
                    "fields[profile]": "email,subscriptions", "page[size]": "100"})
                for profile in (page or {}).get("data") or []:
                    attributes = profile.get("attributes") or {}
                    email = str(attributes.get("email") or "").lower()
                    states = pending.get(email)
                    subscriptions = attributes.get("subscriptions") or {}
                    if states and all(((subscriptions.get(channel) or {}).get("marketing") or {}).get("consent")
                                      == state for channel, state in states.items()):
                        confirmed.add(email)
                        del pending[email]
            if not pending or waited + interval > CONFIRM_SECONDS or interval >= deadline.remaining():
                break
            self._sleep(interval)
            waited += interval
            interval = min(interval * 1.5, 10.0)
        return confirmed

    def wait(self, jobs: Iterable[str]) -> JobResult:
        """Poll the jobs until each is done; sums their counts and collects their error messages.

        Catalog jobs list their failures in the job; a profile import job's are read from its import errors.
        Polling stops, as a transient failure, when the current time budget cannot cover the next wait.
        """
        result, pending = await_jobs(self._klaviyo, jobs, poll_interval=self._poll_interval, sleep=self._sleep,
                                     acquire=self._limiter.acquire)
        if pending:
            raise TransientError(f"{len(pending)} Klaviyo bulk job(s) still processing when the time budget ran out")
        return result


def job_result(klaviyo: Klaviyo, job: str, acquire: Callable[[str], Any] | None = None) -> JobResult | None:
    """The outcome of a bulk job (`<type>:<id>`, as `KlaviyoBulk` and the realtime path name them); None while
    Klaviyo is still working on it. `acquire` paces the requests (a `RateLimiter.acquire`)."""
    job_type, job_id = job.split(":", 1)
    if acquire:
        acquire("profile-bulk-import" if job_type == "profiles" else "catalog-job-status")
    attributes = klaviyo.request("GET", f"{_job_path(job_type)}/{job_id}")["data"]["attributes"]
    if attributes.get("status") in ("queued", "processing"):
        return None
    failed = int(attributes.get("failed_count") or 0)
    result = JobResult(completed=int(attributes.get("completed_count") or 0), failed=failed)
    if attributes.get("status") == "cancelled":
        result.errors.append(f"{job_type} job {job_id} was cancelled by Klaviyo")
    errors = attributes.get("errors") or []
    if job_type == "profiles" and failed:
        if acquire:
            acquire("profile-bulk-import")
        errors = _import_errors(klaviyo, job_id)
    result.errors += [f"{job_type} job {job_id}: {_error_text(error)}" for error in errors[:MAX_JOB_ERRORS]]
    return result


def await_jobs(klaviyo: Klaviyo, jobs: Iterable[str], *, poll_interval: float = 0.25, reserve: float = 0.0,
               sleep: Callable[[float], None] = time.sleep, acquire: Callable[[str], Any] | None = None,
               ) -> tuple[JobResult, list[str]]:
    """Poll the jobs until each is done, or until the current time budget (less `reserve` seconds, kept for what
    the caller does next) cannot cover the next wait; (the summed outcome of those done, the ones still pending).
    A job Klaviyo cancelled is named in the errors."""
    result = JobResult()
    pending = list(jobs)
    interval = poll_interval
    while pending:
        still = []
        for job in pending:
            outcome = job_result(klaviyo, job, acquire)
            if outcome is None:
                still.append(job)
                continue
            result.completed += outcome.completed
            result.failed += outcome.failed
            result.errors += outcome.errors
        pending = still
        if pending:
            if interval >= deadline.remaining() - reserve:
                return result, pending
            sleep(interval)
            interval = min(interval * 1.5, 10.0)
    return result, []


def check_jobs(klaviyo: Klaviyo, jobs: Iterable[str], what: str, *, reserve: float = 0.0) -> list[str]:
    """Await the jobs of a realtime write within the time budget (less `reserve`): `BulkJobFailed` with Klaviyo's
    reasons when any failed; otherwise the jobs still processing (for a later check, `shared.pending_jobs`)."""
    result, pending = await_jobs(klaviyo, jobs, reserve=reserve)
    raise_for_failures(result, what)
    return pending


def raise_for_failures(result: JobResult, what: str) -> None:
    """`BulkJobFailed` naming Klaviyo's first reasons when a job failed (or was cancelled)."""
    if result.failed or result.errors:
        reasons = "; ".join(result.errors[:3]) or "no reason given"
        raise BulkJobFailed(f"{what}: {result.failed} failed in Klaviyo bulk jobs ({reasons})")


def _import_errors(klaviyo: Klaviyo, job_id: str) -> list[dict[str, Any]]:
    """The first errors of a profile import job (their payloads, personal data, are not asked for)."""
    body = klaviyo.request("GET", f"/api/profile-bulk-import-jobs/{job_id}/import-errors", params={
        "fields[import-error]": "code,title,detail,source", "page[size]": str(MAX_JOB_ERRORS)})
    return [entry.get("attributes") or {} for entry in (body or {}).get("data") or []]


def _error_text(error: Any) -> str:
    """What a job error says, redacted (Klaviyo may quote the values it refused)."""
    if not isinstance(error, dict):
        return redact(str(error))
    text = error.get("detail") or error.get("title") or error.get("code") or "error"
    pointer = (error.get("source") or {}).get("pointer")
    return redact(f"{text} (at {pointer})" if pointer else str(text))
