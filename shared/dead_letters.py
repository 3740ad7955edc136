"""Deliveries that can never succeed, kept in a commercetools custom object container for later replay."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

from shared.commercetools import Commercetools
from shared.errors import ApiError, ConnectorError

CONTAINER = "klaviyo-connector-dead-letters"
_MAX_MESSAGE_BYTES = 200_000  # custom object values are limited in size; larger messages keep only references


def key_for(message_id: str) -> str:
    """Custom object keys allow `[-_~.a-zA-Z0-9]`; other ids are hashed."""
    if re.fullmatch(r"[-_~.a-zA-Z0-9]{1,256}", message_id):
        return message_id
    return "sha256-" + hashlib.sha256(message_id.encode()).hexdigest()


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
        "possiblyTransient": bool(error and error.transient),
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
