"""commercetools order → Klaviyo events: Placed Order, Ordered Product, Fulfilled / Cancelled / Refunded Order.

Pure functions shared by the realtime processors and the bulk import, so both send the same payloads and
unique_ids. Each returns the `attributes` of a Klaviyo create-event request. `products` maps a product id to the
product as `GET /products` returns it with `expand=masterData.current.categories[*]` and
`expand=masterData.current.categories[*].ancestors[*]`; a product missing from it (deleted since) only costs its
categories and slug.

Properties policy (order-level events):
- The order's own top-level fields filtered by `order.properties` (all of them when `include` is empty, as the
  reference did: merchants' flows and segments may use those names, e.g. `lineItems`, `orderNumber`), with
  reference expansions (`obj`) removed so the payload does not depend on what was expanded to compute it;
- then the order's custom fields filtered by `order.customFields.properties`, spread at the root as in the
  reference (so a custom field can shadow an order field of the same name);
- then ours, which win: `OrderId`, `ItemNames`, `Categories` and Klaviyo's recommended `Items` array.
  The raw `lineItems` therefore appear next to `Items` unless excluded (`order.properties.exclude`); we keep the
  reference's default rather than silently removing properties that existing flows may read.
- Falsy values (`false`, `0`, `""`) are kept; only absent (null) values are dropped.
- Size guard (Klaviyo's limits): strings are cut to 100 KB, at most 400 top-level properties are sent and the
  properties stay under 4.5 MB (of the 5 MB event); our own keys are kept first, then the largest others dropped.

Times and unique_ids: Placed Order and Ordered Product use the order's `createdAt` (the reference added 1 s to
Ordered Product: a fabricated time), with the order id and the line item id as unique_id. Fulfilled / Cancelled use
the time they are given (the message's `createdAt` in realtime) and the order id: Klaviyo keeps the first event per
profile + metric + unique_id, so Confirmed → Complete records one Fulfilled Order while a later Cancelled Order is
still recorded, and CLV can match the cancellation to the Placed Order. Refunded Order is one event per refund
transaction (unique_id = transaction id), so every partial refund is recorded once.
"""

from __future__ import annotations

import json
import logging
import marshal
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from shared.config import Settings
from shared.mappers.category import category_paths
from shared.mappers.customer import location
from shared.mappers.links import product_url
from shared.mappers.localize import localized, money
from shared.mappers.properties import filter_properties
from shared.stores import EVENT_PROPERTY, settings_for, store_key
from shared.times import instant

log = logging.getLogger(__name__)

Products = Mapping[str, dict[str, Any]]

MAX_PROPERTIES = 400
MAX_STRING_BYTES = 100_000
MAX_PROPERTIES_BYTES = 4_500_000  # of Klaviyo's 5 MB per event, leaving room for the rest of the payload

# Properties we compute: kept first when an event must be cut down to Klaviyo's limits.
OWN_KEYS = ("OrderId", "Store", "ItemNames", "Categories", "Items", "TransactionId", "RefundedTotal",
            "ProductID", "SKU", "ProductName", "Quantity", "ItemPrice", "OriginalItemPrice", "RowTotal",
            "ProductURL", "ImageURL")


# --- profile ------------------------------------------------------------------------------------------------


def order_profile(order: dict[str, Any], with_location: bool = False) -> dict[str, Any] | None:
    """The event's `profile`: email and external id (the customer id); None when the order has neither.

    `with_location` adds the billing address as the profile location, as the reference did for Placed Order only.
    """
    attributes: dict[str, Any] = {}
    if order.get("customerEmail"):
        attributes["email"] = order["customerEmail"]
    if order.get("customerId"):
        attributes["external_id"] = order["customerId"]
    if not attributes:
        return None
    if with_location:
        place = location(order.get("billingAddress"))
        if place:
            attributes["location"] = place
    return {"data": {"type": "profile", "attributes": attributes}}


# --- helpers ------------------------------------------------------------------------------------------------


