"""The commercetools notification a delivery carries: shape checks and the fields processors route on."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from shared.errors import PermanentError

NOTIFICATION_TYPES = ("Message", "ResourceCreated", "ResourceUpdated", "ResourceDeleted")
# What commercetools puts in type names and ids. Anything else is malformed, and since these values end up in log
# lines and answers, a malformed one is never echoed (it could be anything: an email, a name...).
TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,99}")
IDENTIFIER = re.compile(r"[A-Za-z0-9][-_.:A-Za-z0-9]{0,255}")


def _is(pattern: re.Pattern[str], value: Any) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


@dataclass(frozen=True)
class Notification:
    """A commercetools subscription notification (Platform format), as a dict plus the routing fields."""

    payload: dict[str, Any]
    notification_type: str
    type: str  # the message type (OrderCreated...), or the notification type for change notifications
    resource_type: str
    resource_id: str
    id: str  # the message id, or typeId-id-vVersion for change notifications

    @property
    def payload_included(self) -> bool:
        return not self.payload.get("payloadNotIncluded")

    @property
    def resource_version(self) -> int | None:
        value = self.payload.get("resourceVersion", self.payload.get("version"))
        return value if isinstance(value, int) else None


def parse_notification(payload: Any) -> Notification:
    """Check the shape of a decoded notification; `PermanentError` names what is wrong."""
    if not isinstance(payload, dict):
        raise PermanentError(f"notification is a JSON {type(payload).__name__}, not an object")
    kind = payload.get("notificationType")
    if kind not in NOTIFICATION_TYPES:
        raise PermanentError("unknown notificationType")
    resource = payload.get("resource")
    if not isinstance(resource, dict) or not isinstance(resource.get("typeId"), str) \
            or not isinstance(resource.get("id"), str) or not resource["id"]:
        raise PermanentError("notification has no resource {typeId, id}")
    if not _is(TYPE_NAME, resource["typeId"]) or not _is(IDENTIFIER, resource["id"]):
        raise PermanentError("notification resource {typeId, id} is not a type name and an id")
    if kind == "Message":
        message_type = (payload.get("payloadNotIncluded") or {}).get("payloadType") or payload.get("type")
        if not isinstance(message_type, str) or not message_type:
            raise PermanentError("message has no type")
        if not _is(TYPE_NAME, message_type):
            raise PermanentError("message type is not a type name")
        message_id = payload.get("id")
        if not isinstance(message_id, str) or not message_id:
            raise PermanentError("message has no id")
        if not _is(IDENTIFIER, message_id):
            raise PermanentError("message id is not an id")
    else:
        message_type = kind
        version = payload.get("version")
        message_id = f"{resource['typeId']}-{resource['id']}-v{version if isinstance(version, int) else 0}"
    return Notification(payload, kind, message_type, resource["typeId"], resource["id"], message_id)
