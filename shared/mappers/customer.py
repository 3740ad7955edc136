"""commercetools customer → Klaviyo profile attributes."""

from __future__ import annotations

from typing import Any

from shared.config import PropertyFilter
from shared.mappers.properties import filter_properties
from shared.stores import PROFILE_PROPERTY, customer_store_keys


def select_address(customer: dict[str, Any]) -> dict[str, Any] | None:
    """The address Klaviyo gets: default billing, else the first billing address, else the first address."""
    addresses = customer.get("addresses") or []
    if not addresses:
        return None
    by_id = {a.get("id"): a for a in addresses}
    if customer.get("defaultBillingAddressId"):
        return by_id.get(customer["defaultBillingAddressId"])
    billing_ids = customer.get("billingAddressIds") or []
    if billing_ids:
        return by_id.get(billing_ids[0])
    return addresses[0]


def location(address: dict[str, Any] | None) -> dict[str, Any] | None:
    """A Klaviyo profile location from a commercetools address (None when there is no address)."""
    if not address:
        return None

    def join(*keys: str) -> str | None:
        return ", ".join(str(address[k]) for k in keys if address.get(k)) or None

    result = {
        "address1": join("apartment", "building", "streetNumber", "streetName"),
        "address2": join("additionalStreetInfo", "additionalAddressInfo"),
        "city": address.get("city"),
        "country": address.get("country"),
        "region": address.get("region") or address.get("state"),
        "zip": address.get("postalCode"),
    }
    return {key: value for key, value in result.items() if value} or None


def phone_number(address: dict[str, Any] | None) -> str | None:
    if not address:
        return None
    return address.get("mobile") or address.get("phone") or None


def profile_attributes(customer: dict[str, Any], custom_fields: PropertyFilter) -> dict[str, Any]:
    """Profile attributes for `POST /api/profile-import`.

    Absent values are left out rather than sent as null: null would wipe what Klaviyo learnt elsewhere (a
    signup form, an earlier order), which the reference did with `location: null`.
    """
    address = select_address(customer)
    attributes: dict[str, Any] = {
        "email": customer.get("email"),
        "external_id": customer["id"],
        "first_name": customer.get("firstName"),
        "last_name": customer.get("lastName"),
        "title": customer.get("title"),
        "organization": customer.get("companyName"),
        "location": location(address),
        "phone_number": phone_number(address),
    }
    attributes = {key: value for key, value in attributes.items() if value is not None}
    properties = filter_properties(((customer.get("custom") or {}).get("fields")), custom_fields)
    stores = customer_store_keys(customer)
    if stores:
        properties[PROFILE_PROPERTY] = stores
    if properties:
        attributes["properties"] = properties
    return attributes
