"""One delivery, start to answer: decode, dispatch, record what can never succeed, and pick the status code.

Pub/Sub treats 2xx as done and redelivers anything else, so:
- 204: processed, or deliberately ignored;
- 202: can never succeed; recorded as a dead letter (commercetools custom object) for replay;
- 503: a transient failure; the delivery comes again and, since every write is idempotent, nothing doubles.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

from event.envelope import MalformedDelivery, decode
from shared import dead_letters, metrics
from shared.deadline import time_budget
from shared.dispatch import Result, dispatch
from shared.errors import ConnectorError, PermanentError
from shared.logs import message_context
from shared.messages import parse_notification
from shared.processors import Context

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    status: int
    outcome: str
    reason: str
    processors: tuple[str, ...] = ()

    def body(self) -> dict[str, str]:
        return {"outcome": self.outcome, "reason": self.reason}


def handle_delivery(body: bytes, context: Context) -> Answer:
    started = time.perf_counter()
    answer = _handle(body, context)
    metrics.delivery(answer.outcome, answer.processors, time.perf_counter() - started)
    return answer


def _handle(body: bytes, context: Context) -> Answer:
    budget = context.settings.event_time_budget
    try:
        delivery = decode(body)
    except MalformedDelivery as exc:
        message_id = exc.delivery_id or "body-" + hashlib.sha256(body).hexdigest()[:32]
        with message_context(message_id), time_budget(budget):
            return _dead_letter(context, message_id, Result("failed", exc.reason, error=exc),
                                raw=body.decode("utf-8", "replace"))
    try:
        notification = parse_notification(delivery.payload)
    except PermanentError as exc:
        message_id = delivery.delivery_id or "body-" + hashlib.sha256(body).hexdigest()[:32]
        with message_context(message_id), time_budget(budget):
            return _dead_letter(context, message_id, Result("failed", exc.reason, error=exc),
                                raw=body.decode("utf-8", "replace"))

    metrics.message_seen(notification.payload)
    with message_context(notification.id), time_budget(budget):
        result = dispatch(notification, context)
        fields = {"outcome": result.outcome, "reason": result.reason, "processors": result.processors,
                  "message_type": notification.type, "resource_type": notification.resource_type,
                  "resource_id": notification.resource_id, "delivery_id": delivery.delivery_id}
        if result.outcome == "failed":
            return _dead_letter(context, notification.id, result, notification=notification.payload)
        if result.outcome == "retry":
            log.warning("delivery failed for a transient reason; asking for redelivery", extra=fields)
            return Answer(503, result.outcome, result.reason, tuple(result.processors))
        log.info("delivery %s", result.outcome, extra=fields)
        return Answer(204, result.outcome, result.reason, tuple(result.processors))


def handle_oversized(size: int, message_id: str | None, head: bytes, limit: int, context: Context) -> Answer:
    """A body larger than the limit: acknowledged and recorded with its size and message id (never its content);
    without a message id, the key is a hash of its size and first octets, the same for every redelivery."""
    key = message_id or f"oversized-{size}-" + hashlib.sha256(head).hexdigest()[:24]
    reason = f"body of {size} bytes is larger than the {limit} bytes accepted"
    error = PermanentError(reason)
    with message_context(key), time_budget(context.settings.event_time_budget):
        return _dead_letter(context, key, Result("failed", reason, error=error))


def _dead_letter(context: Context, message_id: str, result: Result, *, notification: dict | None = None,
                 raw: str | None = None) -> Answer:
    try:
        dead_letters.record(context.commercetools, message_id=message_id, reason=result.reason,
                            processors=result.processors, error=result.error, notification=notification,
                            raw=raw)
    except ConnectorError as exc:
        # Acknowledging without a record would lose the delivery: ask for it again instead.
        log.error("delivery failed permanently but could not be recorded; asking for redelivery",
                  extra={"reason": result.reason, "record_error": str(exc)})
        return Answer(503, "retry", f"{result.reason} (dead-letter record failed: {exc})", tuple(result.processors))
    log.error("delivery failed permanently; recorded as a dead letter",
              extra={"reason": result.reason, "processors": result.processors,
                     "dead_letter_key": dead_letters.key_for(message_id)})
    return Answer(202, result.outcome, result.reason, tuple(result.processors))
