"""Decoding a delivery body: a Pub/Sub push envelope, an SNS notification, or a bare commercetools message."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from shared.errors import PermanentError
from shared.messages import IDENTIFIER


@dataclass(frozen=True)
class Delivery:
    delivery_id: str | None  # the transport's id (Pub/Sub messageId, SNS MessageId), for log correlation
    payload: Any  # the decoded commercetools notification (not yet shape-checked)


class MalformedDelivery(PermanentError):
    def __init__(self, reason: str, delivery_id: str | None = None) -> None:
        super().__init__(reason)
        self.delivery_id = delivery_id


def decode(body: bytes) -> Delivery:
    try:
        envelope = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedDelivery(f"body is not JSON ({type(exc).__name__})") from None
    except RecursionError:  # nested deeper than the parser goes: it can never be processed
        raise MalformedDelivery("body is JSON nested too deeply to parse") from None
    if not isinstance(envelope, dict):
        raise MalformedDelivery(f"body is a JSON {type(envelope).__name__}, not an object")
    if "message" in envelope:
        return _pubsub(envelope["message"])
    if envelope.get("Type") == "Notification" and "Message" in envelope:
        return _sns(envelope)
    return Delivery(_delivery_id(envelope.get("id")), envelope)


def _delivery_id(value: Any) -> str | None:
    """The transport's id when it looks like one (it is logged; anything else could be personal data)."""
    value = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    return value if isinstance(value, str) and IDENTIFIER.fullmatch(value) else None


def _pubsub(message: Any) -> Delivery:
    if not isinstance(message, dict):
        raise MalformedDelivery("Pub/Sub envelope: 'message' is not an object")
    delivery_id = _delivery_id(message.get("messageId") or message.get("message_id"))
    data = message.get("data")
    if not isinstance(data, str) or not data:
        raise MalformedDelivery("Pub/Sub envelope: 'message.data' is missing", delivery_id)
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise MalformedDelivery("Pub/Sub envelope: 'message.data' is not valid base64", delivery_id) from None
    try:
        return Delivery(delivery_id, json.loads(raw))
    except RecursionError:
        raise MalformedDelivery("Pub/Sub envelope: 'message.data' is JSON nested too deeply to parse",
                                delivery_id) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise MalformedDelivery("Pub/Sub envelope: 'message.data' does not decode to JSON", delivery_id) from None


def _sns(envelope: dict[str, Any]) -> Delivery:
    delivery_id = _delivery_id(envelope.get("MessageId"))
    try:
        return Delivery(delivery_id, json.loads(envelope["Message"]))
    except RecursionError:
        raise MalformedDelivery("SNS notification: 'Message' is JSON nested too deeply to parse", delivery_id) from None
    except (json.JSONDecodeError, TypeError):
        raise MalformedDelivery("SNS notification: 'Message' is not JSON", delivery_id) from None