def product_ids(order: dict[str, Any]) -> list[str]:
    """The distinct product ids of the order's line items, in line order."""
    return _unique(line["productId"] for line in order.get("lineItems") or [] if line.get("productId"))


def item_names(order: dict[str, Any], locale: str) -> list[str]:
    """Localized names of the line items, then of the custom line items; distinct, in order."""
    lines = [*(order.get("lineItems") or []), *(order.get("customLineItems") or [])]
    return _unique(name for line in lines if (name := localized(line.get("name"), locale)))


def product_categories(product: dict[str, Any] | None, locale: str) -> list[str]:
    """Every breadcrumb prefix of the product's categories (`Women`, `Women > Pants`, ...), distinct.

    Category references that were not expanded are skipped (the reference raised a TypeError).
    """
    current = ((product or {}).get("masterData") or {}).get("current") or {}
    refs = current.get("categories") or []
    return _unique(path for ref in refs if ref.get("obj") for path in category_paths(ref["obj"], locale))


def order_categories(order: dict[str, Any], products: Products, locale: str) -> list[str]:
    """The categories of every line item's product, distinct, in line order (not in `products` order)."""
    return _unique(path for pid in product_ids(order) for path in product_categories(products.get(pid), locale))


def item(line: dict[str, Any], products: Products, settings: Settings) -> dict[str, Any]:
    """One entry of Klaviyo's recommended `Items` array for a line item (empty values left out)."""
    return OrderEvents({}, products, settings).item(line)


def items(order: dict[str, Any], products: Products, settings: Settings) -> list[dict[str, Any]]:
    """Klaviyo's `Items`: the line items (custom line items have no product; they are in `ItemNames`)."""
    return OrderEvents(order, products, settings).items()


def order_properties(order: dict[str, Any], products: Products, settings: Settings) -> dict[str, Any]:
    """The properties of the order-level events (see the module docstring for the policy)."""
    return OrderEvents(order, products, settings).properties()


