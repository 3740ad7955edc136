"""Building what commercetools delivers: notifications and the Pub/Sub envelope around them."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

PROJECT = "test-project"


def pubsub(notification: Any, message_id: str | None = None) -> dict[str, Any]:
    """A Google Pub/Sub push envelope around a commercetools notification, as Connect delivers it."""
    data = notification if isinstance(notification, bytes) else json.dumps(notification).encode()
    message_id = message_id or str(uuid.uuid4().int)[:16]
    return {
        "message": {"attributes": {}, "data": base64.b64encode(data).decode(), "messageId": message_id,
                    "message_id": message_id, "publishTime": "2026-11-26T10:00:00.000Z",
                    "publish_time": "2026-11-26T10:00:00.000Z"},
        "subscription": "projects/shop-gcp/subscriptions/klaviyo-connector",
    }


def message(resource_type: str, resource_id: str, message_type: str, **fields: Any) -> dict[str, Any]:
    """A commercetools Message notification (Platform format)."""
    return {
        "notificationType": "Message", "projectKey": PROJECT, "id": str(uuid.uuid4()), "version": 1,
        "sequenceNumber": fields.pop("sequenceNumber", 2), "resource": {"typeId": resource_type, "id": resource_id},
        "resourceVersion": fields.pop("resourceVersion", 2), "resourceUserProvidedIdentifiers": {},
        "type": message_type, "createdAt": fields.pop("createdAt", "2026-11-26T10:00:00.000Z"),
        "lastModifiedAt": "2026-11-26T10:00:00.000Z", **fields,
    }


def change(notification_type: str, resource_type: str, resource_id: str, version: int = 2,
           **fields: Any) -> dict[str, Any]:
    """A commercetools change notification (ResourceCreated / ResourceUpdated / ResourceDeleted)."""
    body = {"notificationType": notification_type, "projectKey": PROJECT,
            "resource": {"typeId": resource_type, "id": resource_id}, "version": version,
            "modifiedAt": "2026-11-26T10:00:00.000Z", **fields}
    if notification_type == "ResourceUpdated":
        body["oldVersion"] = version - 1
    return body
