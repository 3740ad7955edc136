"""Customer messages and changes → Klaviyo profiles.

Every write is based on the customer as commercetools has it now, read again: never on the copy a message
carries. Deliveries come at least once and in any order, on any instance, after any restart; a late or
redelivered `CustomerCreated` then writes the current data (not the data as created), and one that arrives after
the deletion finds no customer and does nothing (customer ids are never reused, so a customer that exists was
never erased; the erasure record, `shared.erasures`, guards the orders and everything else).
"""

from __future__ import annotations

from typing import Any

from shared.commercetools import literal
from shared.consent import CONSENT_MESSAGES, sync_consent, turned_off
from shared.mappers.customer import profile_attributes
from shared.messages import Notification
from shared.processors import Context, Processor, change, message


def sync_customer(customer: dict[str, Any], context: Context) -> str | None:
    """Create or update the customer's profile: found by external id, or (with deduplication) by email."""
    email = customer.get("email")
    if not email:
        return "customer has no email"
    klaviyo, deduplication = context.klaviyo, context.settings.customer.deduplication
    attributes = profile_attributes(customer, context.settings.customer.custom_fields)

    def one_by_one() -> None:
        profile_id = klaviyo.find_profile_id(external_id=customer["id"])
        if profile_id is None and deduplication:
            profile_id = klaviyo.find_profile_id(email=email)
        klaviyo.upsert_profile(attributes, profile_id)

    # Under load, the event app's batcher imports the profile in a shared profile bulk import job (which matches
    # by email and external id too); it falls back to `one_by_one` for a profile the job fails on.
    if context.batcher is None or not context.batcher.import_profile(attributes, one_by_one):
        one_by_one()
    sync_consent(customer, context)
    return None


def _current_customer(notification: Notification, context: Context) -> str | None:
    """Re-read the customer and sync it whole: a redelivered or late message then cannot apply stale data."""
    customer = context.commercetools.find("customers", notification.resource_id)
    if customer is None:
        return "customer no longer exists in commercetools"
    return sync_customer(customer, context)


def _address_changed(notification: Notification, settings: Any) -> bool:
    return notification.notification_type == "Message" and notification.resource_type == "customer" \
        and notification.type in settings.customer.address_messages


def _deleted(notification: Notification, context: Context) -> str | None:
    """The customer is gone from commercetools: keep an erasure record (so that nothing brings the profile back),
    remove the dead letters holding their data, and ask Klaviyo to delete the profile (data privacy deletion).

    The email for the record's hash is the Klaviyo profile's, else the one on the customer's latest order."""
    if not context.settings.customer.deletion:
        return "customer deletion is switched off (customer.deletion.enabled)"
    customer_id = notification.resource_id
    profile = context.klaviyo.find_profile(external_id=customer_id)
    email = (profile or {}).get("email") or _last_order_email(context, customer_id)
    context.erasures.record(context.commercetools, customer_id, email)
    if profile is None:
        return "no Klaviyo profile for this customer (erasure record kept)"
    context.klaviyo.request_profile_deletion(profile["id"])
    return None


def _consent_accepts(notification: Notification, settings: Any) -> bool:
    return settings.customer.consent_configured and notification.notification_type == "Message" \
        and notification.resource_type == "customer" and notification.type in CONSENT_MESSAGES


def _consent_changed(notification: Notification, context: Context) -> str | None:
    """A custom field message: the current customer's consent is sent; a message saying a consent field went
    from true to false unsubscribes even when the connector never sent that consent itself."""
    customer = context.commercetools.find("customers", notification.resource_id)
    if customer is None:
        return "customer no longer exists in commercetools"
    if not customer.get("email"):
        return "customer has no email"
    sync_consent(customer, context, turned_off=turned_off(notification.payload, context.settings))
    return None


def _last_order_email(context: Context, customer_id: str) -> str | None:
    orders = context.commercetools.query("orders", where=[f"customerId = {literal(customer_id)}"],
                                         sort=["createdAt desc"], limit=1)
    return orders[0].get("customerEmail") if orders else None


PROCESSORS = (
    Processor("CustomerCreated", message("CustomerCreated", resource="customer"), _current_customer),
    Processor("CustomerResourceUpdated", change("ResourceUpdated", "customer"), _current_customer),
    Processor("CustomerAddressUpdate", _address_changed, _current_customer),
    Processor("CustomerFirstNameSet", message("CustomerFirstNameSet", resource="customer"), _current_customer),
    Processor("CustomerLastNameSet", message("CustomerLastNameSet", resource="customer"), _current_customer),
    Processor("CustomerTitleSet", message("CustomerTitleSet", resource="customer"), _current_customer),
    Processor("CustomerCompanyNameSet", message("CustomerCompanyNameSet", resource="customer"),
              _current_customer),
    Processor("CustomerConsentChanged", _consent_accepts, _consent_changed),
    Processor("CustomerDeleted", message("CustomerDeleted", resource="customer"), _deleted),
    Processor("CustomerResourceDeleted", change("ResourceDeleted", "customer"), _deleted),
)
