"""Deliveries that can never succeed, kept in a commercetools custom object container for later replay.

A record holds the message id, resource, message type, processors, reason, Klaviyo's error (code, field,
redacted detail), first and last seen, attempts, and the commercetools notification itself when it fits (else
enough to fetch the resource again). `replay` runs it through the same processors: success removes the record,
failure updates it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared import metrics
from shared.commercetools import Commercetools
from shared.dead_letter_store import CONTAINER, key_for
from shared.deadline import time_budget
from shared.dispatch import dispatch
from shared.errors import ApiError, ConnectorError, PermanentError
from shared.messages import parse_notification
from shared.processors import Context
from shared.times import instant

__all__ = ["CONTAINER", "entries", "key_for", "purge", "record", "replay"]

_MAX_MESSAGE_BYTES = 200_000  # custom object values are limited in size; larger messages keep only references


def record(commercetools: Commercetools, *, message_id: str, reason: str, processors: list[str],
           error: ConnectorError | None = None, notification: dict[str, Any] | None = None,
           raw: str | None = None) -> None:
    """Create or update the record for `message_id` (attempts counts how often it failed)."""
    key = key_for(message_id)
    existing = commercetools.get_custom_object(CONTAINER, key)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    value: dict[str, Any] = {
        "messageId": message_id,
        "reason": reason,
        "processors": processors,
        "firstSeen": existing["value"].get("firstSeen", now) if existing else now,
        "lastSeen": now,
        "attempts": (existing["value"].get("attempts", 0) if existing else 0) + 1,
        "possiblyTransient": possibly_transient(error),
    }
    if isinstance(error, ApiError):
        value["error"] = {"service": error.service, "status": error.status, "code": error.code,
                          "detail": error.detail, "pointer": error.pointer}
    if notification is not None:
        value["resource"] = notification.get("resource")
        value["notificationType"] = notification.get("notificationType")
        value["messageType"] = notification.get("type")
        if len(str(notification)) < _MAX_MESSAGE_BYTES:
            value["notification"] = notification
    elif raw is not None:
        value["raw"] = raw[:_MAX_MESSAGE_BYTES]
    commercetools.put_custom_object(CONTAINER, key, value, version=existing["version"] if existing else None)
    metrics.dead_letter_recorded()


# Client errors that a later attempt may get past: the object was not there yet, or was busy.
_MAYBE_LATER = {404, 408, 409, 423, 425}


def possibly_transient(error: ConnectorError | None) -> bool:
    return isinstance(error, ApiError) and (error.transient or error.status in _MAYBE_LATER)


def entries(commercetools: Commercetools, since: str | None = None) -> list[dict[str, Any]]:
    """Every record (value plus `key`), oldest first; `since`: last seen at or after this ISO time."""
    found = [{**obj["value"], "key": obj["key"], "version": obj["version"]}
             for obj in commercetools.custom_objects(CONTAINER)]
    if since:
        start = _instant(since)
        found = [e for e in found if _instant(e.get("lastSeen")) >= start]
    return sorted(found, key=lambda e: e.get("firstSeen", ""))


def replay(context: Context, entry: dict[str, Any], budget: float = 30.0) -> str:
    """Process a record's notification again; returns the outcome (`processed`, `ignored`, `failed`, `retry`,
    `not replayable`). A success removes the record; a failure updates its reason and attempts."""
    notification = entry.get("notification") or _reference(entry)
    try:
        parsed = parse_notification(notification) if notification is not None else None
    except PermanentError:
        parsed = None
    if parsed is None:
        metrics.dead_letter_replayed("not replayable")
        return "not replayable"
    with time_budget(budget):
        result = dispatch(parsed, context)
    if result.outcome in ("processed", "ignored"):
        context.commercetools.delete_custom_object(CONTAINER, entry["key"], version=entry["version"])
    else:
        record(context.commercetools, message_id=entry["messageId"], reason=result.reason,
               processors=result.processors, error=result.error, notification=notification)
    metrics.dead_letter_replayed(result.outcome)
    return result.outcome


def _reference(entry: dict[str, Any]) -> dict[str, Any] | None:
    """A notification rebuilt from what a record keeps when the message itself was too large to keep:
    marked `payloadNotIncluded`, so that the processors fetch the resource."""
    resource, kind, message_type = entry.get("resource"), entry.get("notificationType"), entry.get("messageType")
    if not resource or not kind:
        return None
    if kind != "Message":
        return {"notificationType": kind, "resource": resource, "version": 0}
    return {"notificationType": "Message", "id": entry["messageId"], "resource": resource, "type": message_type,
            "payloadNotIncluded": {"reason": "replayed from a dead letter", "payloadType": message_type}}


_NEVER = datetime.min.replace(tzinfo=UTC)


def _instant(value: Any) -> datetime:
    """An ISO time as an aware datetime (UTC when it has no offset), compared as times rather than strings;
    anything unreadable counts as the earliest time."""
    return instant(value) or _NEVER


def purge(commercetools: Commercetools, before: str) -> int:
    """Delete the records last seen before this ISO time; returns how many."""
    limit = _instant(before)
    old = [e for e in entries(commercetools) if _instant(e.get("lastSeen")) < limit]
    for entry in old:
        commercetools.delete_custom_object(CONTAINER, entry["key"], version=entry["version"])
    return len(old)