class OrderEvents:
    """The events of one order, built from what they share, computed once: the order without its expansions
    (one copy), the `Items` entries (one per line, also the Ordered Product fields) and the order-level
    properties, fitted to Klaviyo's limits once for Placed Order and Fulfilled / Cancelled Order.

    The module functions build one of these per call; the bulk import builds one per order for all of its
    events, which then share their (read-only) property values, and passes `categories`, a cache of product
    categories by product id shared by the orders read with the same `products`. Nothing is shared with the
    input. `size(event)` bounds an event's size as JSON, from what the size guard measured.
    """

    def __init__(self, order: dict[str, Any], products: Products, settings: Settings,
                 categories: dict[str, list[str]] | None = None) -> None:
        # An order of a store is named, priced and linked with that store's settings (`stores.<key>`).
        self.store = store_key(order)
        store_settings = settings_for(settings, self.store)
        if store_settings.preferred_locale != settings.preferred_locale:
            categories = None  # a shared cache holds the category names in the global locale
        self.order, self.products, self.settings = order, products, store_settings
        self._categories = {} if categories is None else categories
        self._stripped: dict[str, Any] | None = None
        self._items: list[dict[str, Any]] | None = None
        self._properties: dict[str, Any] | None = None
        self._fitted: dict[str, Any] | None = None
        self._sizes: dict[int, int] = {}  # id(fitted properties) -> their size as measured by the size guard
        self._profile: dict[str, Any] | None = None

    def stripped(self) -> dict[str, Any]:
        """`without_expansions(order)`, made once."""
        if self._stripped is None:
            self._stripped = without_expansions(self.order)
        return self._stripped

    def product_categories(self, product_id: str) -> list[str]:
        """`product_categories` of the product (cached by id)."""
        found = self._categories.get(product_id)
        if found is None:
            found = self._categories[product_id] = product_categories(self.products.get(product_id),
                                                                      self.settings.preferred_locale)
        return found

    def item(self, line: dict[str, Any]) -> dict[str, Any]:
        """One entry of Klaviyo's recommended `Items` array for a line item (empty values left out)."""
        settings = self.settings
        locale = settings.preferred_locale
        product_id = line.get("productId") or ""
        product = self.products.get(product_id)
        variant = line.get("variant") or {}
        images = variant.get("images") or []
        entry = {
            "ProductID": line.get("productId"),
            "SKU": variant.get("sku"),
            "ProductName": localized(line.get("name"), locale),
            "Quantity": line.get("quantity"),
            **_line_prices(line),
            "ProductURL": product_url(settings.product_url_template, _slug(line, product, locale)),
            "ImageURL": images[0].get("url") if images else None,
            "Categories": self.product_categories(product_id),
        }
        return {key: value for key, value in entry.items() if value is not None and value != ""}

    def items(self) -> list[dict[str, Any]]:
        if self._items is None:
            self._items = [self.item(line) for line in self.order.get("lineItems") or []]
        return self._items

    def properties(self) -> dict[str, Any]:
        """`order_properties` (a new dict; its values are this object's)."""
        return dict(self._order_properties())

    def _order_properties(self) -> dict[str, Any]:
        if self._properties is None:
            order, settings = self.order, self.settings
            own = filter_properties(self.stripped(), settings.order.properties)
            custom = filter_properties((order.get("custom") or {}).get("fields"), settings.order.custom_fields)
            self._properties = {
                **own,
                **custom,
                "OrderId": order["id"],
                "ItemNames": item_names(order, settings.preferred_locale),
                "Categories": _unique(path for pid in product_ids(order) for path in self.product_categories(pid)),
                "Items": self.items(),
            }
            if self.store:
                self._properties[EVENT_PROPERTY] = self.store
        return self._properties

    def fitted_properties(self) -> dict[str, Any]:
        """The order-level properties cut to Klaviyo's limits (measured once for every event that has them)."""
        if self._fitted is None:
            self._fitted = self._fit(self._order_properties(), self.order["id"])
        return self._fitted

    def profile(self) -> dict[str, Any]:
        """The events' profile (Placed Order's has the location too), one for all of them."""
        if self._profile is None:
            self._profile = _profile(self.order)
        return self._profile

    def placed_order(self) -> dict[str, Any]:
        order = self.order
        return _event(self.settings.order.metrics.placed, _profile(order, with_location=True),
                      self.fitted_properties(), order["createdAt"], order["totalPrice"], order["id"])

    def ordered_products(self) -> list[dict[str, Any]]:
        order, settings = self.order, self.settings
        profile = self.profile()
        currency = _currency(order)
        lines = order.get("lineItems") or []
        stripped = self._stripped_lines(lines)
        entries = self.items()
        events = []
        for index, line in enumerate(lines):
            own = {"OrderId": order["id"], EVENT_PROPERTY: self.store} if self.store else {"OrderId": order["id"]}
            properties = self._fit({**stripped[index], **entries[index], **own}, line["id"])
            total = line.get("totalPrice") or {}
            amount = {**total, "currencyCode": total.get("currencyCode") or currency}
            events.append(_event(settings.order.metrics.ordered_product, profile, properties, order["createdAt"],
                                 amount, line["id"]))
        return events

    def placed_order_events(self) -> list[dict[str, Any]]:
        if order_profile(self.order) is None:
            return []
        return [self.placed_order(), *self.ordered_products()]

    def state_event(self, metric: str, time: str) -> dict[str, Any]:
        order = self.order
        return _event(metric, self.profile(), self.fitted_properties(), time, order["totalPrice"], order["id"])

    def refunded_order(self, transaction: dict[str, Any], time: str | None = None) -> dict[str, Any]:
        order = self.order
        properties = self._fit({
            **self._order_properties(),
            "TransactionId": transaction["id"],
            "RefundedTotal": refunded_total(order, transaction),
        }, transaction["id"])
        return _event(self.settings.order.metrics.refunded, self.profile(), properties,
                      transaction.get("timestamp") or time, transaction["amount"], transaction["id"])

    def size(self, event: dict[str, Any]) -> int:
        """An upper bound of the octets the event (one this object made) takes as compact UTF-8 JSON: its
        properties as the size guard measured them (with separators' spaces: more than compact), plus the
        rest of the event measured now."""
        rest = {key: value for key, value in event.items() if key != "properties"}
        measured = self._sizes.get(id(event["properties"]))
        if measured is None:
            measured = _size(event["properties"])
        return measured + _compact_size(rest) + 14  # 14: ,"properties":

    def _fit(self, properties: dict[str, Any], context: str) -> dict[str, Any]:
        fitted, size = _fit(properties, context)
        self._sizes[id(fitted)] = size
        return fitted

    def _stripped_lines(self, lines: list[dict[str, Any]]) -> list[Any]:
        """`without_expansions` of each line: taken from the stripped order when it was made (the same value)."""
        if self._stripped is not None and self.order.get("lineItems") is lines and isinstance(lines, list):
            copied = self._stripped.get("lineItems")
            if isinstance(copied, list) and len(copied) == len(lines):
                return copied
        return [without_expansions(line) for line in lines]


