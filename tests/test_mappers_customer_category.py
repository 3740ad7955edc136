"""Customer and category mappers: commercetools resource in, Klaviyo payload out."""

from __future__ import annotations

from shared.config import PropertyFilter
from shared.mappers.category import breadcrumb, category_create, category_update
from shared.mappers.customer import location, profile_attributes, select_address
from shared.mappers.localize import localized, money
from shared.mappers.properties import filter_properties
from tests.data import fixture

NO_FILTER = PropertyFilter()


def test_customer_profile_attributes() -> None:
    attributes = profile_attributes(fixture("customer"), NO_FILTER)
    assert attributes == {
        "email": "roberto.smith@example.com",
        "external_id": "e54d8233-be41-4ce1-ae2b-3b5e1e1d8a01",
        "first_name": "Roberto",
        "last_name": "Smith",
        "title": "Mr",
        "organization": "Klaviyo",
        "phone_number": "+447700900123",
        "location": {
            "address1": "Apt 5, Flat 2, 221B, Baker Street",
            "address2": "Back entrance, Ring twice",
            "city": "London",
            "country": "GB",
            "region": "Greater London",
            "zip": "NW1 6XE",
        },
        "properties": {"includedField": "kept", "ignoredField": "dropped", "newsletter": False, "points": 0},
    }


def test_custom_fields_include_exclude_map_keep_falsy_values() -> None:
    rules = PropertyFilter(include=("includedField", "newsletter", "points", "missing"), exclude=("points",),
                           rename={"includedField": "includedFieldAfterMap"})
    assert profile_attributes(fixture("customer"), rules)["properties"] == {
        "includedFieldAfterMap": "kept", "newsletter": False}


def test_address_priority() -> None:
    customer = fixture("customer")
    assert select_address(customer)["id"] == "addr-billing"  # default billing
    customer["defaultBillingAddressId"] = None
    customer["billingAddressIds"] = ["addr-shipping"]
    assert select_address(customer)["id"] == "addr-shipping"  # first billing id
    customer["billingAddressIds"] = []
    assert select_address(customer)["id"] == "addr-shipping"  # first address
    customer["addresses"] = []
    assert select_address(customer) is None


def test_phone_falls_back_and_absent_values_are_left_out() -> None:
    customer = fixture("customer")
    customer["defaultBillingAddressId"] = "addr-shipping"
    del customer["firstName"], customer["title"], customer["companyName"], customer["custom"]
    attributes = profile_attributes(customer, NO_FILTER)
    assert attributes["phone_number"] == "+442071234567"
    assert attributes["location"] == {"address1": "1, Shipping Street", "city": "London", "country": "GB",
                                      "zip": "E1 6AN"}
    assert not {"first_name", "title", "organization", "properties"} & set(attributes)
    customer["addresses"] = []
    assert not {"location", "phone_number"} & set(profile_attributes(customer, NO_FILTER))


def test_location_uses_region_before_state() -> None:
    assert location({"region": "R", "state": "S", "country": "US"}) == {"region": "R", "country": "US"}
    assert location({}) is None


def test_filter_properties_rules() -> None:
    source = {"a": 1, "b": "", "c": None, "d": False}
    assert filter_properties(source, NO_FILTER) == {"a": 1, "b": "", "d": False}
    assert filter_properties(source, PropertyFilter(include=("a", "c"), rename={"a": "A"})) == {"A": 1}
    assert filter_properties(None, NO_FILTER) == {}


def test_localized_fallbacks() -> None:
    value = {"en-US": "Jeans", "de": "Hose", "fr-FR": "Jean"}
    assert localized(value, "en-US") == "Jeans"
    assert localized(value, "en_us") == "Jeans"
    assert localized(value, "de-AT") == "Hose"
    assert localized(value, "fr") == "Jean"
    assert localized(value, "it-IT") == "Jeans"  # first value
    assert localized(value, "") == "Jeans"
    assert localized({}, "en") is None
    assert localized(None, "en") is None


def test_money_in_major_units() -> None:
    assert money({"type": "centPrecision", "currencyCode": "EUR", "centAmount": 4999, "fractionDigits": 2}) == 49.99
    assert money({"type": "centPrecision", "currencyCode": "JPY", "centAmount": 1200, "fractionDigits": 0}) == 1200
    assert money({"type": "highPrecision", "currencyCode": "EUR", "centAmount": 1235,
                  "preciseAmount": 123456, "fractionDigits": 4}) == 12.3456
    assert money(None) == 0.0


def _expanded_jeans() -> dict:
    jeans = fixture("category_jeans")
    jeans["ancestors"][0]["obj"] = fixture("category_women")
    jeans["ancestors"][1]["obj"] = fixture("category_pants")
    return jeans


def test_category_breadcrumb_and_payloads() -> None:
    jeans = _expanded_jeans()
    assert breadcrumb(jeans, "en-US") == "Women > Pants > Jeans"
    assert breadcrumb(jeans, "de-DE") == "Damen > Hosen > Jeans"
    assert category_create(jeans, "en-US") == {
        "type": "catalog-category",
        "attributes": {"external_id": jeans["id"], "name": "Women > Pants > Jeans",
                       "integration_type": "$custom", "catalog_type": "$default"},
    }
    assert category_update(jeans, "K-ID", "en-US") == {
        "type": "catalog-category", "id": "K-ID", "attributes": {"name": "Women > Pants > Jeans"}}
