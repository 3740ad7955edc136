"""Klaviyo bulk jobs of a realtime delivery that were still processing when its time budget ran out.

A realtime write that goes through bulk jobs (a product's many variants) is awaited within the delivery's time
budget: a failed job makes the delivery a dead letter with Klaviyo's reason (`shared.bulk.check_jobs`). Jobs still
processing then are remembered here (commercetools custom objects, with the notification) and the delivery is
acknowledged, since Klaviyo accepted the work; the job application's next scheduled run checks them
(`job.pending`): a failed job then becomes a dead letter, a finished one is forgotten.

The event app's micro-batcher (`shared.batching`) remembers each profile or variant bulk job it creates the same
way, with the deliveries whose writes it carries (`remember_batch`), before those deliveries are answered, and
forgets it once it has checked the job itself. Should the process stop first, the scheduled run checks the job:
failed → a dead letter per delivery in it (a replay re-reads the resource and writes it again: idempotent).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.commercetools import Commercetools, object_key
from shared.messages import Notification

CONTAINER = "klaviyo-connector-pending-jobs"
_MAX_MESSAGE_BYTES = 200_000


def remember(commercetools: Commercetools, notification: Notification, jobs: list[str], what: str,
             processors: list[str]) -> None:
    value: dict[str, Any] = {
        "messageId": notification.id, "jobs": jobs, "what": what, "processors": processors,
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if len(str(notification.payload)) < _MAX_MESSAGE_BYTES:
        value["notification"] = notification.payload
    commercetools.put_custom_object(CONTAINER, object_key(notification.id), value)


def remember_batch(commercetools: Commercetools, job: str, deliveries: list[dict[str, Any]], what: str) -> str:
    """Remember a batch's bulk job (`<type>:<id>`) and its deliveries (`messageId`, `notification` to replay,
    `processors`); the record's key, for `forget`."""
    key = object_key(job)
    commercetools.put_custom_object(CONTAINER, key, {
        "jobs": [job], "what": what, "deliveries": deliveries,
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    return key


def forget(commercetools: Commercetools, key: str) -> None:
    commercetools.delete_custom_object(CONTAINER, key)



def entries(commercetools: Commercetools) -> list[dict[str, Any]]:
    return [{**o["value"], "key": o["key"], "version": o["version"]} for o in commercetools.custom_objects(CONTAINER)]