# --- events -------------------------------------------------------------------------------------------------


def placed_order(order: dict[str, Any], products: Products, settings: Settings) -> dict[str, Any]:
    """Placed Order: the order total at `createdAt`, unique_id = order id, profile with the billing location."""
    return OrderEvents(order, products, settings).placed_order()


def ordered_products(order: dict[str, Any], products: Products, settings: Settings) -> list[dict[str, Any]]:
    """Ordered Product, one per line item: unique_id = line item id, value = the line total.

    Properties are the raw line item (as the reference sent it, expansions removed) plus the `Items` fields and
    `OrderId`, which win.
    """
    return OrderEvents(order, products, settings).ordered_products()


def placed_order_events(order: dict[str, Any], products: Products, settings: Settings) -> list[dict[str, Any]]:
    """Placed Order then its Ordered Products, in the order they are to be sent; [] without email/customer."""
    return OrderEvents(order, products, settings).placed_order_events()


def state_metric(state: str | None, settings: Settings) -> str | None:
    """The metric of an order state: Cancelled Order, Fulfilled Order, or None (not a state we report).

    Cancelled is checked first, as in the reference (its config lists `cancelledOrder` first).
    """
    if state in settings.order.cancelled_states:
        return settings.order.metrics.cancelled
    if state in settings.order.fulfilled_states:
        return settings.order.metrics.fulfilled
    return None


def order_state_event(order: dict[str, Any], products: Products, metric: str, time: str,
                      settings: Settings) -> dict[str, Any]:
    """Fulfilled / Cancelled Order at `time` (when the state changed), unique_id = order id."""
    return OrderEvents(order, products, settings).state_event(metric, time)


def refunded_order(order: dict[str, Any], transaction: dict[str, Any], products: Products, settings: Settings,
                   time: str | None = None) -> dict[str, Any]:
    """Refunded Order for one Refund transaction: value = its amount, unique_id = its id.

    `time` is the transaction's `timestamp`, else the given fallback (the message's `createdAt` in realtime).
    `order` should have `paymentInfo.payments[*]` expanded for `RefundedTotal`.
    """
    return OrderEvents(order, products, settings).refunded_order(transaction, time)


def refunded_total(order: dict[str, Any], transaction: dict[str, Any]) -> float:
    """What the order had refunded once this refund is done: this refund plus the earlier Success refunds.

    "Earlier" is by `timestamp` when both transactions have one, else by position (payment order, then transaction
    order), so the total "so far" of each refund is the same whenever it is computed (realtime or bulk), and a
    later refund never counts in an earlier one. Only refunds in this refund's currency are summed.
    """
    currency = (transaction.get("amount") or {}).get("currencyCode")
    refunds = [t for t in _transactions(order) if t.get("type") == "Refund"]
    ids = [t.get("id") for t in refunds]
    position = ids.index(transaction["id"]) if transaction["id"] in ids else len(refunds)
    total = _decimal(transaction.get("amount"))
    for index, other in enumerate(refunds):
        if other.get("id") == transaction["id"] or other.get("state") != "Success":
            continue
        if (other.get("amount") or {}).get("currencyCode") == currency \
                and _earlier(other, index, transaction, position):
            total += _decimal(other.get("amount"))
    return float(total)


