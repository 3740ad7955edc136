"""History must not fire flows: Klaviyo's `backfill` attribute, and history's profile carrying identifiers only.

Klaviyo records an event with `backfill: true` (create-event and each event of an events bulk-create job, API
revision 2026-07-15) in the profile's timeline and in metrics, but does not trigger flows with it. Events are
history when they come from the bulk import, from an `OrderImported` message, or when their own time is older
than `event.backfillAfterHours` (a late delivery, a dead-letter replay of last week's order).

History does not speak for the profile's present either: its profile carries the identifiers only (email,
external id, phone number), so a years-old billing address never replaces the location Klaviyo has now.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.times import instant

IMPORTED_MESSAGES = frozenset({"OrderImported"})
IDENTIFIERS = ("email", "external_id", "phone_number")


def is_old(time: Any, hours: float, now: datetime | None = None) -> bool:
    """True when `time` (ISO 8601) is more than `hours` before now; `hours` 0 switches the rule off. A time that
    cannot be read is not old (the event is sent as fresh, as it was before this rule)."""
    moment = instant(time) if hours > 0 else None
    return moment is not None and moment < (now or datetime.now(UTC)) - timedelta(hours=hours)


def as_history(event: dict[str, Any]) -> dict[str, Any]:
    """The event marked `backfill: true`, its profile reduced to the identifiers (a new profile dict: events of
    one order share theirs)."""
    profile = event.get("profile") or {}
    data = profile.get("data") or {}
    attributes = data.get("attributes") or {}
    if any(key not in IDENTIFIERS for key in attributes):
        kept = {k: v for k, v in attributes.items() if k in IDENTIFIERS}
        event["profile"] = {**profile, "data": {**data, "attributes": kept}}
    event["backfill"] = True
    return event


def mark_history(events: Iterable[dict[str, Any]], *, imported: bool, hours: float,
                 now: datetime | None = None) -> list[dict[str, Any]]:
    """Realtime events, those that are history (`imported`, or older than `hours`) marked `as_history`."""
    moment = now or datetime.now(UTC)
    return [as_history(event) if imported or is_old(event.get("time"), hours, moment) else event
            for event in events]
