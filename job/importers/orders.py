"""orders → Placed Order, Ordered Product, Fulfilled / Cancelled Order and Refunded Order events, in bulk.

The events are the realtime path's, built by the same mappers with the same unique_ids, so a re-run or an
overlap with realtime records each once. The products of a whole page are read together, not per order.
"""

from __future__ import annotations

from typing import Any

from job.importers.common import MAX_ERRORS, mapped, next_page, note
from job.runner import JobContext
from job.state import ImportRecord
from shared.config import Settings
from shared.mappers.order import (
    order_profile,
    order_state_event,
    placed_order_events,
    product_ids,
    refunded_order,
    state_metric,
)
from shared.processors.orders import fetch_products


def step(job: JobContext, record: ImportRecord) -> bool:
    page, last = next_page(job, record, "orders", expand=["paymentInfo.payments[*]"])
    known = [order for order in page if order_profile(order) is not None]
    record.counts["skipped"] += len(page) - len(known)
    products = fetch_products(job.context.commercetools, (i for order in known for i in product_ids(order)))
    settings = job.context.settings
    built = mapped(record, "order", known, lambda order: order_events(order, products, settings))
    events = [event for _order, order_events_ in built for event in order_events_]
    if events:
        result = job.sender.send_events(events)
        record.counts["sent"] += result.sent
        record.counts["failed"] += len(result.failed)
        for error in result.failed[:MAX_ERRORS]:
            note(record, error)
    return last


def order_events(order: dict[str, Any], products: dict[str, dict[str, Any]], settings: Settings) -> list[dict]:
    """Every event the order's history holds: placed (whatever its state now), its state, its refunds."""
    events = placed_order_events(order, products, settings)
    metric = state_metric(order.get("orderState"), settings)
    if metric:
        time = order.get("completedAt") or order.get("lastModifiedAt")
        events.append(order_state_event(order, products, metric, time, settings))
    valid = settings.payment.valid_transaction_states
    for payment in (order.get("paymentInfo") or {}).get("payments") or []:
        for transaction in (payment.get("obj") or {}).get("transactions") or []:
            if transaction.get("type") == "Refund" and transaction.get("state") in valid:
                events.append(refunded_order(order, transaction, products, settings))
    return events
