"""Order and payment messages → Klaviyo order events (Placed Order, Ordered Product, Fulfilled / Cancelled /
Refunded Order). The payloads come from `shared.mappers.order`, which the bulk import uses too.

Every event carries a unique_id, so a redelivered message (or one that failed half-way through its events) sends
them again without Klaviyo recording any twice.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from typing import Any

from shared.backfill import IMPORTED_MESSAGES, is_old, mark_history
from shared.bulk import event_batches, events_job_body
from shared.commercetools import Commercetools, literal
from shared.config import Settings
from shared.erasures import REASON as ERASED
from shared.mappers.order import (
    order_profile,
    order_state_event,
    placed_order_events,
    product_ids,
    refunded_order,
    state_metric,
)
from shared.messages import Notification
from shared.order_customers import with_current_customer
from shared.processors import Context, Processor

log = logging.getLogger(__name__)

PRODUCT_EXPAND = ("masterData.current.categories[*]", "masterData.current.categories[*].ancestors[*]")
# Ids per products query: 100 quoted, URL-encoded ids keep the URL under the 8,000 octets RFC 9110 recommends
# servers accept; an order rarely has more distinct products, so this is one query.
NO_IDENTITY = "order has neither customerEmail nor customerId"
SINGLE_EVENTS_MAX = 10
BATCHED_EVENTS_MAX = 100  # orders with more events send their own bulk requests


# --- reads shared with the bulk import ---------------------------------------------------------------------


def fetch_products(commercetools: Commercetools, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """These products with their categories and category ancestors, by id (one query per 100 ids)."""
    return commercetools.by_ids("products", ids, expand=PRODUCT_EXPAND)


def order_of_payment(commercetools: Commercetools, payment_id: str) -> dict[str, Any] | None:
    """The order that references the payment, with its payments expanded (for the refunded total)."""
    found = commercetools.query("orders", where=[f"paymentInfo(payments(id={literal(payment_id)}))"],
                                expand=["paymentInfo.payments[*]"], limit=1)
    return found[0] if found else None


def products_of(context: Context, order: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The order's products, from the event app's product cache when there is one."""
    ids = product_ids(order)
    if context.product_cache is None:
        return fetch_products(context.commercetools, ids)
    return context.product_cache.get_many(ids, lambda missing: fetch_products(context.commercetools, missing))


def send(context: Context, events: Iterable[dict[str, Any]]) -> None:
    """A few events go one by one (create-event allows 350/s); more go in bulk requests of up to 1,000, so a
    large order fits the delivery's time budget (at ~100 ms a request, 500 single events would take 50 s and
    be redelivered forever). In the event app under load, they join other deliveries' events in one bulk
    request (`shared.batching`)."""
    events = list(events)
    if context.batcher is not None and len(events) <= BATCHED_EVENTS_MAX and context.batcher.send_events(events):
        return
    if len(events) <= SINGLE_EVENTS_MAX:
        for attributes in events:
            context.klaviyo.create_event(attributes)
        return
    for batch in event_batches(events):
        context.klaviyo.request("POST", "/api/event-bulk-create-jobs", body=events_job_body(batch))


def _send(context: Context, notification: Notification, events: Iterable[dict[str, Any]]) -> None:
    """`send`, history marked as such (`shared.backfill`): events of an imported order, and events older than
    `event.backfillAfterHours` (a late delivery, a dead-letter replay), fire no flow."""
    send(context, mark_history(events, imported=notification.type in IMPORTED_MESSAGES,
                               hours=context.settings.backfill_after_hours))


def _erased(context: Context, order: dict[str, Any]) -> bool:
    """The order's customer (or, for a guest order, its email) was erased: nothing is sent about them."""
    if context.erasures.order_erased(context.commercetools, order):
        log.info("order %s: its customer was erased; no Klaviyo event", order.get("id"))
        return True
    return False


def _named_now(context: Context, order: dict[str, Any]) -> dict[str, Any] | None:
    """The order naming its registered customer as commercetools has them now (`shared.order_customers`); None
    when they were erased. One read: the customer (one who exists was never erased), or for a guest order the
    erasure look-up; a customer gone from commercetools costs the erasure read as well."""
    customer_id = order.get("customerId")
    if not customer_id:
        return None if _erased(context, order) else order
    customer = context.commercetools.find("customers", customer_id)
    if customer is None and _erased(context, order):
        return None
    return with_current_customer(order, customer)


def _no_identity(order: dict[str, Any]) -> str:
    log.info("order %s has neither customerEmail nor customerId: no Klaviyo event", order.get("id"))
    return NO_IDENTITY


# --- Placed Order + Ordered Product -------------------------------------------------------------------------


def _created_accepts(notification: Notification, settings: Settings) -> bool:
    return notification.notification_type == "Message" and notification.resource_type == "order" \
        and notification.type in settings.order.created_messages


