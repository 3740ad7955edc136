"""The commercetools notification a delivery carries: shape checks and the fields processors route on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.errors import PermanentError

NOTIFICATION_TYPES = ("Message", "ResourceCreated", "ResourceUpdated", "ResourceDeleted")


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
        raise PermanentError(f"unknown notificationType {str(kind)[:40]!r}")
    resource = payload.get("resource")
    if not isinstance(resource, dict) or not isinstance(resource.get("typeId"), str) \
            or not isinstance(resource.get("id"), str) or not resource["id"]:
        raise PermanentError("notification has no resource {typeId, id}")
    if kind == "Message":
        message_type = (payload.get("payloadNotIncluded") or {}).get("payloadType") or payload.get("type")
        if not isinstance(message_type, str) or not message_type:
            raise PermanentError("message has no type")
        message_id = payload.get("id")
        if not isinstance(message_id, str) or not message_id:
            raise PermanentError("message has no id")
    else:
        message_type = kind
        message_id = f"{resource['typeId']}-{resource['id']}-v{payload.get('version', 0)}"
    return Notification(payload, kind, message_type, resource["typeId"], resource["id"], message_id)