# --- plumbing -----------------------------------------------------------------------------------------------


def without_expansions(value: Any) -> Any:
    """A deep copy without the `obj` of expanded references.

    JSON data (plain dicts, lists, strings, numbers) is copied by `marshal` (in C, keeping key order), then
    the expansions are taken out of the copy; anything else is copied value by value.
    """
    try:
        data = marshal.dumps(value)
    except ValueError:  # not plain data (a subclass, a tuple of objects...): the slow way
        return _copy_without_expansions(value)
    copied = marshal.loads(data)
    if b"obj" in data:  # else no key is "obj": nothing to take out
        _drop_expansions(copied)
    return copied


def _copy_without_expansions(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_without_expansions(v) for k, v in value.items() if not (k == "obj" and "typeId" in value)}
    if isinstance(value, list):
        return [_copy_without_expansions(v) for v in value]
    return value


def _drop_expansions(value: Any) -> None:
    """Delete, in place, the `obj` of every expanded reference (a dict with `typeId`) in plain JSON data."""
    if type(value) is dict:
        if "obj" in value and "typeId" in value:
            del value["obj"]
        children = value.values()
    elif type(value) is list:
        children = value
    else:
        return
    for child in children:
        kind = type(child)
        if kind is dict or kind is list:
            _drop_expansions(child)


def fit_properties(properties: dict[str, Any], context: str) -> dict[str, Any]:
    """Cut properties down to Klaviyo's limits (see the module docstring); `context` (an id) is for the log."""
    return _fit(properties, context)[0]


def _fit(properties: dict[str, Any], context: str) -> tuple[dict[str, Any], int]:
    """`fit_properties`, and the size of what it returns (as `_size` measures)."""
    if len(properties) <= MAX_PROPERTIES:
        size = _size(properties)
        if size <= min(MAX_STRING_BYTES, MAX_PROPERTIES_BYTES):
            return properties, size  # the usual case: no string can be longer than the whole (one serialisation)
    fitted = {key: _cut_strings(value) for key, value in properties.items()}
    ranked = sorted(fitted, key=lambda k: k not in OWN_KEYS)  # stable: ours first, the rest in their order
    dropped = ranked[MAX_PROPERTIES:]
    fitted = {key: fitted[key] for key in ranked[:MAX_PROPERTIES]}
    sizes = {key: _size(value) for key, value in fitted.items()}
    total = sum(sizes.values())
    for key in sorted((k for k in fitted if k not in OWN_KEYS), key=lambda k: -sizes[k]):
        if total <= MAX_PROPERTIES_BYTES:
            break
        total -= sizes[key]
        dropped.append(key)
        del fitted[key]
    if dropped:
        log.warning("event %s: dropped properties over Klaviyo's limits: %s", context, ", ".join(dropped))
    return fitted, _size(fitted)


def _event(metric: str, profile: dict[str, Any], properties: dict[str, Any], time: str | None,
           amount: dict[str, Any] | None, unique_id: str) -> dict[str, Any]:
    """An event with these properties (already fitted to Klaviyo's limits)."""
    return {
        "properties": properties,
        "time": time,
        "value": _money(amount),
        "value_currency": (amount or {}).get("currencyCode"),
        "unique_id": unique_id,
        "metric": {"data": {"type": "metric", "attributes": {"name": metric}}},
        "profile": profile,
    }


