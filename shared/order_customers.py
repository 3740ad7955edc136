"""Events about an order name its registered customer as commercetools has them now, not as the order does.

An order keeps the `customerEmail` it was placed with. Klaviyo finds an event's profile by external id (the
customer id) first and then replaces the profile's email with the event's: an order placed before the customer
changed their email would set the old address back. So the events of an order with a `customerId` carry the
customer's current email, read from commercetools (their profiles carry email and external id only, no phone
number, so the email is the one identifier that can be out of date):

- by the bulk import, for a page's customers in queries of `IN_VALUES` ids;
- in real time, one customer read per delivery of a state change, a refund or a history Placed Order
  (`OrderImported`, an order older than `event.backfillAfterHours`, a dead-letter replay of one). A fresh
  `OrderCreated` is read as it is: its email is the current one by definition, and that path stays free of
  extra reads (flash sales).

A customer that exists was never erased (customer ids are never reused), so finding the customer also answers the
erasure question; only a customer gone from commercetools is looked up in the erasure records (`shared.erasures`).
Gone without an erasure record (`customer.deletion.enabled` false), the events carry the external id only, no
email. Guest orders (no `customerId`) keep the order's email.
"""

from __future__ import annotations

from typing import Any


def with_current_customer(order: dict[str, Any], customer: dict[str, Any] | None) -> dict[str, Any]:
    """The order (a shallow copy) with `customerEmail` the customer's current email; without one when the
    customer is gone (the events then carry the external id only)."""
    current = {key: value for key, value in order.items() if key != "customerEmail"}
    if customer and customer.get("email"):
        current["customerEmail"] = customer["email"]
    return current

