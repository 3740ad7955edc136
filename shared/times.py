"""Times as commercetools and Klaviyo write them (ISO 8601)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def instant(value: Any) -> datetime | None:
    """An ISO 8601 time, made UTC when it has no offset (commercetools always writes UTC); None when `value` is
    not one."""
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment and moment.tzinfo is None else moment