def _profile(order: dict[str, Any], with_location: bool = False) -> dict[str, Any]:
    profile = order_profile(order, with_location)
    if profile is None:
        raise ValueError(f"order {order.get('id')} has neither customerEmail nor customerId")
    return profile


def _currency(order: dict[str, Any]) -> str | None:
    return (order.get("totalPrice") or {}).get("currencyCode")


def _slug(line: dict[str, Any], product: dict[str, Any] | None, locale: str) -> str | None:
    """The line's `productSlug`, else the product's current slug."""
    slug = localized(line.get("productSlug"), locale)
    if slug:
        return slug
    current = ((product or {}).get("masterData") or {}).get("current") or {}
    return localized(current.get("slug"), locale)


def _transactions(order: dict[str, Any]) -> list[dict[str, Any]]:
    payments = (order.get("paymentInfo") or {}).get("payments") or []
    return [t for ref in payments for t in (ref.get("obj") or {}).get("transactions") or []]


def _earlier(other: dict[str, Any], other_position: int, current: dict[str, Any], position: int) -> bool:
    mine, theirs = instant(current.get("timestamp")), instant(other.get("timestamp"))
    if mine and theirs and mine != theirs:
        return theirs < mine
    return other_position < position



def _decimal(amount: dict[str, Any] | None) -> Decimal:
    """Exact, so that summing refunds does not accumulate float error (money() is exact in repr)."""
    return Decimal(repr(money(amount)))


def _cut_strings(value: Any) -> Any:
    if isinstance(value, str):
        encoded = value.encode()
        return value if len(encoded) <= MAX_STRING_BYTES else encoded[:MAX_STRING_BYTES].decode(errors="ignore")
    if isinstance(value, dict):
        return {k: _cut_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut_strings(v) for v in value]
    return value


# `json.dumps(value, ensure_ascii=False)`, made once and without the check for circular references (a third of
# the time on properties: JSON data has no cycles; one would still fail, see `_size`).
_MEASURE = json.JSONEncoder(ensure_ascii=False, check_circular=False)
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def _size(value: Any) -> int:
    """Octets of the value as JSON (UTF-8, with `json.dumps`' separators)."""
    try:
        text = _MEASURE.encode(value)
    except RecursionError:  # a cycle, or data nested deeper than JSON: fail as json.dumps does
        text = json.dumps(value, ensure_ascii=False)
    return len(text) if text.isascii() else len(text.encode())


def _compact_size(value: Any) -> int:
    """Octets of the value as compact JSON (UTF-8, no spaces), as httpx sends it."""
    try:
        text = _COMPACT.encode(value)
    except RecursionError:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return len(text) if text.isascii() else len(text.encode())


def _line_prices(line: dict[str, Any]) -> dict[str, Any]:
    """`ItemPrice`: the unit price actually paid, after product and cart discounts (`totalPrice / quantity`), so
    that ItemPrice × Quantity = RowTotal; `OriginalItemPrice`: the list price (`price.value`), only when it differs.
    A line without a total or quantity falls back on the list price."""
    listed = _money((line.get("price") or {}).get("value"))
    total, quantity = line.get("totalPrice"), line.get("quantity")
    if not total or type(quantity) is not int or quantity <= 0:
        return {"ItemPrice": listed, "RowTotal": _money(total)}
    paid = _money(total)
    prices = {"ItemPrice": paid / quantity, "RowTotal": paid}
    if abs(listed * quantity - paid) > 1e-9 * max(1.0, abs(paid)):
        prices["OriginalItemPrice"] = listed
    return prices


def _money(amount: dict[str, Any] | None) -> float:
    """`money(amount)`, without Decimal for whole cents and digits: `cents / 10 ** digits` is the nearest float
    to the exact quotient, as is the float of the exact Decimal that `money` builds."""
    if amount and amount.get("type") != "highPrecision":
        cents, digits = amount.get("centAmount", 0), amount.get("fractionDigits", 2)
        if type(cents) is int and type(digits) is int and digits >= 0:
            return cents / 10 ** digits
    return money(amount)


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))
