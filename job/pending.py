"""The job's scheduled run checks the realtime bulk jobs a delivery could not await (`shared.pending_jobs`):
finished with failures → a dead letter with Klaviyo's reason (replayable like any other); finished → forgotten;
still processing → checked again by the next run."""

from __future__ import annotations

import logging

from shared import dead_letters, pending_jobs
from shared.bulk import BulkJobFailed, JobResult, job_result, raise_for_failures
from shared.errors import ApiError, ConnectorError, NotFound
from shared.processors import Context

log = logging.getLogger(__name__)


def check_pending(context: Context) -> list[dict[str, str]]:
    """One look at each remembered job; (key, outcome) per record: `done`, `dead letter`, `processing`."""
    results = []
    for entry in pending_jobs.entries(context.commercetools):
        try:
            outcome = _check(context, entry)
        except ConnectorError as exc:  # Klaviyo or commercetools unavailable: the next run looks again
            text = exc.describe() if isinstance(exc, ApiError) else exc.reason
            log.warning("pending bulk jobs not checked", extra={"key": entry["key"], "error": text})
            outcome = "processing"
        results.append({"key": entry["key"], "outcome": outcome})
    return results


def _check(context: Context, entry: dict) -> str:
    total = JobResult()
    for job in entry.get("jobs") or []:
        try:
            result = job_result(context.klaviyo, job)
        except NotFound:
            result = JobResult(failed=1, errors=[f"{job.split(':', 1)[0]} job {job.split(':', 1)[1]} is unknown to "
                                                 "Klaviyo (expired?): its outcome cannot be checked"])
        if result is None:
            return "processing"
        total.completed += result.completed
        total.failed += result.failed
        total.errors += result.errors
    commercetools = context.commercetools
    try:
        raise_for_failures(total, entry.get("what") or "bulk jobs")
    except BulkJobFailed as failure:
        # A batch's job carries several deliveries and cannot say here which failed: each is recorded (replays
        # write the current resource again, which is harmless for those that had succeeded).
        deliveries = entry.get("deliveries") or [entry]
        for delivery in deliveries:
            dead_letters.record(commercetools, message_id=delivery["messageId"], reason=failure.reason,
                                processors=delivery.get("processors") or [], error=failure,
                                notification=delivery.get("notification"))
        log.error("realtime bulk jobs failed; recorded as dead letters",
                  extra={"dead_letter_keys": [dead_letters.key_for(d["messageId"]) for d in deliveries],
                         "reason": failure.reason})
        commercetools.delete_custom_object(pending_jobs.CONTAINER, entry["key"], version=entry["version"])
        return "dead letter"
    commercetools.delete_custom_object(pending_jobs.CONTAINER, entry["key"], version=entry["version"])
    return "done"
