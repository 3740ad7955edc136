"""Older data never overwrites newer: customer writes are based on the customer as commercetools has it now, so a
late or redelivered `CustomerCreated` cannot bring back old data or a deleted customer, on another instance or
after a restart (no in-memory memory to rely on)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.testclient import TestClient

from event.app import create_app
from shared.config import Settings
from tests.builders import message, pubsub
from tests.data import fixture
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo

CUSTOMER_ID = "e54d8233-be41-4ce1-ae2b-3b5e1e1d8a01"


def deliver(settings: Settings, notification: dict) -> tuple[int, str]:
    """One delivery to a new app instance (as after a restart, or on another instance)."""
    with TestClient(create_app(settings)) as app:
        response = app.post("/", json=pubsub(notification))
    return response.status_code, response.headers.get("x-outcome", "")


def test_a_redelivered_customer_created_on_another_instance_keeps_the_newer_data(
        settings: Settings, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    created = fixture("customer")
    created["version"] = 1
    ct.add("customers", created)
    first = message("customer", CUSTOMER_ID, "CustomerCreated", customer=created, resourceVersion=1)
    assert deliver(settings, first) == (204, "processed")

    newer = {**created, "version": 3, "firstName": "Augusta",
             "addresses": [{**address, "city": "Manchester"} for address in created["addresses"]]}
    ct.add("customers", newer)
    rename = message("customer", CUSTOMER_ID, "CustomerFirstNameSet", firstName="Augusta", resourceVersion=3)
    assert deliver(settings, rename) == (204, "processed")

    assert deliver(settings, first) == (204, "processed")  # redelivered, to an instance that never saw v3
    (profile,) = klaviyo.profiles.values()
    assert profile["first_name"] == "Augusta" and profile["location"]["city"] == "Manchester"
    assert [r.body["data"]["attributes"]["first_name"] for r in klaviyo.calls("POST", "^/api/profile-import$")] \
        == ["Roberto", "Augusta", "Augusta"]


def test_a_late_customer_created_after_the_deletion_does_not_bring_the_profile_back(
        settings: Settings, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    klaviyo.add_profile({"email": "roberto.smith@example.com", "external_id": CUSTOMER_ID})
    assert deliver(settings, message("customer", CUSTOMER_ID, "CustomerDeleted")) == (204, "processed")
    assert klaviyo.profiles == {}
    late = message("customer", CUSTOMER_ID, "CustomerCreated", customer=fixture("customer"), resourceVersion=1)
    assert deliver(settings, late) == (204, "ignored")  # a restarted instance: the customer is gone
    assert klaviyo.profiles == {}
    assert klaviyo.calls("POST", "^/api/profile-import$") == []


def test_message_copies_are_not_trusted_for_any_customer_message(
        configure: Callable[..., Settings], ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    current = {**fixture("customer"), "version": 7, "lastName": "King"}
    ct.add("customers", current)
    stale = {**fixture("customer"), "version": 2, "lastName": "Smith"}
    assert deliver(configure(), message("customer", CUSTOMER_ID, "CustomerCreated", customer=stale,
                                        resourceVersion=2)) == (204, "processed")
    (profile,) = klaviyo.profiles.values()
    assert profile["last_name"] == "King"
