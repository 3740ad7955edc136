"""Runs the processors that accept a notification and sums up what happened, for the caller to answer."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from shared.errors import ApiError, ConnectorError
from shared.messages import Notification
from shared.processors import Context, Processor, categories, customers, inventory, orders, products

log = logging.getLogger(__name__)

ALL_PROCESSORS: tuple[Processor, ...] = (
    *customers.PROCESSORS,
    *categories.PROCESSORS,
    *orders.PROCESSORS,
    *products.PROCESSORS,
    *inventory.PROCESSORS,
)

Outcome = Literal["processed", "ignored", "retry", "failed"]


@dataclass
class Result:
    """`retry`: a transient failure, deliver again. `failed`: it can never succeed, record it."""

    outcome: Outcome
    reason: str
    processors: list[str] = field(default_factory=list)
    error: ConnectorError | None = None


def dispatch(notification: Notification, context: Context,
             processors: Sequence[Processor] = ALL_PROCESSORS) -> Result:
    accepted = [p for p in processors if p.accepts(notification, context.settings)]
    if not accepted:
        return Result("ignored", f"no processor for {notification.resource_type} {notification.type}")
    enabled = [p for p in accepted if context.settings.enabled(p.name)]
    if not enabled:
        names = ", ".join(p.name for p in accepted)
        return Result("ignored", f"processor {names} disabled by disabledEvents", [p.name for p in accepted])
    results = [_run(p, notification, context) for p in enabled]
    for outcome in ("retry", "failed", "processed", "ignored"):
        chosen = [r for r in results if r.outcome == outcome]
        if chosen:
            return Result(outcome, "; ".join(r.reason for r in chosen), [n for r in chosen for n in r.processors],
                          chosen[0].error)
    raise AssertionError("unreachable")


def _run(processor: Processor, notification: Notification, context: Context) -> Result:
    try:
        reason = processor.run(notification, context)
    except ConnectorError as exc:
        text = exc.describe() if isinstance(exc, ApiError) else exc.reason
        return Result("retry" if exc.transient else "failed", text, [processor.name], exc)
    if reason:
        return Result("ignored", reason, [processor.name])
    return Result("processed", "done", [processor.name])