def _placed(notification: Notification, context: Context) -> str | None:
    """OrderCreated / OrderImported carry the order; OrderCustomerSet and payloadNotIncluded do not: fetch it."""
    order = notification.payload.get("order") if notification.payload_included else None
    if not isinstance(order, dict) or not order.get("id"):
        order = context.commercetools.find("orders", notification.resource_id)
        if order is None:
            return "order no longer exists in commercetools"
    state = order.get("orderState")
    if state not in context.settings.order.placed_states:
        return f"order state {state} is not in order.states.created.placedOrder"
    if order_profile(order) is None:
        return _no_identity(order)
    # A fresh OrderCreated names the customer as they are now: no read. History (an imported order, a late
    # delivery or a replay of an old one) may be older than the customer's email.
    history = notification.type in IMPORTED_MESSAGES or is_old(order.get("createdAt"),
                                                                 context.settings.backfill_after_hours)
    current = _named_now(context, order) if history else None if _erased(context, order) else order
    if current is None:
        return ERASED
    products = products_of(context, current)
    _send(context, notification, placed_order_events(current, products, context.settings))
    return None


# --- Fulfilled / Cancelled Order ----------------------------------------------------------------------------


def _changed_accepts(notification: Notification, settings: Settings) -> bool:
    return notification.notification_type == "Message" and notification.resource_type == "order" \
        and notification.type in settings.order.changed_messages


def _state_changed(notification: Notification, context: Context) -> str | None:
    """The message's new state picks the metric; without the payload, the order's current state does."""
    settings = context.settings
    included = notification.payload_included
    state = notification.payload.get("orderState") if included else None
    if included and state_metric(state, settings) is None:
        return f"order state {state} is neither a fulfilled nor a cancelled state (order.states.changed)"
    order = context.commercetools.find("orders", notification.resource_id)
    if order is None:
        return "order no longer exists in commercetools"
    if not included:
        state = order.get("orderState")
    metric = state_metric(state, settings)
    if metric is None:
        return f"order state {state} is neither a fulfilled nor a cancelled state (order.states.changed)"
    if order_profile(order) is None:
        return _no_identity(order)
    order = _named_now(context, order)
    if order is None:
        return ERASED
    time = notification.payload.get("createdAt") or order.get("lastModifiedAt")
    products = products_of(context, order)
    _send(context, notification, [order_state_event(order, products, metric, time, settings)])
    return None


# --- Refunded Order -----------------------------------------------------------------------------------------


def _payment_accepts(notification: Notification, settings: Settings) -> bool:
    types = (*settings.payment.transaction_added_messages, *settings.payment.transaction_changed_messages)
    return notification.notification_type == "Message" and notification.resource_type == "payment" \
        and notification.type in types


def _message_transaction(notification: Notification) -> tuple[str | None, str | None, str | None]:
    """(transaction id, type, state) as the message tells them: PaymentTransactionAdded carries the transaction,
    PaymentTransactionStateChanged its id and new state (no type)."""
    payload = notification.payload
    transaction = payload.get("transaction")
    if isinstance(transaction, dict):
        return transaction.get("id"), transaction.get("type"), transaction.get("state")
    return payload.get("transactionId"), None, payload.get("state")


def _refunded(notification: Notification, context: Context) -> str | None:
    """One Refunded Order per Refund transaction the message is about, in a valid state now.

    The payment is read again: its transaction is the current truth (a refund added as Initial may have failed
    since). Without the payload the message's transaction is unknown, so every valid refund of the payment is
    sent; their unique_ids make the ones already recorded no-ops.
    """
    valid = context.settings.payment.valid_transaction_states
    transaction_id = None
    if notification.payload_included:
        transaction_id, kind, state = _message_transaction(notification)
        if kind is not None and kind != "Refund":
            return f"transaction is a {kind}, not a Refund"
        if state not in valid:
            return f"transaction state {state} is not in payment.states.validTransactionStates"
    payment = context.commercetools.find("payments", notification.resource_id)
    if payment is None:
        return "payment no longer exists in commercetools"
    transactions = [t for t in payment.get("transactions") or []
                    if transaction_id is None or t.get("id") == transaction_id]
    if transaction_id is not None and not transactions:
        return "transaction not found on the payment"
    refunds = [t for t in transactions if t.get("type") == "Refund"]
    if not refunds:
        return "transaction is not a Refund"
    refunds = [t for t in refunds if t.get("state") in valid]
    if not refunds:
        return "refund state is not in payment.states.validTransactionStates"
    order = order_of_payment(context.commercetools, payment["id"])
    if order is None:
        return "no order references this payment"
    if order_profile(order) is None:
        return _no_identity(order)
    order = _named_now(context, order)
    if order is None:
        return ERASED
    order = _with_payment(order, payment)
    products = products_of(context, order)
    time = notification.payload.get("createdAt")
    _send(context, notification, [refunded_order(order, t, products, context.settings, time) for t in refunds])
    return None


def _with_payment(order: dict[str, Any], payment: dict[str, Any]) -> dict[str, Any]:
    """The order with the payment just read in place of its expanded copy (read at another instant)."""
    order = copy.deepcopy(order)
    for ref in (order.get("paymentInfo") or {}).get("payments") or []:
        if ref.get("id") == payment["id"]:
            ref["obj"] = payment
    return order


PROCESSORS = (
    Processor("OrderCreated", _created_accepts, _placed),
    Processor("OrderStateChanged", _changed_accepts, _state_changed),
    Processor("OrderRefunded", _payment_accepts, _refunded),
)
