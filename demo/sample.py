"""A small, realistic commercetools project as plain API-shaped dicts: the demo, benchmarks and tests share it.

Deterministic: the same call gives the same ids, so runs can be compared. `orders(n)` scales the order history
for benchmarks without holding more than the caller asks for.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

NAMESPACE = uuid.UUID("8a1f5c2e-3b4d-4e6f-9a0b-1c2d3e4f5a6b")
START = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)
CHANNEL = "5b7d1f3e-2a4c-4e6f-8a0b-2c4e6a8c0e11"


def uid(*parts: object) -> str:
    return str(uuid.uuid5(NAMESPACE, "/".join(str(p) for p in parts)))


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def money(cents: int, currency: str = "EUR") -> dict[str, Any]:
    return {"type": "centPrecision", "currencyCode": currency, "centAmount": cents, "fractionDigits": 2}


def ref(type_id: str, resource_id: str) -> dict[str, str]:
    return {"typeId": type_id, "id": resource_id}


# --- catalog --------------------------------------------------------------------------------------------------

CATEGORY_TREE = [  # (key, English, German, parent key)
    ("women", "Women", "Damen", None),
    ("women-pants", "Pants", "Hosen", "women"),
    ("women-jeans", "Jeans", "Jeans", "women-pants"),
    ("men", "Men", "Herren", None),
    ("men-shirts", "Shirts", "Hemden", "men"),
]


def categories() -> list[dict[str, Any]]:
    by_key: dict[str, dict[str, Any]] = {}
    for index, (key, english, german, parent) in enumerate(CATEGORY_TREE):
        category: dict[str, Any] = {
            "id": uid("category", key), "version": 1, "key": key, "orderHint": f"0.{index + 1}",
            "createdAt": iso(START), "lastModifiedAt": iso(START),
            "name": {"en-US": english, "de-DE": german}, "slug": {"en-US": key, "de-DE": key},
            "ancestors": [],
        }
        if parent:
            category["parent"] = ref("category", by_key[parent]["id"])
            category["ancestors"] = [*by_key[parent]["ancestors"], ref("category", by_key[parent]["id"])]
        by_key[key] = category
    return list(by_key.values())


PRODUCTS = [  # (key, English name, German name, category key, EUR cents, USD cents, sizes)
    ("slim-jeans", "Slim Jeans", "Schmale Jeans", "women-jeans", 7999, 8999, ("S", "M", "L")),
    ("wide-pants", "Wide Linen Pants", "Weite Leinenhose", "women-pants", 5999, 6499, ("S", "M")),
    ("oxford-shirt", "Oxford Shirt", "Oxford-Hemd", "men-shirts", 4999, 5499, ("M", "L", "XL")),
]


def products() -> list[dict[str, Any]]:
    result = []
    for key, english, german, category_key, eur, usd, sizes in PRODUCTS:
        variants = []
        for number, size in enumerate(sizes, start=1):
            sku = f"{key.upper()}-{size}"
            prices = [
                {"id": uid("price", sku, "EUR"), "value": money(eur)},
                {"id": uid("price", sku, "USD"), "value": money(usd, "USD"), "country": "US"},
                {"id": uid("price", sku, "EUR-sale"), "value": money(eur - 1000),
                 "validFrom": "2026-11-20T00:00:00.000Z", "validUntil": "2026-12-31T23:59:59.000Z"},
            ]
            variants.append({
                "id": number, "sku": sku, "key": sku.lower(), "prices": prices,
                "images": [{"url": f"https://images.example.com/{key}/{size.lower()}.jpg",
                            "dimensions": {"w": 1200, "h": 1600}}],
                "attributes": [{"name": "size", "value": size}],
                "availability": {"isOnStock": True, "availableQuantity": 10 * number,
                                 "channels": {CHANNEL: {"isOnStock": True, "availableQuantity": 5 * number,
                                                        "id": uid("inventory", sku), "version": 2}}},
            })
        data = {
            "name": {"en-US": english, "de-DE": german},
            "description": {"en-US": f"{english}, our customers' favourite.", "de-DE": f"{german}."},
            "slug": {"en-US": key, "de-DE": key},
            "categories": [ref("category", uid("category", category_key))],
            "masterVariant": variants[0], "variants": variants[1:], "searchKeywords": {},
        }
        result.append({
            "id": uid("product", key), "version": 3, "key": key,
            "productType": ref("product-type", uid("product-type", "apparel")),
            "createdAt": iso(START), "lastModifiedAt": iso(START + timedelta(days=1)),
            "masterData": {"published": True, "hasStagedChanges": False, "current": data, "staged": data},
        })
    return result


def inventory() -> list[dict[str, Any]]:
    entries = []
    for product in products():
        current = product["masterData"]["current"]
        for variant in [current["masterVariant"], *current["variants"]]:
            quantity = 0 if variant["sku"] == "SLIM-JEANS-S" else variant["availability"]["availableQuantity"]
            entries.append({"id": uid("inventory", variant["sku"]), "version": 2, "sku": variant["sku"],
                            "supplyChannel": ref("channel", CHANNEL),
                            "quantityOnStock": quantity, "availableQuantity": quantity,
                            "createdAt": iso(START), "lastModifiedAt": iso(START)})
    return entries


# --- customers and orders -------------------------------------------------------------------------------------

PEOPLE = [  # (first, last, city, country, phone)
    ("Ada", "Lovelace", "London", "GB", "+447700900001"),
    ("Grace", "Hopper", "New York", "US", "+12125550142"),
    ("Konrad", "Zuse", "Berlin", "DE", "+4930901820"),
]


def address(index: int) -> dict[str, Any]:
    first, last, city, country, phone = PEOPLE[index % len(PEOPLE)]
    return {"id": uid("address", index), "firstName": first, "lastName": last, "streetName": "Market Street",
            "streetNumber": str(10 + index), "postalCode": f"{10000 + index}", "city": city, "country": country,
            "mobile": phone, "email": email(index)}


def email(index: int) -> str:
    first, last, *_ = PEOPLE[index % len(PEOPLE)]
    suffix = "" if index < len(PEOPLE) else str(index)
    return f"{first}.{last}{suffix}@example.com".lower()


def customers(n: int = len(PEOPLE)) -> list[dict[str, Any]]:
    result = []
    for index in range(n):
        first, last, *_ = PEOPLE[index % len(PEOPLE)]
        home = address(index)
        result.append({
            "id": uid("customer", index), "version": 2, "customerNumber": f"C-{1000 + index}",
            "email": email(index), "firstName": first, "lastName": last, "addresses": [home],
            "defaultBillingAddressId": home["id"], "billingAddressIds": [home["id"]], "shippingAddressIds": [],
            "isEmailVerified": True, "authenticationMode": "Password",
            "custom": {"type": ref("type", uid("type", "customer")), "fields": {"newsletter": index % 2 == 0}},
            "createdAt": iso(START + timedelta(hours=index)), "lastModifiedAt": iso(START + timedelta(hours=index)),
        })
    return result


STATES = ("Open", "Confirmed", "Complete", "Cancelled")


def line_item(order_number: int, position: int, product: dict[str, Any], variant: dict[str, Any],
              quantity: int) -> dict[str, Any]:
    unit = variant["prices"][0]["value"]["centAmount"]
    current = product["masterData"]["current"]
    return {
        "id": uid("line", order_number, position), "productId": product["id"], "productKey": product["key"],
        "name": current["name"], "productSlug": current["slug"], "productType": product["productType"],
        "variant": {key: variant[key] for key in ("id", "sku", "images", "attributes")},
        "price": {"id": variant["prices"][0]["id"], "value": money(unit)},
        "quantity": quantity, "totalPrice": money(unit * quantity), "discountedPricePerQuantity": [],
        "state": [{"quantity": quantity, "state": ref("state", uid("state", "initial"))}],
        "lineItemMode": "Standard", "priceMode": "Platform", "taxedPricePortions": [], "perMethodTaxRate": [],
    }


def orders(n: int = 4, lines: int = 3, n_customers: int = len(PEOPLE)) -> Iterator[dict[str, Any]]:
    """`n` orders cycling through the states, each with `lines` line items; order 1 has two refunds."""
    catalog = products()
    for number in range(n):
        customer_index = number % n_customers
        items = []
        for position in range(lines):
            product = catalog[(number + position) % len(catalog)]
            current = product["masterData"]["current"]
            variants = [current["masterVariant"], *current["variants"]]
            items.append(line_item(number, position, product, variants[position % len(variants)], 1 + position % 2))
        total = sum(item["totalPrice"]["centAmount"] for item in items)
        created = START + timedelta(days=number % 60, minutes=number)
        order: dict[str, Any] = {
            "id": uid("order", number), "version": 5, "orderNumber": f"ORD-{10000 + number}",
            "customerId": uid("customer", customer_index), "customerEmail": email(customer_index),
            "createdAt": iso(created), "lastModifiedAt": iso(created + timedelta(days=2)),
            "orderState": STATES[number % len(STATES)], "paymentState": "Paid", "shipmentState": "Shipped",
            "totalPrice": money(total), "lineItems": items, "customLineItems": [],
            "billingAddress": address(customer_index), "shippingAddress": address(customer_index),
            "taxMode": "Platform", "taxRoundingMode": "HalfEven", "taxCalculationMode": "LineItemLevel",
            "inventoryMode": "None", "origin": "Customer", "refusedGifts": [], "syncInfo": [],
            "shippingMode": "Single", "shipping": [],
            "custom": {"type": ref("type", uid("type", "order")), "fields": {"giftWrap": False}},
        }
        if order["orderState"] == "Complete":
            order["completedAt"] = order["lastModifiedAt"]
        if number == 1:
            order["paymentInfo"] = {"payments": [ref("payment", uid("payment", number))]}
        yield order


def payments() -> list[dict[str, Any]]:
    """The payment of order 1: a charge and two partial refunds."""
    order = next(o for i, o in enumerate(orders(2)) if i == 1)
    total = order["totalPrice"]["centAmount"]
    created = datetime.fromisoformat(order["createdAt"].replace("Z", "+00:00"))

    def transaction(kind: str, cents: int, days: int) -> dict[str, Any]:
        return {"id": uid("transaction", kind, days), "type": kind, "amount": money(cents), "state": "Success",
                "timestamp": iso(created + timedelta(days=days))}

    return [{
        "id": uid("payment", 1), "version": 4, "amountPlanned": money(total),
        "paymentMethodInfo": {"paymentInterface": "psp", "method": "card"}, "paymentStatus": {},
        "interfaceInteractions": [],
        "transactions": [transaction("Charge", total, 0), transaction("Refund", 1000, 3),
                         transaction("Refund", 2500, 5)],
        "createdAt": order["createdAt"], "lastModifiedAt": order["lastModifiedAt"],
    }]


def project() -> dict[str, list[dict[str, Any]]]:
    """Every resource of the sample project, by commercetools resource path."""
    return {"categories": categories(), "products": products(), "inventory": inventory(),
            "customers": customers(), "orders": list(orders()), "payments": payments()}
