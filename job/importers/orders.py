"""orders → Placed Order, Ordered Product, Fulfilled / Cancelled Order and Refunded Order events, in bulk.

The events are the realtime path's, built by the same mappers with the same unique_ids, so a re-run or an
overlap with realtime records each once. The products of a whole page are read together, not per order.

Everything a bulk import sends is history (`shared.backfill`): every event carries `backfill: true` (recorded,
no flow fires) and a profile with the identifiers only, so that an old billing address never replaces the
location Klaviyo has now (a registered customer's comes from the customer, by the customers import and in real
time; a new order in real time still brings its own). A registered customer's events carry their current email,
not the order's (`shared.order_customers`), so an order placed before an email change does not set the old one
back. Orders of erased customers (`shared.erasures`, looked up in batches per page) are skipped and counted
(`erased`).
"""

from __future__ import annotations

from typing import Any

from job.importers.common import mapped, next_page
from job.runner import EventStep, JobContext
from job.state import ImportRecord
from shared.config import Settings
from shared.mappers.order import OrderEvents, Products, order_profile, product_ids, state_metric
from shared.order_customers import with_current_customer
from shared.processors.orders import fetch_products

Fetched = tuple[list[dict[str, Any]], Products, set[str]]


def fetch(job: JobContext, record: ImportRecord) -> tuple[Fetched, bool]:
    """The page after the checkpoint, its orders naming their registered customers as they are now, their
    products (one query per 100 of them), the ids of the orders whose customer was erased, and whether it is the
    last page.

    The page's customers are read in queries of 100 ids (`shared.order_customers`); the erasure records are
    looked up (batched too) only for guest orders and customers gone from commercetools, since a customer who
    exists was never erased."""
    page, last = next_page(job, record, "orders", expand=["paymentInfo.payments[*]"])
    commercetools = job.context.commercetools
    known = [order for order in page if order_profile(order) is not None]
    customers = commercetools.by_ids("customers", (o["customerId"] for o in known if o.get("customerId")))
    unproven = [order for order in known if order.get("customerId") not in customers]
    erased = job.context.erasures.erased_orders(commercetools, unproven) if unproven else set()
    page = [with_current_customer(order, customers.get(order["customerId"])) if order.get("customerId") else order
            for order in page]
    ids = (i for order in known if order["id"] not in erased for i in product_ids(order))
    return (page, fetch_products(commercetools, ids), erased), last


def build(job: JobContext, record: ImportRecord, fetched: Fetched) -> tuple[list[dict[str, Any]], list[int]]:
    """The page's events (the runner sends them), and a bound of the size of each: the batches of 1,000 are
    cut by size without measuring the events again."""
    page, products, erased = fetched
    known = [order for order in page if order_profile(order) is not None]
    wanted = [order for order in known if order["id"] not in erased]
    record.counts["skipped"] += len(page) - len(wanted)
    if erased:
        record.counts["erased"] = record.counts.get("erased", 0) + len(known) - len(wanted)
    settings = job.context.settings
    categories: dict[str, list[str]] = {}  # the products' categories, worked out once for the page
    events: list[dict[str, Any]] = []
    sizes: list[int] = []
    for _order, (order_events_, order_sizes) in mapped(
            record, "order", wanted, lambda order: sized_order_events(order, products, settings, categories)):
        events += order_events_
        sizes += order_sizes
    return events, sizes


step = EventStep(fetch, build)


def order_events(order: dict[str, Any], products: dict[str, dict[str, Any]], settings: Settings) -> list[dict]:
    """Every event the order's history holds: placed (whatever its state now), its state, its refunds."""
    return sized_order_events(order, products, settings)[0]


def sized_order_events(order: dict[str, Any], products: dict[str, dict[str, Any]], settings: Settings,
                       categories: dict[str, list[str]] | None = None) -> tuple[list[dict], list[int]]:
    """`order_events` (history: `backfill`, identifiers-only profiles) and a bound of each one's size as JSON."""
    mapping = OrderEvents(order, products, settings, categories)  # what the events share is computed once
    events = mapping.placed_order_events()
    metric = state_metric(order.get("orderState"), settings)
    if metric:
        time = order.get("completedAt") or order.get("lastModifiedAt")
        events.append(mapping.state_event(metric, time))
    valid = settings.payment.valid_transaction_states
    for payment in (order.get("paymentInfo") or {}).get("payments") or []:
        for transaction in (payment.get("obj") or {}).get("transactions") or []:
            if transaction.get("type") == "Refund" and transaction.get("state") in valid:
                events.append(mapping.refunded_order(transaction))
    if events:
        profile = mapping.profile()  # identifiers only (Placed Order's alone had the billing location)
        for event in events:
            event["profile"] = profile
            event["backfill"] = True
    return events, [mapping.size(event) for event in events]
